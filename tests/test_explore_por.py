"""Partial-order reduction in the explorer (sleep sets over core/independence.py's footprints):
the same verdicts, the same reachable states and the same hang candidates with and without
it, on cells of several scenarios, hypervisors and fixes; every executed action writes only
inside its footprint and every pruned transition's predicted target is the real one
(por_check); the CLI's --por and --markdown."""
from __future__ import annotations

import io
import re
import json

import pytest

from hvdbg.cli import main
from hvdbg.core.engine import Engine
from hvdbg.core.explore import Explorer, full_hash, with_vars
from hvdbg.core.scenario import load_scenario

TINY = {"warmup": 0, "teardown_work": 0}


def _make(name, vars, late=None, **over):
    scn = with_vars(load_scenario(name), vars)
    cfg = scn.config(**over)
    if late is None:
        return scn, cfg, (lambda: Engine(scn, cfg, journal=False))
    n = Engine(scn, cfg, journal=False).run().steps

    def make():
        e = Engine(scn, cfg, journal=False)
        e.run(max_steps=max(0, n - late))
        return e
    return scn, cfg, make


def _hang_key(ex, make, path) -> int:
    """The explorer's key of the state after `path` (bound counters included)."""
    from hvdbg.core.explore import BOUND_KINDS
    e = make()
    cnt = (0,) * len(BOUND_KINDS)
    for i, a in enumerate(path):
        e.apply(a)
        if i >= len(ex.prefix):                  # the scenario's own schedule is not counted
            cnt = ex._bump(cnt, a)
    return ex._key(full_hash(e.m), cnt)


def _both(make, bounds, max_states=300_000):
    out = []
    for por in (False, True):
        ex = Explorer(make, bounds=bounds, max_states=max_states, por=por, por_check=por)
        r = ex.run()
        out.append((ex, r))
    return out


CELLS = [
    # (scenario, vars, steps before the end of the default run to start from (None: the start), bounds, config)
    ("cpu-offline", TINY, None, {"traffic": 0, "timer": 0}, {"fix": "none", "garbage": "0xa5"}),
    ("cpu-offline", TINY, None, {"traffic": 0, "timer": 0}, {"fix": "gfp-zero"}),
    ("cpu-offline", TINY, 40, {"traffic": 2, "timer": 1}, {"fix": "none"}),
    ("cpu-offline", TINY, 40, {"traffic": 1, "timer": 1}, {"fix": "clear-bit", "hypervisor": "kvm"}),
    ("cpu-offline", TINY, None, {"traffic": 0, "timer": 0}, {"fix": "none", "overlay": "restore"}),
    ("cpu-offline-early-ipis", TINY, 60, {"traffic": 1, "timer": 0}, {"fix": "clear-bit"}),
    ("smp", TINY, 30, {"traffic": 1, "timer": 0}, {"fix": "none"}),
    ("cpu-offline", TINY, None, {"traffic": 0, "timer": 0}, {"fix": "none", "hypervisor": "kvm"}),
    ("kexec", {"warmup": 1, "post_kexec": 1, "k2_irq_window": 2}, 30, {"traffic": 1, "timer": 1},
     {"fix": "remove-cpuhp"}),
    ("kvm-hibernation-resume", {"warmup": 1, "post_resume": 1}, 60, {"traffic": 0, "timer": 0},
     {"fix": "syscore-teardown"}),
]


@pytest.mark.parametrize("name,vars,late,bounds,over", CELLS)
def test_por_keeps_verdicts_states_and_hang_candidates(name, vars, late, bounds, over):
    _, _, make = _make(name, vars, late, **over)
    (ex0, r0), (ex1, r1) = _both(make, bounds)
    assert r1.por and not r0.por
    assert (r1.verdict, r1.outcome) == (r0.verdict, r0.outcome), (r0.reason, r1.reason)
    assert r0.verdict != "incomplete" or r0.states == ex0.max_states
    if r0.outcome != "corruption":            # a corruption stops the search where it is met
        assert r1.states == r0.states and r1.depth == r0.depth
        assert set(ex1.keys) == set(ex0.keys)                          # the same reachable states
        assert r1.transitions + r1.pruned == r0.transitions             # each edge executed once or pruned
        k0 = {k for k, i in ex0.keys.items() if i in getattr(ex0, "bad", ())}
        k1 = {k for k, i in ex1.keys.items() if i in getattr(ex1, "bad", ())}
        assert k1 == k0                                                 # the same hang candidates
        assert ex1.unresolved == 0
    if r0.outcome == "hang":                  # each confirmed hang state is a candidate of both
        for ex, r in ((ex0, r0), (ex1, r1)):
            assert ex.keys.get(_hang_key(ex, make, r.path)) in ex.bad


