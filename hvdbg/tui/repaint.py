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

from itertools import zip_longest

from rich.cells import cell_len
from rich.text import Text
from textual.cache import LRUCache
from textual.content import Content
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.visual import Visual
from textual.widget import Widget

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


def scroll_to(widget, x: int | None = None, y: int | None = None) -> None:
    """Scroll `widget` to (x, y) without animation: at once when the target lies within the
    scroll range it has now, else after the next refresh (Textual's default, so a pending
    layout can grow the range first). Deferring always would cost a second frame per step -
    one that redraws only the scrollbar of the event log or a listing that moved."""
    now = (x is None or x <= widget.max_scroll_x) and (y is None or y <= widget.max_scroll_y)
    widget.scroll_to(x, y, animate=False, immediate=now)


def set_titles(widget, title=NOTHING, subtitle=NOTHING) -> None:
    """Set a border title / subtitle only when it changed (Textual repaints the whole widget
    on every assignment, equal or not)."""
    last = widget.__dict__.setdefault("_hv_titles", {})
    for attr, value in (("border_title", title), ("border_subtitle", subtitle)):
        if value is not NOTHING and last.get(attr, NOTHING) != value:
            last[attr] = value
            setattr(widget, attr, value)


class TextBody(Widget):
    """The body of a text pane, drawn one line at a time (Textual's line API): a pane's
    VerticalScroll asks only for the lines it shows, each line's strip is cached by its
    content, and a new text repaints only the lines that differ - a layout only when the
    text is larger than any shown since the pane last changed size. It renders what a Static given the same
    rich Text renders (the Text becomes a textual Content, split at newlines); while the
    mouse selects text in it, it renders the whole text the way a Static does, so the
    selection shows."""

    DEFAULT_CSS = "TextBody { height: auto; }"        # as a Static

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._content = Content("")
        self._lines: list[Content] = []
        self._keys: list[tuple] = []                      # (text, spans) of each line
        # the content size (cells, lines) the body is laid out for: the largest text shown
        # since the pane last changed size (a high-water mark), so that stepping between
        # listings of different sizes repaints lines instead of laying out the screen
        self._extent = (0, 0)
        self._pane_size = None
        self._strips: LRUCache = LRUCache(1024)

    @property
    def lines(self) -> list[Content]:
        return self._lines

    def set_text(self, text: Text | str) -> None:
        if isinstance(text, str):
            text = Text(text)
        content = Content.from_rich_text(text)        # as a Static does (textual.visual.visualize)
        lines = content.split("\n", allow_blank=True)   # a trailing newline is a blank line, as in a Static
        width = max((line.cell_length for line in lines), default=0)
        keys = [(line.plain, tuple(line.spans)) for line in lines]    # Content's == compares the text only
        old, self._content, self._lines, self._keys = self._keys, content, lines, keys
        room_w, room_h = self._room()
        pane = self.parent.size if isinstance(self.parent, Widget) else None
        if pane != self._pane_size:
            size = (width, len(lines))            # a new pane size: start the high-water mark again
        else:
            size = (max(width, self._extent[0]), max(len(lines), self._extent[1]))
        before = self._laid_out(self._extent, room_w, room_h)
        self._extent, self._pane_size = size, pane
        if not self.is_mounted or self._laid_out(size, room_w, room_h) != before:
            self.refresh(layout=True)
            return
        full = max(size[0], self.size.width)
        for y, (a, b) in enumerate(zip_longest(old, keys)):
            if a != b:
                self.refresh(Region(0, y, full, 1))

    def _room(self) -> tuple[int, int]:
        """The size the parent gives this body without scrolling ((0, 0) if unknown)."""
        parent = self.parent
        if not isinstance(parent, Widget):
            return 0, 0
        r = parent.scrollable_content_region
        return r.width, r.height

    @staticmethod
    def _laid_out(size: tuple[int, int], room_w: int, room_h: int) -> tuple[int, int]:
        """The body's laid-out size for content `size` (a pane's `.body` is `width: auto;
        min-width: 100%`; get_content_height): at least the pane's width, and at least its
        height while the content fits its width (blank lines below render as a shorter
        body's background does)."""
        w, h = size
        return max(w, room_w), (max(h, room_h) if w <= room_w else h)

    def render(self) -> Content:
        return self._content            # for text selection (and its highlight)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return self._extent[0]

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self._laid_out(self._extent, *self._room())[1]

    def render_line(self, y: int) -> Strip:
        if self.text_selection is not None:
            return super().render_line(y)
        width = self.size.width
        style = self.visual_style
        if not 0 <= y < len(self._lines):
            return Strip.blank(width, style.rich_style)
        line = self._lines[y]
        key = (self._keys[y], width, style)
        strip = self._strips.get(key)
        if strip is None:
            strip = Visual.to_strips(self, line, width, 1, style)[0]
            self._strips[key] = strip
        return strip
