"""Regenerate screenshots/*.svg from the real app (make screenshots)."""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from hvdbg.tui import HvdbgApp  # noqa: E402
from hvdbg.tui.moments import MOMENTS, play  # noqa: E402


async def shoot(name, factory, steps, size, out: Path) -> None:
    app = HvdbgApp(factory())
    async with app.run_test(size=size) as pilot:
        await play(app, pilot, steps)
        app.save_screenshot(filename=f"{name}.svg", path=str(out))


async def shoot_imported(out: Path) -> None:
    """A host KVM trace with a stuck vector (the fixture), at the event that left 0xfb pending."""
    from hvdbg.trace_import import import_trace
    from hvdbg.tui.imported import ImportedApp
    tr = import_trace([str(Path(__file__).parent.parent / "tests/fixtures/import/host-stuck.trace-cmd.txt")])
    app = ImportedApp(tr)
    async with app.run_test(size=(160, 45)) as pilot:
        for _ in range(42):
            await pilot.press("s")
        await pilot.pause()
        app.save_screenshot(filename="imported-host-trace.svg", path=str(out))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots")
    out.mkdir(exist_ok=True)
    for name, factory, steps, size in MOMENTS:
        asyncio.run(shoot(name, factory, steps, size, out))
        print(f"{out}/{name}.svg")
    asyncio.run(shoot_imported(out))
    print(f"{out}/imported-host-trace.svg")


if __name__ == "__main__":
    main()
