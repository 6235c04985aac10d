"""The TUI's virtualised widgets on their own (HexdumpView, EventLogView) through Textual's
Pilot, each in a minimal host app, and the pure row/search functions behind the event log
(hvdbg/tui/rows.py) against brute force."""
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from textual.app import App  # noqa: E402

from hvdbg.commands import Session  # noqa: E402
from hvdbg.core.defs import VECTORS  # noqa: E402
from hvdbg.core.scenario import load_scenario  # noqa: E402
from hvdbg.core.timeline import Timeline  # noqa: E402
from hvdbg.recording import open_at, record  # noqa: E402
from hvdbg.tui import rows as R  # noqa: E402
from hvdbg.tui.eventlog import EventLogView  # noqa: E402
from hvdbg.tui.hexdump import HexdumpView, HexSource  # noqa: E402

_CACHE: dict = {}


def cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def seed_tl():
    return cached("seed", lambda: Session.open("cpu-offline")).tl


def soak_tl():
    return cached("soak", lambda: Session.open("soak", max_steps=100_000)).tl


def branched_tl():
    """cpu-offline in segments of 64 with a branch at 700 that starts with a what-if edit:
    a journal with a base, closed segments of its own and an edit among them."""
    def make():
        scn = load_scenario("cpu-offline")
        tl = Timeline.record(scn, scn.config(), checkpoint_every=64)
        return tl.branch("b", 700, edit=("edit", "inject", 1, 0xFD))
    return cached("branch", make)


class Host(App):
    """Mounts one widget and records the messages it posts."""

    def __init__(self, widget):
        super().__init__()
        self.widget = widget
        self.seen = []

    def compose(self):
        yield self.widget

    def on_mount(self):
        self.widget.focus()

    def on_hexdump_view_cursor_moved(self, m):
        self.seen.append(m)

    def on_event_log_view_goto_step(self, m):
        self.seen.append(m)


def page_source(size=4096, base=0x1_2345_000):
    data = bytes((i * 7 + 3) & 0xFF for i in range(size))
    fields = {0: (8, "vp_assist_eoi"), 0x10: (4, "flags"), 0xFF8: (8, "a_rather_long_field_name_at_the_end")}
    return HexSource(data, base, fields, frozenset({1, 0xFF9}), "VP assist cpu1")


def texts(w, n):
    return [w.render_line(y).text for y in range(n)]


# ---------------------------------------------------------------- hexdump
async def test_hexdump_cursor_reaches_the_end_of_a_page_and_reports_it():
    src = page_source()
    w = HexdumpView(src)
    app = Host(w)
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        assert w.bytes_per_line == 16
        while w.cursor_offset < 0xFF0:
            await pilot.press("pagedown")
        await pilot.press("end")
        assert w.cursor_offset == 0xFFF
        for _ in range(7):
            await pilot.press("left")
        await pilot.pause()
        m = app.seen[-1]
        assert (m.offset, m.address, m.bit) == (0xFF8, src.base + 0xFF8, 0)
        # the view scrolled with the cursor: its line is on screen
        assert any(t.startswith(f"{src.base + 0xFF0:08x}") for t in texts(w, 24))
        await pilot.press("right_square_bracket", "right_square_bracket")
        await pilot.pause()
        assert app.seen[-1].bit == 2 and w.cursor_bit == 2
        status = w.status_text()
        v = src.data[0xFF8]
        assert f"{src.base + 0xFF8:x}" in status and f"0x{v:02x}" in status and f"{v:08b}" in status
        want = int.from_bytes(src.data[0xFF8:0x1000], "little")
        assert f"a_rather_long_field_name_at_the_end = 0x{want:016x}" in status
        assert w.render_line(0).text.startswith("VP assist cpu1")
        # Home, up/down and page keys stay in the range
        await pilot.press("home", "up", "left")
        assert w.cursor_offset == 0 and w.scroll_offset.y == 0
        await pilot.press("down", "down", "right")
        assert w.cursor_offset == 0x21
        w.goto_offset(0x7FFF)
        assert w.cursor_offset == 0xFFF


