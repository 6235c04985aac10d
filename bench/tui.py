"""TUI latency, headless (issues 5 and 11): time from a step key to the repainted screen, median
and p95, for 2, 8 and 32 vCPUs at step 0 and deep in a long trace; one page of the event log
of the long trace scrolled and repainted; the time to first paint. Each figure is also given
as a ratio to the calibration loop of bench/engine.py (a million iterations) timed in the
same run, so runs on different machines compare.

step->repaint is the CPU time of the UI thread (time.thread_time: sleeps are not counted,
nor other processes on the machine) from `App.run_action` of the bound action (the command
through hvdbg.commands) until the step's frame is written: every pane has updated, Textual
has done what it does on screen - a layout if a widget asked for one, the render of the dirty
regions - plus the serialisation of that update to terminal escape sequences (headless
Textual skips that write; the bench does it). The event loop runs until every widget's
message queue has stayed empty for three turns, then the screen draws its frame as its
update timer would (`_timed_lean`); an untimed Pilot pause after each step checks that no
frame was left for later ("frames left": 0 means the figure is the whole step).
"with Pilot's pause" is the same step timed until Pilot's pause returns instead, the figure
this bench printed as step->repaint until 2026-12: the pause adds its own bookkeeping (a
callback through every widget's queue and an idle wait, 3-5 ms, printed as "idle pause") and
scatters by +-5 ms between runs. "frames/step" counts the frames Textual drew for a step (a
second frame means something scrolled or laid out after the first).
"full render" is, after that, a forced layout of the whole screen and a render of every cell
(`_refresh_layout()` + `render_update(full=True)`: what a resize costs; the figure this bench
printed before, when the panes' SessionChanged handlers did not run inside the timed window).
first paint: from App() to the first screen after mount (run_test's start-up included).
--instructions counts instead the instructions per step->repaint under valgrind
(deterministic: the machine's load does not move it; ~1 min per configuration): the
figure to compare two versions of the code by when the machine's speed drifts.
Usage: python bench/tui.py [--long 1000000] [--instructions]
"""
from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
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
    """A forced layout of the whole screen and a render of every cell."""
    app.screen._refresh_layout()
    app.screen._compositor.render_update(full=True)


def _write_updates(app) -> None:
    """Headless Textual renders the dirty regions but skips turning the update into the
    terminal's escape sequences: do that here, so it is counted."""
    from textual._compositor import CompositorUpdate
    display = app._display

    def _display(screen, renderable) -> None:
        if isinstance(renderable, CompositorUpdate):
            renderable.render_segments(app.console)
        display(screen, renderable)
    app._display = _display


async def _timed(pilot, act) -> float:
    """UI-thread CPU time of act() (a coroutine function or a function) and of everything
    Textual does until the screen is repainted."""
    t = time.thread_time()
    r = act()
    if asyncio.iscoroutine(r):
        await r
    await pilot.pause()
    return time.thread_time() - t


async def _timed_lean(app, act, widgets: list) -> tuple[float, int]:
    """UI-thread CPU time of act() and of what the app then does until its frame is written,
    without Pilot's pause: that visits every widget (a callback through each one's message
    queue, then an idle wait), bookkeeping a real session does not do. Here the event loop
    runs until every widget's message queue has stayed empty for three turns (the CPU time
    of those checks is subtracted), then the screen draws its frame as its update timer would
    (Screen._on_timer_update, which Pilot's pause ends with too). Returns (seconds, frames
    drawn by an untimed Pilot pause right after: 0 if nothing was left undone)."""
    t = time.thread_time()
    r = act()
    if asyncio.iscoroutine(r):
        await r
    checks = 0.0
    quiet = 0
    for _ in range(10_000):
        await asyncio.sleep(0)
        c = time.thread_time()
        quiet = quiet + 1 if not any(w.message_queue_size for w in widgets) else 0
        checks += time.thread_time() - c
        if quiet >= 3:
            break
    app.screen._on_timer_update()
    return time.thread_time() - t - checks


def _count_frames(app) -> list:
    """A one-element list counting the screen's compositor refreshes (frames drawn)."""
    n = [0]
    screen = app.screen
    refresh = screen._compositor_refresh

    def counted() -> None:
        n[0] += 1
        refresh()
    screen._compositor_refresh = counted
    return n


def _action(i: int) -> str:
    """The i-th timed action: a step, then back, so every one starts from the same places."""
    return "cmd('step')" if i % 2 == 0 else "cmd('rstep')"


@asynccontextmanager
async def _opened(session: Session, at: int):
    """The app on `session` at 160x50, its updates serialised, the timeline at step `at`:
    (app, pilot, seconds from App() to the first screen)."""
    app = HvdbgApp(session)
    app.synchronous = True              # the command in the foreground: its whole cost is timed
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        first = time.perf_counter() - t0
        _write_updates(app)
        session.tl.goto(at)
        app.refresh_all()
        await pilot.pause()
        yield app, pilot, first