def test_por_prunes_only_transitions_whose_targets_were_reached():
    """The edge set with pruned edges added equals the unreduced one (as sets of (source key,
    target key)): the liveness analysis sees the same graph."""
    _, _, make = _make("smp", TINY, 30, fix="none")
    (ex0, _), (ex1, _) = _both(make, {"traffic": 1, "timer": 0})

    def edges(ex):
        key = {i: k for k, i in ex.keys.items()}
        return {(key[s], key[t]) for s, ts in enumerate(ex.succ) for t in ts}
    assert edges(ex1) == edges(ex0)
    assert ex1.pruned > 0


@pytest.mark.parametrize("late,bounds", [(None, {"traffic": 0, "timer": 0}), (40, {"traffic": 1, "timer": 1})])
def test_a_search_resumes_from_unvisited_pruned_targets(late, bounds):
    """With the root's first transition put to sleep (nothing covers it), its subtree is
    only reachable through pruned edges whose targets were never visited: the search
    resumes from them and still visits every state, with every edge."""
    _, _, make = _make("cpu-offline", TINY, late, fix="none")
    ex0 = Explorer(make, bounds=bounds, max_states=300_000)
    r0 = ex0.run()
    ex1 = Explorer(make, bounds=bounds, max_states=300_000, por=True, por_check=True)
    ex1._sleep_at_root = (make().enabled()[0],)
    r1 = ex1.run()
    assert ex1.repairs >= 1 and ex1.unresolved == 0
    assert (r1.verdict, r1.outcome, r1.states) == (r0.verdict, r0.outcome, r0.states)
    assert set(ex1.keys) == set(ex0.keys)
    assert r1.transitions + r1.pruned == r0.transitions


def test_bfs_ignores_por():
    _, _, make = _make("cpu-offline", TINY, None, fix="gfp-zero")
    r = Explorer(make, bounds={"traffic": 0, "timer": 0}, strategy="bfs", por=True).run()
    assert not r.por and r.pruned == 0


def _cli(argv):
    import contextlib
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


BASE = ["explore", "cpu-offline", "--hypervisor", "hyperv", "--overlay", "uncover-stale", "--fix", "all",
        "--garbage", "0xa5", "--set", "warmup=0", "--set", "teardown_work=0", "--bound", "traffic=0",
        "--bound", "timer=0", "--no-minimise"]


def test_cli_por_flag_in_json_and_table():
    on = json.loads(_cli(BASE + ["--por", "on", "--json"])[1])
    off = json.loads(_cli(BASE + ["--por", "off", "--json"])[1])
    assert on["por"] == "on" and off["por"] == "off"
    assert [c["por"] for c in on["cells"]] == [True] * 3 and [c["por"] for c in off["cells"]] == [False] * 3
    key = ("cell", "verdict", "outcome", "states", "depth")
    assert [{k: c[k] for k in key} for c in on["cells"]] == [{k: c[k] for k in key} for c in off["cells"]]
    assert sum(c["transitions"] for c in on["cells"]) < sum(c["transitions"] for c in off["cells"])
    code, out, _ = _cli(BASE + ["--por", "on"])
    assert code == 3 and "traffic=0 (--bound), timer=0 (--bound)" in out and "por on" in out
    code, out, err = _cli(BASE + ["--por", "maybe"])
    assert code == 2 and err.count("\n") == 1


