"""`hvdbg script FILE`: run commands from a file; `expect` lines gate CI.

Exit 0 when every expectation holds, 6 with the failing line and what was found, 2 for a
malformed script (file:line and the problem). Lines starting with `#` are comments.
"""
from __future__ import annotations

from rich.console import Console

from .commands import CommandError, ExpectationFailed, Session
from .render import render_output

EXIT_OK, EXIT_USAGE, EXIT_EXPECT = 0, 2, 6


class ScriptError(Exception):
    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code = code


def read_script(path: str) -> list[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ScriptError(EXIT_USAGE, f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        t = line.strip()
        if t and not t.startswith("#"):
            out.append((n, t))
    return out


def run_script(session: Session, path: str, lines: list[tuple[int, str]], console: Console, echo: bool = True) -> int:
    held = 0
    for n, line in lines:
        if echo:
            console.print(f"[dim]{path}:{n}:[/dim] {line}", highlight=False, markup=True)
        try:
            out = session.execute(line)
        except CommandError as e:
            raise ScriptError(EXIT_USAGE, f"{path}:{n}: {e}") from None
        except ExpectationFailed as e:
            raise ScriptError(EXIT_EXPECT, f"{path}:{n}: expectation failed: {line} ({e})") from None
        if line.split()[0] == "expect":
            held += 1
        elif echo:
            render_output(out, console)
    console.print(f"{path}: {held} expectation(s) held", highlight=False)
    return EXIT_OK
