"""TUI latency, headless (issue 5): time from a step key to the repainted screen, median and
p95, for 2, 8 and 32 vCPUs at step 0 and deep in a long trace, and the time to first paint.

Measured as the time of `App.run_action` for the bound action (the command through
hvdbg.commands plus the panes' re-render) followed by a full compositor render of the
screen (what a repaint costs); Pilot's own waits (it sleeps for idle) are not counted.
Usage: python bench/tui.py [--long 1000000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from hvdbg.commands import Session  # noqa: E402
from hvdbg.tui import HvdbgApp  # noqa: E402


async def measure(session: Session, label: str, at: int, reps: int = 60) -> None:
    app = HvdbgApp(session)
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        first = time.perf_counter() - t0
        session.tl.goto(at)
        app.refresh_all()
        times = []
        for i in range(reps):
            action = "cmd('step')" if i % 2 == 0 else "cmd('rstep')"
            t = time.perf_counter()
            await app.run_action(action)
            app.screen._refresh_layout()
            app.screen._compositor.render_update(full=True)
            times.append(time.perf_counter() - t)
        times.sort()
        med = statistics.median(times) * 1e3
        p95 = times[int(len(times) * 0.95) - 1] * 1e3
        print(f"{label:34s} at step {at:>9,}: step->repaint median {med:6.1f} ms, p95 {p95:6.1f} ms; "
              f"first paint {first * 1e3:6.0f} ms")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", type=int, default=1_000_000)
    a = ap.parse_args()
    for n in (2, 8, 32):
        s = Session.open("smp", vcpus=n, fix="gfp-zero")
        await measure(s, f"smp {n} vCPUs", 0)
    t = time.perf_counter()
    s = Session.open("soak", max_steps=a.long + 100)
    print(f"(recorded a {s.tl.length:,}-event soak trace in {time.perf_counter() - t:.1f} s)")
    await measure(s, "soak 4 vCPUs, long trace", 0)
    await measure(s, "soak 4 vCPUs, long trace", a.long)


if __name__ == "__main__":
    asyncio.run(main())
