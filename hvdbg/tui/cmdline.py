"""The `:` line: an Input with the REPL's completion (hvdbg.commands.complete, the function
the REPL's completer wraps) and the REPL's history file (prompt_toolkit's FileHistory format,
so `hvdbg repl` and the TUI share it). Its keys never reach the panes: Up/Down walk the
history, Tab completes, Esc closes."""
from __future__ import annotations

import os

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


def _history():
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    from ..paths import history_path
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        return FileHistory(str(path))
    except OSError:
        return InMemoryHistory()


def common_prefix(words: list[str]) -> str:
    return os.path.commonprefix(words) if words else ""


class CommandLine(Input):
    BINDINGS = [
        Binding("up", "history(-1)", "previous", show=False, priority=True),
        Binding("down", "history(1)", "next", show=False, priority=True),
        Binding("tab", "complete", "complete", show=False, priority=True),
        Binding("escape", "close", "close", show=False, priority=True),
    ]

    class Closed(Message):
        pass

    class Candidates(Message):
        def __init__(self, words: list[str]):
            super().__init__()
            self.words = words

    def __init__(self, session_getter, history=None, **kw):
        super().__init__(placeholder="command (Tab completes, Up/Down history, Esc closes; `help` lists them)",
                         select_on_focus=False, **kw)
        self._session = session_getter
        self._hist_store = history if history is not None else _history()
        self._hist = list(self._hist_store.load_history_strings())[::-1]   # oldest first
        self._hist_i = len(self._hist)
        self._draft = ""

    def remember(self, line: str) -> None:
        if line and (not self._hist or self._hist[-1] != line):
            self._hist.append(line)
            try:
                self._hist_store.store_string(line)
            except OSError:
                pass
        self._hist_i = len(self._hist)
        self._draft = ""

    def open(self, prefill: str = "") -> None:
        self._hist_i = len(self._hist)
        self.value = prefill
        self.cursor_position = len(prefill)

    def action_history(self, delta: int) -> None:
        if not self._hist:
            return
        if self._hist_i == len(self._hist):
            self._draft = self.value
        self._hist_i = max(0, min(len(self._hist), self._hist_i + delta))
        self.value = self._draft if self._hist_i == len(self._hist) else self._hist[self._hist_i]
        self.cursor_position = len(self.value)

    def action_complete(self) -> None:
        from ..commands import complete
        before = self.value[:self.cursor_position]
        try:
            words = complete(self._session(), before)
        except Exception:                      # a completer must never break the line
            words = []
        if not words:
            self.post_message(self.Candidates([]))
            return
        partial = before.split()[-1] if before and not before[-1].isspace() else ""
        prefix = common_prefix(words)
        add = prefix[len(partial):]
        if len(words) == 1:
            add += "" if words[0].endswith("/") else " "
        if add:
            self.insert_text_at_cursor(add)
        self.post_message(self.Candidates(words if len(words) > 1 else []))

    def action_close(self) -> None:
        self.post_message(self.Closed())
