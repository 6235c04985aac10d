"""The explorer (core/explore.py, `hvdbg explore`): soundness against a brute-force
enumeration written here, the incremental hash against a from-scratch one, verdicts of a
handful of seed-pack cells, counterexamples that replay to the same failure, bad input."""
from __future__ import annotations

import io
import json

import pytest

from hvdbg.cli import main
from hvdbg.core.engine import Engine
from hvdbg.core.explore import BOUND_KINDS, Explorer, full_hash, run_choices, with_vars
from hvdbg.core.scenario import load_scenario

SMALL = {"warmup": 2, "teardown_work": 2}
NO_SOURCES = {"traffic": 0, "timer": 0}


def _cell(name="cpu-offline", vars=SMALL, **over):
    scn = with_vars(load_scenario(name), vars)
    cfg = scn.config(**over)
    return scn, cfg, (lambda: Engine(scn, cfg, journal=False))


def _brute_force(make, bounds: dict) -> tuple[set, set]:
    """Every reachable state (within the bounds), enumerated independently of the explorer:
    recursion over enabled() with apply/undo, states told apart by their exact digest
    (BLAKE2b of the canonical encoding) and the bound counters. Returns (the explorer-style
    keys: (full Zobrist hash, counters), the exact keys)."""
    eng = make()
    m = eng.m
    kinds = list(BOUND_KINDS)
    seen_exact: set = set()
    keys: set = set()

    def visit(cnt):
        k = (m.digest(), cnt)
        if k in seen_exact:
            return
        seen_exact.add(k)
        keys.add((full_hash(m), cnt))
        if eng.goal_reached():
            return
        for a in eng.enabled():
            if a[0] in kinds:
                i = kinds.index(a[0])
                if cnt[i] >= bounds[a[0]]:
                    continue
                nc = cnt[:i] + (cnt[i] + 1,) + cnt[i + 1:]
            else:
                nc = cnt
            w = eng.apply(a)
            assert eng._violation is None
            visit(nc)
            m.undo(w)

    import sys
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        visit((0,) * len(kinds))
    finally:
        sys.setrecursionlimit(old)
    return keys, seen_exact


def _explorer_keys(ex: Explorer) -> set:
    """(full hash, counters) of every state the explorer visited, recomputed from scratch by
    walking its tree of first visits (parent, action) on a fresh engine."""
    out = set()
    eng = ex.make_engine()
    m = eng.m
    children: dict = {}
    for sid in range(1, len(ex.parent)):
        children.setdefault(ex.parent[sid], []).append(sid)

    def walk(sid, cnt):
        out.add((full_hash(m), cnt))
        for c in children.get(sid, ()):
            a = ex.acts[ex.pact[c]]
            nc = cnt
            if a[0] in BOUND_KINDS:
                i = BOUND_KINDS.index(a[0])
                nc = cnt[:i] + (cnt[i] + 1,) + cnt[i + 1:]
            w = eng.apply(a)
            walk(c, nc)
            m.undo(w)

    import sys
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        walk(0, (0,) * len(BOUND_KINDS))
    finally:
        sys.setrecursionlimit(old)
    assert len(out) == len(ex.parent)
    return out


def _late(scn, cfg, back):
    """An engine `back` steps before the end of the cell's default run: a small space that
    still has timer and traffic choices."""
    n = Engine(scn, cfg, journal=False).run().steps

    def make():
        e = Engine(scn, cfg, journal=False)
        e.run(max_steps=n - back)
        return e
    return make


@pytest.mark.parametrize("strategy,start,bounds,fix,por", [
    ("dfs", None, NO_SOURCES, "gfp-zero", False),              # the whole run, no sources: ~16k states
    ("bfs", 40, {"traffic": 1, "timer": 1}, "gfp-zero", False),  # the end of the run with sources
    ("dfs", 40, {"traffic": 2, "timer": 1}, "none", False),
    ("dfs", None, NO_SOURCES, "gfp-zero", True),               # sleep sets visit every state too
    ("dfs", 40, {"traffic": 2, "timer": 1}, "none", True),
])
def test_reachable_states_equal_brute_force(strategy, start, bounds, fix, por):
    scn, cfg, make = _cell(vars={"warmup": 0, "teardown_work": 0}, fix=fix)
    if start is not None:
        make = _late(scn, cfg, start)
    ex = Explorer(make, bounds=bounds, max_states=10**6, strategy=strategy, por=por)
    r = ex.run()
    assert r.por == por
    assert r.verdict == "proved within bounds", r.reason
    keys, exact = _brute_force(make, bounds)
    assert len(keys) == len(exact), "two distinct states share a 64-bit hash"
    assert r.states == len(exact)
    assert _explorer_keys(ex) == keys