def test_markdown_table_matches_the_json_cells():
    code, md, _ = _cli(BASE + ["--markdown"])
    assert code == 3
    rep = json.loads(_cli(BASE + ["--json"])[1])
    lines = md.splitlines()
    assert lines[0].startswith("**explore cpu-offline") and "bounds traffic=0 (--bound), timer=0 (--bound)" in lines[0]
    assert "por off" in lines[0]
    head = [c.strip() for c in lines[2].strip("|").split("|")]
    assert head == ["hypervisor", "overlay", "fix", "garbage", "verdict", "states", "transitions", "depth",
                    "time s", "states/s"]
    assert set(lines[3].strip("|").split("|")) <= {"---", "---:"}
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[4:4 + len(rep["cells"])]]
    for row, cell in zip(rows, rep["cells"]):
        assert row[2] == cell["fix"]
        assert row[4].split()[0] == {"proved within bounds": "proved"}.get(cell["verdict"], cell["verdict"])
        assert int(row[5].replace(",", "")) == cell["states"]
        assert int(row[6].replace(",", "")) == cell["transitions"]
        assert int(row[7]) == cell["depth"]
    assert lines[4 + len(rep["cells"])] == ""
    assert any(ln.startswith("- cpu-offline.hyperv.uncover-stale.none.0xa5: hang") for ln in lines)
    code, _, err = _cli(BASE + ["--markdown", "--json"])
    assert code == 2 and err.count("\n") == 1


# ---------------------------------------------------------------- generated listings
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_R = st.integers(0, 3).map(lambda i: f"r{i}")
_GEN_OPS = st.one_of(
    st.builds(lambda r, n: f"mov {r}, {n}", _R, st.integers(0, 2)),
    st.builds(lambda r, s: f"add {r}, {s}, 1", _R, _R),
    st.builds(lambda r: f"mov $pa, {r}", _R),
    st.builds(lambda r: f"mov {r}, $pa", _R),
    st.builds(lambda r: f"mov %pv, {r}", _R),
    st.builds(lambda r: f"mov {r}, %pv", _R),
    st.builds(lambda r: f"mov %pv[{r}], 1", _R),
    st.builds(lambda r, s: f"mov {r}, %pv[{s}]", _R, _R),
    st.builds(lambda r: f"mov {r}, cpu", _R),
    st.builds(lambda r: f"br {r} == 0, out", _R),
    st.just("br $pa != 0, out"),
    st.just("wait $pa >= 0"),
    st.just("cli"), st.just("sti"), st.just("nop"),
    st.builds(lambda r: f"load {r}, [0x1000], 8", _R),
    st.builds(lambda r, s: f"xchg {r}, [0x1000], 8, {s}", _R, _R),
    st.builds(lambda r: f"mov $offline_done, {r}", _R),       # a variable the goal reads
)


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_GEN_OPS, min_size=1, max_size=8))
def test_por_on_generated_listings(ops):
    """hv_cpu_init (run by both vCPUs while they boot) replaced by a generated listing of
    local, global, per-CPU, indexed, memory and goal-variable ops: the same verdict, states and
    hang candidates with and without POR, every write inside its footprint."""
    from hvdbg.core.scenario import parse_scenario
    base = with_vars(load_scenario("cpu-offline"), TINY)
    body = ", ".join(f'["{o}", 1, ""]' for o in ops) + ', ["out: ret", 1, ""]'
    scn = parse_scenario(base.text + f'\n[routines.hv_cpu_init]\nfile = "x.c"\nops = [{body}]\n', "<generated>")
    cfg = scn.config(fix="none")
    (ex0, r0), (ex1, r1) = _both(lambda: Engine(scn, cfg, journal=False), {"traffic": 0, "timer": 0},
                                 max_states=40_000)
    assert (r1.verdict, r1.outcome) == (r0.verdict, r0.outcome), (r0.reason, r1.reason)
    if r0.verdict != "incomplete" and r0.outcome != "corruption":
        assert set(ex1.keys) == set(ex0.keys)
        assert ({k for k, i in ex1.keys.items() if i in getattr(ex1, "bad", ())} ==
                {k for k, i in ex0.keys.items() if i in getattr(ex0, "bad", ())})
        assert ex1.unresolved == 0


# ---------------------------------------------------------------- [explore] bounds defaults
def _scenario_file(tmp_path, extra: str):
    text = load_scenario("cpu-offline").text + "\n" + extra + "\n"
    f = tmp_path / "s.toml"
    f.write_text(text)
    return str(f)


