"""Time travel at scale (issue 10), measured in one run beside a calibration loop.

Each phase runs in its own process (peak RSS from os.wait4 of that process alone):

(1) record N events of `soak` to a trace: time, events/s, peak RSS, bytes per event on disk
    and in memory (the journal's columns, snapshots and summaries; and peak RSS / N);
(2) open that trace at its last step (recording.open_at), and the TUI's first paint on it;
(3) `hvdbg show TRACE --step K` for random K: wall time of each CLI run;
(4) goto to random steps: p50 / p99 when the segment is built, and when it must be rebuilt;
(5) reverse-step and forward (redo) cost at positions 1k, 100k, 1M, 10M (when reached);
(6) replay --verify of a 1M-event trace against the time to record it.

Usage: python bench/timeline.py [--events 10000000] [--dir DIR] [--skip-tui] [--trace FILE]
(--trace: measure phases 2-5 on an existing soak trace instead of recording one; phase 6 is
skipped.)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from engine import calibration  # noqa: E402

_LAUNCHER = """
import os, sys, time
t = time.perf_counter()
pid = os.posix_spawn(sys.executable, [sys.executable, *sys.argv[2:]], os.environ)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{ru.ru_maxrss * 1024} {time.perf_counter() - t}")
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def child(args: list[str]) -> tuple[dict, int, float]:
    """Run `python args...` as its own process: (its JSON output, peak RSS bytes, seconds)."""
    fd, res = tempfile.mkstemp()
    os.close(fd)
    p = subprocess.run([sys.executable, "-c", _LAUNCHER, res, *args], capture_output=True, text=True)
    with open(res) as f:
        rss, secs = f.read().split()
    os.unlink(res)
    if p.returncode not in (0, 3, 5, 7):
        raise SystemExit(f"phase {args[:3]} failed ({p.returncode}): {p.stderr[-2000:]}")
    try:
        out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    except json.JSONDecodeError:
        out = {"stdout": p.stdout[-500:]}
    return out, int(rss), float(secs)


# ---------------------------------------------------------------- phases (run as children)
def phase_record(path: str, n: int) -> None:
    from hvdbg.core.scenario import load_scenario
    from hvdbg.recording import record
    s = load_scenario("soak")
    s.init_vars["warmup"] = 10 ** 9
    t = time.perf_counter()
    tl = record(s, s.config(max_steps=n), path)
    dt = time.perf_counter() - t
    j = tl.journal
    from hvdbg.core import snapshot as snapshots
    snap_bytes = sum(len(snapshots.encode(v)) for v in j.snaps.values())      # compressed size
    raw_snap = sum(sum(len(p) for p in v[1].values()) + sum(len(p) for p in v[2].values()) + 8 * len(v[0])
                   for v in j.snaps.values())
    summ = sum(64 * (len(v.writes) + len(v.notes)) for v in j.summaries.values())
    resident = j.codes.itemsize * len(j.codes) + j.rtpc.itemsize * len(j.rtpc) + raw_snap + summ
    print(json.dumps({"events": tl.length, "seconds": dt, "segments": len(j.snaps), "K": j.K,
                      "resident_bytes": resident, "built_events": j.built_events()}))


def phase_open(path: str) -> None:
    from hvdbg.recording import open_at
    t = time.perf_counter()
    o = open_at(path)
    dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt, "pos": o.timeline.pos, "status": o.status, "builds": o.timeline.journal.builds}))


def phase_tui(path: str) -> None:
    import asyncio
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    from hvdbg.commands import Session
    from hvdbg.tui import HvdbgApp

    async def go():
        t = time.perf_counter()
        s = Session.open(path)
        app = HvdbgApp(s)
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            app.screen._compositor.render_update(full=True)
            return time.perf_counter() - t, s.tl.pos
    dt, pos = asyncio.run(go())
    print(json.dumps({"first_paint": dt, "pos": pos}))


