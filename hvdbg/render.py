"""Render command Outputs with rich (shared by the REPL and scripts; the TUI renders the same data)."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def render_output(out, console: Console) -> None:
    for line in out.lines:
        if isinstance(line, str):
            console.print(escape(line), highlight=False, soft_wrap=True)
        else:
            console.print(line)