SMALL_CELL = ["--hypervisor", "hyperv", "--overlay", "uncover-stale", "--fix", "gfp-zero", "--garbage", "0xa5",
              "--set", "warmup=0", "--set", "teardown_work=0", "--no-minimise"]


def test_scenario_bounds_are_defaults_and_bound_overrides(tmp_path):
    f = _scenario_file(tmp_path, "[explore]\nbounds = { traffic = 0, timer = 0 }")
    rep = json.loads(_cli(["explore", f, *SMALL_CELL, "--json"])[1])
    assert rep["bounds"] == {"traffic": 0, "timer": 0}
    assert rep["bound_sources"] == {"traffic": "scenario cpu-offline", "timer": "scenario cpu-offline"}
    same = json.loads(_cli(["explore", "cpu-offline", *SMALL_CELL, "--bound", "traffic=0", "--json"])[1])
    assert rep["cells"][0]["states"] == same["cells"][0]["states"]        # the bounds were applied
    assert same["bound_sources"] == {"traffic": "--bound", "timer": "default"}
    over = json.loads(_cli(["explore", f, *SMALL_CELL, "--bound", "timer=1", "--max-states", "3000", "--json"])[1])
    assert over["bounds"] == {"traffic": 0, "timer": 1}
    assert over["bound_sources"] == {"traffic": "scenario cpu-offline", "timer": "--bound"}
    assert over["cells"][0]["bounds"] == {"traffic": 0, "timer": 1}
    code, out, _ = _cli(["explore", f, *SMALL_CELL])
    assert code == 0 and "traffic=0 (scenario cpu-offline), timer=0 (scenario cpu-offline)" in out


@pytest.mark.parametrize("extra,frag", [
    ("[explore]\nbounds = { traffic = -1 }", "explore.bounds.traffic: expected 0..4294967295"),
    ("[explore]\nbounds = { land = 1 }", "explore.bounds.land: unknown bounded kind"),
    ("[explore]\nbounds = { timer = \"1\" }", "explore.bounds.timer: expected an integer"),
    ("[explore]\nbounds = { timer = true }", "explore.bounds.timer: expected an integer"),
    ("[explore]\nbounds = 3", "explore.bounds: expected a table"),
    ("[explore]\ndepth = 3", "explore.depth: unknown key"),
    ("[explore]\nbounds = [1, 2]", "explore.bounds: expected a table"),
])
def test_bad_scenario_bounds_are_one_line_exit_2(tmp_path, extra, frag):
    f = _scenario_file(tmp_path, extra)
    code, out, err = _cli(["explore", f, *SMALL_CELL])
    assert code == 2, err
    assert frag in err and f in err and err.count("\n") == 1, err


def test_pack_bounds_sit_between_the_defaults_and_the_scenario():
    import dataclasses

    from hvdbg.core.explore import resolve_bounds
    from hvdbg.core.packs import PackError, _explore_bounds
    scn = load_scenario("cpu-offline")
    pack = dataclasses.replace(scn.pack, explore_bounds={"timer": 1, "traffic": 2})
    b, src = resolve_bounds(dataclasses.replace(scn, pack=pack, explore_bounds={"traffic": 0}))
    assert b == {"traffic": 0, "timer": 1}
    assert src == {"traffic": "scenario cpu-offline", "timer": f"pack {pack.name}"}
    b, src = resolve_bounds(dataclasses.replace(scn, pack=pack), {"timer": 0})
    assert b == {"traffic": 2, "timer": 0} and src["timer"] == "--bound" and src["traffic"] == f"pack {pack.name}"
    assert _explore_bounds("p", {"explore": {"bounds": {"timer": 2}}}) == {"timer": 2}
    for meta, frag in (({"explore": {"bounds": {"timer": -1}}}, "explore.bounds.timer"),
                       ({"explore": {"bounds": {"x": 1}}}, "explore.bounds.x"),
                       ({"explore": {"other": 1}}, "[explore]")):
        with pytest.raises(PackError, match=re.escape(frag)):
            _explore_bounds("p", meta)
