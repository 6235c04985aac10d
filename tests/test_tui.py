"""The TUI through Textual's Pilot: bindings, the `:` line, the palette, the seed story, bad input, random keys."""
import os
import random

import pytest

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from hvdbg.commands import COMMANDS, Session  # noqa: E402
from hvdbg.tui.app import CommandsProvider, HvdbgApp  # noqa: E402

from test_script import SAMPLES  # noqa: E402

_BASE = {}


def session(name="cpu-offline", **opts):
    key = (name, tuple(sorted(opts.items())))
    if key not in _BASE:
        _BASE[key] = Session.open(name, **opts)
    s = _BASE[key]
    # a fresh view of the same recording: drop branches, marks, breakpoints; back to the end
    s.branches = {"main": s.branches["main"]}
    s.current = "main"
    s.marks.clear()
    s.tl.breaks.clear()
    s.tl.focus = 0
    s.tl.goto(s.tl.length)
    return s


def errors(app):
    return [m for sev, m in app.messages if sev == "error"]


async def close_all(pilot):
    """Close modal screens and the `:` line a key opened."""
    app = pilot.app
    for _ in range(5):
        if len(app.screen_stack) > 1:
            app.pop_screen()
        elif app.query_one("#cmdline").has_class("open"):
            await pilot.press("escape")
        else:
            break
        await pilot.pause()


async def settle(pilot):
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def type_line(pilot, line, keys=False):
    """The `:` line: open it with the key, fill it (typed key by key when keys=True), submit."""
    await pilot.press("colon")
    if keys:
        for ch in line:
            await pilot.press({" ": "space", "-": "minus", "_": "underscore"}.get(ch, ch))
    else:
        pilot.app.query_one("#cmdline").value = line
    await pilot.press("enter")
    await settle(pilot)


async def test_movement_keys_dispatch_through_the_commands():
    s = session()
    app = HvdbgApp(s)
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("1")
        assert s.tl.focus == 1
        await type_line(pilot, "goto 500")
        assert s.tl.pos == 500
        await pilot.press("s")
        p1 = s.tl.pos
        assert p1 > 500 and s.tl.events[p1 - 1][1] == ("op", 1)
        await pilot.press("S")
        assert s.tl.pos < p1
        for k in ("n", "N", "f", "F", "u", "d", "w", "m", "t", "tab", "0"):
            await pilot.press(k)
        assert s.tl.focus == 0 and "m1" in s.marks
        await pilot.press("c")
        assert s.tl.pos == s.tl.length
        await pilot.press("C")
        assert s.tl.pos == 0
        assert not errors(app), errors(app)


async def test_every_binding_runs_without_error():
    s = session()
    app = HvdbgApp(s)
    async with app.run_test(size=(140, 45)) as pilot:
        await type_line(pilot, "goto 1040")
        for b in app.keys:
            for key in b.keys.split(","):
                if key in ("q", "colon", "g", "exclamation_mark", "question_mark"):
                    continue
                await pilot.press(key)
                await settle(pilot)
                await close_all(pilot)
        # keys that open things: the help screen, the prompt (closed with escape)
        await settle(pilot)
        await pilot.press("question_mark")
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.press("exclamation_mark")
        assert app.screen.__class__.__name__ == "WhatIfScreen"
        await pilot.press("escape")
        for key in ("g", "i", "colon"):
            await pilot.press(key)
            assert app.query_one("#cmdline").has_class("open")
            await pilot.press("escape")
            assert not app.query_one("#cmdline").has_class("open")
        # keys may be refused where they make no sense (e.g. flipping a byte before the page
        # exists, after `C` went back to step 0): a notification, never an internal error
        assert not [m for m in errors(app) if m.startswith("internal error")], errors(app)


async def test_every_command_is_reachable_from_the_command_line_and_palette(tmp_path):
    s = session()
    app = HvdbgApp(s)
    async with app.run_test(size=(160, 50)) as pilot:
        provider = CommandsProvider(app.screen)
        for name in COMMANDS:
            hits = [h async for h in provider.search(name)]
            assert any(name in str(h.text or h.match_display) for h in hits), name
        app.synchronous = True
        for name, line in SAMPLES.items():
            s.current = "main"
            s.tl.goto(1040)
            before = len(app.messages)
            assert app.run_line(line.format(tmp=tmp_path)), (name, app.messages[before:])
        # and one through real key presses on the `:` line
        await type_line(pilot, "break skip", keys=True)
        assert s.tl.breaks
        assert not errors(app)


async def test_palette_opens_and_runs_a_command():
    s = session()
    app = HvdbgApp(s)
    async with app.run_test(size=(140, 45)) as pilot:
        await type_line(pilot, "goto 100")
        app.palette_command("step")
        await settle(pilot)
        assert s.tl.pos > 100
        app.palette_command("goto")
        assert app.query_one("#cmdline").value == "goto "