def phase_goto(path: str, reps: int) -> None:
    from hvdbg.recording import open_at
    o = open_at(path)
    tl = o.timeline
    j = tl.journal
    rnd = random.Random(7)
    built, rebuilt = [], []
    for _ in range(reps):
        k = rnd.randrange(0, tl.length + 1)
        b0 = j.builds
        t = time.perf_counter()
        tl.goto(k)
        dt = time.perf_counter() - t
        (rebuilt if j.builds > b0 else built).append(dt)
        # a second goto nearby in the now-built segment
        k2 = min(tl.length, max(0, k + rnd.randrange(-j.K // 2, j.K // 2)))
        if j.is_built(j.seg_start(max(0, k2 - 1))) and j.is_built(j.seg_start(max(0, min(k2, tl.length - 1)))):
            t = time.perf_counter()
            b1 = j.builds
            tl.goto(k2)
            (rebuilt if j.builds > b1 else built).append(time.perf_counter() - t)
    out = {}
    for name, xs in (("built", built), ("rebuilt", rebuilt)):
        xs.sort()
        if xs:
            out[name] = {"n": len(xs), "p50_ms": xs[len(xs) // 2] * 1e3, "p99_ms": xs[max(0, int(len(xs) * 0.99) - 1)] * 1e3,
                         "max_ms": xs[-1] * 1e3}
    # reverse-step / redo cost at positions along the trace
    costs = {}
    for pos in (1_000, 100_000, 1_000_000, 10_000_000):
        if pos + 2000 > tl.length:
            continue
        tl.goto(pos + 2000)
        t = time.perf_counter()
        for _ in range(2000):
            tl.event(-1)
        rev = (time.perf_counter() - t) / 2000
        t = time.perf_counter()
        for _ in range(2000):
            tl.event(1)
        fwd = (time.perf_counter() - t) / 2000
        costs[str(pos)] = {"reverse_us": rev * 1e6, "forward_us": fwd * 1e6}
    out["step_costs"] = costs
    print(json.dumps(out))


def phase_verify(path: str) -> None:
    from hvdbg.recording import load
    t = time.perf_counter()
    o = load(path, journal=False)
    print(json.dumps({"seconds": time.perf_counter() - t, "status": o.status}))


PHASES = {"record": phase_record, "open": phase_open, "tui": phase_tui, "goto": phase_goto, "verify": phase_verify}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--phase":
        fn = PHASES[sys.argv[2]]
        fn(sys.argv[3], *map(int, sys.argv[4:]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--skip-tui", action="store_true")
    ap.add_argument("--trace", default=None, help="an existing trace: skip (1) and (6)")
    a = ap.parse_args()
    me = os.path.abspath(__file__)
    d = a.dir or tempfile.mkdtemp(prefix="hvdbg-bench-")
    big = os.path.join(d, f"soak-{a.events}.hvt")
    cal = calibration()
    print(f"calibration loop: {cal / 1e6:.2f} M iterations/s")
    if a.trace:
        big = a.trace
        from hvdbg.trace.reader import read_footer
        n = (read_footer(big) or {}).get("events") or 1
        print(f"(1) skipped: {big} ({n:,} events, {os.path.getsize(big) / n:.2f} bytes/event on disk)")
    else:
        rec, rss, _ = child([me, "--phase", "record", big, str(a.events)])
        n = rec["events"]
        size = os.path.getsize(big)
        print(f"(1) recorded {n:,} events of soak in {rec['seconds']:.1f} s ({n / rec['seconds'] / 1e3:.0f} k "
              f"events/s, ratio to calibration {n / rec['seconds'] / cal:.4f}); peak RSS {rss / 2**20:.0f} MiB "
              f"({rss / n:.1f} bytes/event all in); journal resident {rec['resident_bytes'] / n:.1f} bytes/event "
              f"(K = {rec['K']}, {rec['segments']} snapshots, {rec['built_events']:,} events built at the end); "
              f"on disk {size / n:.2f} bytes/event ({size / 2**20:.1f} MiB)")
    op, rss, wall = child([me, "--phase", "open", big])
    print(f"(2) open_at the last step: {op['seconds']:.2f} s in-process ({wall:.2f} s wall with interpreter start), "
          f"{op['builds']} segment rebuilt, peak RSS {rss / 2**20:.0f} MiB")
    if not a.skip_tui:
        tu, rss, wall = child([me, "--phase", "tui", big])
        print(f"    TUI first paint at step {tu['pos']:,}: {tu['first_paint']:.2f} s ({wall:.2f} s wall), "
              f"peak RSS {rss / 2**20:.0f} MiB")
    rnd = random.Random(3)
    times = []
    for _ in range(5):
        k = rnd.randrange(0, n + 1)
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "hvdbg", "show", big, "--step", str(k), "--json"],
                           capture_output=True, text=True)
        times.append((time.perf_counter() - t, k, p.returncode))
    print("(3) hvdbg show --step K (wall, whole CLI run): " + ", ".join(f"K={k:,}: {s:.2f} s (exit {c})"
                                                                         for s, k, c in times))
    go, rss, _ = child([me, "--phase", "goto", big, "100"])
    for name in ("built", "rebuilt"):
        g = go.get(name)
        if g:
            print(f"(4) goto, segment {name:7s}: p50 {g['p50_ms']:.2f} ms, p99 {g['p99_ms']:.2f} ms, "
                  f"max {g['max_ms']:.1f} ms over {g['n']} gotos")
    print("(5) reverse-step / forward step: " + "; ".join(
        f"at {int(p):,}: {c['reverse_us']:.1f} us / {c['forward_us']:.1f} us" for p, c in go["step_costs"].items()))
    if a.trace:
        return
    one = os.path.join(d, "soak-1M.hvt")
    m = min(n, 1_000_000)
    rec1, _, _ = child([me, "--phase", "record", one, str(m)])
    ver, rss, _ = child([me, "--phase", "verify", one])
    print(f"(6) {m:,} events: record {rec1['seconds']:.1f} s, replay --verify {ver['seconds']:.1f} s "
          f"(ratio {ver['seconds'] / rec1['seconds']:.2f}, {ver['status']}), verify peak RSS {rss / 2**20:.0f} MiB")
    print(f"(files in {d})")


if __name__ == "__main__":
    main()