async def test_hexdump_click_selects_a_byte_and_styles_show_changes_cursor_and_field():
    src = page_source()
    w = HexdumpView(src)
    app = Host(w)
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        # line 2 of the data (offsets 0x20..0x2f) is widget row 3 (row 0 is the status line)
        aw = 8                                   # address digits
        col_byte_5 = aw + 2 + 3 * 5
        await pilot.click(HexdumpView, offset=(col_byte_5, 3))
        await pilot.pause()
        assert w.cursor_offset == 0x25 and app.seen[-1].offset == 0x25
        col_byte_12 = aw + 2 + 3 * 12 + 1        # one more column after the 8th byte
        await pilot.click(HexdumpView, offset=(col_byte_12 + 1, 3))
        assert w.cursor_offset == 0x2C
        ascii_col = aw + 2 + 3 * 16 + 1 + 1
        await pilot.click(HexdumpView, offset=(ascii_col + 3, 2))
        assert w.cursor_offset == 0x13
        # styles: changed bytes bold red, the cursor reversed, the field under it underlined
        w.goto_offset(2)
        await pilot.pause()
        cells = [(ch, seg.style) for seg in w.render_line(1)._segments for ch in seg.text]
        col = [aw + 2 + 3 * k + (k >= 8) for k in range(16)]      # column of byte k of a line
        assert ["".join(c for c, _ in cells[x:x + 2]) for x in col] == [f"{b:02x}" for b in src.data[:16]]
        style = [cells[x][1] for x in col]
        assert style[1].bold and tuple(style[1].color.get_truecolor()) == (255, 0, 0)
        assert not style[3].bold and not style[0].bold
        assert style[2].reverse and not style[3].reverse and not style[1].reverse
        assert all(st.underline for st in style[:8]) and not any(st.underline for st in style[8:])
        assert "vp_assist_eoi" in w.render_line(1).text


async def test_hexdump_64k_scrolls_to_the_end_rendering_only_visible_lines():
    calls = []

    class Counting(HexdumpView):
        def render_line(self, y):
            calls.append(y)
            return super().render_line(y)

    src = HexSource(bytes(range(256)) * 256, 0x10000, {}, frozenset(), "64 KiB")
    w = Counting(src)
    app = Host(w)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("end")
        await pilot.pause()
        assert w.cursor_offset == 0xFFFF and app.seen[-1].address == 0x1FFFF
        assert w.scroll_offset.y == w.max_scroll_y > 4000
        assert w.render_line(29).text.startswith("0001fff0")
        await pilot.press("home")
        await pilot.pause()
    assert 0 < len(calls) < 300, len(calls)          # << 4096 lines


