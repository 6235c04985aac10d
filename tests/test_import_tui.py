"""`hvdbg tui TRACE.txt`: the ImportedApp through Textual's Pilot - stepping shows the rebuilt
IRR/ISR with the events that set them, findings and search move to their events, the
import worker and its cancel, small and large screens, random keys, bad input."""
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from hvdbg.trace_import import import_trace, is_text_trace  # noqa: E402
from hvdbg.tui.imported import EventList, ImportedApp, LoadingScreen, run_imported_tui  # noqa: E402

from test_import import PV_EOI_LINES  # noqa: E402

FIX = Path(__file__).resolve().parent / "fixtures" / "import"
HOST = FIX / "host-stuck.trace.txt"
GUEST = FIX / "guest-offline.trace.txt"
_TR = {}


def host():
    if "host" not in _TR:
        _TR["host"] = import_trace(HOST)
    return _TR["host"]


def pane(app, vcpu):
    return app.query_one(f"#cpu{vcpu}").text.plain


async def ask(pilot, key, text):
    await pilot.press(key)
    pilot.app.query_one("#ask").value = text
    await pilot.press("enter")
    await pilot.pause()


async def test_step_to_the_acceptance_shows_the_vector_in_irr_with_its_event():
    tr = host()
    i = tr.find(0, True, name="kvm_apic_accept_irq", vector=0xec)
    assert i == 37
    app = ImportedApp(tr)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.index == 0 and isinstance(app.focused, EventList)
        await ask(pilot, "g", str(i - 1))
        assert app.index == i - 1
        assert "0xec" not in pane(app, 1)
        await pilot.press("s")
        assert app.index == i
        text = pane(app, 1)
        irr_line = next(s for s in text.splitlines() if s.startswith("IRR"))
        assert f"0xec@{i}" in irr_line
        isr_line = next(s for s in text.splitlines() if s.startswith("ISR"))
        assert "0xfd@34" in isr_line
        assert f"event {i}/{len(tr.events) - 1}" in str(app.query_one("#status").render())
        await pilot.press("S")
        assert app.index == i - 1
        await pilot.press("j", "j", "k")
        assert app.index == i
        await pilot.press("down")
        assert app.index == i + 1
        await pilot.press("end")
        assert app.index == len(tr.events) - 1
        await pilot.press("home")
        assert app.index == 0
        await pilot.press("pagedown")
        assert app.index > 5
        await ask(pilot, "g", "@1907374.505069")
        assert app.index == i
        assert not app.goto_text("99999") and app.index == i and "0..50" in app.message
        assert not app.goto_text("nonsense") and app.index == i and "expected" in app.message


async def test_pv_eoi_unknown_and_msr_table(tmp_path):
    p = tmp_path / "pv.txt"
    p.write_text("\n".join(PV_EOI_LINES[:5]) + "\n")
    app = ImportedApp(import_trace(p))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("end")
        text = pane(app, 0)
        assert "0xec@3 unknown" in text
        assert "MSR_KVM_PV_EOI_EN = 0x5001  write@1" in text
        assert "KVM PV-EOI on @1" in text
        assert text.startswith("in guest")


async def test_enter_on_a_finding_goes_to_its_first_event():
    tr = host()
    assert len(tr.findings) >= 3
    app = ImportedApp(tr)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        fl = app.query_one("#findings")
        while app.focused is not fl:
            await pilot.press("tab")
        for k, f in enumerate(tr.findings):
            fl.highlighted = k
            await pilot.press("enter")
            await pilot.pause()
            assert app.index == f.events[0], f
        # the injected-not-EOI'd finding: at its event the vector is in service
        k = next(k for k, f in enumerate(tr.findings) if f.kind == "injected-not-eoied")
        fl.highlighted = k
        await pilot.press("enter")
        f = tr.findings[k]
        assert f"0x{f.vector:02x}@{f.events[0]}" in pane(app, f.vcpu)


