"""The main moments of the seed story as (name, session factory, keys/lines, size): used by the
snapshot tests and by `make screenshots`, so both show the real app in the same states, at
the three terminal sizes the layout is built for (80x24, 120x40, 200x60)."""
from __future__ import annotations

from ..commands import Session
from ..core.packs import DEFAULT_PACK, get

MERGED_FIX = next(iter(get(DEFAULT_PACK).fixes))     # the seed pack's merged fix (its first)
SEED_STORY = [":break skip", "1", ":goto 0", "c"]

MOMENTS = [
    ("start", lambda: Session.open("cpu-offline"), [":goto 0", "1"], (120, 40)),
    ("mid-run", lambda: Session.open("cpu-offline"), [":goto 700", "1", "s", "s"], (120, 40)),
    ("hang-explained", lambda: Session.open("cpu-offline"), ["1", "y"], (120, 40)),
    ("skipped-eoi", lambda: Session.open("cpu-offline"), SEED_STORY, (200, 60)),
    ("what-if-branch", lambda: Session.open("cpu-offline"),
     SEED_STORY + ["E", "x", ":goto 1100", "equals_sign", ":diff main"], (200, 60)),
    ("source-view", lambda: Session.open("cpu-offline"), SEED_STORY + ["L"], (200, 60)),
    ("four-vcpus", lambda: Session.open("smp", fix=MERGED_FIX), [":goto 1500", "2"], (160, 50)),
    ("thirty-two-vcpus", lambda: Session.open("smp", vcpus=32, fix=MERGED_FIX, max_steps=4000),
     [":goto 3000", ":focus cpu31"], (200, 60)),
    ("terminal-80x24", lambda: Session.open("cpu-offline"), SEED_STORY, (80, 24)),
    ("terminal-80x24-memory", lambda: Session.open("cpu-offline"), SEED_STORY + ["f4"], (80, 24)),
]


async def play(app, pilot, steps) -> None:
    app.synchronous = True                 # commands in the foreground: deterministic screens
    for st in steps:
        if st.startswith(":"):
            await pilot.press("colon")
            app.query_one("#cmdline").value = st[1:]
            await pilot.press("enter")
        else:
            await pilot.press(st)
        await app.workers.wait_for_complete()
        await pilot.pause()
    app.clear_notifications()
    await pilot.pause()