async def test_hexdump_set_source_keeps_the_cursor_and_narrow_panes_show_8_bytes():
    src = page_source()
    w = HexdumpView(src)
    app = Host(w)
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        assert w.bytes_per_line == 8
        w.goto_offset(0x123, bit=5)
        await pilot.pause()
        n = len(app.seen)
        w.set_source(HexSource(bytes(4096), src.base, src.fields, frozenset(), "zeroes"))
        await pilot.pause()
        assert (w.cursor_offset, w.cursor_bit) == (0x123, 5) and len(app.seen) == n
        assert w.render_line(0).text.startswith("zeroes")
        # annotations are never cut: the virtual width holds the longest one
        line = w._render_data_line(0xFF8 // 8)
        assert line.text.rstrip().endswith("a_rather_long_field_name_at_the_end")
        assert w.virtual_size.width >= line.cell_length
        w.set_source(HexSource(b"\x01\x02\x03", 0x40, {}, frozenset(), "small"))
        await pilot.pause()
        assert w.cursor_offset == 0 and app.seen[-1].address == 0x40
        w.set_source(HexSource(b"", 0, {}, frozenset(), "empty"))
        await pilot.press("end", "down", "right")
        assert "(no data)" in w.render_line(0).text


# ---------------------------------------------------------------- event log
def is_resched(a):
    return a[0] != "edit" and a[-1] == VECTORS["RESCHEDULE"] and a[0] != "op"


async def test_event_log_search_goto_next_and_filter_on_100k_events():
    tl = soak_tl()
    j = tl.journal
    n = len(j)
    assert n == 100_000
    want = [i for i in range(n) if is_resched(j.act(i))]
    w = EventLogView(tl)
    app = Host(w)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert w.selected == tl.pos - 1
        await pilot.press("home", "slash", *"RESCHEDULE", "enter")
        await pilot.pause()
        first = next(i for i in want if i >= 1)          # the search starts after the selection
        assert w.selected == first
        assert any(t.lstrip(" >").startswith(f"{first} ") for t in texts(w, 30))
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.seen[-1], EventLogView.GotoStep) and app.seen[-1].step == first + 1
        await pilot.press("n")
        assert w.selected == next(i for i in want if i > first)
        await pilot.press("N", "N")
        assert w.selected == want[-1]                     # wrapped around to the last match
        await pilot.press("f")
        await pilot.pause()
        assert w.filtered and w.shown == len(want)
        shown = [int(t[1:].split()[0]) - 1 for t in texts(w, 30)[1:]]     # rows show the event number = index + 1
        assert shown and all(i in set(want) for i in shown)
        await pilot.press("home")
        assert w.selected == want[0]
        await pilot.press("down", "down", "enter")
        assert app.seen[-1].step == want[2] + 1
        await pilot.press("pagedown", "end")
        assert w.selected == want[-1]
        await pilot.press("f")
        assert not w.filtered and w.shown == n and w.selected == want[-1]
        # a bad query: a one-line message in the header, nothing moves
        await pilot.press("slash", *"cpu99", "enter")
        await pilot.pause()
        assert w.selected == want[-1] and "cpu99" in w.header_text()
        assert w.query.text == "RESCHEDULE"


async def test_event_log_follow_marks_and_rows():
    tl = seed_tl()
    w = EventLogView(tl, {"m1": 1040, "start": 0})
    app = Host(w)
    async with app.run_test(size=(100, 21)) as pilot:
        await pilot.pause()
        tl.goto(1040)
        w.follow(tl.pos)
        await pilot.pause()
        lines = texts(w, 21)
        mid = lines[1 + 10]                                 # centred: 20 rows, row 1039 in the middle
        assert mid.startswith(">m1") and "1040 cpu1 hv_apic_eoi_write() arch/x86/hyperv/hv_apic.c:91" in mid
        assert w.selected == 1039
        cur = w.render_line(11)
        assert any(s.style and s.style.bold for s in cur._segments)
        assert lines[0].startswith("1,475 events  pos ")
        await pilot.press("up", "enter")
        assert app.seen[-1].step == 1039 and tl.pos == 1040     # the widget never moves the timeline
        w.set_marks({})
        assert texts(w, 21)[11].startswith(">   1040")
        tl.goto(tl.length)


async def test_event_log_branch_switch_and_a_growing_journal():
    b = branched_tl()
    w = EventLogView(b.parent)
    app = Host(w)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.pause()
        await pilot.press("home", "slash", *"edit", "enter")
        assert w.selected == 0 and "no match" in w.header_text()
        await pilot.press("f")
        assert not w.filtered
        w.set_timeline(b)                       # the branch: its what-if edit is event 700
        await pilot.press("home", "n")
        assert w.selected == 700 and R.event_row(b, 700) in texts(w, 20)[10]
        await pilot.press("f")
        assert w.filtered and w.shown == 1
        flt = w._filter
        w.set_timeline(b)                       # the same timeline again: no recomputation
        assert w._filter is flt and w.shown == 1
        w.set_timeline(b.parent)                # nothing matches there: the filter stays, empty
        assert w.shown == 0 and texts(w, 3)[1].strip() == ""
        await pilot.press("down", "enter", "n")
    s = Session.open("soak", max_steps=2000)
    tl = s.tl
    w = EventLogView(tl)
    app = Host(w)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.pause()
        w.search("RESCHEDULE")
        w.set_filter(True)
        before = w.shown
        tl.run(max_steps=3000)
        w.refresh_rows()
        await pilot.pause()
        assert list(w._filter) == list(R.matches(tl, w.query)) and w.shown > before
        w.follow(tl.pos)
        await pilot.press("end")
        assert w.selected == w._filter[-1]


