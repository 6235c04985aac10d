"""Issue 11's acceptance through Pilot: the whole page in the hexdump, 32 vCPUs, the event log
of a 100k-event run, the `:` line as the REPL's editor, E, progress and cancel, quitting while
work runs, and a what-if computed beside a UI that renders compare modes and scrolls."""
import os

import pytest

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from hvdbg.commands import Session  # noqa: E402
from hvdbg.core.machine import RAM  # noqa: E402
from hvdbg.tui.app import HvdbgApp  # noqa: E402
from hvdbg.tui.config import Config  # noqa: E402

from test_tui import errors, session, settle, type_line  # noqa: E402


def app_for(s, tmp_path=None):
    """An app with a config of its own (no user keymap, no theme written to ~)."""
    cfg = Config(path=None if tmp_path is None else tmp_path / "config.toml")
    return HvdbgApp(s, config=cfg)


async def test_hexdump_scrolls_to_0xff8_and_flips_a_bit_there():
    s = session()
    app = app_for(s)
    async with app.run_test(size=(160, 45)) as pilot:
        await type_line(pilot, "goto 1040")
        await pilot.press("1")
        await settle(pilot)
        hx = app.query_one("#hexdump")
        hx.focus()
        await pilot.press("end")                          # the last byte of the 4 KiB page
        assert hx.cursor_offset == 0xFFF and hx.scroll_y > 0
        for _ in range(7):
            await pilot.press("left")
        await pilot.press("right_square_bracket")         # ] : the next bit
        assert hx.cursor_offset == 0xFF8 and hx.cursor_bit == 1
        page = hx.source.base
        before = s.tl.view().read(RAM, page + 0xFF8, 1)
        await pilot.press("x")
        await settle(pilot)
        assert s.current != "main", errors(app)
        assert s.tl.fork == 1040 and s.tl.state_at(1041).read(RAM, page + 0xFF8, 1) == before ^ 0b10   # the edit is event 1041
        assert not errors(app)


async def test_focus_cpu31_of_32_shows_its_pane_and_list_row():
    s = Session.open("smp", vcpus=32, max_steps=3000)
    app = app_for(s)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_line(pilot, "focus cpu31")
        await pilot.pause()
        assert app.query_one("#cpudetail").cpu == 31
        assert "cpu31" in str(app.query_one("#cpudetail").border_title)
        lst = app.query_one("#cpulist")
        assert lst.highlighted == 31
        await pilot.pause()
        first = int(lst.scroll_y)
        assert first <= 31 < first + lst.scrollable_content_region.height   # the row is in view
        assert "of 32" in str(lst.border_subtitle)
        await pilot.press("p")                             # the picker lists every vCPU
        assert app.screen.__class__.__name__ == "VcpuPicker"
        await pilot.press("escape")


async def test_event_log_search_on_100k_events_and_goto_the_hit():
    s = Session.open("soak", max_steps=100_000)
    app = app_for(s)
    async with app.run_test(size=(140, 40)) as pilot:
        assert s.tl.length == 100_000
        await pilot.press("ctrl+e")
        ev = app.query_one("#events")
        assert ev.has_focus
        await pilot.press("home")
        assert ev.selected == 0
        await pilot.press("slash", *"deliver", "enter")
        hit = ev.selected
        assert hit > 0
        await pilot.press("enter")
        await settle(pilot)
        assert s.tl.pos == hit + 1                         # step N = after event N (the row shows hit + 1)
        assert s.tl.events[hit].act[0] == "deliver"
        assert not errors(app)


async def test_colon_line_completes_and_recalls_history_without_moving_panes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    s = session()
    app = app_for(s, tmp_path)
    async with app.run_test(size=(140, 45)) as pilot:
        await type_line(pilot, "goto 1040")
        hx = app.query_one("#hexdump")
        cursor = hx.cursor_offset
        await pilot.press("colon", "b", "r", "tab")
        line = app.query_one("#cmdline")
        assert line.value in ("break ", "breaks ") or app.query_one("#completions").has_class("open")
        line.value = ""
        await pilot.press("up")
        assert line.value == "goto 1040"                   # history, not the hexdump
        assert hx.cursor_offset == cursor and s.tl.pos == 1040
        await pilot.press("down", "escape")
        assert not line.has_class("open")


async def test_E_moves_one_event_back_and_e_forward():
    s = session()
    app = app_for(s)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_line(pilot, "goto 700")
        await pilot.press("E")
        await settle(pilot)
        assert s.tl.pos == 699
        await pilot.press("e")
        await settle(pilot)
        assert s.tl.pos == 700


async def _start_whatif(pilot, app, s):
    """A what-if from step 0 of a long recording: a branch re-executes every event after it."""
    await type_line(pilot, "goto 1")
    assert s.tl.pos == 1
    app.run_line("inject cpu0 0xfd")
    assert app.busy
    for _ in range(200):                                  # until its progress shows
        await pilot.pause(0.05)
        if app.query_one("#status").progress is not None:
            break


