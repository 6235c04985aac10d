"""The interactive REPL (hvdbg/repl): prompt_toolkit driven through a pipe, rich output into a buffer."""
from __future__ import annotations

import io
import os
import signal

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from hvdbg.commands import ALIASES, COMMANDS, Session, lookup
from hvdbg.repl import Repl, run_repl
from hvdbg.repl.app import CommandCompleter, default_history_path

EOF = "\x04"
CTRL_C = "\x03"


@pytest.fixture(scope="module")
def session():
    return Session.open("cpu-offline")


@pytest.fixture
def s0(session):
    """The shared session at step 0 of main, focus cpu0, no breakpoints or marks."""
    session.current = "main"
    session.tl.focus = 0
    session.tl.breaks.clear()
    session.marks.clear()
    session.execute("goto 0")
    return session


def drive(session, text, history=None, **kw):
    """Feed `text` to a REPL over `session`; returns (exit status, console text, history, Repl)."""
    buf = io.StringIO()
    history = history if history is not None else InMemoryHistory()
    with create_pipe_input() as inp:
        inp.send_text(text)
        repl = Repl(session, input=inp, output=DummyOutput(), history=history,
                    console=Console(file=buf, width=120), **kw)
        rc = repl.run()
    return rc, buf.getvalue(), history, repl


def quiet_repl(session, buf):
    """A Repl whose prompt is never used (tests call run_line): a closed pipe, not the real stdin."""
    with create_pipe_input() as inp:
        return Repl(session, input=inp, output=DummyOutput(), history=InMemoryHistory(),
                    console=Console(file=buf, width=120))


def positions_after_steps(session, n):
    session.execute("goto 0")
    out = []
    for _ in range(n):
        session.execute("step")
        out.append(session.tl.pos)
    session.execute("goto 0")
    return out


# ---------------------------------------------------------------- the loop
def test_command_runs_and_output_appears(s0):
    rc, text, _, repl = drive(s0, "info irq\n" + EOF)
    assert rc == 0
    assert "in flight:" in text and "LAPIC timers armed" in text
    assert text.splitlines()[0].startswith("[main] step 0/")   # the where line as a banner
    assert repl.message() == "(hvdbg main:0) "


def test_run_repl_function_and_ctrl_d_quits_with_0(s0):
    buf = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text("step\n" + EOF)
        rc = run_repl(s0, input=inp, output=DummyOutput(), history=InMemoryHistory(),
                      console=Console(file=buf, width=120))
    assert rc == 0
    assert s0.tl.pos > 0
    assert "[main] step " in buf.getvalue()


@pytest.mark.parametrize("word", ["quit", "exit", "q"])
def test_quit_words_leave(s0, word):
    rc, text, _, _ = drive(s0, f"{word}\nstep\n" + EOF)
    assert rc == 0 and s0.tl.pos == 0          # the step after quit never ran


def test_empty_line_repeats_last_command(s0):
    p1, p2, p3 = positions_after_steps(s0, 3)
    assert 0 < p1 < p2 < p3
    rc, text, hist, repl = drive(s0, "step\n\n" + EOF)
    assert rc == 0 and s0.tl.pos == p2
    assert repl.message() == f"(hvdbg main:{p2}) "
    drive(s0, "goto 0\nstep\n\n\n" + EOF)
    assert s0.tl.pos == p3


def test_empty_line_first_does_nothing(s0):
    rc, text, hist, _ = drive(s0, "\n\n" + EOF)
    assert rc == 0 and s0.tl.pos == 0 and hist.get_strings() == []


def test_empty_line_does_not_repeat_file_commands(s0, tmp_path):
    f = tmp_path / "t.hvt"
    rc, text, _, repl = drive(s0, f"save {f}\n\n" + EOF)
    assert f.exists()
    assert text.count("saved ") == 1
    assert repl.last_line is None


def test_history_records_lines(s0):
    rc, _, hist, _ = drive(s0, "step\n\nbt\ngoto 0\n" + EOF)
    assert hist.get_strings() == ["step", "bt", "goto 0"]