async def test_scrolling_and_searching_a_segmented_trace_rebuilds_no_segment(tmp_path):
    scn = load_scenario("cpu-offline")
    path = tmp_path / "seg.hvt"
    record(scn, scn.config(), path, segment=64)
    tl = open_at(path).timeline
    j = tl.journal
    assert j.K == 64 and j.head.start == len(j)          # every event in a closed segment
    builds = j.builds
    w = EventLogView(tl)
    app = Host(w)
    async with app.run_test(size=(100, 80)) as pilot:
        await pilot.pause()
        await pilot.press("home")
        seen = set()
        while w.selected < len(j) - 1:                    # every row goes through the screen
            seen.update(w.row_event(w.scroll_offset.y + y) for y in range(78) if w.scroll_offset.y + y < w.shown)
            await pilot.press("pagedown")
        assert len(seen) >= len(j) - 78
        await pilot.press("end", "home")
        await pilot.press("slash", *"hv_apic_eoi_write cpu1", "enter", "n", "n", "N", "f", "end", "f")
        await pilot.press("slash", *"deliver", "enter", "f", "pageup", "pageup", "home", "pagedown", "end")
        await pilot.pause()
        assert w.selected > 0
    assert j.builds == builds


# ---------------------------------------------------------------- rows.py
def test_event_row_text():
    tl = seed_tl()
    assert R.event_row(tl, 1039) == "   1040 cpu1 hv_apic_eoi_write() arch/x86/hyperv/hv_apic.c:91"
    assert R.event_row(tl, 1020) == "   1021 deliver cpu1 RESCHEDULE(0xfd)"
    assert R.event_row(tl, 1018) == "   1019 land cpu0->cpu1 RESCHEDULE(0xfd)"
    b = branched_tl()
    assert R.event_row(b, 700) == "    701 what-if edit: inject 0xfd into cpu1's IRR"
    width = R.row_width_bound(tl)
    assert all(len(R.event_row(tl, i)) <= width for i in range(len(tl.journal)))


@pytest.mark.parametrize("text, word", [
    ("", "empty"), ("frobnicate", "unknown term"), ("cpu7", "2 vCPUs"), ("0x1ff", "out of range"),
    ("op deliver", "one kind"), ("RESCHEDULE ERROR", "two vectors"), ("hv_apic_eoi_writ", "did you mean"),
    ("deliver hv_apic_eoi_write", "matches ops"), ("op 0xfd", "no vector"), ("timer cpu0 cpu1", "concerns one"),
])
def test_parse_query_errors_are_one_line(text, word):
    with pytest.raises(R.QueryError) as ei:
        R.parse_query(text, seed_tl().e)
    msg = str(ei.value)
    assert word in msg and "\n" not in msg and len(msg) < 160


def test_parse_query_terms():
    e = seed_tl().e
    q = R.parse_query("resched cpu1".replace("resched", "RESCHEDULE"), e)
    assert (q.vector, q.cpus, q.kind) == (0xFD, frozenset({1}), None)
    assert R.parse_query("0xfd", e).vector == 0xFD == R.parse_query("253", e).vector
    assert R.parse_query("reschedule", e).vector == 0xFD
    q = R.parse_query("op hv_apic_eoi_write() CPU0", e)
    assert (q.kind, q.routine, q.cpus) == ("op", "hv_apic_eoi_write", frozenset({0}))
    assert q.matches(("op", 0), (e.rid["hv_apic_eoi_write"], 3), e)
    assert not q.matches(("op", 1), (e.rid["hv_apic_eoi_write"], 3), e)
    assert R.parse_query("_cpu_down", e).routine == "_cpu_down"      # a function name as rows show it


