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

from contextlib import contextmanager
from itertools import zip_longest
from math import ceil

from rich.cells import cell_len
from rich.text import Text
from textual._compositor import ChopsUpdate, Compositor
from textual._styles_cache import StylesCache
from textual.cache import LRUCache
from textual.content import Content
from textual.geometry import Region, Size
from textual.reactive import Reactive
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.strip import Strip
from textual.visual import Visual
from textual.widget import Widget, _RenderCache

NOTHING = object()


def thumb_cells(size: int, virtual_size: float, window_size: float, position: float) -> tuple:
    """What a scrollbar of `size` cells draws, as ScrollBar._render_bar and
    ScrollBarRender.render_bar compute it: its length and the thumb's start and end in
    eighths of a cell (no thumb: just the length). Equal results draw equal bars."""
    virtual = ceil(virtual_size)
    window = ceil(window_size) if window_size < virtual_size else 0
    if not (window and size and virtual and size != virtual):
        return (size,)
    thumb = max(1, window / (virtual / size))
    start = int((size - thumb) * (position / (virtual - window)) * 8)
    return (size, start, start + ceil(thumb * 8))


def thumb_rows(cells: tuple) -> list:
    """What each cell of a vertical bar drawn as `cells` (thumb_cells) shows, built as
    ScrollBarRender.render_bar builds its segments: "u"/"l" the track above/below the thumb
    (a click there scrolls up/down), "t" the thumb, ("s"|"e", eighths) its partial first and
    last cells. Cells with equal entries draw equal segments."""
    size = cells[0]
    if len(cells) == 1:
        return ["b"] * size
    start_index, start_bar = divmod(max(0, cells[1]), 8)
    end_index, end_bar = divmod(max(0, cells[2]), 8)
    rows: list = ["u"] * size
    rows[end_index:] = ["l"] * (size - end_index)
    rows[start_index:end_index] = ["t"] * (end_index - start_index)
    if start_index < len(rows) and start_bar:
        rows[start_index] = ("s", start_bar)
    if end_index < len(rows) and end_bar:
        rows[end_index] = ("e", end_bar)
    return rows


class ThumbScrollBar(ScrollBar):
    """A vertical scrollbar that repaints only when what it draws changes. Textual's repaints
    on every change of its position or sizes, though a thumb moves in eighths of a cell: a
    step that scrolls a million-line log by a line, or writes a line to a long transcript,
    redrew the bar's whole height (a line render per row) for the same cells."""

    window_virtual_size = Reactive(100, repaint=False)
    window_size = Reactive(0, repaint=False)
    position = Reactive(0, repaint=False)
    _drawn: tuple | None = None

    def _thumb(self) -> tuple:
        return thumb_cells(self.size.height if self.vertical else self.size.width,
                           self.window_virtual_size, self.window_size, self.position)

    _held = 0               # inside held_bar(): the decision waits for the end of it

    def repaint_moved(self) -> None:
        """Repaint the cells whose drawing changed since the last repaint (all of them if
        the bar's length changed)."""
        drawn, old = self._thumb(), self._drawn
        if drawn == old:
            return
        self._drawn = drawn
        if old is None or old[0] != drawn[0] or not self.vertical or not self.is_mounted:
            ScrollBar.refresh(self)
            return
        a, b = thumb_rows(old), thumb_rows(drawn)
        width = self.size.width
        for y in range(drawn[0]):
            if y >= len(a) or y >= len(b) or a[y] != b[y]:
                ScrollBar.refresh(self, Region(0, y, width, 1))

    def watch_window_virtual_size(self) -> None:
        if not self._held:
            self.repaint_moved()

    _bars: LRUCache | None = None

    def _render_content(self) -> None:
        """Textual renders the bar's renderable through rich on every repaint (~0.3 ms for a
        one-cell-wide bar). Its strips are a function of what render() returns (sizes,
        position, style) and the bar's size and visual style: the last few are kept, so a
        thumb that moves back and forth (a listing stepped between two routines) costs a
        lookup."""
        bar = self.render()
        if not isinstance(bar, ScrollBarRender):
            super()._render_content()
            return
        key = (bar.virtual_size, bar.window_size, bar.position, bar.thickness, bar.vertical, bar.style,
               self.size, self.visual_style)
        if self._bars is None:
            self._bars = LRUCache(8)
        strips = self._bars.get(key)
        if strips is None:
            super()._render_content()
            self._bars[key] = self._render_cache.lines
            return
        self._render_cache = _RenderCache(self.size, strips)
        self._dirty_regions.clear()

    watch_window_size = watch_position = watch_window_virtual_size

    def refresh(self, *regions, **kw):
        if self._held and not regions and not kw:
            return self             # Widget._scroll_update's unconditional refresh
        return super().refresh(*regions, **kw)