def test_incremental_hash_matches_full_hash():
    scn, cfg, make = _cell(fix="none")
    eng = make()
    from hvdbg.core.explore import update_hash
    h = full_hash(eng.m)
    for step in range(400):
        acts = eng.enabled()
        if not acts or eng.goal_reached():
            break
        a = acts[(step * 7) % len(acts)]
        w = eng.apply(a)
        h = update_hash(h, w)
        assert h == full_hash(eng.m), f"step {step} {a}"


def test_dfs_and_bfs_agree():
    _, _, make = _cell(fix="none")
    d = Explorer(make, bounds=NO_SOURCES, max_states=10**6, strategy="dfs").run()
    b = Explorer(make, bounds=NO_SOURCES, max_states=10**6, strategy="bfs").run()
    assert (d.verdict, d.outcome) == (b.verdict, b.outcome) == ("counterexample", "hang")
    assert len(b.path) <= len(d.path)


@pytest.mark.parametrize("fix,garbage,want", [
    ("none", "0xa5", "counterexample"),           # the seed hang: stale bit0 = 1
    ("none", "0xa4", "proved within bounds"),     # bit0 = 0: the EOI is not skipped
    ("gfp-zero", "0xa5", "proved within bounds"),
    ("clear-bit", "0xa5", "proved within bounds"),
])
def test_seed_cells(fix, garbage, want):
    _, _, make = _cell(fix=fix, garbage=garbage)
    r = Explorer(make, bounds=NO_SOURCES, max_states=10**6).run()
    assert r.verdict == want, r.reason
    if want == "counterexample":
        assert r.outcome == "hang"


def test_budget_cut_is_incomplete_never_proved():
    _, _, make = _cell(fix="gfp-zero")
    r = Explorer(make, bounds=NO_SOURCES, max_states=500).run()
    assert r.verdict == "incomplete"
    assert r.states == 500


def test_counterexample_choices_reproduce_the_failure():
    scn, cfg, make = _cell(fix="none")
    r = Explorer(make, bounds=NO_SOURCES, max_states=10**6).run()
    res = run_choices(scn, cfg, r.path)
    assert res is not None and res.outcome == "hang"


def _cli(argv):
    out = io.StringIO()
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_matrix_json_and_counterexamples_replay(tmp_path):
    code, out, _ = _cli(["explore", "cpu-offline", "--matrix", "--hypervisor", "hyperv", "--overlay", "uncover-stale",
                         "--set", "warmup=2", "--set", "teardown_work=2", "--bound", "traffic=0", "--bound", "timer=0",
                         "--out", str(tmp_path), "--json"])
    assert code == 3          # a hang counterexample
    rep = json.loads(out)
    cells = {(c["fix"], c["garbage"]): c for c in rep["cells"]}
    assert len(cells) == 6    # 3 fixes x (bit0 = 1, bit0 = 0)
    assert cells[("none", "0xa5")]["verdict"] == "counterexample"
    assert cells[("none", "0xa4")]["verdict"] == "proved within bounds"
    assert cells[("gfp-zero", "0xa5")]["verdict"] == "proved within bounds"
    cxs = [c for c in rep["cells"] if c["verdict"] == "counterexample"]
    assert cxs
    for c in cxs:
        assert c["trace_outcome"] == c["outcome"]
        assert c["choices"] <= c["found_choices"]
        code, out, err = _cli(["replay", "--verify", "--json", c["trace"]])
        assert code == 0, err
        v = json.loads(out)
        assert v["identical"] and v["outcome"] == c["outcome"]


def test_bad_input_is_one_line_exit_2():
    for argv, frag in ((["explore", "--shards", "0"], "--shards"),
                       (["explore", "--set", "nosuchvar=1"], "no variable nosuchvar"),
                       (["explore", "--bound", "land=1"], "bounded kinds"),
                       (["explore", "--fix", "nosuchfix"], "nosuchfix"),
                       (["explore", "--garbage", "0x1ff"], "garbage"),
                       (["explore", "--hypervisor", "kvm", "--overlay", "restore"], "overlay")):
        code, out, err = _cli(argv)
        assert code == 2, (argv, err)
        assert frag in err and err.count("\n") == 1, err