def _queries(eng):
    names = sorted(eng.rnames)[:6] + ["_cpu_down", "hv_apic_eoi_write"]
    term = st.one_of(st.sampled_from(R.KINDS), st.sampled_from(["cpu0", "cpu1"]),
                     st.sampled_from(["RESCHEDULE", "0xfd", "0xec", "CALL_FUNCTION", "0x31", "LOCAL_TIMER"]),
                     st.sampled_from(names))
    return st.lists(term, min_size=1, max_size=3).map(" ".join)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_find_and_matches_agree_with_brute_force(data):
    tl = data.draw(st.sampled_from(["seed", "branch"]))
    tl = seed_tl() if tl == "seed" else branched_tl()
    text = data.draw(_queries(tl.e))
    try:
        q = R.parse_query(text, tl.e)
    except R.QueryError:
        return
    j = tl.journal
    n = len(j)
    brute = [i for i in range(n) if q.matches(j.act(i), j.where(i), R.engine_for(tl, i))]
    assert list(R.matches(tl, q)) == brute
    rng = random.Random(data.draw(st.integers(0, 1 << 30)))
    for start in [0, n - 1, n, -1, 700, 699] + [rng.randrange(-3, n + 3) for _ in range(12)]:
        assert R.find(tl, q, start, True) == next((i for i in brute if i >= start), None), (text, start)
        assert R.find(tl, q, start, False) == next((i for i in reversed(brute) if i <= start), None), (text, start)


@pytest.mark.parametrize("text", ["deliver cpu2 CALL_FUNCTION", "RESCHEDULE", "land cpu0 cpu3", "timer",
                                  "hv_apic_eoi_write cpu1", "op", "0x31"])
def test_find_scans_100k_columns_without_building_segments(text):
    """The three column strategies (bytes.find for a few codes, one map pass for many, the
    rtpc column for a routine) against brute force over the soak's closed segments."""
    tl = soak_tl()
    j = tl.journal
    builds = j.builds
    q = R.parse_query(text, tl.e)
    brute = R.brute_matches(tl, q)
    assert list(R.matches(tl, q)) == brute
    n = len(j)
    if not brute:
        assert R.find(tl, q, 0) is None and R.find(tl, q, n, False) is None
        return
    assert R.find(tl, q, 0) == brute[0] and R.find(tl, q, n, False) == brute[-1]
    rng = random.Random(text)
    for k in [rng.randrange(len(brute)) for _ in range(10)]:
        i = brute[k]
        assert R.find(tl, q, i) == i == R.find(tl, q, i, False)
        assert R.find(tl, q, i + 1) == (brute[k + 1] if k + 1 < len(brute) else None)
        assert R.find(tl, q, i - 1, False) == (brute[k - 1] if k else None)
    assert j.builds == builds


def test_column_search_ignores_misaligned_byte_matches():
    from array import array
    codes = array("I", [0x0000FD00, 0, 0xFD000000, 0x000000FD, 0xFD])
    buf = codes.tobytes()
    pat = (0xFD).to_bytes(4, __import__("sys").byteorder)
    assert list(R._occurrences(buf, pat, True)) == [3, 4]
    assert list(R._occurrences(buf, pat, False)) == [4, 3]
    # a misaligned match just above an aligned one (backwards) or below it (forwards)
    for vals in ([0x01010101, 0x00000001], [0x01000000, 0x01010101, 0x01010101]):
        buf = array("I", vals).tobytes()
        pat = (0x01010101).to_bytes(4, __import__("sys").byteorder)
        want = [k for k, v in enumerate(vals) if v == 0x01010101]
        assert list(R._occurrences(buf, pat, True)) == want
        assert list(R._occurrences(buf, pat, False)) == want[::-1]


# ---------------------------------------------------------------- text panes (tui/repaint.py)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402
from textual.containers import VerticalScroll  # noqa: E402

from hvdbg.tui.panes import side_by_side_rows  # noqa: E402
from hvdbg.tui.repaint import TextBody  # noqa: E402


class BodyHost(App):
    CSS = "#pane { width: 50%; height: 50%; } .body { width: auto; min-width: 100%; }"

    def compose(self):
        with VerticalScroll(id="pane"):
            yield TextBody(classes="body", id="body")


