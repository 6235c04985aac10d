"""EventLogView: every event of a timeline (a million rows and more) in a virtualised list,
for time travel.

Textual's line API (a ScrollView with ``render_line`` and ``virtual_size``, as toolong's
LogLines): only visible rows are rendered, each from ``rows.event_row`` (the journal's
columns, never a segment rebuild). The widget never moves the timeline: Enter posts
``EventLogView.GotoStep(step)`` and the app moves; the app calls ``follow(pos)`` when the
position changes.

Line 0 is a fixed header: the event count, the position, the query and filter state, the
last message (a search error, "no match") - and, while a search is typed after ``/``, the
prompt itself. Rows: a gutter (``>`` on the last event done, the names of marks set at
that step), then the row text; the last event done is highlighted, events not done yet
are dimmed, rows matching the query are coloured, the selection is reversed.
"""
from __future__ import annotations

import bisect
from array import array
from typing import Mapping

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from . import rows as R
from .repaint import ShiftOnScroll, StableScrollbars, scroll_to

HEADER = 1
MAX_MARK_WIDTH = 12


class EventLogView(ShiftOnScroll, StableScrollbars, ScrollView, can_focus=True):
    """A virtualised list of every event of a timeline (module doc)."""
    ALLOW_MAXIMIZE = True
    fixed_rows = HEADER

    BINDINGS = [
        Binding("up", "cursor(-1)", "previous event", show=False),
        Binding("down", "cursor(1)", "next event", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "first", "first event", show=False),
        Binding("end", "last", "last event", show=False),
        Binding("enter", "goto", "go to event"),
        Binding("slash", "search", "search"),
        Binding("n", "next_match(1)", "next match"),
        Binding("N", "next_match(-1)", "previous match"),
        Binding("f", "toggle_filter", "filter"),
    ]

    COMPONENT_CLASSES = {
        "eventlog--header",
        "eventlog--prompt",
        "eventlog--error",
        "eventlog--current",
        "eventlog--cursor",
        "eventlog--future",
        "eventlog--match",
        "eventlog--mark",
    }

    DEFAULT_CSS = """
    EventLogView {
        height: 1fr;
        overflow: auto auto;
        & > .eventlog--header { background: $boost; text-style: bold; }
        & > .eventlog--prompt { background: $boost; color: $warning; text-style: bold; }
        & > .eventlog--error { background: $boost; color: $error; text-style: bold; }
        & > .eventlog--current { background: $accent 40%; text-style: bold; }
        & > .eventlog--cursor { text-style: reverse; }
        & > .eventlog--future { color: $text-muted; }
        & > .eventlog--match { color: $success; }
        & > .eventlog--mark { color: $warning; text-style: bold; }
    }
    """

    class GotoStep(Message):
        """The user asked to go to `step` (= the selected event's index + 1: the position
        after that event). The widget does not move the timeline."""

        def __init__(self, log: "EventLogView", step: int) -> None:
            super().__init__()
            self.log = log
            self.step = step

        @property
        def control(self) -> "EventLogView":
            return self.log

    def __init__(self, timeline=None, marks: Mapping[str, int] | None = None, *, name: str | None = None,
                 id: str | None = None, classes: str | None = None, disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._tl = None
        self._n = 0                          # events known (len of the journal)
        self._sel = 0                        # selected event index
        self._query: R.Query | None = None
        self._filter: array | None = None    # matching event indexes while filtering
        self._prompt: str | None = None      # text typed after "/" (None: no prompt)
        self._message = ""
        self._message_error = False
        self._marks: dict[int, str] = {}     # row index -> mark names
        self._mark_w = 0
        self._row_w = 0
        self._rows: LRUCache[int, str] = LRUCache(4096)
        # finished row strips by everything they show: a step scrolls the log by a row, and
        # all but one of the rows it then repaints were drawn a step before
        self._strips: LRUCache[tuple, Strip] = LRUCache(1024)
        self._followed: int | None = None            # the position follow() last showed
        self._styles: dict = {}
        self._pending_center: int | None = None
        if timeline is not None:
            self.set_timeline(timeline)
        if marks:
            self.set_marks(marks)

    # ---------------------------------------------------------------- public API
    @property
    def timeline(self):
        return self._tl

    @property
    def selected(self) -> int:
        """The selected event index."""
        return self._sel

    @property
    def query(self) -> R.Query | None:
        return self._query

    @property
    def filtered(self) -> bool:
        return self._filter is not None

    @property
    def shown(self) -> int:
        """Rows shown (matches while filtering, else every event)."""
        return len(self._filter) if self._filter is not None else self._n

    def row_event(self, row: int) -> int:
        """The event index shown on display row `row`."""
        return self._filter[row] if self._filter is not None else row

    def set_timeline(self, timeline, pos: int | None = None) -> None:
        """Show `timeline` (a branch switch): caches dropped, the query kept (and the filter
        recomputed), the selection on its last event done. The same timeline again costs
        only a follow() (cheap to call on every position change)."""
        if timeline is self._tl:
            self.follow(timeline.pos if pos is None else pos)
            return
        self._tl = timeline
        self._rows.clear()
        self._followed = None               # another timeline: every row repaints
        self._n = len(timeline.journal)
        self._row_w = R.row_width_bound(timeline)
        if self._filter is not None and self._query is not None:
            self._filter = R.matches(timeline, self._query)
        self._update_virtual_size()
        self.follow(timeline.pos if pos is None else pos)

    def set_marks(self, marks: Mapping[str, int]) -> None:
        """Marks (name -> step, as Session.marks): a mark at step s is shown in the gutter of
        row s - 1 (the event whose GotoStep is s; a mark at step 0 has no row)."""
        by: dict[int, list[str]] = {}
        for name, step in marks.items():
            if isinstance(step, int) and step > 0:
                by.setdefault(step - 1, []).append(str(name))
        shown = {k: ",".join(v) for k, v in by.items()}
        if shown == self._marks:
            return                      # the app says it after every command
        self._marks = shown
        self._mark_w = min(MAX_MARK_WIDTH, max((len(t) for t in self._marks.values()), default=0))
        self._update_virtual_size()
        self.refresh()

    def follow(self, pos: int, select: bool = True) -> None:
        """The timeline is at `pos`: highlight event pos - 1 (the last one done), centre it
        and (select=True) select it. While filtering, the nearest shown event at or before
        it is centred and selected."""
        self._sync_length()
        i = max(0, min(pos - 1, self._n - 1))
        row = self._row_of(i)
        before = (self._followed, self._sel, self.scroll_x, self._n)
        if select and self.shown:
            self._sel = self.row_event(row)
        self._center(row)
        self._followed = pos
        self._refresh_moved(before)

    def _refresh_moved(self, before: tuple) -> None:
        """Repaint what a move of the position changed: the header, and the rows whose event
        changed between done and not done, was or is the selection (a scroll has moved the
        other rows already: ShiftOnScroll). All rows when the length changed or the move is
        long."""
        pos_was, sel_was, scroll_x_was, n_was = before
        pos = self._followed
        if (pos_was is None or abs(pos - pos_was) > 16 or self.scroll_x != scroll_x_was or self._n != n_was
                or not self.is_mounted):
            self.refresh()
            return
        width = self.scrollable_content_region.width
        self.refresh(Region(0, 0, width, HEADER))
        top = int(self.scroll_y)
        events = set(range(min(pos, pos_was) - 1, max(pos, pos_was))) | {sel_was, self._sel}
        for y in {self._row_of(i) - top + HEADER for i in events if 0 <= i < self._n}:
            if HEADER <= y < self.size.height:
                self.refresh(Region(0, y, width, 1))

    def select(self, index: int, center: bool = False) -> None:
        """Select event `index` (while filtering: the nearest shown event at or before it)."""
        self._sync_length()
        if not self.shown:
            return
        row = self._row_of(max(0, min(index, self._n - 1)))
        self._sel = self.row_event(row)
        if center:
            self._center(row)
        else:
            self._scroll_row_visible(row)
        self.refresh()

    def set_query(self, text: str) -> R.Query:
        """Parse and keep a query (raises rows.QueryError); a filter on follows it."""
        q = R.parse_query(text, self._tl.e if self._tl is not None else None)
        self._query = q
        if self._filter is not None:
            self._apply_filter(True)
        self.refresh()
        return q

    def search(self, text: str | None = None, forward: bool = True) -> int | None:
        """Set the query (if text is given) and select the next match after the selection
        (previous one before it when forward=False), wrapping around; the index or None.
        A bad query raises rows.QueryError."""
        if text is not None:
            self.set_query(text)
        return self._find(forward)

    def set_filter(self, on: bool) -> bool:
        """Show only the rows matching the query (on) or every row; False if refused (no
        query, or nothing matches)."""
        return self._apply_filter(on)

    def refresh_rows(self) -> None:
        """The journal grew (a recording in progress): extend the list (and the filter)."""
        self._sync_length()
        self.refresh()

    def header_text(self) -> str:
        if self._prompt is not None:
            return "/" + self._prompt
        tl = self._tl
        if tl is None:
            return "no timeline"
        out = f"{self._n:,} events  pos {tl.pos}"
        if self._query is not None:
            out += f"  /{self._query.text}"
        if self._filter is not None:
            out += f"  filter: {len(self._filter):,} shown"
        if self._message:
            out += f"  {self._message}"
        return out

    # ---------------------------------------------------------------- internals
    def _say(self, text: str, error: bool = False) -> None:
        self._message, self._message_error = text, error
        self.refresh()

    def _sync_length(self) -> None:
        tl = self._tl
        if tl is None:
            return
        n = len(tl.journal)
        if n != self._n:
            old = self._n
            self._n = n
            if self._filter is not None and self._query is not None:
                if n > old:
                    self._filter.extend(R.matches(tl, self._query, old, n))
                else:
                    self._filter = R.matches(tl, self._query)
            if n < old:
                self._rows.clear()
            self._sel = min(self._sel, max(0, n - 1))
            if len(str(n)) != len(str(old)):
                self._row_w = R.row_width_bound(tl)
            self._update_virtual_size()

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self._gutter_width() + self._row_w, self.shown + HEADER)

    def _gutter_width(self) -> int:
        return 1 + (self._mark_w + 1 if self._mark_w else 0)

    def _row_of(self, i: int) -> int:
        """The display row of event i (while filtering: the nearest shown at or before it,
        else the first shown)."""
        if self._filter is None:
            return i
        k = bisect.bisect_right(self._filter, i) - 1
        return max(0, k)

    def _sel_row(self) -> int:
        return self._row_of(self._sel)

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - HEADER)

    def _center(self, row: int) -> None:
        """Scroll so display row `row` is in the middle (after the first layout if the
        widget has no size yet)."""
        if not self.is_mounted or not self.size.height:
            self._pending_center = row
            return
        self._pending_center = None
        self._scroll(y=max(0, row - self._page() // 2))

    def _bell(self) -> None:
        if self.is_mounted:
            self.app.bell()

    def _scroll(self, x: int | None = None, y: int | None = None) -> None:
        if self.is_mounted:
            scroll_to(self, x, y)

    def _scroll_row_visible(self, row: int) -> None:
        if not self.size.height:
            return
        y, page = self.scroll_offset.y, self._page()
        if row < y:
            self._scroll(y=row)
        elif row >= y + page:
            self._scroll(y=row - page + 1)

    def _move_row(self, row: int) -> None:
        shown = self.shown
        if not shown:
            return
        row = max(0, min(shown - 1, row))
        self._sel = self.row_event(row)
        self._message = ""
        self._scroll_row_visible(row)
        self.refresh()

    def _find(self, forward: bool) -> int | None:
        q, tl = self._query, self._tl
        if q is None or tl is None:
            self._say("no search yet: press / and type a query", True)
            return None
        self._sync_length()
        if forward:
            i = R.find(tl, q, self._sel + 1, True)
            wrapped = i is None and (i := R.find(tl, q, 0, True)) is not None
        else:
            i = R.find(tl, q, self._sel - 1, False)
            wrapped = i is None and (i := R.find(tl, q, self._n - 1, False)) is not None
        if i is None:
            self._say(f"no match for {q.text}", True)
            self._bell()
            return None
        self._sel = i
        self._center(self._row_of(i))
        self._say(("search wrapped; " if wrapped else "") + f"match at {i + 1}")
        return i

    def _apply_filter(self, on: bool) -> bool:
        if not on:
            self._filter = None
            self._say("")
        else:
            if self._query is None or self._tl is None:
                self._say("no query to filter by: press / first", True)
                return False
            self._sync_length()
            flt = R.matches(self._tl, self._query)
            if not flt:
                was = self._filter is not None
                self._filter = None
                self._update_virtual_size()
                self._say(f"nothing matches {self._query.text}" + ("; filter off" if was else ""), True)
                return False
            self._filter = flt
            k = bisect.bisect_left(flt, self._sel)
            self._sel = flt[min(k, len(flt) - 1)]
            self._say("")
        self._update_virtual_size()
        self._center(self._sel_row())
        return True

    def _submit_prompt(self) -> None:
        text = self._prompt.strip() if self._prompt is not None else ""
        self._prompt = None
        if not text:
            if self._query is None:
                self._say("")
                return
            text = self._query.text
        try:
            self.set_query(text)
        except R.QueryError as e:
            self._say(str(e), True)
            self._bell()
            return
        self._find(True)

    # ---------------------------------------------------------------- actions
    def action_cursor(self, delta: int) -> None:
        self._move_row(self._sel_row() + delta)

    def action_page(self, direction: int) -> None:
        page = self._page()
        row = self._sel_row()
        new = max(0, min(self.shown - 1, row + direction * page))
        self._scroll(y=self.scroll_offset.y + (new - row))
        self._move_row(new)

    def action_first(self) -> None:
        self._move_row(0)

    def action_last(self) -> None:
        self._move_row(self.shown - 1)

    def action_goto(self) -> None:
        if self._tl is not None and self.shown:
            self.post_message(self.GotoStep(self, self._sel + 1))

    def action_search(self) -> None:
        self._prompt = ""
        self._message = ""
        self.refresh()

    def action_next_match(self, direction: int) -> None:
        if self._filter is not None:
            row = self._sel_row() + direction
            if not 0 <= row < len(self._filter):
                row = 0 if direction > 0 else len(self._filter) - 1
                self._say("search wrapped")
            self._move_row(row)
            return
        self._find(direction > 0)

    def action_toggle_filter(self) -> None:
        self._apply_filter(self._filter is None)

    # ---------------------------------------------------------------- events
    def on_key(self, event: events.Key) -> None:
        if self._prompt is None:
            return
        event.stop()
        event.prevent_default()
        key = event.key
        if key == "escape":
            self._prompt = None
        elif key == "enter":
            self._submit_prompt()
        elif key == "backspace":
            self._prompt = self._prompt[:-1]
        elif key == "ctrl+u":
            self._prompt = ""
        elif key == "ctrl+w":
            self._prompt = self._prompt.rstrip().rpartition(" ")[0] + (" " if " " in self._prompt.strip() else "")
        elif event.is_printable and event.character:
            self._prompt += event.character
        self.refresh()

    def on_paste(self, event: events.Paste) -> None:
        if self._prompt is not None and event.text:
            event.stop()
            self._prompt += event.text.splitlines()[0]
            self.refresh()

    def on_blur(self) -> None:
        if self._prompt is not None:
            self._prompt = None
            self.refresh()

    def on_click(self, event: events.Click) -> None:
        off = event.get_content_offset(self)
        if off is None or off.y < HEADER or not self.shown:
            return
        row = self.scroll_offset.y + off.y - HEADER
        if row >= self.shown:
            return
        i = self.row_event(row)
        if i == self._sel and event.chain >= 2:
            self.action_goto()
        self._sel = i
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self._update_virtual_size()
        if self._pending_center is not None and self.size.height:
            self._center(self._pending_center)
        else:
            self._scroll_row_visible(self._sel_row())

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = {}

    # ---------------------------------------------------------------- rendering
    _FULL = frozenset({"header", "prompt", "error", "current", "future"})   # blended colours: full styles

    def _style(self, *names: str) -> Style:
        """The widget's style with component classes layered in order (cached)."""
        st = self._styles.get(names)
        if st is None:
            st = self.rich_style
            for n in names:
                st = st + self.get_component_rich_style(f"eventlog--{n}", partial=n not in self._FULL)
            self._styles[names] = st
        return st

    def render_lines(self, crop):
        self._sync_length()
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y < HEADER:
            if self._prompt is not None:
                kind = "prompt"
            else:
                kind = "error" if self._message_error and self._message else "header"
            text = self.header_text() + ("\u2588" if self._prompt is not None else "")
            if self._prompt is not None and len(text) > width > 0:
                text = text[len(text) - width:]          # keep the typing point in view
            return Strip([Segment(text, self._style(kind))]).crop_extend(0, width, self._style(kind))
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y - HEADER
        tl = self._tl
        if tl is None or not 0 <= row < self.shown:
            return Strip.blank(width, self.rich_style)
        i = self.row_event(row)
        text = self._rows.get(i)
        if text is None:
            text = R.event_row(tl, i)
            self._rows[i] = text
        cur = i == tl.pos - 1
        names = []
        if cur:
            names.append("current")
        elif i >= tl.pos:
            names.append("future")
        q = self._query
        if q is not None and self._filter is None:
            j = tl.journal
            if q.matches(j.act(i), j.where(i), R.engine_for(tl, i)):
                names.append("match")
        if i == self._sel:
            names.append("cursor")
        style = self._style(*names)
        gw = self._gutter_width()
        mark = self._marks.get(i, "")[:self._mark_w] if self._mark_w else None
        key = (text, cur, style, mark, gw, scroll_x, width)
        strip = self._strips.get(key)
        if strip is not None:
            return strip
        gutter = [Segment(">" if cur else " ", style)]
        if mark is not None:
            gutter.append(Segment(mark.ljust(self._mark_w) + " ", self._style(*names, "mark") if mark else style))
        body = Strip([Segment(text, style)]).crop_extend(scroll_x, scroll_x + max(0, width - gw), style)
        strip = self._strips[key] = Strip.join([Strip(gutter, gw), body])
        return strip


__all__ = ["EventLogView"]
