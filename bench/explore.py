"""Explorer throughput: states/s of the journal-based DFS and the snapshot-based BFS on one
core, beside a calibration loop measured in the same run (bench/engine.py's), and the time
to explore the seed matrix (cpu-offline, every hypervisor x overlay x fix x garbage bit0 =
1/0) with --jobs 1 and --jobs 2, each without and with partial-order reduction (--por): states
and transitions of both (sleep sets keep every state and prune transitions).

Usage: python bench/explore.py [--states N] [--matrix-bound traffic=N] [--jobs 1,2] [--skip-matrix]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine import calibration  # noqa: E402

from hvdbg.cli import main as hvdbg_main  # noqa: E402
from hvdbg.core.engine import Engine  # noqa: E402
from hvdbg.core.explore import Explorer, with_vars  # noqa: E402
from hvdbg.core.scenario import load_scenario  # noqa: E402

SMALL = {"warmup": 2, "teardown_work": 2}


def one_cell(strategy: str, states: int, por: bool = False):
    scn = with_vars(load_scenario("cpu-offline"), SMALL)
    cfg = scn.config(fix="gfp-zero")
    r = Explorer(lambda: Engine(scn, cfg, journal=False), bounds={"traffic": 1, "timer": 1}, max_states=states,
                 strategy=strategy, por=por).run()
    return r.states_per_second, r.states, r.verdict, r.transitions


def matrix(jobs: int, bound: str, por: str = "off") -> tuple[float, str]:
    argv = ["explore", "cpu-offline", "--matrix", "--set", "warmup=2", "--set", "teardown_work=2",
            "--bound", bound, "--bound", "timer=0", "--jobs", str(jobs), "--por", por, "--json", "--no-minimise"]
    out = io.StringIO()
    old = sys.stdout
    sys.stdout = out
    try:
        t = time.perf_counter()
        code = hvdbg_main(argv)
        dt = time.perf_counter() - t
    finally:
        sys.stdout = old
    rep = json.loads(out.getvalue())
    v = {}
    for c in rep["cells"]:
        v[c["verdict"]] = v.get(c["verdict"], 0) + 1
    total = sum(c["states"] for c in rep["cells"])
    trans = sum(c["transitions"] for c in rep["cells"])
    pruned = sum(c.get("pruned", 0) for c in rep["cells"])
    return dt, (f"{len(rep['cells'])} cells, {total:,} states, {trans:,} transitions executed"
                + (f" ({pruned:,} never executed: asleep)" if por == "on" else "") + f", verdicts {v}, exit {code}")


def run() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--states", type=int, default=100_000)
    ap.add_argument("--matrix-bound", default="traffic=0")
    ap.add_argument("--jobs", default="1,2", help="the --jobs values of the matrix runs")
    ap.add_argument("--skip-matrix", action="store_true")
    a = ap.parse_args()
    cal = calibration()
    print(f"calibration loop: {cal:,.0f} iterations/s (pure Python, this process)")
    for strategy, por in (("dfs", False), ("dfs", True), ("bfs", False)):
        sps, n, verdict, trans = one_cell(strategy, a.states, por)
        print(f"{strategy}{' --por on' if por else ''}: {sps:,.0f} states/s on one core ({n:,} states, {trans:,} "
              f"transitions, cpu-offline gfp-zero, warmup=2, teardown_work=2, traffic=1, timer=1: {verdict}); "
              f"{sps / cal * 1e6:.0f} states per million calibration iterations")
    if not a.skip_matrix:
        for jobs in (int(j) for j in a.jobs.split(",")):
            for por in ("off", "on"):
                dt, what = matrix(jobs, a.matrix_bound, por)
                print(f"seed matrix --jobs {jobs} --por {por} (--bound {a.matrix_bound} --bound timer=0): "
                      f"{dt:.1f} s; {what}")
    print("ray backend: see bench/explore_ray.py (its states/s beside the in-process explorer, one run)")


if __name__ == "__main__":
    run()