def test_jobs_2_gives_the_same_cells():
    argv = ["explore", "cpu-offline", "--hypervisor", "hyperv", "--overlay", "copy-back", "--fix", "all",
            "--garbage", "0xa5", "--set", "warmup=2", "--set", "teardown_work=2", "--bound", "traffic=0", "--json"]
    one = json.loads(_cli(argv + ["--jobs", "1"])[1])["cells"]
    two = json.loads(_cli(argv + ["--jobs", "2"])[1])["cells"]
    key = ("cell", "verdict", "outcome", "states", "transitions", "depth")
    assert [{k: c[k] for k in key} for c in one] == [{k: c[k] for k in key} for c in two]


async def test_a_counterexample_opens_in_the_tui_at_the_failure(tmp_path):
    import os
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    from hvdbg.commands import Session
    from hvdbg.tui.app import HvdbgApp
    code, out, _ = _cli(["explore", "cpu-offline", "--fix", "none", "--garbage", "0xa5", "--set", "warmup=2",
                         "--set", "teardown_work=2", "--bound", "traffic=0", "--out", str(tmp_path), "--json"])
    assert code == 3
    cell = json.loads(out)["cells"][0]
    s = Session.open(cell["trace"])
    app = HvdbgApp(s)
    async with app.run_test(size=(140, 45)) as pilot:
        assert s.tl.result.outcome == "hang"
        assert s.tl.pos == s.tl.length == cell["trace_steps"]      # at the failing step
        await pilot.press("y")                                     # why: the chain
        assert app.screen.__class__.__name__ == "WhyScreen"
        assert any("EOI skipped" in lk["text"] for lk in app.screen.links)


@pytest.mark.parametrize("overlay", ["uncover-stale", "copy-back", "restore"])
def test_every_cell_a_sweep_fails_is_a_counterexample(overlay):
    """Consistency with sampling: a cell where some of 30 seeds hangs must come out as a
    counterexample (the converse is what exploring adds)."""
    scn, cfg, make = _cell(fix="none", garbage="0xa5", hypervisor="hyperv", overlay=overlay)
    outcomes = set()
    for seed in range(30):
        cfg.seed = seed
        outcomes.add(Engine(scn, cfg, journal=False).run().outcome)
    r = Explorer(make, bounds=NO_SOURCES, max_states=10**6).run()
    if outcomes - {"ok"}:
        assert r.verdict == "counterexample" and r.outcome in outcomes


def test_pct_finds_the_seed_hang_and_never_proves():
    from hvdbg.core.explore import pct
    scn, cfg, make = _cell(fix="none", garbage="0xa5")
    r = pct(make, runs=30, depth=3, seed=1)
    assert (r.verdict, r.outcome) == ("counterexample", "hang")
    res = run_choices(scn, cfg, r.path)
    assert res is not None and res.outcome == "hang"
    _, _, make = _cell(fix="gfp-zero", garbage="0xa5")
    r = pct(make, runs=3, depth=2, seed=1, horizon=500)
    assert r.verdict == "incomplete" and "probability" in r.reason


def test_sigterm_stops_a_parallel_matrix_and_its_workers():
    import os
    import signal
    import subprocess
    import sys
    import time
    p = subprocess.Popen([sys.executable, "-m", "hvdbg", "explore", "cpu-offline", "--matrix", "--set", "warmup=2",
                          "--jobs", "2", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    time.sleep(4)
    kids = subprocess.run(["ps", "--ppid", str(p.pid), "-o", "pid="], capture_output=True, text=True).stdout.split()
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=20)[1].decode()
    assert p.returncode == 143, err
    time.sleep(0.5)
    for k in kids:
        st = subprocess.run(["ps", "-p", k, "-o", "stat="], capture_output=True, text=True).stdout.strip()
        assert st in ("", "Z"), f"worker {k} still running ({st})"


def test_a_cut_search_can_still_confirm_a_hang_but_never_proves():
    scn, cfg, make = _cell(name="cpu-offline-online", fix="none", garbage="0xa5")
    r = Explorer(make, bounds=NO_SOURCES, max_states=100_000).run()
    assert r.states == 100_000
    assert (r.verdict, r.outcome) == ("counterexample", "hang")      # in a completely explored region
    res = run_choices(scn, cfg, r.path)
    assert res is not None and res.outcome == "hang"
    _, _, make = _cell(name="cpu-offline-online", fix="gfp-zero", garbage="0xa5")
    assert Explorer(make, bounds=NO_SOURCES, max_states=20_000).run().verdict == "incomplete"