async def measure(session: Session, label: str, at: int, reps: int = 60, scroll: bool = False) -> None:
    async with _opened(session, at) as (app, pilot, first):
        frames = _count_frames(app)
        idle = [await _timed(pilot, lambda: None) for _ in range(20)]
        times, full = [], []
        drawn = 0
        for i in range(reps + 4):
            action = _action(i)
            f0 = frames[0]
            dt = await _timed(pilot, lambda: app.run_action(action))
            if i >= 4:                      # the first ones warm caches
                drawn += frames[0] - f0
                times.append(dt)
        # the same steps timed to the frame, without Pilot's bookkeeping; an untimed Pilot
        # pause after each checks that nothing was left for a later frame
        widgets = [app, *app.screen.walk_children(with_self=True)]
        lean, late = [], 0
        for i in range(reps + 4):
            action = _action(i)
            dt = await _timed_lean(app, lambda: app.run_action(action), widgets)
            f0 = frames[0]
            await pilot.pause()
            if i >= 4:
                lean.append(dt)
                late += frames[0] - f0
        # the forced full renders in a loop of their own: one between two steps would leave the
        # next step a frame of its own to draw (scrollbars after the forced layout)
        for _ in range(reps):
            t = time.perf_counter()
            _repaint(app)
            full.append(time.perf_counter() - t)
            await pilot.pause()
        print(f"{label:26s} at step {at:>9,}: step->repaint {_stats(lean)}; frames left: {late}")
        print(f"{label:26s} at step {at:>9,}: with Pilot's pause {_stats(times)}, {drawn / reps:.2f} frames/step; "
              f"full render {_stats(full)}; idle pause {statistics.median(idle) * 1e3:.1f} ms; "
              f"first paint {first * 1e3:6.0f} ms")
        if scroll:
            ev = app.query_one("#events")
            ev.focus()
            await pilot.pause()
            times = []
            for i in range(reps):
                times.append(await _timed(pilot, lambda: ev.action_page(-1 if i % 2 == 0 else 1)))
            print(f"{label:26s} at step {at:>9,}: event log page scroll->repaint {_stats(times)}")


def _session(vcpus: int, at: int) -> Session:
    """vcpus > 0: smp with that many vCPUs; 0: a soak recording reaching step `at`."""
    if vcpus:
        return Session.open("smp", vcpus=vcpus, fix="gfp-zero")
    return Session.open("soak", max_steps=at + 100)


async def _steps(vcpus: int, at: int, reps: int) -> None:
    """The step->repaint steps, untimed (run under valgrind by --instructions)."""
    async with _opened(_session(vcpus, at), at) as (app, pilot, _):
        widgets = [app, *app.screen.walk_children(with_self=True)]
        for i in range(reps + 10):
            await _timed_lean(app, lambda: app.run_action(_action(i)), widgets)


def instructions(vcpus: int, at: int) -> int:
    """Instructions per step (valgrind's count, independent of the machine's load): the
    difference between 80 and 20 steps of the lean measure, so start-up cancels out. The
    count includes the lean measure's own queue checks (a few percent)."""
    import re
    import subprocess
    counts = []
    for reps in (20, 80):
        p = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                            sys.executable, os.path.abspath(__file__), "--child-steps", str(vcpus), str(at), str(reps)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        m = re.search(r"I\s+refs:\s+([\d,]+)", p.stderr)
        if p.returncode or not m:
            sys.exit(f"valgrind run failed ({p.returncode}):\n{p.stderr[-2000:]}")
        counts.append(int(m.group(1).replace(",", "")))
    return (counts[1] - counts[0]) // 60


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", type=int, default=1_000_000)
    ap.add_argument("--instructions", action="store_true",
                    help="instead: instructions per step under valgrind (2, 8, 32 vCPUs at step 0; soak at step 20,000)")
    ap.add_argument("--child-steps", nargs=3, type=int, metavar=("VCPUS", "AT", "REPS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_steps:
        await _steps(*a.child_steps)
        return
    if a.instructions:
        import shutil
        if not shutil.which("valgrind"):
            sys.exit("--instructions needs valgrind (apt-get install valgrind)")
        for vcpus, at, label in ((2, 0, "smp 2 vCPUs"), (8, 0, "smp 8 vCPUs"), (32, 0, "smp 32 vCPUs"),
                                 (0, 20_000, "soak 4 vCPUs")):
            print(f"{label:26s} at step {at:>9,}: {instructions(vcpus, at) / 1e6:6.2f} M instructions per step->frame")
        return
    global CAL
    CAL = 1e6 / calibration()
    print(f"calibration: a million iterations of bench/engine.py's loop in {CAL * 1e3:.1f} ms (1 cal)")
    for n in (2, 8, 32):
        await measure(_session(n, 0), f"smp {n} vCPUs", 0)
    t = time.perf_counter()
    s = Session.open("soak", max_steps=a.long + 100)
    print(f"(recorded a {s.tl.length:,}-event soak trace in {time.perf_counter() - t:.1f} s)")
    await measure(s, "soak 4 vCPUs, long trace", 0)
    await measure(s, "soak 4 vCPUs, long trace", a.long, scroll=True)


if __name__ == "__main__":
    asyncio.run(main())