async def test_seed_story_in_the_tui():
    s = session()
    app = HvdbgApp(s)
    async with app.run_test(size=(140, 45)) as pilot:
        assert s.tl.result.outcome == "hang"
        await pilot.press("y")                          # why: the chain, each link jumps to its step
        assert app.screen.__class__.__name__ == "WhyScreen"
        assert any("EOI skipped" in lk["text"] for lk in app.screen.links)
        skip_link = next(i for i, lk in enumerate(app.screen.links) if lk["kind"] == "skip")
        app.screen.query_one("#whylist").highlighted = skip_link
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.__class__.__name__ != "WhyScreen"
        assert any(n[0] == "eoi_skipped" for n in s.tl.events[s.tl.pos - 1][6])
        await pilot.press("1")                          # focus cpu1
        await type_line(pilot, "break skip")
        await type_line(pilot, "goto 0")
        await pilot.press("c")                          # jump to the skipped EOI
        skip_step = s.tl.pos - 1
        assert any(n[0] == "eoi_skipped" for n in s.tl.events[skip_step][6])
        await type_line(pilot, "delete")
        await type_line(pilot, "break msr HV_X64_MSR_VP_ASSIST_PAGE wr 0 cpu 1")
        await pilot.press("C")                          # reverse to the disabling WRMSR
        assert s.tl.pos - 1 == s.tl.e.pack_state["first_disable_step"]
        await pilot.press("x")                          # flip bit0 of apic_assist in RAM (the selected bit)
        assert app.busy or s.current != "main"          # computed in a worker: the UI stays live
        await settle(pilot)
        assert s.current != "main"
        assert s.tl.result.outcome == "ok"
        assert "branches main:hang" in str(app.query_one("#status").render())
        assert not errors(app), errors(app)


async def test_bad_input_is_a_notification_and_the_session_goes_on(tmp_path):
    s = session()
    app = HvdbgApp(s)
    async with app.run_test(size=(120, 40)) as pilot:
        bad = tmp_path / "bad.hvt"
        bad.write_bytes(b"not a trace")
        for line in ("goto 99999999", "set mem 0x10001000 zz", "frobnicate", f"load {bad}", "load /nonexistent.hvt",
                     "focus cpu7"):
            n = len(errors(app))
            await type_line(pilot, line)
            assert len(errors(app)) == n + 1, line
        await type_line(pilot, "goto 10")
        assert s.tl.pos == 10


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_keys_at_random_sizes_never_raise(seed):
    """Thousands of random bindings (their actions, as a key press would run them) at random
    terminal sizes between 60x20 and 250x80, plus real key presses in between."""
    rnd = random.Random(seed)
    s = session()
    app = HvdbgApp(s)
    binds = [b for b in app.keys if b.action not in ("quit_app", "quit", "help_quit")]
    keys = [k for b in binds for k in b.keys.split(",")] + ["escape", "enter", "a", "z", "tab", "up", "pagedown"]
    async with app.run_test(size=(100, 30)) as pilot:
        for i in range(800):
            if i % 100 == 0:
                await pilot.resize_terminal(rnd.randint(60, 250), rnd.randint(20, 80))
            if i % 25 == 0:
                await pilot.press(rnd.choice(keys))
            else:
                b = rnd.choice(binds)
                if b.action.startswith("prompt") or b.action in ("help",):
                    continue
                await app.run_action(b.action)
            if app.busy and rnd.random() < 0.1:
                await app.workers.wait_for_complete()
            if app.screen.__class__.__name__ in ("HelpScreen", "WhyScreen", "WhatIfScreen"):
                await pilot.press("escape")
            if app.query_one("#cmdline").has_class("open") and rnd.random() < 0.7:
                await pilot.press("escape")
        await pilot.pause()
        assert app.is_running
    assert not [m for m in errors(app) if m.startswith("internal error")]


async def test_eight_vcpus_compact_list_and_detail():
    s = session("smp", vcpus=8, fix="gfp-zero")
    app = HvdbgApp(s)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("7")
        cpus = [p.cpu for p in app.query("VcpuPane")]
        assert cpus == [7]
        lst = app.query_one("#cpulist")
        rows = [str(lst.get_option_at_index(i).prompt) for i in range(lst.option_count)]
        assert [r.split()[r.startswith("▶")] for r in rows] == [f"cpu{c}" for c in range(8)]
        assert rows[7].startswith("▶ cpu7") and lst.highlighted == 7


async def test_a_long_recording_opens_and_scrolls():
    s = Session.open("soak", max_steps=100_000)
    app = HvdbgApp(s)
    async with app.run_test(size=(120, 40)) as pilot:
        assert s.tl.length == 100_000
        await type_line(pilot, "goto 99990")
        for k in ("S", "s", "C"):
            await pilot.press(k)
        await type_line(pilot, "goto 5")
        assert s.tl.pos in (0, 5)
        assert not errors(app)


