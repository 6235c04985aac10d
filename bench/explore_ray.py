"""The Ray backend of `hvdbg explore --cluster` against the in-process explorer, on one cell,
in one run beside a calibration loop (bench/engine.py's plain Python loop, timed here):

* in-process DFS (Explorer.run, one core);
* the cell as one Ray task (run_cells: what --cluster does with several cells);
* the cell as a hash-partitioned search over 1 and 2 shard actors (sharded_explore).

A local Ray instance is started with --cpus CPUs (default 2) unless --address names a
cluster. "search" states/s counts the distributed search only; "cell" also counts the
liveness analysis on the driver (gathering the graph, the in-process explorer's _liveness);
Ray's start-up and the actors' creation are printed apart. Every Ray figure must give the
in-process explorer's verdict and state count (checked; the bench exits 1 otherwise).

Usage: python bench/explore_ray.py [--traffic N] [--shards 1,2] [--cpus N] [--address ADDR]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine import calibration  # noqa: E402

from hvdbg.core.explore import with_vars  # noqa: E402
from hvdbg.core.scenario import load_scenario  # noqa: E402
from hvdbg.explore_cli import explore_cell  # noqa: E402

SMALL = {"warmup": 2, "teardown_work": 2}


def job(traffic: int) -> dict:
    scn = with_vars(load_scenario("cpu-offline"), SMALL)
    return {"text": scn.text, "source": scn.source,
            "cell": {"hypervisor": "hyperv", "overlay": "uncover-stale", "fix": "gfp-zero", "garbage": "0xa5"},
            "bounds": {"traffic": traffic, "timer": 0}, "max_states": 10**7, "strategy": "dfs", "out": None,
            "no_minimise": True, "runs": 1, "pct_depth": 1, "horizon": 1}


def run() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traffic", type=int, default=0, help="--bound traffic=N of the cell (0: ~16k states, "
                    "1: ~222k states)")
    ap.add_argument("--shards", default="1,2")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--address", default="local")
    a = ap.parse_args()
    from hvdbg.explore_ray import connect, run_cells, sharded_explore
    j = job(a.traffic)
    what = (f"cpu-offline hyperv uncover-stale gfp-zero 0xa5, warmup=2 teardown_work=2, traffic={a.traffic} "
            "timer=0, dfs")
    cal = calibration()
    print(f"calibration loop: {cal:,.0f} iterations/s (pure Python, this process)")
    t = time.perf_counter()
    base = explore_cell(j)
    print(f"in-process: {base['states_per_second']:,} states/s ({base['states']:,} states, {base['verdict']}; "
          f"cell {time.perf_counter() - t:.1f} s) on {what}; {base['states_per_second'] / cal * 1e6:.0f} states "
          "per million calibration iterations")
    t = time.perf_counter()
    ray, started = connect(a.address, a.cpus)
    print(f"ray: connected to {a.address} ({a.cpus} CPUs if local) in {time.perf_counter() - t:.1f} s")
    bad = 0
    try:
        t = time.perf_counter()
        d = run_cells([j], a.address)[0]
        dt = time.perf_counter() - t
        ok = (d["verdict"], d["states"]) == (base["verdict"], base["states"])
        bad += not ok
        print(f"ray task (run_cells): {d['states'] / dt:,.0f} states/s wall incl. scheduling ({d['states']:,} "
              f"states in {dt:.1f} s; {d['states_per_second']:,} states/s inside the task); same verdict and "
              f"states: {ok}")
        for n in (int(x) for x in a.shards.split(",")):
            t = time.perf_counter()
            d = sharded_explore(j, n, a.address)
            dt = time.perf_counter() - t
            ok = (d["verdict"], d["states"], d["transitions"]) == (base["verdict"], base["states"],
                                                                   base["transitions"])
            bad += not ok
            print(f"ray sharded, {n} shard{'s' if n > 1 else ''}: {d['states'] / d['search_seconds']:,.0f} states/s "
                  f"search, {d['states_per_second']:,} states/s cell ({d['states']:,} states, {d['rounds']} rounds, "
                  f"per shard {d['shard_states']}; search {d['search_seconds']:.1f} s, cell {d['seconds']:.1f} s, "
                  f"actors up {d['setup_seconds']:.1f} s, wall {dt:.1f} s); "
                  f"{d['states'] / d['search_seconds'] / max(1, base['states_per_second']):.2f}x in-process; "
                  f"same verdict and counts: {ok}")
    finally:
        if started:
            ray.shutdown()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(run())
