"""Where hvdbg keeps its own files: one place, resolved by platformdirs (XDG on Linux:
``$XDG_STATE_HOME/hvdbg``, default ``~/.local/state/hvdbg``)."""
from __future__ import annotations

from pathlib import Path

import platformdirs


def state_dir() -> Path:
    """REPL history and crash reports (state that is not worth backing up)."""
    return platformdirs.user_state_path("hvdbg")


def history_path() -> Path:
    return state_dir() / "history"


def crash_dir() -> Path:
    return state_dir() / "crash"