@contextmanager
def held_bar(widget):
    """Change `widget`'s scroll state (virtual size, position) in several steps with its
    vertical bar repainted at most once, at the end, if its thumb moved: a line written to
    a transcript grows it and then scrolls to the end - the thumb moves away and back."""
    bar = widget._vertical_scrollbar
    if bar.__class__ is not ThumbScrollBar:
        yield
        return
    bar._held += 1
    try:
        yield
    finally:
        bar._held -= 1
        if not bar._held:
            bar.repaint_moved()


class ThumbScrollbars:
    """Mix into a scrolling widget (before it): its vertical scrollbar is a ThumbScrollBar."""

    @property
    def vertical_scrollbar(self) -> ScrollBar:
        if self._vertical_scrollbar is None:        # as Widget.vertical_scrollbar, with our class
            self._vertical_scrollbar = bar = ThumbScrollBar(vertical=True, name="vertical",
                                                            thickness=self.scrollbar_size_vertical)
            bar.display = False
            self.app._start_widget(self, bar)
        return self._vertical_scrollbar

    def _scroll_update(self, virtual_size: Size) -> None:
        """Widget._scroll_update refreshes the vertical bar whether or not it changed."""
        with held_bar(self):
            super()._scroll_update(virtual_size)


class StableScrollbars(ThumbScrollbars):
    """Mix into a ScrollView subclass (before it): scrollbars are updated on a layout only
    when the widget's size, its container's size or its own virtual size changed; the
    vertical one repaints only when its thumb moves by a cell's eighth."""

    _laid_out_virtual: Size | None = None

    def _size_updated(self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True) -> bool:
        own = self.virtual_size
        if own == self._laid_out_virtual:
            virtual_size = own
        self._laid_out_virtual = own
        return super()._size_updated(size, virtual_size, container_size, layout)


class ShiftOnScroll:
    """Mix into a line-API ScrollView (before it): a vertical scroll by fewer rows than it
    shows keeps the lines it has rendered, moved to their new rows, and renders only the
    rows that came into view. Textual's ScrollView renders every row again on any scroll;
    the event log scrolls by a row on every step (the current event stays centred), the
    transcript by the lines each command writes. The terminal still gets every row (the
    screen's update is the widget's whole region); only Textual's line render is saved.

    A line is reused only as long as the widget draws content row y from scroll_y + y
    alone (the top `fixed_rows` rows, a header, never move): anything else that changes
    a row must refresh that row itself, after the scroll, as the event log does for the
    rows whose event changed between done and not done."""

    fixed_rows = 0

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        d = round(new_value) - round(old_value)
        keep = self._shifted_lines(d) if d and self.is_mounted else None
        super().watch_scroll_y(old_value, new_value)      # the bar; every row marked dirty
        if keep:
            cache = self._styles_cache
            cache._cache.update(keep)
            cache._dirty_lines.difference_update(keep)

    def _shifted_lines(self, d: int) -> dict | None:
        """The rendered lines still valid after scrolling by `d` rows, by their new row
        (the styles cache counts rows from the widget's top edge, border included)."""
        cache = self._styles_cache
        top = self.styles.gutter.top
        first, end = top + self.fixed_rows, top + self.size.height
        if abs(d) >= end - first:
            return None
        old, dirty = cache._cache, cache._dirty_lines
        keep = {}
        for y in range(max(first, first - d), min(end, end - d)):
            src = y + d
            if src not in dirty and (strip := old.get(src)) is not None:
                keep[y] = strip
        return keep


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
    """Set a border title / subtitle only when it changed, and repaint only the border row
    it is drawn on: Textual repaints the whole widget on every assignment, equal or not - for
    a pane that is every row of its border and background (each row costs a line render)."""
    last = widget.__dict__.setdefault("_hv_titles", {})
    for attr, value, top in (("border_title", title, True), ("border_subtitle", subtitle, False)):
        if value is not NOTHING and last.get(attr, NOTHING) != value:
            last[attr] = value
            row = _border_row(widget, top)
            if row is None:
                setattr(widget, attr, value)
                continue
            # the title descriptor calls widget.refresh() with no region: for the length of
            # the assignment that call refreshes the border row only
            widget.refresh = lambda *_, **__: type(widget).refresh(widget, row)
            try:
                setattr(widget, attr, value)
            finally:
                del widget.refresh