async def test_search_event_names_vectors_and_text():
    tr = host()
    app = ImportedApp(tr)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await ask(pilot, "slash", "kvm_inj_virq")
        first = tr.find(0, True, name="kvm_inj_virq")
        assert app.index == first
        await pilot.press("n")
        second = tr.find(first, True, name="kvm_inj_virq")
        assert app.index == second
        await pilot.press("N")
        assert app.index == first
        await ask(pilot, "slash", "accept")          # part of a name
        assert app.index == tr.find(first, True, name="kvm_apic_accept_irq")
        await ask(pilot, "slash", "vector=0xfb vcpu=1")
        assert app.index == tr.find(app.index - 1, True, vector=0xfb, vcpu=1)
        assert tr.events[app.index].vcpu == 1
        await pilot.press("home")
        await ask(pilot, "slash", "VP_ASSIST_PAGE = 0x0")   # plain text of the rows
        assert "HV_X64_MSR_VP_ASSIST_PAGE = 0x0" in tr.describe(app.index)
        here = app.index
        await pilot.press("n")
        assert app.index == here and "no match" in app.message
        app.search_text("vector=zz")
        assert "expected a number" in app.message


async def test_watch_irr_isr_bits_and_per_vcpu_steps():
    tr = host()
    app = ImportedApp(tr)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.query_one("#cpu1").focus()
        await pilot.pause()
        assert app.sel_vcpu == 1
        await pilot.press("right_square_bracket")
        assert app.index == tr.find(0, True, vcpu=1) and tr.events[app.index].vcpu == 1
        await ask(pilot, "w", "isr 0xfd")
        assert app.index == tr.watch(0, 1, "isr", 0xfd) == 20
        await pilot.press("w")
        app.query_one("#ask").value = "isr 0xfd"
        await pilot.press("enter")
        assert app.index == 23 and "changed at 23" in app.message
        await pilot.press("W")
        assert app.index == 20
        await pilot.press("left_square_bracket")
        assert app.index == tr.find(20, False, vcpu=1)
        await ask(pilot, "w", "msr 0x40000073 vcpu=1")
        i = app.index
        assert tr.events[i].name == "kvm_msr" and "HV_X64_MSR_VP_ASSIST_PAGE" in pane(app, 1)
        app.watch_text("irr")
        assert "give the vector" in app.message and app.index == i
        app.watch_text("tpr vcpu=9")
        assert "no vCPU 9" in app.message
        await pilot.press("x")
        assert "what-if edits do not apply" in app.message


async def test_80x24_stacks_panes_and_200x60_grid():
    tr = host()
    app = ImportedApp(tr)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen.has_class("-narrow")
        for w in ("#cpu0", "#cpu1", "#events", "#findings"):
            r = app.query_one(w).region
            assert r.width > 0 and r.height > 0 and r.right <= 80 and r.bottom <= 24, w
        await pilot.press("s", "s", "pagedown", "question_mark")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        app.save_screenshot(filename="narrow.svg", path=str(Path(os.environ.get("TMPDIR", "/tmp"))))
        await pilot.resize_terminal(200, 60)
        await pilot.pause()
        assert app.screen.has_class("-wide")
        ev = app.query_one("#events").region
        assert ev.width > 190
        await pilot.press("end")
        assert app.index == len(tr.events) - 1


async def test_host_and_guest_on_one_timeline_with_offset():
    tr = import_trace([HOST, GUEST], offsets={"guest": 1907254.5})
    app = ImportedApp(tr)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        status = str(app.query_one("#status").render())
        assert "host-stuck.trace.txt" in status and "guest-offline.trace.txt" in status and "+1907254.5" in status
        ev = app.query_one(EventList)
        assert {ev.row_text(k)[:2] for k in range(len(tr.events))} == {"H ", "G "}
        await ask(pilot, "slash", "cpuhp_enter")
        assert tr.events[app.index].name == "cpuhp_enter"
        await pilot.press("end")
        text = pane(app, 1)
        assert "hotplug" in text


