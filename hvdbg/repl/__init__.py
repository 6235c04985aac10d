"""Interactive hvdbg prompt (prompt_toolkit) over the shared command layer (hvdbg.commands)."""
from .app import CommandCompleter, Repl, default_history_path, run_repl

__all__ = ["run_repl", "Repl", "CommandCompleter", "default_history_path"]
