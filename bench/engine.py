"""Engine throughput: events per second on long headless runs, journaling on.

Prints, measured in one run, each workload's events/s beside a calibration loop (a fixed
pure-Python loop timed in the same process), and the ratio of the two, so figures compare
across machines. --reference also runs each workload through the reference run loop (Engine
with FUSED off) between two runs of the fused one, and prints the speed-up measured in the
same run. --instructions counts instructions per event under valgrind instead (the machine's
load does not move it). --floor also times the least per-event work this design does in
CPython (floor()). Usage: python bench/engine.py [--events N] [--reference] [--floor] | --instructions
"""
from __future__ import annotations

import argparse
import gc
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


def measure(name: str, events: int, fused: bool = True, **over) -> tuple[float, str]:
    s = load_scenario(name)
    s.init_vars["warmup"] = 10 ** 9     # keep traffic running for the whole measurement
    cfg = s.config(max_steps=events, **over)
    eng = Engine(s, cfg)
    eng.FUSED = fused
    t = time.perf_counter()
    res = eng.run()
    dt = time.perf_counter() - t
    return res.steps / dt, f"{res.outcome} after {res.steps} events, {len(eng.events)} journaled"


# label, bench/compiled.py's name for the workload, scenario, config
def floor(n: int = 1_000_000) -> float:
    """Events per second of the least a pure-Python engine does per event: the (seed, step)
    PRNG draw and the weighted walk over four vCPUs' actions, two state writes journaled as
    (slot, old, new), the event tuple and its append; nothing else (no enabled-set upkeep, no
    interrupts, no statistics). The ceiling for this engine's design in CPython."""
    mask = (1 << 64) - 1
    S = [0] * 256
    journal = []
    app = journal.append
    cw = [64, 65, 64, 65]
    cache = [[("op", c)] for c in range(4)]
    seedmix = 0x9E3779B97F4A7C15
    was = gc.isenabled()
    gc.disable()                    # as Engine.run
    t = time.perf_counter()
    for step in range(n):
        z = (seedmix + (step + 1) * 0xD1B54A32D192ED03) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        r = (z ^ (z >> 31)) % 258
        c = 0
        for x in cw:
            if r < x:
                break
            r -= x
            c += 1
        a = cache[c][0]
        b = 8 + 40 * c
        writes = []
        old = S[b + 5]
        S[b + 5] = new = (old + step) & mask
        writes.append((b + 5, old, new))
        old = S[b + 1]
        S[b + 1] = new = (old + 1) & 63
        writes.append((b + 1, old, new))
        app((step, a, c, 3, old, writes, ()))
    dt = time.perf_counter() - t
    if was:
        gc.enable()
    return n / dt


ROWS = [("soak (4 vCPUs)", "soak", "soak", {}), ("smp 4 vCPUs", "smp4", "smp", {"vcpus": 4, "fix": "gfp-zero"}),
        ("smp 32 vCPUs", "smp32", "smp", {"vcpus": 32, "fix": "gfp-zero"})]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--reference", action="store_true",
                    help="also run the reference loop (Engine.FUSED off), alternating with the fused one")
    ap.add_argument("--floor", action="store_true", help="also time floor(): the least per-event work in CPython")
    ap.add_argument("--instructions", action="store_true",
                    help="instructions per event instead (valgrind; mean over PYTHONHASHSEED 0-3)")
    a = ap.parse_args()
    if a.instructions:
        from compiled import instructions       # bench/compiled.py: a 22,000- minus a 2,000-event run
        print("instructions per event (valgrind, the mean over PYTHONHASHSEED 0-3: hashing moves it by ~10 %)")
        for label, workload, _, _ in ROWS:
            counts = [instructions(None, workload, hashseed=str(h)) for h in range(4)]
            print(f"{label:16s} {sum(counts) / len(counts):9.0f}   ({' '.join(map(str, counts))})", flush=True)
        return
    cal = calibration()
    print(f"calibration loop: {cal / 1e6:.2f} M iterations/s")
    if a.floor:
        f = floor()
        print(f"{'floor':16s} {f / 1e3:8.1f} k events/s   ratio to calibration {f / cal:.4f}   "
              f"(the least per-event work of this design in CPython: bench/engine.py floor())")
    for label, _, name, over in ROWS:
        eps, info = measure(name, a.events, **over)
        line = f"{label:16s} {eps / 1e3:8.1f} k events/s   ratio to calibration {eps / cal:.4f}"
        if a.reference:
            ref, _ = measure(name, a.events, fused=False, **over)
            again, _ = measure(name, a.events, **over)
            eps = max(eps, again)
            line = (f"{label:16s} {eps / 1e3:8.1f} k events/s   ratio to calibration {eps / cal:.4f}   "
                    f"reference loop {ref / 1e3:6.1f} k/s   fused/reference x{eps / ref:.2f}")
        print(f"{line}   ({info})", flush=True)


if __name__ == "__main__":
    main()