def _many_vcpus(path, n_vcpus=6, rounds=3):
    out = []
    t = 1.0
    for r in range(rounds):
        for v in range(n_vcpus):
            for ev, f in (("kvm_exit", f"vcpu {v} reason HLT rip 0x1000 info1 0x0 info2 0x0 intr_info 0x00000000 "
                                       "error_code 0x00000000"),
                          ("kvm_apic_accept_irq", f"apicid {v} vec {0x30 + v} (Fixed|edge)"),
                          ("kvm_entry", f"vcpu {v}, rip 0x1000")):
                out.append(f" q-{100 + v} [{v:03d}] {t:.6f}: {ev}: {f}")
                t += 0.000001
    path.write_text("\n".join(out) + "\n")


async def test_more_than_four_vcpus_list_and_detail(tmp_path):
    p = tmp_path / "six.txt"
    _many_vcpus(p)
    tr = import_trace(p)
    assert tr.vcpus() == list(range(6))
    app = ImportedApp(tr)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("end")
        lst = app.query_one("#vcpulist")
        detail = app.query_one("#cpudetail")
        assert detail.vcpu == 0
        lst.focus()
        for _ in range(5):
            await pilot.press("down")
        await pilot.pause()
        assert detail.vcpu == 5 and app.sel_vcpu == 5
        assert "0x35@" in detail.text.plain
        assert "IRR 1" in str(lst.get_option_at_index(5).prompt)


async def test_import_worker_shows_progress_then_the_trace():
    app = ImportedApp(None, paths=[str(HOST)], total_lines=57)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.resize_terminal(80, 24)        # resized while the loading screen is on top
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.pause()
        assert app.trace is not None and not isinstance(app.screen, LoadingScreen)
        assert app.screen.has_class("-narrow") and not app.screen.has_class("-wide")
        await pilot.press("end")
        assert app.index == len(app.trace.events) - 1


async def test_escape_cancels_a_long_import(tmp_path, monkeypatch):
    import threading

    import hvdbg.tui.imported as imported
    p = tmp_path / "big.txt"
    line = " q-10 [000] 1.000000: kvm_entry: vcpu 0, rip 0xffffffff81000000\n"
    p.write_text(line * 400_000)
    gate = threading.Event()          # the import holds at its first progress call until Esc was
    real_load = imported.load         # pressed: on a fast machine 400k lines import in a blink

    def held_load(paths, fmt, offsets, progress):
        def slow(fi, n):
            gate.wait(10)
            progress(fi, n)
        return real_load(paths, fmt, offsets, slow)
    monkeypatch.setattr(imported, "load", held_load)
    app = ImportedApp(None, paths=[str(p)], total_lines=400_000)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, LoadingScreen)
        await pilot.press("escape")
        gate.set()
        await pilot.pause()
    assert app.error == "hvdbg tui: import cancelled" and app.return_code == 1
    assert app.trace is None


async def test_import_worker_error_exits_2_with_one_line(tmp_path):
    app = ImportedApp(None, paths=[str(tmp_path / "gone.txt")])
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert app.return_code == 2 and app.error.startswith("hvdbg tui: ") and "cannot read" in app.error
    assert "\n" not in app.error


async def test_a_trace_with_no_vcpu(tmp_path):
    p = tmp_path / "sched.txt"
    p.write_text("".join(f"  bash-1 [000] 1.00000{k}: sched_switch: prev_comm=bash prev_pid=1 ==> next_comm=x "
                         f"next_pid=2\n" for k in range(5)))
    tr = import_trace(p)
    app = ImportedApp(tr)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("s", "end", "tab", "tab", "S")
        assert app.index == 3 and app.query_one("#novcpu")


