"""The hvdbg Textual app: panes over the session; keys, the `:` line and the palette run
commands from hvdbg.commands (views never mutate state themselves)."""
from __future__ import annotations

from functools import partial

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, RichLog, Static

from ..core.journal import JournalError
from ..commands import COMMANDS, CommandError, ExpectationFailed, Session
from .panes import EventLogPane, HexdumpPane, IrqPane, MsrPane, StatusLine, VcpuListPane, VcpuPane

# key -> (command line or action, description, shown in footer). Uppercase = reverse (design §6).
KEYS = [
    ("s", "step", "step", True), ("S", "rstep", "rstep", False),
    ("n", "next", "next", True), ("N", "rnext", "rnext", False),
    ("f", "finish", "finish", True), ("F", "rfinish", "rfinish", False),
    ("c", "continue", "cont", True), ("C", "rcontinue", "rcont", False),
    ("u", "up", "up", False), ("d", "down", "down", False), ("w", "bt", "where", False),
    ("m", "mark", "mark", False), ("t", "branch list", "timelines", False),
    ("f11", "step", "step", False), ("shift+f11", "rstep", "rstep", False), ("f10", "next", "next", False),
    ("f5", "continue", "continue", False), ("shift+f5", "rcontinue", "rcontinue", False),
]

HELP = """[b]hvdbg keys[/b]  (gdb single-key mode where it has a meaning; uppercase = reverse)

  s / S      step / reverse-step on the focused vCPU (F11 / shift+F11)
  n / N      next / reverse-next (over calls and interrupt handlers) (F10)
  f / F      finish / reverse-finish
  c / C      continue / reverse-continue to a breakpoint or watchpoint (F5 / shift+F5)
  u / d      up / down interrupt frames;  w  where (backtrace)
  tab, 0-9   focus the next vCPU / vCPU N
  g          goto step (opens the command line)
  M / V / R  select an MSR / a pending or in-service vector / a register of the focused vCPU
             (arrows move the selection, escape returns to the hexdump byte)
  b          breakpoint: on the selected MSR's access, the selected vector's delivery, else the pc
  a          watch the selected byte, MSR or IRR/ISR bit
  m          mark this step (for diff)
  y          why: the hang chain, or why the selected byte holds its value (with a byte selected)
  t          timelines: list branches (branch switch/compare/save on the command line)
  arrows     move the byte cursor in the assist-page hexdump;  [ ]  select a bit;  v  RAM / overlay view
  =          hexdump highlights changes vs: the previous step / the last mark / another branch
  x          what-if: flip the selected bit (a new branch)
  e          what-if: edit the selected byte, MSR or register (opens `set ...`; on a vector:
             inject it, or drop it when it is pending)
  !          what-if menu: inject / drop / fix / hypervisor / overlay policy
  :          command line (every command: `help`)
  ctrl+p     command palette with every command
  ?          this help;  q  quit (press twice if unsaved branches)

[b]Deviations from gdb[/b]
  - `w` prints the backtrace (gdb: `where` is a command, not a key); `u`/`d` move between
    interrupt frames as in gdb's up/down.
  - reverse commands are uppercase letters (gdb's single-key mode has no reverse keys).
  - `t`, `y`, `m`, `a`, `x`, `e`, `!`, `M`, `V`, `R`, `=`, `v`, `[`, `]` are hvdbg's own: gdb's
    single-key mode does not bind them (gdb's `v` is `info locals`, `r` is `run`).
  - what-if edits never sit on a gdb key.
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text.from_markup(HELP))
            lines = "\n".join(f"  {c.usage or c.name:<46} {c.help}" for c in COMMANDS.values())
            yield Static(Text("Commands (`:` line and palette):\n" + lines))


class WhyScreen(ModalScreen):
    """The causal chain; choosing a link jumps to its step."""
    BINDINGS = [Binding("escape,q", "app.pop_screen", "close")]

    def __init__(self, title: str, links: list[dict]):
        super().__init__()
        self.title_text = title
        self.links = links

    def compose(self) -> ComposeResult:
        from textual.widgets import OptionList
        from textual.widgets.option_list import Option
        with Vertical(id="whybox"):
            yield Static(Text(self.title_text, style="bold"))
            yield OptionList(*[Option(Text(f"{i + 1}. step {lk['step']}: {lk['text']}"), id=str(i))
                               for i, lk in enumerate(self.links)], id="whylist")

    def on_mount(self) -> None:
        self.query_one("#whylist").focus()

    def on_option_list_option_selected(self, event) -> None:
        lk = self.links[int(event.option.id)]
        self.app.pop_screen()
        self.app.run_line(f"goto {min(lk['step'] + 1, self.app.session.tl.length)}")


class WhatIfScreen(ModalScreen):
    """The `!` menu: what-if edits that do not sit on a gdb key. Entries with arguments open
    the `:` line filled in; the others run at once (each makes a branch)."""
    BINDINGS = [Binding("escape,q", "app.pop_screen", "close")]

    def __init__(self, cpu: int, session):
        super().__init__()
        from ..core import hypervisors
        e = session.tl.e
        program, cfg = e.scn.program, e.cfg
        pack = e.pack
        self.entries = [
            (f"inject cpu{cpu} RESCHEDULE", "prompt", "inject a vector into the focused vCPU's IRR"),
            (f"drop irr cpu{cpu} ", "prompt", "drop a pending vector"),
            ("drop ipi ", "prompt", "drop an in-flight IPI (SRC DST VECTOR)"),
        ]
        # every list below comes from a registry: the pack's fixes, the hypervisor models, their options
        for fx in ("none", *sorted(program.variants)):
            doc = (pack.fixes.get(fx, "") if pack is not None else "") or \
                ("the code as the bug shipped" if fx == "none" else "a fix variant")
            self.entries.append((f"fix {fx}", "run", doc))
        for name, spec in hypervisors.HYPERVISORS.items():
            if name != cfg.hypervisor:
                self.entries.append((f"hypervisor {name}", "run", spec.description[:70]))
        spec = hypervisors.HYPERVISORS.get(cfg.hypervisor)
        for opt, values in (spec.options.items() if spec else ()):
            for v, doc in values.items():
                self.entries.append((f"{opt} {v}", "run", doc[:70]))

    def compose(self) -> ComposeResult:
        from textual.widgets import OptionList
        from textual.widgets.option_list import Option
        with Vertical(id="whatifbox"):
            yield Static(Text("what if ... (enter: choose, escape: close)", style="bold"))
            yield OptionList(*[Option(Text(f"{line:<28} {help_}"), id=str(i))
                               for i, (line, _, help_) in enumerate(self.entries)], id="whatiflist")

    def on_mount(self) -> None:
        self.query_one("#whatiflist").focus()

    def on_option_list_option_selected(self, event) -> None:
        line, how, _ = self.entries[int(event.option.id)]
        self.app.pop_screen()
        if how == "run":
            self.app.run_line(line)
        else:
            self.app.action_prompt(line)


class CommandsProvider(Provider):
    """Every command of hvdbg.commands in the palette: commands without required arguments
    run at once, the others open the `:` line with the command filled in."""

    async def discover(self) -> Hits:
        for name, c in COMMANDS.items():
            yield DiscoveryHit(name, partial(self.app.palette_command, name), help=c.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, c in COMMANDS.items():
            score = matcher.match(f"{name} {c.help}")
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self.app.palette_command, name), help=c.help)


NO_ARG = {"step", "rstep", "next", "rnext", "finish", "rfinish", "event", "revent", "continue", "rcontinue", "bt",
          "up", "down", "breaks", "delete", "mark", "diff", "why", "info", "help"}


class HvdbgApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "hvdbg"
    AUTO_FOCUS = None
    COMMANDS = App.COMMANDS | {CommandsProvider}
    BINDINGS = [Binding(k, f"cmd({cmd!r})", desc, show=show) for k, cmd, desc, show in KEYS] + [
        Binding("tab", "focus_next_cpu", "next vCPU", show=False, priority=True),
        Binding("g", "prompt('goto ')", "goto", show=True),
        Binding("b", "break_here", "break", show=False),
        Binding("a", "watch_byte", "watch", show=False),
        Binding("y", "why", "why", show=True),
        Binding("x", "flip_bit", "flip bit", show=True),
        Binding("e", "edit_byte", "edit", show=False),
        Binding("exclamation_mark", "whatif_menu", "what-if", show=False),
        Binding("colon", "prompt('')", ":cmd", show=True),
        Binding("question_mark", "help", "help", show=True),
        Binding("left", "cursor(-1)", show=False), Binding("right", "cursor(1)", show=False),
        Binding("up", "cursor(-16)", show=False), Binding("down", "cursor(16)", show=False),
        Binding("left_square_bracket", "bit(-1)", show=False), Binding("right_square_bracket", "bit(1)", show=False),
        Binding("v", "toggle_view", "RAM/overlay", show=False),
        Binding("equals_sign", "compare_base", "compare", show=False),
        Binding("M", "select('msr')", "select MSR", show=False),
        Binding("V", "select('vector')", "select vector", show=False),
        Binding("R", "select('reg')", "select register", show=False),
        Binding("q", "quit_app", "quit", show=True),
    ] + [Binding(str(i), f"focus_cpu({i})", show=False) for i in range(10)]

    def __init__(self, session: Session, **kw):
        super().__init__(**kw)
        self.session = session
        self.messages: list[tuple[str, str]] = []     # (severity, text) of every notification
        self.busy = False
        self.selection: tuple = ("byte",)             # what b / a / e / x act on: a byte, an MSR, a vector, a register
        self.saved: set[str] = {"main"}
        self.synchronous = False                      # tests may run what-ifs in the foreground
        self._quit_armed = False
        self._byte_selected = False

    # ---- layout ----
    def compose(self) -> ComposeResult:
        s = self.session
        yield StatusLine(s, id="status")
        with Horizontal(id="middle"):
            n = s.tl.e.n
            with Vertical(id="vcpus", classes="one" if n > 4 else ""):
                if n > 4:
                    # more than 4 vCPUs: a compact list and the focused vCPU in full
                    yield VcpuListPane(s, id="cpulist")
                    yield VcpuPane(s, s.tl.focus, id="cpudetail")
                else:
                    for c in range(n):
                        yield VcpuPane(s, c, id=f"cpu{c}")
            with Vertical(id="side"):
                yield HexdumpPane(s, id="hexdump")
                yield IrqPane(s, id="irq")
                yield MsrPane(s, id="msrs")
        with Horizontal(id="bottom"):
            yield EventLogPane(s, id="events")
            yield RichLog(id="output", markup=False, highlight=False, wrap=True, max_lines=500)
        yield Input(id="cmdline", placeholder="command (help lists them; Esc closes)", select_on_focus=False)
        yield Footer()

    def on_mount(self) -> None:
        self._fit(self.size.width, self.size.height)
        self.refresh_all()
        if getattr(self.session, "trace_path", None) and not self.synchronous:
            # a trace opens from its last snapshot; check the rest of it in the background,
            # segment by segment, with the progress in the status line
            self.session.verification = {"state": "running", "done": 0, "total": 0}
            self.run_worker(self._verify_trace, thread=True, group="verify", exit_on_error=False)

    def _verify_trace(self) -> None:
        from textual.worker import get_current_worker
        worker = get_current_worker()
        j = self.session.branches["main"].journal
        v = self.session.verification

        def progress(done: int, total: int) -> None:
            v.update(done=done, total=total)
            self.call_from_thread(self.query_one(StatusLine).refresh_view)
        try:
            j.verify(stop=lambda: worker.is_cancelled, progress=progress)
            v["state"] = "verified" if not worker.is_cancelled else "stopped"
        except JournalError as e:
            v.update(state="diverged", step=e.step)
            self.call_from_thread(self.notify, f"the trace does not re-execute as recorded at step {e.step}: {e}",
                                  severity="error", timeout=12)
        except Exception as e:            # never take the UI down
            v.update(state="stopped")
            self.call_from_thread(self.notify, f"background verification stopped: {type(e).__name__}",
                                  severity="warning")
        self.call_from_thread(self.query_one(StatusLine).refresh_view)

    def on_resize(self, event) -> None:
        self._fit(event.size.width, event.size.height)
        self.refresh_all()

    def _fit(self, width: int, height: int) -> None:
        """Small terminals: shorter hexdump and log, the MSR pane folds away below 30 rows."""
        small = height < 30
        self.query_one(HexdumpPane).styles.height = 6 if small else 10
        self.query_one("#bottom").styles.height = 5 if small else 9
        self.query_one(MsrPane).display = not small

    def refresh_all(self) -> None:
        s = self.session
        n = s.tl.e.n
        if n > 4:
            self.query_one("#cpudetail", VcpuPane).cpu = s.tl.focus
            self.query_one(VcpuListPane).refresh_view()
        for pane in self.query(VcpuPane):
            pane.set_class(pane.cpu == s.tl.focus, "focused")
        for pane in (*self.query(VcpuPane), self.query_one(HexdumpPane), self.query_one(IrqPane),
                     self.query_one(MsrPane), self.query_one(EventLogPane), self.query_one(StatusLine)):
            pane.refresh_view()

    def notify(self, message, *, title="", severity="information", timeout=None, markup=False) -> None:
        self.messages.append((severity, str(message)))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    # ---- running commands ----
    BACKGROUND = {"flip", "set", "inject", "drop", "fix", "hypervisor", "overlay", "load", "x!"}

    def run_line(self, line: str) -> bool:
        """Run one command line through hvdbg.commands; bad input -> a notification.
        What-if commands (a branch re-simulates) run in a worker thread; the UI stays live and
        refuses other commands until the branch's outcome is known."""
        log = self.query_one("#output", RichLog)
        if self.busy:
            self.notify("a what-if branch is still being computed", severity="warning")
            return False
        log.write(Text(f": {line}", style="bold"))
        head = line.split()[0] if line.split() else ""
        if head in self.BACKGROUND and not self.synchronous:
            self.busy = True
            self.query_one(StatusLine).update(Text(f" computing the branch for `{line}` ...", style="bold yellow"))
            self.run_worker(partial(self._background, line), thread=True, exclusive=True, group="whatif")
            return True
        return self._finish(line, None)

    def _background(self, line: str) -> None:
        try:
            out = self.session.execute(line)
            err = None
        except Exception as e:  # reported on the UI thread
            out, err = None, e
        self.call_from_thread(self._finish, line, (out, err))

    def _finish(self, line: str, result) -> bool:
        log = self.query_one("#output", RichLog)
        self.busy = False
        try:
            if result is None:
                out = self.session.execute(line)
            else:
                out, err = result
                if err is not None:
                    raise err
        except CommandError as e:
            self.notify(str(e), severity="error", timeout=6)
            self.refresh_all()
            return False
        except ExpectationFailed as e:
            self.notify(f"expectation failed: {e}", severity="warning", timeout=6)
            self.refresh_all()
            return False
        except Exception as e:  # never let a command take the UI down
            from ..crash import write_crash_report
            from ..safe import printable
            path = write_crash_report(f"tui: {line}")
            self.notify(f"internal error ({type(e).__name__}: {printable(str(e), 80)}); crash report written to "
                        f"{path}; the session goes on", severity="error", timeout=10)
            self.refresh_all()
            return False
        for ln in out.lines:
            log.write(ln if not isinstance(ln, str) else Text(ln))
        words = line.split()
        if words and (words[0] == "save" or words[:2] == ["branch", "save"]):
            self.saved = set(self.session.branches)
        self.refresh_all()
        return True

    def action_cmd(self, line: str) -> None:
        self.run_line(line)

    def action_prompt(self, prefill: str = "") -> None:
        inp = self.query_one("#cmdline", Input)
        inp.add_class("open")
        inp.value = prefill
        inp.cursor_position = len(prefill)
        inp.focus()

    def palette_command(self, name: str) -> None:
        if name in NO_ARG:
            self.run_line(name)
        else:
            self.action_prompt(name + " ")

    @on(Input.Submitted, "#cmdline")
    def _submitted(self, event: Input.Submitted) -> None:
        line = event.value.strip()
        self._close_prompt()
        if line:
            self.run_line(line)

    def _close_prompt(self) -> None:
        inp = self.query_one("#cmdline", Input)
        inp.remove_class("open")
        inp.value = ""
        self.set_focus(None)

    def on_key(self, event) -> None:
        if event.key == "escape":
            inp = self.query_one("#cmdline", Input)
            if inp.has_class("open"):
                self._close_prompt()
                event.stop()
            elif self.selection[0] != "byte":
                self.selection = ("byte",)
                self.refresh_all()
                event.stop()

    # ---- actions bound to keys ----
    def action_focus_next_cpu(self) -> None:
        tl = self.session.tl
        self.run_line(f"focus cpu{(tl.focus + 1) % tl.e.n}")

    def action_focus_cpu(self, n: int) -> None:
        if n >= self.session.tl.e.n:
            self.notify(f"no cpu{n}", severity="warning")
            return
        self.run_line(f"focus cpu{n}")

    # ---- the selected cell: a byte of the hexdump (default), an MSR, a vector, a register ----
    def action_select(self, kind: str) -> None:
        """M / V / R select an MSR, a vector or a register of the focused vCPU (arrows move,
        escape goes back to the hexdump byte); b, a, e then act on it."""
        from . import views
        cpu = self.session.tl.focus
        if kind == "msr":
            rows = views.msr_rows(self.session, cpu)
            self.selection = ("msr", rows[0]) if rows else ("byte",)
        elif kind == "vector":
            vs = views.selectable_vectors(self.session, cpu)
            if not vs:
                self.notify(f"cpu{cpu} has no vector pending or in service", severity="warning")
                return
            self.selection = ("vector", vs[0])
        else:
            self.selection = ("reg", 0)
        self.notify(f"selected {self._selection_text()} (arrows move, escape: back to the hexdump byte)")
        self.refresh_all()

    def _selection_text(self) -> str:
        from ..core.defs import VECTOR_NAMES
        from ..core.msr import MSR_NAMES
        k = self.selection
        if k[0] == "msr":
            return MSR_NAMES.get(k[1], hex(k[1]))
        if k[0] == "vector":
            return f"{k[1][0].upper()} {VECTOR_NAMES.get(k[1][1], hex(k[1][1]))}"
        if k[0] == "reg":
            return f"r{k[1]}"
        h = self._hex()
        return f"byte {h.address():#x} bit {h.bit}"

    def _move_selection(self, delta: int) -> bool:
        from . import views
        k = self.selection
        cpu = self.session.tl.focus
        if k[0] == "msr":
            rows = views.msr_rows(self.session, cpu)
            i = rows.index(k[1]) if k[1] in rows else 0
            self.selection = ("msr", rows[(i + (1 if delta > 0 else -1)) % len(rows)])
        elif k[0] == "vector":
            vs = views.selectable_vectors(self.session, cpu)
            if not vs:
                self.selection = ("byte",)
                return True
            i = vs.index(k[1]) if k[1] in vs else 0
            self.selection = ("vector", vs[(i + (1 if delta > 0 else -1)) % len(vs)])
        elif k[0] == "reg":
            self.selection = ("reg", (k[1] + (1 if delta > 0 else -1)) % 4)
        else:
            return False
        self.refresh_all()
        return True

    def action_break_here(self) -> None:
        tl = self.session.tl
        k = self.selection
        if k[0] == "msr":
            self.run_line(f"break msr {k[1]:#x} cpu {tl.focus}")
            return
        if k[0] == "vector":
            self.run_line(f"break deliver {k[1][1]:#x} cpu {tl.focus}")
            return
        cv = tl.view().cpu(tl.focus)
        self.run_line(f"break {cv.routine}+{cv.pc} cpu {tl.focus}")

    def _hex(self) -> HexdumpPane:
        return self.query_one(HexdumpPane)

    def action_watch_byte(self) -> None:
        k = self.selection
        cpu = self.session.tl.focus
        if k[0] == "msr":
            self.run_line(f"watch msr cpu{cpu} {k[1]:#x}")
            return
        if k[0] == "vector":
            self.run_line(f"watch {k[1][0]} cpu{cpu} {k[1][1]:#x}")
            return
        h = self._hex()
        self.run_line(f"watch mem {h.address():#x} 1 {h.space_word()}")

    def action_why(self) -> None:
        h = self._hex()
        if self._byte_selected:
            self.run_line(f"why mem {h.address():#x} {h.space_word()}")
            return
        try:
            out = self.session.execute("why")
        except CommandError as e:
            self.notify(str(e), severity="error")
            return
        chain = out.data.get("chain") or []
        if not chain:
            self.notify(out.lines[0] if out.lines else "nothing to explain")
            return
        self.push_screen(WhyScreen(f"why the {self.session.current} branch hangs (enter: jump to the step)", chain))

    def action_flip_bit(self) -> None:
        h = self._hex()
        self.run_line(f"flip {h.address():#x} {h.bit} {h.space_word()}")

    def action_edit_byte(self) -> None:
        k = self.selection
        tl = self.session.tl
        cpu = tl.focus
        if k[0] == "msr":
            cur = tl.view().cpu(cpu).msr(k[1]) or 0
            self.action_prompt(f"set msr cpu{cpu} {k[1]:#x} {cur:#x}")
            return
        if k[0] == "vector":
            self.action_prompt(f"{'drop irr' if k[1][0] == 'irr' else 'inject'} cpu{cpu} {k[1][1]:#x}")
            return
        if k[0] == "reg":
            self.action_prompt(f"set reg cpu{cpu} r{k[1]} {tl.view().cpu(cpu).regs[k[1]]:#x}")
            return
        h = self._hex()
        self.action_prompt(f"set mem {h.address():#x} {self._byte_value(h):#04x} 1 {h.space_word()}")

    def _byte_value(self, h) -> int:
        tl = self.session.tl
        space = -1 if h.view == "ram" else tl.focus
        v = tl.view().read(space, h.address(), 1)
        return 0 if v is None else v

    def action_whatif_menu(self) -> None:
        self.push_screen(WhatIfScreen(self.session.tl.focus, self.session))

    def action_cursor(self, delta: int) -> None:
        if self._move_selection(delta):
            return
        h = self._hex()
        h.cursor = (h.cursor + delta) % (6 * 16)
        self._byte_selected = True
        h.refresh_view()

    def action_bit(self, delta: int) -> None:
        h = self._hex()
        h.bit = (h.bit + delta) % 8
        self._byte_selected = True
        h.refresh_view()

    def action_toggle_view(self) -> None:
        h = self._hex()
        h.view = "overlay" if h.view == "ram" else "ram"
        h.refresh_view()

    def action_compare_base(self) -> None:
        """Highlight the hexdump's differences against the previous step, the last mark or
        another branch (cycles)."""
        h = self._hex()
        order = list(HexdumpPane.COMPARE)
        h.compare = order[(order.index(h.compare) + 1) % len(order)]
        if h.compare == "mark" and not self.session.marks:
            self.notify("no mark yet (`m` marks a step); comparing with another branch")
            h.compare = "branch"
        if h.compare == "branch" and len(self.session.branches) < 2:
            self.notify("no other branch yet; comparing with the previous step")
            h.compare = "previous step"
        h.refresh_view()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_quit_app(self) -> None:
        unsaved = [n for n in self.session.branches if n not in self.saved]
        if unsaved and not self._quit_armed:
            self._quit_armed = True
            self.notify(f"{len(unsaved)} what-if branch(es) not saved (`:save FILE`); press q again to quit",
                        severity="warning")
            return
        self.exit(0)


def run_tui(session: Session) -> int:
    app = HvdbgApp(session)
    app.run()
    return 0
