"""The panes. Each one is focusable and scrolls with the keyboard and the mouse; each
re-renders itself from the session's read-only state view when the app tells it that the
session (SessionChanged) or the selection (SelectionChanged) changed. No pane moves the
timeline, and none reads another pane's state."""
from __future__ import annotations

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, OptionList, RichLog, Static
from textual.widgets.option_list import Option

from . import views
from .messages import LayoutChanged, SelectionChanged, SessionChanged
from .repaint import NOTHING, ShiftOnScroll, StableScrollbars, TextBody, ThumbScrollbars, held_bar, scroll_to, set_titles, text_dims


class TextPane(ThumbScrollbars, VerticalScroll, can_focus=True):
    """A scrollable pane whose body is a view function of the session: a rich Text drawn by
    a TextBody (a line at a time, only the changed lines repainted)."""
    ALLOW_MAXIMIZE = True

    def __init__(self, session, title: str = "", **kw):
        super().__init__(**kw)
        self.session = session
        self.selection: tuple = ("byte",)
        set_titles(self, title)
        self._body = TextBody(classes="body")
        self._shown = NOTHING              # what the body shows (compared, not rebuilt, per step)

    def compose(self):
        yield self._body

    def on_mount(self) -> None:
        self.refresh_view()

    def on_session_changed(self, message: SessionChanged) -> None:
        self.refresh_view()

    def on_selection_changed(self, message: SelectionChanged) -> None:
        self.selection = message.selection
        self.refresh_view()

    def refresh_view(self) -> None:
        """Re-render from the session; the body is updated only if its content changed, and
        laid out again only if its size may have (a step usually changes one vCPU pane)."""
        view = self.render_view()
        if view is not self._shown and (self._shown is NOTHING or view != self._shown):  # text and spans
            self._body.set_text(view)
            self._shown = view
        self.after_render()

    def render_view(self):  # pragma: no cover - overridden
        return Text("")

    def after_render(self) -> None:
        pass

    def keep_visible(self, line: int) -> None:
        """Scroll so that body line `line` is in the middle third of the pane."""
        h = max(1, self.scrollable_content_region.height)
        if not (self.scroll_y + h // 3 <= line < self.scroll_y + 2 * h // 3):
            scroll_to(self, y=max(0, line - h // 2))


class VcpuPane(TextPane):
    """One vCPU: the whole listing of its current routine (centred on the pc), its state in
    the border title, registers and nested interrupts in the subtitle."""

    def __init__(self, session, cpu: int, **kw):
        super().__init__(session, **kw)
        self.cpu = cpu
        self._cur = 0

    def render_view(self):
        tl = self.session.tl
        if self.cpu >= tl.e.n:
            return Text("")
        cv = tl.view().cpu(self.cpu)
        hp = cv.hotplug
        title = (f"cpu{self.cpu} {hp}  IF={cv.IF}{'  halted' if cv.halted else ''}  depth {cv.depth}"
                 + ("  ◆" if self.cpu == tl.focus else ""))
        reg = self.selection[1] if self.selection[0] == "reg" and self.cpu == tl.focus else None
        regs = " ".join(f"{'[' if reg == i else ''}r{i}={x:#x}{']' if reg == i else ''}" for i, x in enumerate(cv.regs))
        ints = [f for f in cv.frames() if f.kind == "interrupt"]
        nested = ("  nested: " + " > ".join(f"0x{f.vector:02x} in {f.routine}" for f in reversed(ints))) if ints else ""
        set_titles(self, title, f"{regs}  TPR={cv.tpr}{nested}")
        self.set_class(self.cpu == tl.focus, "focused-cpu")
        text, self._cur = views.vcpu_listing(self.session, self.cpu)
        return text

    def after_render(self) -> None:
        self.keep_visible(self._cur)


class VcpuListPane(StableScrollbars, OptionList):
    """More than 4 vCPUs: one row per vCPU (scrolls; the subtitle says which are shown).
    Enter or a click focuses that vCPU."""
    ALLOW_MAXIMIZE = True

    class Picked(Message):
        def __init__(self, cpu: int):
            super().__init__()
            self.cpu = cpu

    def __init__(self, session, **kw):
        super().__init__(**kw)
        self.session = session
        set_titles(self, "vCPUs")
        self._rows: list[tuple[int, str]] = []
        self._focus = -1

    def on_mount(self) -> None:
        self.refresh_view()

    def on_session_changed(self, message: SessionChanged) -> None:
        self.refresh_view()

    @staticmethod
    def _prompt(c: int, line: str, focus: int) -> Text:
        return Text(("▶ " if c == focus else "  ") + line, no_wrap=True, style="bold" if c == focus else "")

    def refresh_view(self) -> None:
        """Only the rows that changed are replaced (a step changes one or two vCPUs)."""
        rows = views.vcpu_rows(self.session, compact=True)
        focus = self.session.tl.focus
        keep = self.scroll_y
        if len(rows) != len(self._rows) or [c for c, _ in rows] != [c for c, _ in self._rows]:
            self.clear_options()
            self.add_options([Option(self._prompt(c, line, focus), id=str(c)) for c, line in rows])
        else:
            for i, ((c, line), old) in enumerate(zip(rows, self._rows)):
                if (line, c == focus) != (old[1], old[0] == self._focus):
                    self.replace_option_prompt_at_index(i, self._prompt(c, line, focus))
        self._rows, self._focus = rows, focus
        if self.highlighted != focus:
            self.highlighted = focus
        if self.scroll_y != keep:
            self.scroll_to(y=keep, animate=False, immediate=True)
        self.call_after_refresh(self._show_focus)

    def _replace_option_prompt(self, index: int, prompt) -> None:
        """OptionList drops every row's render and repaints the whole list when one prompt
        changes. A row here is one no-wrap line, so the line map stays as it is: drop this
        option's renders and repaint its row only."""
        option = self.get_option_at_index(index)
        option._set_prompt(prompt)
        cache = self._option_render_cache
        for key in [k for k in cache.keys() if k[0] is option]:
            cache.discard(key)
        y = self._line_cache.index_to_line.get(index)
        if y is None or not self.is_mounted:
            self.refresh()
            return
        row = y - int(self.scroll_y)
        if 0 <= row < self.scrollable_content_region.height:
            self.refresh(Region(0, row, self.scrollable_content_region.width, 1))

    def _show_focus(self) -> None:
        self.scroll_to_highlight()          # the focused vCPU is always in view
        self._subtitle()

    def _subtitle(self) -> None:
        n = self.option_count
        h = max(1, self.scrollable_content_region.height)
        first = int(self.scroll_y)
        last = min(n, first + h) - 1
        more = f" · {last + 1}–{n - 1} below" if last < n - 1 else ""
        set_titles(self, subtitle=f"cpu{first}–{last} of {n}{more}")

    def watch_scroll_y(self, old, new) -> None:
        super().watch_scroll_y(old, new)
        self._subtitle()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Picked(int(event.option.id)))


class SourcePane(TextPane):
    """gdb's layout src / asm / split for the focused vCPU: the C lines of its routine (from
    the listing's file:line and C text), the op listing, or both side by side; breakpoints
    in the gutter (●), the current line highlighted (→)."""

    def __init__(self, session, **kw):
        super().__init__(session, **kw)
        self.layout_mode = "split"
        self._cur = 0
        self._split: tuple = (None, None)      # ((src, asm, width), side_by_side_rows of them)
        self._rows: dict = {}                  # side_by_side_rows' memo

    def on_layout_changed(self, message: LayoutChanged) -> None:
        self.layout_mode = message.layout
        self.refresh_view()

    def on_resize(self) -> None:
        if self.layout_mode == "split":     # the columns follow the pane's width
            self.refresh_view()

    def render_view(self):
        tl = self.session.tl
        cv = tl.view().cpu(tl.focus)
        r = tl.e.routines[cv.routine_id]
        set_titles(self, f"{self.layout_mode}: cpu{tl.focus} {r.name}  {r.file}")
        src, s_cur = views.src_lines(tl, tl.focus)
        asm, a_cur = views.asm_lines(tl, tl.focus)
        if self.layout_mode == "src":
            self._cur = s_cur
            return src
        if self.layout_mode == "asm":
            self._cur = a_cur
            return asm
        self._cur = max(s_cur, a_cur)
        key = (src, asm, self.scrollable_content_region.width or 80)
        if key != self._split[0]:            # another vCPU's step leaves these as they were
            rows = side_by_side_rows(src.split("\n", allow_blank=True), asm.split("\n", allow_blank=True),
                                     key[2], memo=self._rows)
            self._split = (key, rows)
        return self._split[1]

    def after_render(self) -> None:
        self.keep_visible(self._cur)


def side_by_side_rows(left: list[Text], right: list[Text], width: int, ratio: tuple[int, int] = (3, 2),
                      gap: int = 2, memo: dict | None = None) -> list[Text]:
    """Two columns of lines as the rows of one no-wrap text `width` cells wide: what rich's
    `Table.grid(padding=(0, gap), expand=True)` with two no-wrap columns of these ratios
    renders (widths split as rich's ratio_distribute does, the gap in the left column, long
    lines cut with an ellipsis), so the split view is drawn a line at a time like the others.
    `memo` keeps rows already made (a step moves the current line: the other rows are as
    before)."""
    w1 = max(gap + 1, -(-ratio[0] * width // sum(ratio)))
    w2 = max(1, width - w1)
    blank = Text("")
    rows = []
    for i in range(max(len(left), len(right))):
        x = left[i] if i < len(left) else blank
        y = right[i] if i < len(right) else blank
        key = None
        if memo is not None:
            key = (x.plain, tuple(x.spans), x.style, y.plain, tuple(y.spans), y.style, w1, w2, gap)
            row = memo.get(key)
            if row is not None:
                rows.append(row)
                continue
        x, y = x.copy(), y.copy()
        x.truncate(w1 - gap, overflow="ellipsis", pad=True)
        y.truncate(w2, overflow="ellipsis", pad=True)
        row = Text(no_wrap=True, end="")
        row.append_text(x)
        row.append(" " * gap)
        row.append_text(y)
        if memo is not None:
            if len(memo) > 4096:
                memo.clear()
            memo[key] = row
        rows.append(row)
    return rows


class IrqPane(TextPane):
    """Every vCPU's ISR/IRR; a click on a vector selects it (and focuses its vCPU)."""

    class Picked(Message):
        def __init__(self, cpu: int, kind: str, vector: int):
            super().__init__()
            self.cpu, self.kind, self.vector = cpu, kind, vector

    def __init__(self, session, title: str = "", **kw):
        super().__init__(session, title, **kw)
        self._hits: list = []

    def render_view(self):
        sel = self.selection[1] if self.selection[0] == "vector" else None
        hits: list = []
        text = views.irq_queue(self.session, selected=sel, hits=hits)
        self._hits = hits
        return text

    def on_click(self, event: events.Click) -> None:
        off = event.get_content_offset(self._body)
        if off is None:
            return
        for line, x0, x1, cpu, kind, vec in self._hits:
            if line == off.y and x0 <= off.x < x1:
                self.post_message(self.Picked(cpu, kind, vec))
                return


class MsrPane(TextPane):
    """The focused vCPU's MSRs; a click on a row selects that MSR."""

    class Picked(Message):
        def __init__(self, msr: int):
            super().__init__()
            self.msr = msr

    def render_view(self):
        sel = self.selection[1] if self.selection[0] == "msr" else None
        return views.msr_table(self.session, self.session.tl.focus, selected=sel)

    def on_click(self, event: events.Click) -> None:
        off = event.get_content_offset(self._body)
        rows = views.msr_rows(self.session, self.session.tl.focus)
        if off is not None and 1 <= off.y <= len(rows):     # line 0 is the table's title
            self.post_message(self.Picked(rows[off.y - 1]))


class BreakpointsPane(StableScrollbars, DataTable):
    """`:breaks` as a table with hit counts; space enables/disables, delete removes (both
    through the commands)."""
    ALLOW_MAXIMIZE = True
    BINDINGS = [Binding("space", "toggle", "enable/disable"), Binding("delete,x", "delete", "delete")]

    class Run(Message):
        def __init__(self, line: str):
            super().__init__()
            self.line = line

    def __init__(self, session, **kw):
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.session = session
        set_titles(self, "breakpoints")

    def on_mount(self) -> None:
        self.add_columns("#", "on", "hits", "what")
        self.refresh_view()

    def on_session_changed(self, message: SessionChanged) -> None:
        self.refresh_view()

    def refresh_view(self) -> None:
        tl = self.session.tl
        shown = [(b.number, b.enabled, b.hits, b.describe(tl)) for b in tl.breaks]
        if shown == getattr(self, "_shown", None):
            return                      # rebuilding the table costs a layout and a repaint
        self._shown = shown
        row = self.cursor_row
        self.clear()
        for b in tl.breaks:
            self.add_row(str(b.number), "yes" if b.enabled else "no", str(b.hits), b.describe(tl), key=str(b.number))
        if not tl.breaks:
            self.add_row("", "", "", "none: b sets one on the selection, :break / :watch on anything")
        if self.row_count:
            self.move_cursor(row=min(row, self.row_count - 1))

    def _number(self) -> str | None:
        tl = self.session.tl
        if not tl.breaks or self.cursor_row >= len(tl.breaks):
            return None
        return str(tl.breaks[self.cursor_row].number)

    def action_toggle(self) -> None:
        n = self._number()
        if n:
            b = self.session.tl.breaks[self.cursor_row]
            self.post_message(self.Run(f"{'disable' if b.enabled else 'enable'} {n}"))

    def action_delete(self) -> None:
        n = self._number()
        if n:
            self.post_message(self.Run(f"delete {n}"))


class TranscriptPane(ShiftOnScroll, StableScrollbars, RichLog, can_focus=True):
    """Every command and its output (rich text, as in the REPL); `/` searches it."""
    ALLOW_MAXIMIZE = True
    BINDINGS = [Binding("slash", "search", "search"), Binding("n", "search_next(1)", show=False),
                Binding("N", "search_next(-1)", show=False)]

    class SearchRequested(Message):
        pass

    def __init__(self, **kw):
        super().__init__(markup=False, highlight=False, wrap=True, min_width=20, max_lines=5000, **kw)
        set_titles(self, "output")
        self.plain: list[str] = []
        self.query_text = ""
        self._hit = -1

    _quiet_layout = False
    _quiet_from = 0                   # the first line of the write under way

    def write_entries(self, items: list) -> None:
        """Write several entries; consecutive rich Texts as one (one render, one scroll)."""
        texts: list[Text] = []
        for item in [*items, None]:
            if isinstance(item, Text):
                texts.append(item)
                continue
            if len(texts) == 1:
                self.write_entry(texts[0])
            elif texts:
                self.write_entry(Text("\n").join(texts), plain=[t.plain for t in texts])
            texts = []
            if item is not None:
                self.write_entry(item)

    def write_entry(self, item, plain: list[str] | None = None) -> None:
        if self.auto_scroll and self.show_vertical_scrollbar and self.size.height:
            # already scrolling: the new end is known now (a ScrollView's virtual size is
            # set at once), so scroll now rather than after the next frame - which would
            # cost a second frame on every step. The taller virtual size changes only this
            # pane's scrollbar, not the screen's layout (refresh below).
            self._quiet_layout = True
            self._quiet_from = len(self.lines)
            with held_bar(self):
                try:
                    self.write(item, scroll_end=False)
                finally:
                    self._quiet_layout = False
                self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:
            self.write(item)
        if plain is not None:
            self.plain += plain
        else:
            self.plain.append(item.plain if isinstance(item, Text) else str(item))

    def refresh(self, *regions, repaint: bool = True, layout: bool = False, recompose: bool = False):
        """RichLog.write sets `virtual_size`, a reactive that asks for a layout of the whole
        screen (2-6 ms, and every widget repainted). While the vertical scrollbar is already
        shown and the lines still fit the width (they wrap), a new line changes nothing
        outside this pane: update the scrollbars here (as the layout would, through
        ScrollView._scroll_update) and repaint only the rows of the new lines that are in
        view (none when the log follows its end: the scroll to the end that comes next
        brings them in, and moves the others - ShiftOnScroll)."""
        if layout and self._quiet_layout and self.virtual_size.width <= self.scrollable_content_region.width:
            layout = False
            self._scroll_update(self.virtual_size)      # the bar repaints if its thumb moved
            if not regions:
                first = max(0, self._quiet_from - int(self.scroll_y))
                if first >= self.size.height:
                    return super().refresh(repaint=False)
                regions = (Region(0, first, self.size.width, self.size.height - first),)
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    _frame: tuple | None = None

    def render_lines(self, crop):
        """The widget's style and width once per render, not once per line (RichLog's
        render_line looks both up for every line; the style walks every ancestor)."""
        self._frame = (self.rich_style, self.scrollable_content_region.width)
        try:
            return super().render_lines(crop)
        finally:
            self._frame = None

    def render_line(self, y: int):
        if self._frame is None:
            return super().render_line(y)
        style, width = self._frame
        scroll_x, scroll_y = self.scroll_offset
        return self._render_line(scroll_y + y, scroll_x, width).apply_style(style)

    def action_search(self) -> None:
        self.post_message(self.SearchRequested())

    def search(self, text: str) -> bool:
        self.query_text = text.lower()
        self._hit = len(self.plain)
        return self.action_search_next(-1)

    def action_search_next(self, delta: int) -> bool:
        if not self.query_text:
            return False
        n = len(self.plain)
        for k in range(1, n + 1):
            i = (self._hit + delta * k) % n
            if self.query_text in self.plain[i].lower():
                self._hit = i
                # lines wrap: the entry's row is at least its index; scroll near it
                self.scroll_to(y=self._row_of(i), animate=False)
                return True
        return False

    def _row_of(self, i: int) -> int:
        width = max(20, self.scrollable_content_region.width)
        return sum(max(1, -(-len(p) // width)) for p in self.plain[:i])


class StatusLine(Static):
    """The position, the outcome, the verification of an opened trace, the branches, the
    focused vCPU - or the progress of running work."""

    def __init__(self, session, **kw):
        super().__init__("", **kw)
        self.session = session
        self.progress = None
        self._text: Text | None = None

    def on_mount(self) -> None:
        self.refresh_view()

    def on_session_changed(self, message: SessionChanged) -> None:
        self.refresh_view()

    def refresh_view(self) -> None:
        text = views.status_line(self.session, self.progress)
        if text != self._text:
            # one line whatever it says (#status has height 1, the screen's width): no layout
            self.update(text, layout=self._text is None or text_dims(text)[0] != text_dims(self._text)[0])
            self._text = text