def _texts(rnd: random.Random, n: int) -> list[str]:
    """Listings of 1..25 lines of 0..70 characters (wider and taller than the 40x12 pane, or not)."""
    return ["\n".join("".join(rnd.choice("abc xyz_0123") for _ in range(rnd.randrange(71)))
                      for _ in range(rnd.randrange(1, 26))) for _ in range(n)]


async def test_text_body_shows_each_text_and_stops_laying_out_the_screen():
    """Stepping between texts of different sizes: every line the pane shows is the text's line
    (blank below it), and once the body has grown to the largest text since the pane last
    changed size, a new text repaints lines instead of asking for a layout; a resize starts
    over at the new text's size."""
    rnd = random.Random(5)
    texts = _texts(rnd, 12)
    app = BodyHost()
    async with app.run_test(size=(80, 24)) as pilot:
        body = app.query_one("#body", TextBody)
        pane = app.query_one("#pane")
        layouts = []
        real = body.refresh

        def counting(*regions, **kw):
            if kw.get("layout"):
                layouts.append(1)
            return real(*regions, **kw)

        body.refresh = counting
        for rnd_pass in range(2):
            layouts.clear()
            for t in texts:
                body.set_text(Text(t, no_wrap=True, end=""))
                await pilot.pause()
                lines = t.split("\n")
                for y in range(min(len(lines) + 3, body.size.height)):
                    shown = body.render_line(y).text.rstrip()
                    assert shown == (lines[y].rstrip() if y < len(lines) else ""), (y, t)
                w = max(len(x) for x in lines)
                assert body.size.height >= len(lines) and body.size.width >= max(w, 1)
            if rnd_pass == 1:
                assert not layouts             # the high-water size holds every text: no layout
        assert body.size.height > pane.scrollable_content_region.height    # grown to the largest
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        body.set_text(Text("short", no_wrap=True, end=""))
        await pilot.pause()
        # started over at the new pane size: one short line, the body as tall as the pane
        assert body.size.height == pane.scrollable_content_region.height == 15
        assert body.size.width == pane.scrollable_content_region.width


async def test_text_body_text_can_be_selected_and_copied():
    """A mouse selection in a pane's body shows the text and copies what it covers (Textual
    takes both from the widget's render())."""
    from textual.geometry import Offset
    from textual.selection import Selection
    app = BodyHost()
    async with app.run_test(size=(80, 24)) as pilot:
        body = app.query_one("#body", TextBody)
        body.set_text(Text("first line\nsecond line", no_wrap=True, end=""))
        await pilot.pause()
        sel = Selection(Offset(0, 1), Offset(6, 1))
        assert body.get_selection(sel) == ("second", "\n")
        app.screen.selections = {body: sel}
        await pilot.pause()
        assert body.render_line(0).text.startswith("first line")
        assert body.render_line(1).text.startswith("second line")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet="ab c→·_(){}", max_size=60), min_size=0, max_size=8),
       st.lists(st.text(alphabet="xy z0:$%", max_size=50), min_size=0, max_size=8),
       st.integers(8, 160), st.sampled_from(["bold red", "", "on blue"]))
def test_side_by_side_is_what_rich_renders_for_the_split_table(left, right, width, style):
    """The split source view as one Text (drawn a line at a time) renders exactly as the rich
    Table.grid it replaced: same characters, same styles, every width."""
    a = Text("\n".join(left), end="")
    b = Text("\n".join(right), end="")
    if left:
        a.stylize(style, 0, len(left[0]))
    t = Table.grid(padding=(0, 2), expand=True)
    t.add_column(ratio=3, no_wrap=True)
    t.add_column(ratio=2, no_wrap=True)
    t.add_row(a, b)
    c1 = Console(width=width, record=True, color_system="truecolor", file=open(os.devnull, "w"))
    c1.print(t)
    c2 = Console(width=width, record=True, color_system="truecolor", file=open(os.devnull, "w"))
    c2.print(Text("\n", no_wrap=True, end="").join(side_by_side_rows(a.split("\n", allow_blank=True),
                                                                     b.split("\n", allow_blank=True), width)))
    assert c2.export_text(styles=True) == c1.export_text(styles=True)