def test_is_text_trace(tmp_path):
    for f in FIX.glob("*.txt"):
        assert is_text_trace(f), f
    assert not is_text_trace(FIX / "make_fixtures.py")
    assert not is_text_trace(tmp_path / "missing.txt")
    assert not is_text_trace(tmp_path)
    hvt = tmp_path / "x.hvt"
    hvt.write_bytes(b"HVDBGTR\x00" + HOST.read_bytes())
    assert not is_text_trace(hvt)
    import gzip
    gz = tmp_path / "h.txt.gz"
    gz.write_bytes(gzip.compress(HOST.read_bytes()))
    assert is_text_trace(gz)
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(range(256)) * 10)
    assert not is_text_trace(junk)


@pytest.mark.parametrize("make,msg", [
    (lambda d: d / "missing.txt", "cannot read"),
    (lambda d: d, "not a regular file"),
    (lambda d: (d / "junk.txt").write_bytes(b"\x00\x01garbage\n" * 50) and d / "junk.txt", "not a text trace"),
    (lambda d: (d / "r.hvt").write_bytes(b"HVDBGTR\x00\x01\x00\x00\x00") and d / "r.hvt", "not a text trace"),
])
def test_bad_input_is_one_line_exit_2_before_the_app(capsys, tmp_path, make, msg):
    path = make(tmp_path)
    assert run_imported_tui([HOST, path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hvdbg tui: ") and msg in err and "Traceback" not in err


async def test_random_keys_never_crash(tmp_path):
    p = tmp_path / "six.txt"
    _many_vcpus(p, rounds=2)
    keys = ["s", "S", "j", "k", "up", "down", "pageup", "pagedown", "home", "end", "n", "N", "tab", "shift+tab",
            "w", "W", "left_square_bracket", "right_square_bracket", "i", "r", "space",
            "enter", "escape", "question_mark", "g", "slash", "1", "x", "@", "0", "backspace", "left", "right"]
    for tr, size in ((host(), (120, 40)), (import_trace(p), (80, 24))):
        rnd = random.Random(13)
        app = ImportedApp(tr)
        async with app.run_test(size=size) as pilot:
            for _ in range(20):
                await pilot.press(rnd.choice(keys))
            await pilot.pause()
            assert 0 <= app.index < len(tr.events)
            await pilot.press("escape", "escape")
            await pilot.press("q")
        assert app.return_code == 0


class _Usage(Exception):
    pass


def _tui_parser():
    import argparse
    from hvdbg import import_cli
    p = argparse.ArgumentParser()
    p.add_argument("scenario", nargs="?", default=None)
    p.add_argument("--seed", type=int)
    import_cli.add_tui_options(p)
    return p


@pytest.mark.parametrize("argv,want", [
    ([str(HOST)], [str(HOST)]),
    ([str(HOST), str(GUEST), "--offset", "guest=+0.000123", "--format", "auto"], [str(HOST), str(GUEST)]),
    (["cpu-offline"], None),
    ([], None),
    ([str(FIX / "make_fixtures.py")], None),
    (["cpu-offline", str(HOST)], "only text traces"),
    (["cpu-offline", "--offset", "guest=1"], "apply to text traces"),
    ([str(HOST), "--seed", "3"], "--seed"),
])
def test_cli_routing_helpers(argv, want):
    from hvdbg import import_cli
    args = _tui_parser().parse_args(argv)
    if isinstance(want, str):
        with pytest.raises(_Usage, match=want):
            import_cli.tui_text_traces(args, _Usage)
        return
    assert import_cli.tui_text_traces(args, _Usage) == want
    if want and len(want) == 2:
        assert import_cli.parse_offsets(args.offset, _Usage, "hvdbg tui") == {"guest": 0.000123}
    with pytest.raises(_Usage, match="^hvdbg tui: --offset"):
        import_cli.parse_offsets(["guest=abc"], _Usage, "hvdbg tui")


# -- an imported .hvt (hvdbg import -o OUT.hvt) opens in the same app, without re-reading the text --

def _hvt(tmp_path):
    from hvdbg.cli import main
    out = tmp_path / "run.hvt"
    assert main(["import", str(HOST), str(GUEST), "--offset", "guest=+1907254.5", "-o", str(out)]) == 0
    return out


async def test_an_imported_hvt_opens_in_the_worker_with_the_same_findings(tmp_path, monkeypatch):
    out = _hvt(tmp_path)
    from hvdbg.trace_import import lines
    monkeypatch.setattr(lines, "open_text", lambda *a: pytest.fail("an .hvt must not re-read text"))
    app = ImportedApp(None, paths=[str(out)])
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.pause()
        assert app.trace is not None and not isinstance(app.screen, LoadingScreen), app.error
        assert app.trace.hvt == str(out)
        kinds = [f.kind for f in app.trace.findings]
        assert "injected-not-eoied" in kinds and "hotplug-stalled" in kinds
        j = next(f.events[0] for f in app.trace.findings if f.kind == "injected-not-eoied")
        app.goto(j)
        await pilot.pause()
        assert "0xfd@%d" % j in pane(app, 1)


def test_an_imported_hvt_routes_to_the_imported_app(tmp_path, capsys):
    from hvdbg import import_cli
    from hvdbg.tui.imported import check_paths, load
    out = _hvt(tmp_path)
    assert check_paths([out]) is None
    tr = load([str(out)])
    assert not isinstance(tr, str) and len(tr.events) == len(import_trace([HOST, GUEST]).events)
    args = _tui_parser().parse_args([str(out)])
    assert import_cli.tui_text_traces(args, _Usage) == [str(out)]
    for argv, msg in (([str(out), str(GUEST)], "opens alone"), ([str(out), "--offset", "guest=1"], "imported already"),
                      ([str(out), "--seed", "3"], "not to imported traces")):
        with pytest.raises(_Usage, match=msg):
            import_cli.tui_text_traces(_tui_parser().parse_args(argv), _Usage)
    bad = tmp_path / "bad.hvt"
    bad.write_bytes(out.read_bytes()[:-40])
    assert run_imported_tui([bad]) == 2        # a damaged .hvt that still says "imported": one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hvdbg tui: ") and "byte " in err


def test_serve_routes_text_traces_and_imported_hvt_like_tui(tmp_path):
    """`hvdbg serve` builds the `hvdbg tui` command line each browser tab runs; checked here
    without a browser: the arguments route to the imported-trace app exactly as `hvdbg tui`."""
    from hvdbg import cli, import_cli, serve
    out = _hvt(tmp_path)
    p = cli.make_parser()
    cases = [
        (["serve", str(out)], ["--", str(out)]),
        (["serve", str(HOST), str(GUEST), "--offset", "guest=+0.5"], ["--offset=guest=+0.5", "--", str(HOST), str(GUEST)]),
        (["serve", str(HOST), "--format", "trace"], ["--format=trace", "--", str(HOST)]),
        (["serve", "cpu-offline", "--seed", "3"], ["--seed=3", "cpu-offline"]),
    ]
    for argv, want in cases:
        tui_args = cli.serve_tui_args(p.parse_args(argv))
        assert tui_args == want
        cmd = serve.tui_command(tui_args, python="PY")
        assert cmd.startswith("PY -m hvdbg tui ")
        again = p.parse_args(["tui", *tui_args])                  # what each tab's process parses
        got = import_cli.tui_text_traces(again, cli.UsageError)
        assert got == (None if argv[1] == "cpu-offline" else argv[1:1 + len(got or [])])
    for argv, msg in ((["serve", str(out), str(GUEST)], "opens alone"),
                      (["serve", str(HOST), "--offset", "x"], "expected host="),
                      (["serve", str(HOST), "--seed", "1"], "not to text traces")):
        with pytest.raises(cli.UsageError, match=msg):
            cli.serve_tui_args(p.parse_args(argv))
