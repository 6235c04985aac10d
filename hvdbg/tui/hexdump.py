"""HexdumpView: a scrollable, focusable, virtualised hexdump of a byte range (4 KiB to 64 KiB
and more) with a byte/bit cursor, changed-byte highlighting and field annotations.

Textual's line API (a ScrollView that implements ``render_line`` and sets ``virtual_size``,
as toolong's LogLines does): only the visible lines are rendered. The widget never touches a
timeline: the app hands it a ``HexSource`` (the bytes, their address, the fields to
annotate, the offsets to highlight) with ``set_source``.

Line 0 of the widget is a fixed status line (it does not scroll): title, cursor address and
offset, the byte in hex and binary, the bit, and the field under the cursor as a
little-endian integer of its size. Below it, one line per 16 bytes (8 when the pane is
narrower than a 16-byte line): address, hex bytes, ASCII, then the names of the fields
that start on that line (never cut: the line is as wide as it needs, the view scrolls
horizontally).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from .repaint import StableScrollbars, scroll_to

HEADER = 1                      # fixed status line at the top


@dataclass(frozen=True, eq=False)
class HexSource:
    """What a HexdumpView shows."""
    data: bytes
    base: int = 0                                     # address of byte 0
    fields: dict = field(default_factory=dict)        # offset -> (size, name)
    changed: frozenset = frozenset()                  # offsets to highlight
    title: str = ""


_EMPTY = HexSource(b"", 0, {}, frozenset(), "")
_ASCII = "".join(chr(x) if 32 <= x < 127 else "." for x in range(256))
_HEX = [f"{x:02x}" for x in range(256)]


class HexdumpView(StableScrollbars, ScrollView, can_focus=True):
    """A virtualised hexdump with a cursor over the whole range (module doc)."""
    ALLOW_MAXIMIZE = True

    BINDINGS = [
        Binding("left", "move(-1)", "byte left", show=False),
        Binding("right", "move(1)", "byte right", show=False),
        Binding("up", "move_lines(-1)", "line up", show=False),
        Binding("down", "move_lines(1)", "line down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "home", "start", show=False),
        Binding("end", "end", "end", show=False),
        Binding("left_square_bracket", "bit(-1)", "bit -", show=False),
        Binding("right_square_bracket", "bit(1)", "bit +", show=False),
    ]

    COMPONENT_CLASSES = {
        "hexdump--status",
        "hexdump--address",
        "hexdump--ascii",
        "hexdump--annotation",
        "hexdump--changed",
        "hexdump--cursor",
        "hexdump--field",
    }

    DEFAULT_CSS = """
    HexdumpView {
        height: 1fr;
        overflow: auto auto;
        & > .hexdump--status { text-style: bold; }
        & > .hexdump--address { color: $text-muted; }
        & > .hexdump--ascii { color: $text-muted; }
        & > .hexdump--annotation { color: $accent; }
        & > .hexdump--changed { color: red; text-style: bold; }
        & > .hexdump--cursor { text-style: reverse; }
        & > .hexdump--field { text-style: underline; }
    }
    """

    class CursorMoved(Message):
        """The cursor moved: byte `offset` in the range (address = base + offset), `bit`."""

        def __init__(self, hexdump: "HexdumpView", offset: int, address: int, bit: int) -> None:
            super().__init__()
            self.hexdump = hexdump
            self.offset = offset
            self.address = address
            self.bit = bit

        @property
        def control(self) -> "HexdumpView":
            return self.hexdump

    def __init__(self, source: HexSource | None = None, *, bytes_per_line: int | None = None,
                 name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False) -> None:
        """`bytes_per_line`: 16 or 8; None chooses 16 when a 16-byte line fits the pane."""
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._src = _EMPTY
        self._fixed_per = bytes_per_line
        self._per = bytes_per_line or 16
        self._cursor = 0
        self._bit = 0
        self._starts: list[int] = []            # field start offsets, sorted
        self._maxsize = 0
        self._notes: dict[int, str] = {}        # line -> annotation text
        self._styles: dict = {}
        self._set(source or _EMPTY)

    # ---------------------------------------------------------------- public API
    @property
    def source(self) -> HexSource:
        return self._src

    @property
    def cursor_offset(self) -> int:
        return self._cursor

    @property
    def cursor_address(self) -> int:
        return self._src.base + self._cursor

    @property
    def cursor_bit(self) -> int:
        return self._bit

    @property
    def bytes_per_line(self) -> int:
        return self._per

    def set_source(self, source: HexSource | None) -> None:
        """Show `source`. The cursor (and bit) stays where it is when the size is the same;
        otherwise it goes back to offset 0."""
        old = (self._cursor, self._bit, self._src.base)
        prev = self._src
        same = len((source or _EMPTY).data) == len(self._src.data)
        self._set(source or _EMPTY)
        if not same:
            self._cursor = 0
            self._scroll(0, 0)
        self._update_virtual_size()
        self._refresh_changed(prev)
        if (self._cursor, self._bit, self._src.base) != old and self._src.data:
            self._post_cursor()
        self._scroll_cursor_visible()

    def _refresh_changed(self, prev: HexSource) -> None:
        """Repaint the status line and the data lines whose bytes or highlights differ from
        `prev` (a step changes a few bytes of the page): the whole view when anything else
        (the address, the size, the fields) changed."""
        src = self._src
        if (not self.is_mounted or prev.base != src.base or len(prev.data) != len(src.data)
                or prev.fields != src.fields):
            self.refresh()
            return
        per = self._per
        lines = {o // per for o in prev.changed ^ src.changed}
        if prev.data != src.data:
            a, b = prev.data, src.data
            lines.update(off // per for off in range(0, len(b), per) if a[off:off + per] != b[off:off + per])
        width = max(self.virtual_size.width, self.size.width)
        self.refresh(Region(0, 0, width, HEADER))         # the status line (title, byte under the cursor)
        top = self.scroll_offset.y
        page = self._page_lines()
        for line in sorted(lines):
            if top <= line < top + page:
                self.refresh(Region(0, HEADER + line - top, width, 1))

    def goto_offset(self, offset: int, bit: int | None = None) -> None:
        """Put the cursor on byte `offset` (clamped to the range), and on `bit` if given."""
        self._move_to(offset, self._bit if bit is None else bit)

    def field_at(self, offset: int) -> tuple[int, int, str] | None:
        """(start, size, name) of the field covering `offset`, or None."""
        i = bisect.bisect_right(self._starts, offset) - 1
        fields = self._src.fields
        while i >= 0:
            s = self._starts[i]
            if offset - s >= self._maxsize:
                break
            size, name = fields[s]
            if s <= offset < s + size:
                return s, size, name
            i -= 1
        return None

    def status_text(self) -> str:
        """The status line: cursor address, byte value (hex, binary), bit, field = value."""
        src = self._src
        n = len(src.data)
        title = f"{src.title}  " if src.title else ""
        if not n:
            return f"{title}(no data)"
        c = self._cursor
        v = src.data[c]
        aw = self._addr_width()
        out = (f"{title}@{src.base + c:0{aw}x} +0x{c:x}  byte 0x{v:02x} = {v:08b}  "
               f"bit {self._bit} = {v >> self._bit & 1}")
        f = self.field_at(c)
        if f is not None:
            s, size, name = f
            raw = src.data[s:s + size]
            val = int.from_bytes(raw, "little")
            out += f"  {name} = 0x{val:0{2 * len(raw)}x}"
            if size > 1:
                out += f" ({size} bytes at +0x{s:x})"
        return out

    # ---------------------------------------------------------------- internals
    def _set(self, src: HexSource) -> None:
        self._src = src
        fields = src.fields or {}
        self._starts = sorted(o for o in fields if 0 <= o < max(1, len(src.data)))
        self._maxsize = max((max(1, fields[o][0]) for o in self._starts), default=0)
        n = len(src.data)
        if n:
            self._cursor = min(self._cursor, n - 1)
        else:
            self._cursor = 0
        self._notes_for(self._per)

    def _notes_for(self, per: int) -> None:
        notes: dict[int, list[str]] = {}
        for o in self._starts:
            notes.setdefault(o // per, []).append(self._src.fields[o][1])
        self._notes = {k: " ".join(v) for k, v in notes.items()}

    def _addr_width(self) -> int:
        end = self._src.base + max(0, len(self._src.data) - 1)
        return max(8, len(f"{end:x}"))

    def _lines(self) -> int:
        return (len(self._src.data) + self._per - 1) // self._per

    def _hex_col(self, j: int) -> int:
        """Column (in the unscrolled line) of byte j of a line."""
        return self._addr_width() + 2 + 3 * j + (1 if self._per == 16 and j >= 8 else 0)

    def _ascii_col(self) -> int:
        return self._addr_width() + 2 + 3 * self._per + (1 if self._per == 16 else 0) + 1

    def _line_width(self, per: int | None = None) -> int:
        per = per or self._per
        return self._addr_width() + 2 + 3 * per + (1 if per == 16 else 0) + 1 + per

    def _page_lines(self) -> int:
        return max(1, self.scrollable_content_region.height - HEADER)

    def _choose_per(self) -> None:
        if self._fixed_per:
            per = self._fixed_per
        else:
            w = self.scrollable_content_region.width
            per = 16 if w <= 0 or w >= self._line_width(16) else 8
        if per != self._per:
            self._per = per
            self._notes_for(per)

    def _update_virtual_size(self) -> None:
        w = self._line_width()
        if self._notes:
            w += 2 + max(len(t) for t in self._notes.values())
        self.virtual_size = Size(w, self._lines() + HEADER)

    def _post_cursor(self) -> None:
        self.post_message(self.CursorMoved(self, self._cursor, self._src.base + self._cursor, self._bit))

    def _move_to(self, offset: int, bit: int | None = None) -> None:
        n = len(self._src.data)
        if not n:
            return
        offset = max(0, min(n - 1, offset))
        bit = self._bit if bit is None else max(0, min(7, bit))
        if (offset, bit) == (self._cursor, self._bit):
            self._scroll_cursor_visible()
            return
        self._cursor, self._bit = offset, bit
        self.refresh()
        self._scroll_cursor_visible()
        self._post_cursor()

    def _scroll(self, x: int | None = None, y: int | None = None) -> None:
        if self.is_mounted:
            scroll_to(self, x, y)

    def _scroll_cursor_visible(self) -> None:
        if not self.size.height:
            return
        line = self._cursor // self._per
        page = self._page_lines()
        y = self.scroll_offset.y
        if line < y:
            self._scroll(y=line)
        elif line >= y + page:
            self._scroll(y=line - page + 1)
        col = self._hex_col(self._cursor % self._per)
        x, w = self.scroll_offset.x, self.scrollable_content_region.width
        if col < x:
            self._scroll(x=0 if col + 2 <= w else col)
        elif w and col + 2 > x + w:
            self._scroll(x=col + 2 - w)

    # ---------------------------------------------------------------- actions
    def action_move(self, delta: int) -> None:
        self._move_to(self._cursor + delta)

    def action_move_lines(self, lines: int) -> None:
        new = self._cursor + lines * self._per
        if 0 <= new < len(self._src.data):
            self._move_to(new)

    def action_page(self, direction: int) -> None:
        n = len(self._src.data)
        if not n:
            return
        page = self._page_lines()
        per = self._per
        new = self._cursor + direction * page * per
        if new >= n:
            new = self._cursor % per + (self._lines() - 1) * per
            if new >= n:
                new -= per
        elif new < 0:
            new = self._cursor % per
        if new != self._cursor:
            self._scroll(y=self.scroll_offset.y + (new - self._cursor) // per)
        self._move_to(new)

    def action_home(self) -> None:
        self._move_to(0)

    def action_end(self) -> None:
        self._move_to(len(self._src.data) - 1)

    def action_bit(self, delta: int) -> None:
        self._move_to(self._cursor, self._bit + delta)

    # ---------------------------------------------------------------- events
    def on_mount(self) -> None:
        self._update_virtual_size()

    def on_resize(self, event: events.Resize) -> None:
        self._choose_per()
        self._update_virtual_size()
        self._scroll_cursor_visible()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = {}

    def on_click(self, event: events.Click) -> None:
        off = event.get_content_offset(self)
        if off is None or off.y < HEADER or not self._src.data:
            return
        line = self.scroll_offset.y + off.y - HEADER
        x = off.x + self.scroll_offset.x
        per = self._per
        j = None
        for k in range(per):
            c = self._hex_col(k)
            if c <= x < c + 3:
                j = k
                break
        a = self._ascii_col()
        if j is None and a <= x < a + per:
            j = x - a
        if j is None:
            return
        offset = line * per + j
        if offset < len(self._src.data):
            self._move_to(offset)

    # ---------------------------------------------------------------- rendering
    def _style(self, key) -> Style:
        """Rich style for a combination of component classes (cached until a style update)."""
        st = self._styles.get(key)
        if st is None:
            base = self.rich_style
            if isinstance(key, str):                 # full style: blends muted colours
                st = base + self.get_component_rich_style(f"hexdump--{key}")
            else:                                    # (changed, field, cursor) flags of a byte
                st = base
                for flag, name in zip(key, ("changed", "field", "cursor")):
                    if flag:
                        st = st + self.get_component_rich_style(f"hexdump--{name}", partial=True)
            self._styles[key] = st
        return st

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y < HEADER:
            text = self.status_text()
            return Strip([Segment(text, self._style("status"))]).crop_extend(0, width, self.rich_style)
        scroll_x, scroll_y = self.scroll_offset
        line = scroll_y + y - HEADER
        if not 0 <= line < self._lines():
            return Strip.blank(width, self.rich_style)
        return self._render_data_line(line).crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def _render_data_line(self, line: int) -> Strip:
        """The unscrolled strip of data line `line` (runs of bytes with the same style share
        a segment)."""
        src, per = self._src, self._per
        off = line * per
        chunk = src.data[off:off + per]
        changed = src.changed
        cur = self._cursor
        f = self.field_at(cur)
        fs, fe = (f[0], f[0] + f[1]) if f is not None else (-1, -1)
        sty = self._style
        plain = self.rich_style
        segs = [Segment(f"{src.base + off:0{self._addr_width()}x}", sty("address")), Segment("  ", plain)]
        keys = [(a in changed, fs <= a < fe, a == cur) for a in range(off, off + len(chunk))]
        # hex column: runs of equal keys; the spaces between bytes keep the plain style
        run, run_key = [], None
        hexparts = []
        for j in range(per):
            if j < len(chunk):
                k = keys[j]
                text = _HEX[chunk[j]]
            else:
                k, text = None, "  "
            if k != run_key and run:
                hexparts.append((run_key, run))
                run = []
            run_key = k
            run.append(text)
        if run:
            hexparts.append((run_key, run))
        j = 0
        for k, texts in hexparts:
            if k is None or not any(k):
                body = ""
                for t in texts:
                    body += t + ("  " if per == 16 and j == 7 else " ")
                    j += 1
                segs.append(Segment(body, plain))
            else:
                st = sty(k)
                for t in texts:
                    segs.append(Segment(t, st))
                    segs.append(Segment("  " if per == 16 and j == 7 else " ", plain))
                    j += 1
        segs.append(Segment(" ", plain))
        asc = sty("ascii")
        body, body_style = "", asc
        for j, b in enumerate(chunk):
            k = keys[j]
            st = sty(k) if any(k) else asc
            if st is not body_style and body:
                segs.append(Segment(body, body_style))
                body = ""
            body_style = st
            body += _ASCII[b]
        if body:
            segs.append(Segment(body, body_style))
        if len(chunk) < per:
            segs.append(Segment(" " * (per - len(chunk)), plain))
        note = self._notes.get(line)
        if note:
            segs.append(Segment("  ", plain))
            segs.append(Segment(note, sty("annotation")))
        return Strip(segs)


__all__ = ["HexdumpView", "HexSource"]
