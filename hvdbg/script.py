"""`hvdbg script FILE`: run commands from a file; `expect` lines gate CI.

Exit 0 when every expectation holds, 6 with the failing line and what was found, 2 for a
malformed script (file:line and the problem). Lines starting with `#` are comments.
"""
from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text

from .commands import CommandError, ExpectationFailed, Session
from .render import render_output
from .safe import printable, read_text

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_EXPECT, EXIT_SALVAGED = 0, 1, 2, 6, 8


class ScriptError(Exception):
    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code = code


MAX_SCRIPT_BYTES = 1 << 20


def read_script(path: str) -> list[tuple[int, str]]:
    try:
        text = read_text(path, MAX_SCRIPT_BYTES, "script")
    except UnicodeDecodeError as e:
        raise ScriptError(EXIT_USAGE, f"{printable(path)}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ScriptError(EXIT_USAGE, f"{printable(path)}: cannot read: "
                                      f"{getattr(e, 'why', None) or getattr(e, 'strerror', None) or e}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        t = line.strip()
        if t and not t.startswith("#"):
            out.append((n, t))
    return out


def run_script(session: Session, path: str, lines: list[tuple[int, str]], console: Console, echo: bool = True) -> int:
    """Exit 0 when every expectation held, 6 at the first that did not, 2 for a malformed
    line, 1 if a command hit an internal error (reported with a crash file; the script goes
    on), 8 when everything held but the session is a salvaged (cut or damaged) trace."""
    held = 0
    crashed = 0
    shown = printable(path)
    for n, line in lines:
        if echo:
            console.print(Text.assemble((f"{shown}:{n}: ", "dim"), printable(line, 1000)), highlight=False)
        try:
            out = session.execute(line)
        except CommandError as e:
            raise ScriptError(EXIT_USAGE, f"{shown}:{n}: {printable(str(e), 400)}") from None
        except ExpectationFailed as e:
            raise ScriptError(EXIT_EXPECT, f"{shown}:{n}: expectation failed: {printable(line, 200)} ({e})") from None
        except Exception:
            from .crash import write_crash_report
            report = write_crash_report(f"{shown}:{n}: {line}")
            crashed += 1
            print(f"hvdbg: {shown}:{n}: internal error in this command; crash report written to {report}; "
                  "the script goes on", file=sys.stderr)
            continue
        if line.split()[0] == "expect":
            held += 1
        elif echo:
            render_output(out, console)
    console.print(f"{shown}: {held} expectation(s) held", highlight=False)
    if crashed:
        return EXIT_INTERNAL
    if session.salvaged:
        sv = session.salvaged
        raise ScriptError(EXIT_SALVAGED, f"{printable(session.trace_path)}: the expectations held on a salvaged trace "
                                         f"(cut or damaged at byte {sv.get('offset')}: {sv.get('reason')}); only its "
                                         "recovered prefix was checked")
    return EXIT_OK
