"""What a step repaints (hvdbg/tui/repaint.py and the panes that use it): the shortcuts that
keep a step to one small frame give what the plain Textual path gives, and repaint only
what changed - a border title its row, a long transcript no scrollbar, a 32-vCPU list one
row."""
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from rich.text import Text  # noqa: E402
from textual.app import App  # noqa: E402
from textual.containers import VerticalScroll  # noqa: E402
from textual.content import Content  # noqa: E402
from textual.scrollbar import ScrollBarRender  # noqa: E402

from hvdbg.commands import Session  # noqa: E402
from hvdbg.tui import views  # noqa: E402
from hvdbg.tui.app import HvdbgApp  # noqa: E402
from hvdbg.tui.config import Config  # noqa: E402
from hvdbg.tui.panes import TranscriptPane, side_by_side_rows  # noqa: E402
from hvdbg.tui.repaint import TextBody, ThumbScrollBar, set_titles, thumb_cells, thumb_rows  # noqa: E402


def counted(widget) -> list:
    """A one-element list counting the lines Textual renders for `widget` from now on."""
    n = [0]
    cache = widget._styles_cache
    real = cache.render_line

    def render_line(*a, **kw):
        n[0] += 1
        return real(*a, **kw)
    cache.render_line = render_line
    return n


def _spans(c: Content) -> list:
    return [s for s in c.spans if s.start < s.end]


styled_text = st.builds(
    lambda lines, trailing, base, marks: _styled("\n".join(lines) + trailing, base, marks),
    st.lists(st.text(alphabet="ab c→·", max_size=12), max_size=6), st.sampled_from(["", "\n"]),
    st.sampled_from(["", "bold", "on blue"]),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 80), st.sampled_from(["red", "reverse", "dim italic"])),
             max_size=4))


def _styled(plain: str, base: str, marks: list) -> Text:
    t = Text(plain, style=base, end="")
    for a, b, style in marks:
        a, b = sorted((min(a, len(plain)), min(b, len(plain))))
        t.stylize(style, a, b)
    return t


@settings(max_examples=150, deadline=None)
@given(st.lists(styled_text, min_size=1, max_size=4))
def test_text_body_lines_are_the_lines_a_static_makes_of_the_text(texts):
    """Line by line (each converted once, then reused) is what Content.from_rich_text of the
    whole text split at newlines gives - what a Static shows - for any text, base style and
    spans; render() (for mouse selection) is the whole text."""
    body = TextBody()
    for t in texts:
        for given_ in (t, t.split("\n", allow_blank=True)):
            body.set_text(given_)
            whole = Content.from_rich_text(t)
            want = whole.split("\n", allow_blank=True)
            assert [c.plain for c in body.lines] == [c.plain for c in want]
            assert [_spans(c) for c in body.lines] == [_spans(c) for c in want]
            assert body.render().plain == whole.plain


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(styled_text, max_size=5), st.lists(styled_text, max_size=5),
                          st.integers(8, 120)), min_size=1, max_size=5))
def test_split_rows_from_the_memo_are_the_rows_made_afresh(calls):
    """The split view's row memo (kept across steps) never returns a row other than the one
    side_by_side_rows would make now."""
    memo: dict = {}
    for left, right, width in calls:
        left = [x for t in left for x in t.split("\n")]
        right = [x for t in right for x in t.split("\n")]
        assert side_by_side_rows(left, right, width, memo=memo) == side_by_side_rows(left, right, width)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 60), st.integers(0, 5000), st.integers(0, 5000), st.floats(0, 5000), st.integers(0, 5000),
       st.integers(0, 5000), st.floats(0, 5000))
