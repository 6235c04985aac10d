"""Time-travel costs, measured in one run (issue 3):

(a) reverse-step cost / forward-step cost at positions 1k, 100k and 1M (forward = redo of a
    recorded event, and = executing a new event);
(b) median and p99 goto latency to random positions in a 1M-event recording;
(c) trace load throughput / raw msgpack.Unpacker throughput over the same records
    (when hvdbg.trace is present);
(d) bytes per event on disk (when hvdbg.trace is present) and in memory.

Usage: python bench/timeline.py [--events 1000000]
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc

from hvdbg.core.engine import E_ACT, E_WRITES
from hvdbg.core.scenario import load_scenario
from hvdbg.core.timeline import Timeline


def per_event(fn, reps: int) -> float:
    t = time.perf_counter()
    fn(reps)
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    a = ap.parse_args()
    n = a.events
    s = load_scenario("soak")
    t = time.perf_counter()
    tl = Timeline.record(s, s.config(max_steps=n + 4000), checkpoint_every=1000)
    rec = time.perf_counter() - t
    print(f"recorded {tl.length} events of soak in {rec:.1f} s ({tl.length / rec / 1e3:.0f} k events/s, "
          f"{len(tl.ckpt)} checkpoints)")
    gc.disable()
    m, evs = tl.e.m, tl.events
    reps = 2000
    # positions 1k, 100k and 1M need a recording of 1M + 2 x reps events (default --events)
    print("(a) reverse-step / forward-step cost")
    for pos in (1_000, 100_000, 1_000_000):
        if pos + reps > tl.length:
            continue
        tl.goto(pos + reps)

        def back(k):
            for i in range(pos + reps - 1, pos + reps - 1 - k, -1):
                m.undo(evs[i][E_WRITES])

        def fwd(k):
            for i in range(pos, pos + k):
                m.redo(evs[i][E_WRITES])
        revs, fws = [], []
        for _ in range(5):                  # alternate, keep the best of 5 (warm caches for both)
            revs.append(per_event(back, reps))
            fws.append(per_event(fwd, reps))
        rev, fw = min(revs), min(fws)
        print(f"    at {pos:>9,}: reverse {rev * 1e6:6.2f} us, forward (redo) {fw * 1e6:6.2f} us, "
              f"ratio {rev / fw:.2f}")
    # forward = executing new events (the engine's own step)
    s2 = load_scenario("soak")
    from hvdbg.core.engine import Engine
    e2 = Engine(s2, s2.config(max_steps=20_000))
    t = time.perf_counter()
    e2.run()
    ex = (time.perf_counter() - t) / e2.step
    tl.goto(tl.length)
    rev = per_event(lambda k: [m.undo(evs[i][E_WRITES]) for i in range(tl.length - 1, tl.length - 1 - k, -1)], reps)
    tl._set(tl.length - reps)
    tl.goto(tl.length)
    print(f"    reverse-step / executing a new event: {rev * 1e6:.2f} us / {ex * 1e6:.2f} us = {rev / ex:.2f}")
    print("(b) goto latency to random positions")
    rnd = random.Random(1)
    lat = []
    for _ in range(300):
        k = rnd.randrange(0, tl.length + 1)
        t = time.perf_counter()
        tl.goto(k)
        lat.append(time.perf_counter() - t)
    lat.sort()
    print(f"    median {statistics.median(lat) * 1e3:.2f} ms, p99 {lat[int(len(lat) * 0.99) - 1] * 1e3:.2f} ms "
          f"over {len(lat)} random gotos in {tl.length:,} events")
    print("(d) memory per event")
    tracemalloc.start()
    s3 = load_scenario("soak")
    e3 = Engine(s3, s3.config(max_steps=50_000))
    before = tracemalloc.get_traced_memory()[0]
    e3.run()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"    in memory: {(after - before) / e3.step:.0f} bytes/event (journal as Python tuples)")
    from hvdbg.recording import header_for
    from hvdbg.trace import format as F
    from hvdbg.trace.reader import load_trace
    from hvdbg.trace.writer import TraceWriter
    import msgpack
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.hvt")
        w = TraceWriter(path, header_for(s, tl.e.cfg))
        for ev in evs:
            w.event(ev[E_ACT])
        w.close(tl.result.outcome, tl.length)
        size = os.path.getsize(path)
        print(f"(d) on disk: {size / tl.length:.2f} bytes/event ({size:,} bytes for {tl.length:,} events, "
              f"choices only; `--record` adds a 2-byte check per event and a digest every 1,000)")
        data = open(path, "rb").read()
        pos, payloads = 12, []
        while pos < len(data) - F.TAIL_SIZE:
            ln = F.FRAME_HEAD.unpack_from(data, pos)[0]
            payloads.append(data[pos + 9:pos + 9 + ln])
            pos += 9 + ln
        blob = b"".join(payloads[1:])

        def best(fn, n=3):
            ts = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return min(ts)

        def raw():
            u = msgpack.Unpacker(raw=False, use_list=False, max_buffer_size=len(blob) + 1)
            u.feed(blob)
            for _ in u:
                pass
        t_load, t_raw = best(lambda: load_trace(path)), best(raw)
        print(f"(c) load_trace {tl.length / t_load / 1e6:.2f} M events/s, raw Unpacker over the same payloads "
              f"{tl.length / t_raw / 1e6:.2f} M events/s: ratio {t_raw / t_load:.2f}; with the writes recomputed "
              f"by re-execution (what `replay` does) {1 / ex / 1e3:.0f} k events/s")


if __name__ == "__main__":
    sys.exit(main())