def test_default_history_is_a_file_under_xdg_state_home(s0, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_history_path() == tmp_path / "state" / "hvdbg" / "history"
    buf = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text("bt\n" + EOF)
        repl = Repl(s0, input=inp, output=DummyOutput(), console=Console(file=buf, width=120))
        assert isinstance(repl.history, FileHistory)
        assert repl.run() == 0
    assert "+bt" in (tmp_path / "state" / "hvdbg" / "history").read_text()


def test_default_history_path_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_history_path() == tmp_path / ".local" / "state" / "hvdbg" / "history"


def test_ctrl_c_at_prompt_does_not_quit(s0):
    p1, = positions_after_steps(s0, 1)
    rc, text, hist, _ = drive(s0, CTRL_C + "half typed" + CTRL_C + "step\n" + EOF)
    assert rc == 0 and s0.tl.pos == p1
    assert hist.get_strings() == ["step"]           # the abandoned line is not run nor recorded


def test_unknown_command_prints_one_line_and_goes_on(s0):
    p1, = positions_after_steps(s0, 1)
    rc, text, _, _ = drive(s0, "stpe\nstep\n" + EOF)
    err = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert err == ["error: unknown command 'stpe'; did you mean 'step'?"]
    assert rc == 0 and s0.tl.pos == p1


def test_bad_argument_and_failed_expectation_are_one_line_errors(s0):
    rc, text, _, _ = drive(s0, "goto banana\nexpect step == 99\nexpect step == 0\n" + EOF)
    err = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(err) == 2
    assert "banana" in err[0]
    assert err[1].startswith("error: expectation failed: the current step")
    assert text.splitlines()[-1] == "ok"            # the loop went on to the holding expectation


def test_empty_line_after_error_repeats_last_good_command(s0):
    p1, p2 = positions_after_steps(s0, 2)
    drive(s0, "step\nstpe\n\n" + EOF)
    assert s0.tl.pos == p2


# ---------------------------------------------------------------- interrupting long commands
def _wrap_execute(monkeypatch, session, before):
    real = session.execute
    seen = []

    def execute(line, stop=None):
        seen.append(stop)
        before(line, stop)
        return real(line, stop=stop)

    monkeypatch.setattr(session, "execute", execute)
    return seen


def test_interrupt_stops_continue_and_the_flag_resets(s0, monkeypatch):
    monkeypatch.setattr(s0.tl, "stop_poll", 1)
    holder = {}

    def before(line, stop):
        if line == "continue" and not holder.get("done"):
            holder["done"] = True
            assert stop is not None and stop() is False
            holder["repl"].interrupt()           # as the SIGINT handler would
            assert stop() is True

    seen = _wrap_execute(monkeypatch, s0, before)
    buf = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text("continue\n" + EOF)
        repl = holder["repl"] = Repl(s0, input=inp, output=DummyOutput(), history=InMemoryHistory(),
                                     console=Console(file=buf, width=120))
        repl.run()
    assert "interrupted" in buf.getvalue()
    assert s0.tl.pos < s0.tl.length
    # the next command starts with a cleared flag and runs to the end
    repl.run_line("continue")
    assert not repl.interrupted
    assert s0.tl.pos == s0.tl.length
    assert all(callable(st) for st in seen)


def test_sigint_handler_installed_during_execute_and_restored(s0, monkeypatch):
    monkeypatch.setattr(s0.tl, "stop_poll", 1)
    original = signal.getsignal(signal.SIGINT)
    buf = io.StringIO()
    repl = quiet_repl(s0, buf)

    def before(line, stop):
        handler = signal.getsignal(signal.SIGINT)
        assert handler == repl._on_sigint
        os.kill(os.getpid(), signal.SIGINT)      # a real Ctrl-C, delivered to our handler
        for _ in range(1000):                    # the handler runs between bytecodes
            if stop():
                break
        assert stop() is True

    _wrap_execute(monkeypatch, s0, before)
    repl.run_line("continue")
    assert signal.getsignal(signal.SIGINT) == original
    assert "interrupted" in buf.getvalue()
    assert s0.tl.pos < s0.tl.length


def test_second_ctrl_c_breaks_out_of_a_command_that_does_not_poll(s0, monkeypatch):
    buf = io.StringIO()
    repl = quiet_repl(s0, buf)

    def before(line, stop):
        h = signal.getsignal(signal.SIGINT)
        h(signal.SIGINT, None)                   # first press: ask politely
        h(signal.SIGINT, None)                   # second press: KeyboardInterrupt

    _wrap_execute(monkeypatch, s0, before)
    repl.run_line("step")
    assert buf.getvalue().strip() == "interrupted"
    assert s0.tl.pos == 0                        # the command never ran
    assert repl.last_line == "step"


def test_keyboard_interrupt_from_execute_keeps_the_repl(s0, monkeypatch):
    def before(line, stop):
        if line == "next":
            raise KeyboardInterrupt

    _wrap_execute(monkeypatch, s0, before)
    p1, = positions_after_steps(s0, 1)
    rc, text, _, _ = drive(s0, "next\nstep\n" + EOF)
    assert rc == 0 and "interrupted" in text and s0.tl.pos == p1


# ---------------------------------------------------------------- completion
def completions(session, text):
    return list(CommandCompleter(session).get_completions(Document(text), CompleteEvent()))


def test_complete_command_names(session):
    cs = completions(session, "ste")
    assert [c.text for c in cs] == ["step"]
    assert cs[0].start_position == -3
    assert "focused vCPU" in cs[0].display_meta_text
    assert "quit" in [c.text for c in completions(session, "qu")]
    assert {"rstep", "rnext", "rcontinue", "rfinish", "revent"} <= {c.text for c in completions(session, "r")}


def test_complete_msr_names(session):
    cs = completions(session, "break msr HV_X64_MSR_VP")
    texts = [c.text for c in cs]
    assert "HV_X64_MSR_VP_ASSIST_PAGE" in texts and "HV_X64_MSR_VP_INDEX" in texts
    assert {c.start_position for c in cs} == {-len("HV_X64_MSR_VP")}
    # after a space: the next argument, inserted at the cursor
    cs = completions(session, "break msr HV_X64_MSR_VP_INDEX ")
    assert {"rd", "wr"} <= {c.text for c in cs} and {c.start_position for c in cs} == {0}


def test_complete_vectors_and_cpus(session):
    cs = completions(session, "watch isr cpu1 RES")
    assert [c.text for c in cs] == ["RESCHEDULE"] and cs[0].start_position == -3
    cpus = [c.text for c in completions(session, "watch isr ")]
    assert cpus[:2] == ["cpu0", "cpu1"]
    assert {"b", "break", "breaks", "bt", "branch", "backtrace"} <= {c.text for c in completions(session, "b")}
    assert completions(session, "nosuchcommand ") == []


def test_complete_branch_names(session, monkeypatch):
    monkeypatch.setitem(session.branches, "fix-gfp-zero", session.tl)
    texts = [c.text for c in completions(session, "branch switch ")]
    assert texts == ["main", "fix-gfp-zero"]
    cs = completions(session, "branch switch fi")
    assert [c.text for c in cs] == ["fix-gfp-zero"] and cs[0].start_position == -2


def test_complete_file_paths(session, tmp_path):
    (tmp_path / "trace1.hvt").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    cs = completions(session, f"save {tmp_path}/tr")
    assert [c.text for c in cs] == [f"{tmp_path}/trace1.hvt"]
    assert cs[0].start_position == -len(f"{tmp_path}/tr")
    assert cs[0].display_text == "trace1.hvt"
    cs = completions(session, f"load {tmp_path}/")
    assert [c.display_text for c in cs] == ["sub/", "trace1.hvt"]


def test_completer_survives_unparsable_input(session):
    assert isinstance(completions(session, 'save "/tmp/unterminated'), list)


# ---------------------------------------------------------------- every command is reachable
def test_every_command_is_reachable_with_usage_and_help(s0):
    for name, cmd in COMMANDS.items():
        assert lookup(name) is cmd
        assert cmd.usage.strip() and cmd.help.strip(), name
        for a in cmd.aliases:
            assert lookup(a) is cmd and ALIASES[a] == name
        assert name in [c.text for c in completions(s0, name[:1])], name
    listing = s0.execute("help").lines
    listed = {ln.split()[0] for ln in listing if ln.startswith("  ")}
    assert listed == set(COMMANDS)
    # and through the REPL itself: `help NAME` prints each usage
    rc, text, _, _ = drive(s0, "".join(f"help {n}\n" for n in COMMANDS) + EOF)
    assert rc == 0 and "error" not in text
    for cmd in COMMANDS.values():
        assert cmd.usage in text and cmd.help in text, cmd.name
