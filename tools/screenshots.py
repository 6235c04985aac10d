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


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots")
    out.mkdir(exist_ok=True)
    for name, factory, steps, size in MOMENTS:
        asyncio.run(shoot(name, factory, steps, size, out))
        print(f"{out}/{name}.svg")


if __name__ == "__main__":
    main()