async def test_a_long_whatif_shows_progress_and_escape_cancels_it():
    s = Session.open("soak", max_steps=200_000)
    app = app_for(s)
    async with app.run_test(size=(140, 40)) as pilot:
        before = set(s.branches)
        await _start_whatif(pilot, app, s)
        status = app.query_one("#status")
        assert status.progress is not None and "what-if" in str(status.render())
        await pilot.press("escape")
        await settle(pilot)
        assert not app.busy and set(s.branches) == before and s.current == "main"
        assert any("cancelled" in m for m in errors(app))
        await type_line(pilot, "goto 10")                   # the session goes on
        assert s.tl.pos == 10


@pytest.mark.slow
async def test_a_whatif_on_a_1m_event_trace_cancels(tmp_path):
    from hvdbg.core.scenario import load_scenario
    from hvdbg.recording import record
    f = tmp_path / "soak.hvt"
    scn = load_scenario("soak")
    cfg = scn.config()
    cfg.max_steps = 1_000_000
    record(scn, cfg, f)
    s = Session.open(str(f))
    app = app_for(s)
    async with app.run_test(size=(140, 40)) as pilot:
        before = set(s.branches)
        await _start_whatif(pilot, app, s)
        assert app.query_one("#status").progress is not None
        await pilot.press("escape")
        await settle(pilot)
        assert set(s.branches) == before


async def test_q_while_work_runs_cancels_it_and_exits():
    s = Session.open("soak", max_steps=200_000)
    app = app_for(s)
    async with app.run_test(size=(140, 40)) as pilot:
        await _start_whatif(pilot, app, s)
        progress = app.progress
        await pilot.press("q")
        await pilot.pause()
        assert progress.cancelled
    assert not app.is_running


_SERIAL = []


@pytest.mark.parametrize("run", range(20))
async def test_whatif_in_the_worker_beside_compare_rendering_equals_the_serial_result(run):
    """The branch is computed in the worker while the UI renders the hexdump against a mark
    and another branch and scrolls the panes; its outcome and digest equal a serial run."""
    s = session()
    if not _SERIAL:
        serial = Session.open("cpu-offline")
        serial.tl.goto(1039)
        serial.execute("flip 0x10001000 0")
        serial.tl.goto(serial.tl.length)
        _SERIAL.append((serial.tl.result.outcome, serial.tl.length, serial.tl.view().digest()))
    want = _SERIAL[0]
    app = app_for(s)
    async with app.run_test(size=(160, 45)) as pilot:
        await type_line(pilot, "goto 1000")
        await pilot.press("m")
        await type_line(pilot, "fix gfp-zero")               # a second branch to compare with
        await type_line(pilot, "branch switch main")
        await type_line(pilot, "goto 1039")
        await pilot.press("equals_sign", "equals_sign")      # compare vs mark, then vs the other branch
        app.run_line("flip 0x10001000 0")
        for k in ("ctrl+e", "pageup", "pageup", "equals_sign", "f4", "pagedown", "end", "home", "equals_sign"):
            await pilot.press(k)
        await settle(pilot)
        name = s.current
        assert name.startswith("flip"), errors(app)
        tl = s.tl
        tl.goto(tl.length)
        got = (tl.result.outcome, tl.length, tl.view().digest())
        assert got == want


async def test_clicking_a_vector_or_an_msr_selects_it():
    """A click on a vector name in the interrupts pane selects that vector (focusing its vCPU
    when it is another's) and `y` explains it; a click on an MSR row selects that MSR."""
    s = session()
    app = app_for(s)
    async with app.run_test(size=(160, 45)) as pilot:
        await type_line(pilot, "goto 1040")
        await type_line(pilot, "focus cpu0")
        await settle(pilot)
        irq = app.query_one("#irq")
        body = irq._body
        hits = [h for h in irq._hits if h[3] == 1]
        assert hits, irq._hits                            # cpu1 has a vector in service at step 1040
        line, x0, x1, cpu, kind, vec = hits[0]

        def reversed_names():
            t = irq._shown
            return [t.plain[sp.start:sp.end] for sp in t.spans if "reverse" in str(sp.style)]

        assert not reversed_names()
        await pilot.click(body, offset=(x0 + (x1 - x0) // 2, line))
        await settle(pilot)
        assert app.selection == ("vector", (kind, vec))
        assert s.tl.focus == 1                            # the vector's vCPU is focused
        assert reversed_names() == [irq._shown.plain.split("\n")[line][x0:x1]]    # shown selected
        await pilot.click(body, offset=(0, 0))            # the title line: nothing changes
        await pilot.pause()
        assert app.selection == ("vector", (kind, vec))
        msrs = app.query_one("#msrs")
        from hvdbg.tui import views
        rows = views.msr_rows(s, s.tl.focus)
        assert rows
        await pilot.click(msrs._body, offset=(3, 1))
        await pilot.pause()
        assert app.selection == ("msr", rows[0])
        assert not errors(app)
