"""TUI latency, headless (issues 5 and 11): time from a step key to the repainted screen, median
and p95, for 2, 8 and 32 vCPUs at step 0 and deep in a long trace; one page of the event log
of the long trace scrolled and repainted; the time to first paint. Each figure is also given
as a ratio to the calibration loop of bench/engine.py (a million iterations) timed in the
same run, so runs on different machines compare.

Measured as the time of `App.run_action` for the bound action (the command through
hvdbg.commands plus the panes' re-render) followed by a full compositor render of the
screen (what a repaint costs); Pilot's own waits (it sleeps for idle) are not counted.
Usage: python bench/tui.py [--long 1000000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import statistics
import time

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine import calibration  # noqa: E402  (bench/engine.py's loop)
from hvdbg.commands import Session  # noqa: E402
from hvdbg.tui import HvdbgApp  # noqa: E402


CAL = 0.0                          # seconds for a million iterations of the calibration loop


def _stats(times: list[float]) -> str:
    times.sort()
    med = statistics.median(times)
    p95 = times[max(0, int(len(times) * 0.95) - 1)]
    return f"median {med * 1e3:6.1f} ms ({med / CAL:5.2f} cal), p95 {p95 * 1e3:6.1f} ms"


def _repaint(app) -> None:
    app.screen._refresh_layout()
    app.screen._compositor.render_update(full=True)


async def measure(session: Session, label: str, at: int, reps: int = 60, scroll: bool = False) -> None:
    app = HvdbgApp(session)
    app.synchronous = True              # the command in the foreground: its whole cost is timed
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
            _repaint(app)
            times.append(time.perf_counter() - t)
        print(f"{label:30s} at step {at:>9,}: step->repaint {_stats(times)}; first paint {first * 1e3:6.0f} ms")
        if scroll:
            ev = app.query_one("#events")
            ev.focus()
            await pilot.pause()
            times = []
            for i in range(reps):
                t = time.perf_counter()
                ev.action_page(-1 if i % 2 == 0 else 1)
                _repaint(app)
                times.append(time.perf_counter() - t)
            print(f"{label:30s} at step {at:>9,}: event log page scroll+repaint {_stats(times)}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", type=int, default=1_000_000)
    a = ap.parse_args()
    global CAL
    CAL = 1e6 / calibration()
    print(f"calibration: a million iterations of bench/engine.py's loop in {CAL * 1e3:.1f} ms (1 cal)")
    for n in (2, 8, 32):
        s = Session.open("smp", vcpus=n, fix="gfp-zero")
        await measure(s, f"smp {n} vCPUs", 0)
    t = time.perf_counter()
    s = Session.open("soak", max_steps=a.long + 100)
    print(f"(recorded a {s.tl.length:,}-event soak trace in {time.perf_counter() - t:.1f} s)")
    await measure(s, "soak 4 vCPUs, long trace", 0)
    await measure(s, "soak 4 vCPUs, long trace", a.long, scroll=True)


if __name__ == "__main__":
    asyncio.run(main())
