"""The `hvdbg repl` prompt: prompt_toolkit for input, rich for output, hvdbg.commands for everything else.

gdb conventions: an empty line repeats the last command (except the ones that create branches, edit
breakpoints or touch files), Ctrl-C at the prompt gives a new prompt, Ctrl-C while a command runs
stops it (continue, rcontinue, next, finish and branch re-simulations poll a ``stop`` callable) and a
second Ctrl-C raises KeyboardInterrupt in commands that do not poll, Ctrl-D or ``quit`` leaves.
"""
from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from rich.console import Console
from rich.markup import escape

from ..paths import history_path
from ..commands import ALIASES, COMMANDS, CommandError, ExpectationFailed, Session, complete, lookup
from ..render import render_output

QUIT_WORDS = ("quit", "exit", "q")
# an empty line does not repeat these (gdb's dont_repeat): they create branches, delete, or touch files
NO_REPEAT_CATEGORIES = frozenset({"what-if", "files"})
NO_REPEAT_COMMANDS = frozenset({"delete", "load", "save"})

_LAST_WORD = re.compile(r"\S*$")


def default_history_path() -> Path:
    """``$XDG_STATE_HOME/hvdbg/history``, default ``~/.local/state/hvdbg/history`` (paths.py)."""
    return history_path()


def _default_history() -> History:
    path = default_history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError:
        return InMemoryHistory()            # read-only home: keep going without a history file
    return FileHistory(str(path))


class CommandCompleter(Completer):
    """Completes with :func:`hvdbg.commands.complete`, so every front end offers the same words."""

    def __init__(self, session: Session, extra_commands=QUIT_WORDS[:2]):
        self.session = session
        self.extra_commands = tuple(extra_commands)

    def get_completions(self, document: Document, complete_event: CompleteEvent | None):
        text = document.text_before_cursor
        partial = _LAST_WORD.search(text).group()
        first_word = not text[: len(text) - len(partial)].strip()
        try:
            words = complete(self.session, text)
        except Exception:                   # a completer must never break the prompt
            return
        if first_word:
            words = list(words) + [w for w in self.extra_commands if w.startswith(partial) and w not in words]
        for w in words:
            yield Completion(w, start_position=-len(partial), display=self._display(w, first_word),
                             display_meta=self._meta(w) if first_word else None)

    @staticmethod
    def _display(word: str, first_word: bool) -> str:
        if not first_word and "/" in word.rstrip("/"):
            return os.path.basename(word.rstrip("/")) + ("/" if word.endswith("/") else "")
        return word

    @staticmethod
    def _meta(word: str) -> str:
        if word in COMMANDS:
            return COMMANDS[word].help
        if word in ALIASES:
            return f"alias of {ALIASES[word]}"
        if word in QUIT_WORDS:
            return "leave hvdbg"
        return ""


class Repl:
    """One interactive session. ``run()`` loops until Ctrl-D/quit and returns the exit status (0)."""

    def __init__(self, session: Session, *, input=None, output=None, history: History | None = None,
                 console: Console | None = None):
        self.session = session
        self.console = console if console is not None else Console()
        self.history = history if history is not None else _default_history()
        self.completer = CommandCompleter(session)
        self.last_line: str | None = None
        self._stop = False
        self._prompt = PromptSession(history=self.history, completer=self.completer, complete_while_typing=False,
                                     input=input, output=output)

    # ---- interruption (SIGINT handler and tests call interrupt()) ----
    def interrupt(self) -> None:
        """Ask the running command to stop at its next poll of ``stop``."""
        self._stop = True

    @property
    def interrupted(self) -> bool:
        return self._stop

    def _stop_requested(self) -> bool:
        return self._stop

    def _on_sigint(self, signum, frame) -> None:
        if self._stop:                      # second Ctrl-C: the command does not poll; break out hard
            raise KeyboardInterrupt
        self.interrupt()

    # ---- the loop ----
    def message(self) -> str:
        return f"(hvdbg {self.session.current}:{self.session.tl.pos}) "

    def run(self) -> int:
        self.console.print(escape(self.session.where_line()), highlight=False, soft_wrap=True)
        self.console.print("type 'help' for the commands, Ctrl-D or 'quit' to leave", style="dim", highlight=False)
        while True:
            try:
                line = self._prompt.prompt(self.message())
            except KeyboardInterrupt:
                continue
            except EOFError:
                return 0
            if line.strip() in QUIT_WORDS:
                return 0
            self.run_line(line)

    def run_line(self, line: str) -> None:
        """Run one line as typed at the prompt (an empty line repeats the last command)."""
        if not line.strip():
            if self.last_line is None:
                return
            line = self.last_line
        self._stop = False
        old = None
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            old = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            out = self.session.execute(line, stop=self._stop_requested)
        except (CommandError, ExpectationFailed) as e:
            self._error(e)
            return
        except KeyboardInterrupt:
            self.console.print("interrupted", style="yellow", highlight=False)
            self._remember(line)
            return
        except Exception:                   # one bad command never ends the session (or loses its branches)
            from ..crash import write_crash_report
            path = write_crash_report(f"repl: {line}")
            self.console.print(f"internal error in this command; crash report written to {escape(path)}; "
                               "the session goes on", style="red", highlight=False, soft_wrap=True)
            return
        finally:
            if in_main:
                signal.signal(signal.SIGINT, old)
        render_output(out, self.console)
        if self._stop and not any(isinstance(x, str) and "interrupted" in x for x in out.lines):
            self.console.print("interrupted", style="yellow", highlight=False)
        self._remember(line)

    def _error(self, e: Exception) -> None:
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        kind = "error: expectation failed" if isinstance(e, ExpectationFailed) else "error"
        self.console.print(f"{kind}: {escape(msg)}", style="red", highlight=False, soft_wrap=True)

    def _remember(self, line: str) -> None:
        head = line.split()[0] if line.split() else ""
        if head.startswith("x/"):
            head = "x"
        try:
            cmd = lookup(head)
        except CommandError:
            return
        if cmd.category in NO_REPEAT_CATEGORIES or cmd.name in NO_REPEAT_COMMANDS:
            self.last_line = None
        else:
            self.last_line = line


def run_repl(session: Session, *, input=None, output=None, history: History | None = None,
             console: Console | None = None) -> int:
    """Run the interactive prompt on ``session`` until Ctrl-D or quit; returns the exit status."""
    return Repl(session, input=input, output=output, history=history, console=console).run()
