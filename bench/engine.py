"""Engine throughput: events per second on long headless runs, journaling on.

Prints, measured in one run, each workload's events/s beside a calibration loop (a fixed
pure-Python loop timed in the same process), and the ratio of the two, so figures compare
across machines. Usage: python bench/engine.py [--events N]
"""
from __future__ import annotations

import argparse
import time

from hvdbg.core.engine import Engine
from hvdbg.core.scenario import load_scenario


def calibration(n: int = 2_000_000) -> float:
    """Iterations per second of a small dict/list/int loop (the kind of work the engine does)."""
    d = {}
    lst = [0] * 64
    t = time.perf_counter()
    for i in range(n):
        j = i & 63
        lst[j] = lst[j] + i
        d[j] = i
    return n / (time.perf_counter() - t)


def measure(name: str, events: int, **over) -> tuple[float, str]:
    s = load_scenario(name)
    s.init_vars["warmup"] = 10 ** 9     # keep traffic running for the whole measurement
    cfg = s.config(max_steps=events, **over)
    eng = Engine(s, cfg)
    t = time.perf_counter()
    res = eng.run()
    dt = time.perf_counter() - t
    return res.steps / dt, f"{res.outcome} after {res.steps} events, {len(eng.events)} journaled"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    a = ap.parse_args()
    cal = calibration()
    print(f"calibration loop: {cal / 1e6:.2f} M iterations/s")
    rows = [("soak (4 vCPUs)", "soak", {}), ("smp 4 vCPUs", "smp", {"vcpus": 4, "fix": "gfp-zero"}),
            ("smp 32 vCPUs", "smp", {"vcpus": 32, "fix": "gfp-zero"})]
    for label, name, over in rows:
        eps, info = measure(name, a.events, **over)
        print(f"{label:16s} {eps / 1e3:8.1f} k events/s   ratio to calibration {eps / cal:.4f}   ({info})")


if __name__ == "__main__":
    main()
