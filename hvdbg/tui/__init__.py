"""The Textual TUI (design §6). Views never mutate state: every key, the `:` line and the
palette dispatch through hvdbg.commands."""
from .app import HvdbgApp, run_tui

__all__ = ["HvdbgApp", "run_tui"]