def _border_row(widget, top: bool) -> Region | None:
    """The widget's top or bottom outer row as a region relative to its content (what
    Widget.refresh takes), or None when the widget has no size yet or no border there."""
    if not widget.is_mounted:
        return None
    outer = widget.outer_size
    off = widget.content_offset
    if not outer or not (off.y if top else outer.height - off.y - widget.size.height):
        return None
    return Region(-off.x, -off.y if top else outer.height - 1 - off.y, outer.width, 1)


class ContentKeyedLines(StylesCache):
    """A styles cache that also remembers each finished line by what it shows: the line's
    content key (`owner.line_key(y)`), the widget's size and colours. Textual's keeps a line
    per row and renders a row again whenever its content changes, though a listing stepped
    back and forth shows the same lines again (the current op's mark moves, the lines under
    it shift). Only for a widget drawn without border, outline, padding, hatch, tint or
    opacity (a pane's TextBody): then a line's strip is a function of the key alone; anything
    else takes Textual's path."""

    def __init__(self, owner) -> None:
        super().__init__()
        self._owner = owner
        self._by_content: LRUCache = LRUCache(2048)

    def render_line(self, styles, y, size, content_size, padding, base_background, background, render_content_line,
                    border_title, border_subtitle, opacity, ansi_theme, native_ansi):
        args = (styles, y, size, content_size, padding, base_background, background, render_content_line,
                border_title, border_subtitle, opacity, ansi_theme, native_ansi)
        line = self._owner.line_key(y)
        if (line is None or opacity != 1.0 or styles.gutter.totals != (0, 0) or styles.tint.a
                or styles.has_rule("hatch") or any(edge for edge, _ in styles.outline)):
            return super().render_line(*args)
        key = (line, size, content_size, base_background, background, styles.text_opacity, id(ansi_theme),
               native_ansi)
        strip = self._by_content.get(key)
        if strip is None:
            strip = self._by_content[key] = super().render_line(*args)
        return strip


