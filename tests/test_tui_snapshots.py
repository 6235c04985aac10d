"""SVG snapshots of the main moments (pytest-textual-snapshot; update with --snapshot-update)."""
import os

import pytest

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from hvdbg.tui import HvdbgApp  # noqa: E402
from hvdbg.tui.moments import MOMENTS, play  # noqa: E402


@pytest.mark.parametrize("name,factory,steps,size", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_moment(snap_compare, name, factory, steps, size):
    app = HvdbgApp(factory())

    async def run_before(pilot):
        await play(app, pilot, steps)

    assert snap_compare(app, run_before=run_before, terminal_size=size)
