"""Messages the app posts to the panes (toolong's messages.py is the model): after a command
changes the position, the branch, the focused vCPU or the selection, the app tells every pane
once and each pane re-renders itself from the read-only state view. No pane reads another's
state."""
from __future__ import annotations

from textual.message import Message


class SessionChanged(Message):
    """The position, the branch or the focused vCPU may have changed (or the session was
    replaced by `load`): re-render from the session."""

    def __init__(self, branch: str, pos: int, focus: int, branches_changed: bool = False):
        super().__init__()
        self.branch, self.pos, self.focus, self.branches_changed = branch, pos, focus, branches_changed


class SelectionChanged(Message):
    """What b / a / i / y act on: ("byte", address, bit, space) | ("msr", number) |
    ("vector", (irr|isr, vector)) | ("reg", index)."""

    def __init__(self, selection: tuple):
        super().__init__()
        self.selection = selection


class LayoutChanged(Message):
    """The source view's layout: asm | src | split."""

    def __init__(self, layout: str):
        super().__init__()
        self.layout = layout