def test_equal_thumb_cells_draw_equal_bars(size, v1, w1, p1, v2, w2, p2):
    """ThumbScrollBar repaints only when thumb_cells changes: two bar states with equal
    thumb_cells must draw the same segments (what ScrollBar._render_bar draws)."""
    p1, p2 = int(p1 * 8) / 8, int(p2 * 8) / 8          # ScrollBar.validate_position
    p1, p2 = min(p1, max(0, v1 - w1)), min(p2, max(0, v2 - w2))   # a widget's scroll range

    def drawn(v, w, p):
        window = w if w < v else 0
        return ScrollBarRender.render_bar(size=size, virtual_size=v, window_size=window, position=p).segments
    if thumb_cells(size, v1, w1, p1) == thumb_cells(size, v2, w2, p2):
        assert drawn(v1, w1, p1) == drawn(v2, w2, p2)
    # the same bar one line further on: a repaint is skipped only if it draws the same
    if thumb_cells(size, v1, w1, p1) == thumb_cells(size, v1, w1, min(p1 + 1, max(0, v1 - w1))):
        assert drawn(v1, w1, p1) == drawn(v1, w1, min(p1 + 1, max(0, v1 - w1)))


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 60), st.integers(0, 5000), st.integers(0, 5000), st.floats(0, 5000), st.integers(0, 5000),
       st.integers(0, 5000), st.floats(0, 5000))
def test_cells_with_equal_thumb_rows_draw_equal_segments(size, v1, w1, p1, v2, w2, p2):
    """ThumbScrollBar repaints only the cells whose thumb_rows entry changed: wherever two
    states of a bar of the same length have equal entries, ScrollBarRender draws the same
    segment there (glyph, colours and the click's meta), and each has one entry per segment."""
    p1, p2 = int(p1 * 8) / 8, int(p2 * 8) / 8
    p1, p2 = min(p1, max(0, v1 - w1)), min(p2, max(0, v2 - w2))

    def drawn(v, w, p):
        window = w if w < v else 0
        return ScrollBarRender.render_bar(size=size, virtual_size=v, window_size=window, position=p).segments
    a, b = thumb_rows(thumb_cells(size, v1, w1, p1)), thumb_rows(thumb_cells(size, v2, w2, p2))
    sa, sb = drawn(v1, w1, p1), drawn(v2, w2, p2)
    assert len(a) == len(sa) and len(b) == len(sb)
    for y in range(min(len(a), len(b))):
        if a[y] == b[y]:
            assert sa[y] == sb[y], y


class PaneHost(App):
    CSS = ("#pane { border: round white; height: 12; width: 50; } .body { width: auto; min-width: 100%; } "
           "TranscriptPane { height: 14; border: round white; } .body.alt { background: darkred; color: yellow; } "
           ".body.pad { padding: 1 1; }")

    def compose(self):
        with VerticalScroll(id="pane"):
            yield TextBody(classes="body", id="body")
        yield TranscriptPane(id="transcript")


async def test_a_title_change_repaints_the_border_row_only_and_shows():
    app = PaneHost()
    async with app.run_test(size=(80, 30)) as pilot:
        pane = app.query_one("#pane")
        app.query_one("#body", TextBody).set_text("x\ny")
        set_titles(pane, "first", "sub one")
        await pilot.pause()
        n = counted(pane)
        set_titles(pane, "second title")
        await pilot.pause()
        assert n[0] == 1                                   # the top border row
        set_titles(pane, "second title", "sub two")
        await pilot.pause()
        assert n[0] == 2                                   # and the bottom one
        set_titles(pane, "second title", "sub two")        # unchanged: nothing
        await pilot.pause()
        assert n[0] == 2
        shot = app.export_screenshot()
        assert "second\xa0title" in shot.replace("&#160;", "\xa0") and "sub\xa0two" in shot.replace("&#160;", "\xa0")


async def test_a_long_transcript_takes_lines_without_repainting_its_scrollbar():
    app = PaneHost()
    async with app.run_test(size=(80, 30)) as pilot:
        log = app.query_one("#transcript", TranscriptPane)
        for i in range(600):
            log.write_entries([Text(f": step {i}", style="bold"), Text(f"line {i}")])
        await pilot.pause()
        bar = log.vertical_scrollbar
        assert isinstance(bar, ThumbScrollBar) and bar.display
        n = counted(bar)
        for i in range(5):
            log.write_entries([Text(": step"), Text("more")])
            await pilot.pause()
        assert n[0] == 0                                   # the thumb stayed on the same cells
        assert log.scroll_y == log.max_scroll_y            # still following the end
        assert log.plain[-2:] == [": step", "more"] and len(log.plain) == 1210
        log.scroll_home(animate=False)
        await pilot.pause()
        assert n[0] > 0                                    # a thumb that moves is repainted