class TextBody(Widget):
    """The body of a text pane, drawn one line at a time (Textual's line API): a pane's
    VerticalScroll asks only for the lines it shows, each finished line is kept by its
    content (ContentKeyedLines, its styles cache), and a new text repaints only the lines
    that differ - a layout only when the text is larger than any shown since the pane last
    changed size. It renders what a Static given the same
    rich Text renders (the Text becomes a textual Content, split at newlines); while the
    mouse selects text in it, it renders the whole text the way a Static does, so the
    selection shows."""

    DEFAULT_CSS = "TextBody { height: auto; }"        # as a Static

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._content: Content | None = Content("")
        self._lines: list[Content] = []
        self._keys: list[tuple] = []                      # (text, spans, style) of each line
        # the content size (cells, lines) the body is laid out for: the largest text shown
        # since the pane last changed size (a high-water mark), so that stepping between
        # listings of different sizes repaints lines instead of laying out the screen
        self._extent = (0, 0)
        self._pane_size = None
        self._converted: LRUCache = LRUCache(4096)       # line key -> its Content
        self._styles_cache = ContentKeyedLines(self)

    @property
    def lines(self) -> list[Content]:
        return self._lines

    def set_text(self, text: Text | str | list[Text]) -> None:
        """Show a rich Text (or its lines, as Texts without newlines). Each line becomes a
        textual Content as a Static makes it (textual.visual.visualize: Content.from_rich_text
        of the whole text, split at newlines - a trailing newline is a blank line); a line
        seen before is not converted again (a step changes a few lines of a listing)."""
        if isinstance(text, str):
            text = Text(text)
        rich_lines = text.split("\n", allow_blank=True) if isinstance(text, Text) else text
        converted = self._converted
        keys, lines = [], []
        for line in rich_lines:
            key = (line.plain, tuple(line.spans), line.style)
            content = converted.get(key)
            if content is None:
                content = Content.from_rich_text(line)
                converted[key] = content
            keys.append(key)
            lines.append(content)
        width = max((line.cell_length for line in lines), default=0)
        old, self._content, self._lines, self._keys = self._keys, None, lines, keys
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
        start = -1                          # a run of changed lines is one region
        for y, (a, b) in enumerate(zip_longest(old, keys)):
            if a != b:
                if start < 0:
                    start = y
            elif start >= 0:
                self.refresh(Region(0, start, full, y - start))
                start = -1
        if start >= 0:
            self.refresh(Region(0, start, full, max(len(old), len(keys)) - start))

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
        """The whole text (Textual takes a mouse selection's highlight and copy from it)."""
        if self._content is None:
            self._content = Content("\n").join(self._lines)
        return self._content

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return self._extent[0]

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self._laid_out(self._extent, *self._room())[1]

    def line_key(self, y: int) -> tuple | None:
        """What line y shows, as far as its strip goes (None: not a line of the text, or
        a mouse selection is being shown)."""
        if self.text_selection is not None or not 0 <= y < len(self._keys):
            return None
        return self._keys[y], self.visual_style

    def render_line(self, y: int) -> Strip:
        if self.text_selection is not None:
            return super().render_line(y)
        width = self.size.width
        style = self.visual_style
        if not 0 <= y < len(self._lines):
            return Strip.blank(width, style.rich_style)
        return Visual.to_strips(self, self._lines[y], width, 1, style)[0]


class DirtyOnlyCompositor(Compositor):
    """Textual's compositor, rendering for a partial update only the widgets under a dirty
    region, and of each only the rows a dirty region crosses. Textual renders every widget
    that overlaps the box around all dirty regions - for a step, whose changes are spread
    over the screen (a listing, the event log, the transcript, the status line), that is
    every widget, each over all its visible lines (from its cache, each line filtered and cut
    into the screen's chops) - and then writes only the chops inside the dirty spans. A
    widget has no written chop in a row where it overlaps no dirty region, so leaving those
    rows out writes the same update (a test compares the two on random regions).
    Installed on a screen with `use_on(screen)`. Leans on `render_partial_update` and
    `_get_renders` of the pinned Textual (pyproject.toml)."""

    _under: list | None = None

    @classmethod
    def use_on(cls, screen) -> None:
        screen._compositor.__class__ = cls

    def render_partial_update(self) -> ChopsUpdate | None:
        self._under = list(self._dirty_regions)
        try:
            return super().render_partial_update()
        finally:
            self._under = None

    def _get_renders(self, crop: Region | None = None):
        under = self._under
        if not crop or not under:
            yield from super()._get_renders(crop)
            return
        for widget, (region, clip) in self.visible_widgets.items():
            shown = region.intersection(clip)
            if not shown:
                continue
            top = bottom = None
            for r in under:
                if shown.overlaps(r):
                    a, b = max(shown.y, r.y), min(shown.bottom, r.bottom)
                    top, bottom = (a, b) if top is None else (min(top, a), max(bottom, b))
            if top is None:
                continue
            # only the rows a dirty region crosses: in the others no chop of this widget is
            # written, so none needs its line rendered, filtered and cut
            rows = Region(shown.x, top, shown.width, bottom - top)
            yield region, rows, widget.render_lines(Region(rows.x - region.x, top - region.y, rows.width, rows.height))
