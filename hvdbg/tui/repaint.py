"""Helpers that keep a step's repaint small (issue 11): Textual repaints what it is told
changed, so the panes tell it only that.

StableScrollbars: Textual's ScrollView._size_updated compares the virtual size the
compositor computed (a line-API widget has no children: it is never the widget's own)
with the widget's, so on every layout of the screen each ScrollView re-renders its
scrollbars even when nothing about it changed - a RichLog's write lays the screen out, so
that was every step. The mixin hands Textual the widget's own virtual size when that has not
changed since the last layout; when it has, Textual sees what it always did. textual is
pinned exactly (pyproject.toml): this leans on ScrollView._size_updated's signature."""
from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.geometry import Size

NOTHING = object()


class StableScrollbars:
    """Mix into a ScrollView subclass (before it): scrollbars are updated on a layout only
    when the widget's size, its container's size or its own virtual size changed."""

    _laid_out_virtual: Size | None = None

    def _size_updated(self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True) -> bool:
        own = self.virtual_size
        if own == self._laid_out_virtual:
            virtual_size = own
        self._laid_out_virtual = own
        return super()._size_updated(size, virtual_size, container_size, layout)


def text_dims(text: Text) -> tuple[int, int]:
    """(lines, widest line in cells) of a no-wrap Text: all the size of a `width: auto`,
    `height: auto` body depends on."""
    lines = text.plain.split("\n")
    return len(lines), max(map(cell_len, lines))


def set_titles(widget, title=NOTHING, subtitle=NOTHING) -> None:
    """Set a border title / subtitle only when it changed (Textual repaints the whole widget
    on every assignment, equal or not)."""
    last = widget.__dict__.setdefault("_hv_titles", {})
    for attr, value in (("border_title", title), ("border_subtitle", subtitle)):
        if value is not NOTHING and last.get(attr, NOTHING) != value:
            last[attr] = value
            setattr(widget, attr, value)