async def test_a_step_of_32_vcpus_repaints_the_changed_list_rows_and_they_are_right():
    s = Session.open("smp", vcpus=32, max_steps=3000)
    app = HvdbgApp(s, config=Config(path=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        lst = app.query_one("#cpulist")
        n = counted(lst)
        for k in range(6):
            app.run_line("step")
            await pilot.pause()
            want = [line for _, line in views.vcpu_rows(s, compact=True)]
            first = int(lst.scroll_y)
            for y in range(lst.scrollable_content_region.height):
                shown = lst.render_line(y).text.rstrip()
                assert shown[2:] == want[first + y].rstrip(), (k, y)
        assert n[0] <= 6 * 2                               # the stepping vCPU's row (and the focus)


def test_vectors_down_lists_set_bits_highest_first():
    from hvdbg.core.defs import vectors_down
    for x in (0, 1, 1 << 255, 0xF0F0, (1 << 256) - 1, 0x8000_0001):
        assert vectors_down(x) == [v for v in range(255, -1, -1) if x >> v & 1]


async def test_the_dirty_only_compositor_writes_what_textual_writes():
    """For random dirty regions over a real screen (panes, borders, scrollbars, the footer),
    rendering only the widgets under a dirty region gives the same terminal update as
    Textual's render of every widget in the box around them."""
    import random

    from textual._compositor import Compositor
    from textual.geometry import Region

    from hvdbg.tui.repaint import DirtyOnlyCompositor
    s = Session.open("smp", vcpus=8, max_steps=3000)
    app = HvdbgApp(s, config=Config(path=None))
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(5):
            app.run_line("step")
        await pilot.pause()
        comp = app.screen._compositor
        assert isinstance(comp, DirtyOnlyCompositor)
        rnd = random.Random(11)
        skipped = 0
        for trial in range(200):
            regions = set()
            for _ in range(rnd.randrange(1, 6)):
                x, y = rnd.randrange(120), rnd.randrange(40)
                regions.add(Region(x, y, rnd.randrange(1, 121 - x), rnd.randrange(1, 41 - y)))
            comp._dirty_regions = set(regions)
            want = Compositor.render_partial_update(comp).render_segments(app.console)
            comp._dirty_regions = set(regions)
            got = comp.render_partial_update().render_segments(app.console)
            assert got == want, (trial, regions)
            rendered = [w for w, (r, c) in comp.visible_widgets.items()
                        if r.intersection(c) and any(r.intersection(c).overlaps(q) for q in regions)]
            skipped += len(comp.visible_widgets) - len(rendered)
        assert skipped > 0                                 # some widgets were left out


async def test_the_event_log_repaints_the_rows_a_move_changes_and_nothing_is_stale():
    """Steps, reverse steps and short gotos repaint only the event log's header and the rows
    that changed (not all of them, unless it scrolled); what the screen shows is then what a
    full repaint of the log shows."""
    import random
    s = Session.open("smp", vcpus=8, max_steps=3000)
    app = HvdbgApp(s, config=Config(path=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        ev = app.query_one("#events")
        app.run_line("goto 0")              # near the top the log cannot scroll to centre
        await pilot.pause()

        def shown() -> list[str]:
            r = ev.region
            strips = app.screen._compositor.render_strips()
            return [strips[y].crop(r.x, r.right).text for y in range(r.y, r.bottom)]
        rnd = random.Random(3)
        partial = 0
        for k in range(40):
            n = counted(ev)
            scroll = ev.scroll_y
            if k % 10 == 9:
                move = f"goto {rnd.randrange(0, 60)}"      # far: the log scrolls
            elif k % 2:
                move = f"goto {rnd.randrange(0, 8)}"
            else:
                move = rnd.choice(["step", "rstep"])
            app.run_line(move)
            await pilot.pause()
            seen = shown()
            if ev.scroll_y == scroll and move in ("step", "rstep"):
                assert n[0] <= 4, (k, move, n[0])        # header, two rows, the selection
                partial += 1
            ev.refresh()
            await pilot.pause()
            assert shown() == seen, (k, move)
        assert partial > 5


def _shown(app, widget) -> list[str]:
    """What the screen shows in `widget`'s region, as the compositor draws it now."""
    r = widget.region
    strips = app.screen._compositor.render_strips()
    return [strips[y].crop(r.x, r.right).text for y in range(r.y, r.bottom)]


async def test_a_step_deep_in_a_run_scrolls_the_event_log_and_renders_only_the_new_row():
    """With the current event centred, every step scrolls the log by a row: the rows still
    in view are moved, not rendered again (ShiftOnScroll) - the header, the row that came
    into view and the rows whose event changed are - and the screen shows what a full
    repaint shows."""
    s = Session.open("smp", vcpus=8, max_steps=3000)
    app = HvdbgApp(s, config=Config(path=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        ev = app.query_one("#events")
        app.run_line("goto 1500")
        await pilot.pause()
        scrolled = 0
        for k, move in enumerate(["event", "event", "revent", "step", "event 2", "revent 2", "rstep", "goto 1499"] * 3):
            n = counted(ev)
            scroll, pos = ev.scroll_y, s.tl.pos
            app.run_line(move)
            await pilot.pause()
            seen = _shown(app, ev)
            moved, done = abs(ev.scroll_y - scroll), abs(s.tl.pos - pos)
            if 0 < moved and done <= 2:
                scrolled += 1
                # header + rows that came into view + rows whose event changed + the selection
                assert n[0] <= 1 + moved + done + 2 < ev.size.height, (k, move, n[0])
            ev.refresh()
            await pilot.pause()
            assert _shown(app, ev) == seen, (k, move)
        assert scrolled >= 12


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.tuples(st.just("scroll"), st.integers(-14, 14)),
                          st.tuples(st.just("write"), st.integers(1, 4)),
                          st.tuples(st.just("home"), st.just(0))), min_size=1, max_size=12))
def test_a_scrolled_or_written_transcript_shows_what_a_full_repaint_shows(moves):
    """Random scrolls (by less or more than a page) and writes of a long transcript: the
    lines kept across a scroll are the lines a full repaint draws, and a scroll by d rows
    renders at most d rows."""
    import asyncio

    async def run():
        app = PaneHost()
        async with app.run_test(size=(80, 30)) as pilot:
            log = app.query_one("#transcript", TranscriptPane)
            for i in range(60):
                log.write_entries([Text(f": cmd {i}", style="bold"), Text(f"output {i} " + "x" * (i % 50))])
            await pilot.pause()
            for k, (what, arg) in enumerate(moves):
                n = counted(log)
                if what == "scroll":
                    log.scroll_to(y=max(0, min(log.max_scroll_y, log.scroll_y + arg)), animate=False, immediate=True)
                elif what == "write":
                    log.write_entries([Text(f"new {k}.{j}") for j in range(arg)])
                else:
                    log.scroll_home(animate=False, immediate=True)
                await pilot.pause()
                seen = _shown(app, log)
                if what == "scroll" and abs(arg) < log.size.height:
                    assert n[0] <= abs(arg), (k, what, arg, n[0])
                log.refresh()
                await pilot.pause()
                assert _shown(app, log) == seen, (k, what, arg)
    asyncio.run(run())


def test_remembered_listings_are_the_listings_built_afresh_and_follow_breakpoints():
    """views' listings (vCPU pane, asm, src) come from a memo keyed by routine, pc and
    breakpoints: at every position they equal a fresh build, the same position gives the
    same object, and a breakpoint set or disabled shows at once."""
    s = Session.open("smp", vcpus=2, max_steps=400)
    tl = s.tl
    fresh = {views.vcpu_listing: views._vcpu_listing, views.asm_lines: views._asm_lines,
             views.src_lines: views._src_lines}

    def check(cpu: int) -> None:
        cv = tl.view().cpu(cpu)
        r = tl.e.routines[cv.routine_id]
        bps = frozenset(views.pc_breaks(tl, cv.routine_id))
        for shown, build in fresh.items():
            got = shown(s, cpu) if shown is views.vcpu_listing else shown(tl, cpu)
            again = shown(s, cpu) if shown is views.vcpu_listing else shown(tl, cpu)
            want = build(r, cv.pc, bps)
            assert got[1] == want[1] and got[0] == want[0] and again is got
    for k in range(0, 400, 13):
        tl.goto(k)
        for cpu in (0, 1):
            check(cpu)
    cv = tl.view().cpu(0)
    name = tl.e.routines[cv.routine_id].name
    before = views.vcpu_listing(s, 0)[0].plain
    s.execute(f"break {name}+{cv.pc}")
    marked = views.vcpu_listing(s, 0)[0].plain
    assert marked != before and "●→" in marked
    check(0)
    s.execute("disable")
    assert views.vcpu_listing(s, 0)[0].plain == before


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(st.sampled_from(["  0 cli", "→ 1 add r0", "      func() f.c:12", "x" * 60, ""]),
                                   max_size=14),
                          st.sampled_from(["", "alt", "pad"])), min_size=1, max_size=8))
