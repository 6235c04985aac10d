"""The bug library (issue 9): every pack reproduces its bug, its fix prevents it, the corruption
chain is built from the journal, the generic layers know no pack, and a hypervisor model
registered from a test file alone shows up everywhere the registry feeds."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hvdbg.core import packs
from hvdbg.core.engine import Engine
from hvdbg.core.explain import explain
from hvdbg.core.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
NEW_PACKS = ["vp-assist-hibernation", "vp-assist-kexec", "kvm-pv-hibernation"]


def hv(*args):
    return subprocess.run([sys.executable, "-m", "hvdbg", *map(str, args)], capture_output=True, text=True)


def run(pack, **over):
    s = load_scenario(pack)
    eng = Engine(s, s.config(**over))
    return eng, eng.run()


def test_bugs_lists_every_pack_with_its_fix():
    p = hv("bugs", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["pack"]: r for r in json.loads(p.stdout)}
    assert set(rows) == {"vp-assist-offline", *NEW_PACKS}
    assert rows["vp-assist-offline"]["upstream_fix"] == "e320ab3cec7d" and set(rows["vp-assist-offline"]["fixes"]) == \
        {"gfp-zero", "clear-bit"}
    assert rows["vp-assist-hibernation"]["upstream_fix"] == "421f090c819d"
    assert rows["vp-assist-kexec"]["upstream_fix"] == "dfe94d4086e4"
    assert rows["kvm-pv-hibernation"]["upstream_fix"] == "8b79feffeca2" and rows["kvm-pv-hibernation"]["hypervisor"] == "kvm"
    for r in rows.values():
        assert (ROOT / r["doc"]).is_file(), r["doc"]
        assert r["default_scenario"] in r["scenarios"]


@pytest.mark.parametrize("pack", NEW_PACKS)
def test_pack_shows_the_corruption_and_its_chain(pack):
    eng, res = run(pack)
    assert res.outcome == "corruption"
    links = explain(eng, "corruption")
    kinds = [lk.kind for lk in links]
    assert {"write", "owner", "pointer", "transition", "teardown"} <= set(kinds), kinds
    # every link that claims a location names an event whose journal holds it
    for lk in links:
        if lk.loc is not None:
            assert any(w[0] == lk.loc for w in eng.events[lk.step].writes), lk
    # the pointer was set by one kernel generation, the page is owned by another
    v = next(n for n in eng.events[-1].notes if n[0] == "violation")
    _, _, cpu, structure, gpa, own, gen, want = v
    pointer = next(lk for lk in links if lk.kind == "pointer")
    assert f"GPA 0x{gpa >> 12 << 12:x}" in pointer.text
    assert own is None or own[1] != want or own[2] != cpu or own[0] != gen
    # cause before effect: the pointer, then the transition, then the write
    step = {k: next(lk.step for lk in links if lk.kind == k) for k in ("pointer", "transition", "write")}
    assert step["pointer"] < step["transition"] <= step["write"]


@pytest.mark.parametrize("pack", NEW_PACKS)
def test_the_merged_fix_prevents_it_and_the_bug_shows_in_some_seeds(pack):
    fix = next(iter(packs.get(pack).fixes))
    failing = 0
    for seed in range(12):
        _, res = run(pack, seed=seed)
        failing += res.outcome == "corruption"
        _, fixed = run(pack, seed=seed, fix=fix)
        assert fixed.outcome == "ok", (pack, seed, fixed)
    assert failing > 0


@pytest.mark.slow
@pytest.mark.parametrize("pack", NEW_PACKS)
def test_sweep_200_seeds_cli(pack):
    fix = next(iter(packs.get(pack).fixes))
    bug = json.loads(hv("sweep", pack, "--seeds", 200, "--json").stdout)
    assert bug["histogram"].get("corruption", 0) > 0
    fixed = hv("sweep", pack, "--seeds", 200, "--fix", fix, "--json")
    assert fixed.returncode == 0 and json.loads(fixed.stdout)["histogram"] == {"ok": 200}


@pytest.mark.parametrize("pack", NEW_PACKS)
def test_cli_run_exit_7_then_fix_exit_0(pack):
    p = hv("run", pack, "--json")
    assert p.returncode == 7, p.stderr
    rep = json.loads(p.stdout)
    assert rep["outcome"] == "corruption" and rep["pack"] == pack and rep["explanation"]
    assert hv("run", pack, "--fix", next(iter(packs.get(pack).fixes))).returncode == 0


@pytest.mark.parametrize("pack", NEW_PACKS)
def test_example_script_walks_the_story(pack):
    p = hv("script", ROOT / "examples" / f"{pack}.hvs", pack, "--quiet")
    assert p.returncode == 0, p.stdout[-600:] + p.stderr


@pytest.mark.parametrize("pack", NEW_PACKS)
def test_shipped_trace_replays_identically(pack):
    p = hv("replay", "--verify", ROOT / "traces" / f"{pack}.hvt")
    assert p.returncode == 0 and p.stdout.startswith("identical") and "outcome corruption" in p.stdout, p.stderr


def test_a_violation_is_checked_only_where_declared():
    # the same kexec without the invariant: the hypervisor still writes there, but nothing is declared wrong
    text = packs.get("vp-assist-kexec").scenario_text("kexec")
    text = re.sub(r"\[invariants\.hv-writes-owned\]\npurposes = \{[^}]*\}\n", "", text)
    from hvdbg.core.scenario import parse_scenario
    s = parse_scenario(text, "<test>")
    eng = Engine(s, s.config())
    assert eng.run().outcome == "ok"


# ---------------------------------------------------------------- generality
GENERIC = ["hvdbg/core/engine.py", "hvdbg/core/explain.py", "hvdbg/core/apic.py", "hvdbg/core/scheduler.py",
           "hvdbg/core/hang.py", "hvdbg/core/lifecycle.py", "hvdbg/core/ops.py", "hvdbg/core/machine.py",
           "hvdbg/core/view.py", "hvdbg/core/why.py", "hvdbg/core/timeline.py", "hvdbg/core/scenario.py",
           "hvdbg/cli.py", "hvdbg/report.py", "hvdbg/commands.py", "hvdbg/recording.py", "hvdbg/tui/views.py",
           "hvdbg/tui/panes.py", "hvdbg/tui/app.py"]


def _pack_words() -> set[str]:
    """Names only a pack knows: its name, fix names, and the routines and variables of its listing
    that no other pack shares (the shared kernel routines are generic knowledge)."""
    words: dict[str, int] = {}
    per_pack = {}
    for p in packs.packs().values():
        prog = p.program()
        names = {p.name, *p.fixes} | set(prog.routines)
        per_pack[p.name] = names
        for n in names:
            words[n] = words.get(n, 0) + 1
    out = set()
    for p, names in per_pack.items():
        out |= {n for n in names if words[n] == 1 and len(n) > 6}
    return out


def test_generic_layers_name_no_pack_fix_or_routine():
    words = _pack_words()
    assert {"hv_suspend", "kvm_guest_cpu_init", "hv_machine_shutdown", "syscore-cpu0", "gfp-zero"} <= words
    for path in GENERIC:
        text = (ROOT / path).read_text()
        found = sorted(w for w in words if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text))
        assert not found, (path, found)


@pytest.fixture
def toy_model():
    """A hypervisor registered from this test file alone: no assist at all, RAM only."""
    from hvdbg.core import hypervisors
    from hvdbg.core.hypervisors import HypervisorModel, HypervisorSpec

    class Toy(HypervisorModel):
        name = "toy"

    hypervisors.register(HypervisorSpec("toy", Toy, "a toy model: no EOI assist, no overlay"))
    yield "toy"
    hypervisors.unregister("toy")


def test_a_toy_hypervisor_appears_in_run_repl_and_whatif(toy_model, capsys):
    from hvdbg.cli import main
    from hvdbg.commands import Session, complete
    assert main(["run", "--hypervisor", "toy", "--json"]) == 0          # no assist: the seed cannot hang
    rep = json.loads(capsys.readouterr().out)
    assert rep["hypervisor"] == "toy" and rep["outcome"] == "ok" and rep["statistics"].get("eoi_assisted", 0) == 0
    s = Session.open("cpu-offline")
    assert "toy" in complete(s, "hypervisor ")
    from hvdbg.tui.app import WhatIfScreen
    entries = [e[0] for e in WhatIfScreen(0, s).entries]
    assert "hypervisor toy" in entries and "overlay copy-back" in entries     # on the hyperv main branch
    out = s.execute("hypervisor toy")
    assert out.data["outcome"] == "ok" and s.current == out.data["branch"]
    entries = [e[0] for e in WhatIfScreen(0, s).entries]                      # on the toy branch: no overlay options
    assert "hypervisor hyperv" in entries and not any(e.startswith("overlay ") for e in entries)


def test_lines_each_pack_needed():
    """How much each new pack is: its own directory only (numbers for the closing note)."""
    for name in NEW_PACKS:
        d = ROOT / "hvdbg" / "packs" / name.replace("-", "_")
        files = [f for f in d.rglob("*") if f.is_file() and f.suffix in (".py", ".toml")]
        assert files and all(str(f).startswith(str(d)) for f in files)


@pytest.mark.parametrize("name", sorted(packs.packs()))
def test_every_cited_kernel_line_names_its_file(name):
    """An op that cites a kernel line (line > 0) names the file that line is in."""
    prog = packs.get(name).program()
    bad = [f"{r.name}[{i}] {o.text!r} line {o.line} file {o.file!r}"
           for r in prog.routines.values() for i, o in enumerate(r.ops)
           if o.line > 0 and o.file in ("", "model")]
    assert not bad, bad