async def test_hexdump_compares_against_mark_and_branch():
    s = session()
    app = HvdbgApp(s)
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("1")
        await type_line(pilot, "goto 1000")
        await pilot.press("m")
        await type_line(pilot, "goto 1040")              # the xchg at 1039 zeroed apic_assist
        await pilot.press("equals_sign")                 # -> vs the last mark
        text = app.query_one("#hexdump").source.title
        assert "changes vs mark m1 (step 1000): 4 byte(s)" in text
        await type_line(pilot, "revent")
        await pilot.press("x")                           # a branch where bit0 was cleared before the xchg
        await settle(pilot)
        await type_line(pilot, "branch switch main")
        await type_line(pilot, "goto 1040")
        await pilot.press("equals_sign")                 # -> vs the other branch at the same step
        text = app.query_one("#hexdump").source.title
        # main's xchg wrote 00000000; the branch's edit made the word a5a5a5a4 at that step
        assert "changes vs branch flip" in text and "at step 1040: 4 byte(s)" in text


async def test_quit_asks_before_losing_unsaved_branches(tmp_path):
    s = session()
    app = HvdbgApp(s)
    app.synchronous = True
    async with app.run_test(size=(120, 40)) as pilot:
        await type_line(pilot, "fix gfp-zero")
        await pilot.press("q")
        assert app.is_running and any("not saved" in m for _, m in app.messages)
        await type_line(pilot, f"save {tmp_path / 's.hvt'}")
        app._quit_armed = False
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running and (tmp_path / "s.hvt").exists()


async def test_selected_msr_vector_register_drive_b_a_e():
    s = session()
    app = HvdbgApp(s)
    app.synchronous = True
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("1")
        await type_line(pilot, "goto 1040")
        await pilot.press("M")                           # the VP_ASSIST_PAGE MSR of cpu1
        assert app.selection == ("msr", 0x40000073)
        await pilot.press("b")
        await pilot.press("a")
        texts = [b.describe(s.tl) for b in s.tl.breaks]
        assert any("MSR 0x40000073" in t for t in texts) and any("VP_ASSIST_PAGE" in t for t in texts)
        await pilot.press("i")
        assert app.query_one("#cmdline").value.startswith("set msr cpu1 0x40000073")
        await pilot.press("escape")
        await pilot.press("V")                           # RESCHEDULE in service on cpu1
        assert app.selection == ("vector", ("isr", 0xFD))
        await pilot.press("a")
        assert any("ISR" in b.describe(s.tl) for b in s.tl.breaks)
        await pilot.press("R")
        await pilot.press("plus")
        assert app.selection == ("reg", 1)
        await pilot.press("i")
        assert app.query_one("#cmdline").value.startswith("set reg cpu1 r1 ")
        await pilot.press("escape")
        await pilot.press("escape")
        assert app.selection[0] == "byte"
        assert not errors(app), errors(app)


async def test_whatif_menu_runs_a_fix_branch():
    s = session()
    app = HvdbgApp(s)
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("exclamation_mark")
        menu = app.screen
        assert menu.__class__.__name__ == "WhatIfScreen"
        menu.query_one("#whatiflist").highlighted = next(i for i, e in enumerate(menu.entries) if e[0] == "fix gfp-zero")
        await pilot.press("enter")
        await settle(pilot)
        assert s.current == "fix-gfp-zero" and s.tl.result.outcome == "ok"
        await pilot.press("exclamation_mark")
        await pilot.press("enter")                          # the first entry: inject ... opens the `:` line
        assert app.query_one("#cmdline").value.startswith("inject cpu0 RESCHEDULE")


async def test_a_trace_opens_at_its_end_and_is_verified_in_the_background(tmp_path):
    """A segmented trace opens from its last snapshot; a worker re-executes every segment and
    the status line says so - or, for a trace tampered in the middle, where it diverges."""
    import tracecraft as TC
    from hvdbg.core.scenario import load_scenario
    from hvdbg.recording import record
    from hvdbg.trace import load_trace
    f = tmp_path / "seg.hvt"
    s0 = load_scenario("cpu-offline")
    record(s0, s0.config(), f, segment=64)
    s = Session.open(str(f))
    app = HvdbgApp(s)
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(pilot)
        assert s.tl.pos == s.tl.length == 1475
        assert s.verification["state"] == "verified" and s.verification["done"] == s.verification["total"] == 24   # ceil(1475 / 64)
        assert "verified" in str(app.query_one("#status").render())
    tr = load_trace(f)
    bad = bytearray(tr.checks)
    bad[2 * 700] ^= 0xFF
    tr.checks = bad
    g = tmp_path / "bad.hvt"
    TC.rewrite(tr, g)
    s = Session.open(str(g))
    app = HvdbgApp(s)
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(pilot)
        assert s.verification["state"] == "diverged" and s.verification["step"] == 700
        assert "DIVERGES at step 700" in str(app.query_one("#status").render())
        assert any("step 700" in m for m in errors(app))
        await type_line(pilot, "goto 650")                      # travelling there: an error, no crash
        assert s.tl.pos == 1475 and any("step 700" in m for m in errors(app)[1:])