def test_a_body_line_remembered_by_content_is_the_line_textual_renders(texts):
    """TextBody's styles cache (ContentKeyedLines) hands back a line rendered before when
    the line, the body's size and colours are the same: every line it gives equals what
    Textual's own styles cache renders for the body as it is now - across texts, a colour
    change and padding (which takes Textual's path)."""
    import asyncio

    from textual._styles_cache import StylesCache

    from hvdbg.tui.repaint import ContentKeyedLines

    async def run():
        app = PaneHost()
        async with app.run_test(size=(80, 30)) as pilot:
            body = app.query_one("#body", TextBody)
            assert isinstance(body._styles_cache, ContentKeyedLines)
            for lines, cls in texts:
                body.set_classes(f"body {cls}".strip())
                body.set_text(Text("\n".join(lines)))
                await pilot.pause()
                crop = body.size.region
                got = body._styles_cache.render_widget(body, crop)
                want = StylesCache().render_widget(body, crop)
                assert [list(g) for g in got] == [list(w) for w in want], (lines, cls)
    asyncio.run(run())


async def test_a_remembered_scrollbar_render_is_the_render_textual_makes():
    """ThumbScrollBar keeps its last few renders by what render() returns and its size:
    for bar states visited in random order (each several times), the strips it shows are
    the strips ScrollBar._render_content makes of the same state."""
    import random

    from textual.scrollbar import ScrollBar
    app = PaneHost()
    async with app.run_test(size=(80, 30)) as pilot:
        log = app.query_one("#transcript", TranscriptPane)
        for i in range(60):
            log.write_entries([Text(f"line {i}")])
        await pilot.pause()
        bar = log.vertical_scrollbar
        assert isinstance(bar, ThumbScrollBar) and bar.display
        rnd = random.Random(5)
        sizes = [(rnd.randrange(13, 400), rnd.randrange(1, 13)) for _ in range(4)]
        states = [(v, w, rnd.randrange(0, v - w + 1)) for v, w in sizes for _ in range(3)]
        hits = 0
        for k in range(60):
            virtual, window, position = rnd.choice(states)
            bar.window_virtual_size, bar.window_size = virtual, window
            bar.position = min(position, virtual - window)
            bar._layout_cache.clear()
            before = len(bar._bars or ())
            bar._render_content()
            hits += len(bar._bars) == before
            got = [list(line) for line in bar._render_cache.lines]
            ScrollBar._render_content(bar)
            assert got == [list(line) for line in bar._render_cache.lines], (k, virtual, window, position)
        assert hits > 10
