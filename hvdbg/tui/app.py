"""The hvdbg Textual app: a workbench of panes over one session.

Every key comes from keys.KEYMAP (rebindable in config.toml); keys, the `:` line and the
palette run commands from hvdbg.commands in a worker thread with a Progress as their `stop`
(a progress bar in the status line while they run, Esc cancels). After a command the app
calls each pane's refresh_view() (the same thing a posted SessionChanged does, but before the
next frame: one layout and one render per step) and each re-renders from the read-only state
view, touching Textual only where its content changed; the
selection (a byte, an MSR, a vector, a register) travels as SelectionChanged. While a command
runs nothing re-renders from the moving timeline, and keys other than Esc / q wait."""
from __future__ import annotations

from functools import partial

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Container
from textual.widgets import Footer, Static, Tab, Tabs

from ..commands import COMMANDS, CommandError, ExpectationFailed, Progress, Session
from ..core.machine import RAM
from . import views
from .cmdline import CommandLine
from .config import load_config, save_theme
from .eventlog import EventLogView
from .hexdump import HexdumpView, HexSource
from .keys import help_text, keymap
from .messages import LayoutChanged, SelectionChanged
from .panes import (BreakpointsPane, IrqPane, MsrPane, SourcePane, StatusLine, TranscriptPane, VcpuListPane,
                    VcpuPane)
from .repaint import DirtyOnlyCompositor
from .screens import HelpScreen, VcpuPicker, WhatIfScreen, WhyScreen

MANY_CPUS = 4          # more vCPUs than this: a scrolling list plus the focused one in full
PROGRESS_AFTER = 0.15  # seconds before running work shows its progress


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
          "up", "down", "breaks", "delete", "mark", "diff", "why", "info", "help", "verify", "enable", "disable"}
GROUPS = ("cpus", "code", "side", "log")


class HvdbgApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "hvdbg"
    AUTO_FOCUS = None
    COMMANDS = App.COMMANDS | {CommandsProvider}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide"), (150, "-wider"), (220, "-xwide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    _echo: Text | None = None           # the running command's line, not yet in the transcript

    def __init__(self, session: Session, config=None, **kw):
        super().__init__(**kw)
        self.session = session
        self.config = config if config is not None else load_config()
        self.keys = keymap(self.config.keys)
        for k in self.keys:
            self.bind(k.keys, k.action, description=k.label, show=k.footer)
        if self.config.theme and self.config.theme in self.available_themes:
            self.theme = self.config.theme
        self.messages: list[tuple[str, str]] = []     # (severity, text) of every notification
        self.busy = False
        self.progress: Progress | None = None
        self.synchronous = False                      # tests may run commands in the foreground
        self.selection: tuple = ("byte", 0, 0, "ram")
        self.hex_view = "ram"                          # ram | overlay
        self.hex_target: tuple | None = None           # (space, page address) shown by `:x`
        self.compare = "previous step"
        self.layout_mode = "split"
        self.saved: set[str] = {"main"}
        self._quit_armed = False
        self._byte_selected = False
        self._search_mode = ""
        self._timer = None
        self._hex_space = RAM
        self._listener_cache: dict[str, list] = {}

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        s = self.session
        yield StatusLine(s, id="status")
        yield Tabs(*(Tab(t, id=f"tab-{g}") for g, t in zip(GROUPS, ("vCPUs", "source", "memory", "log"))), id="tabs")
        with Container(id="main", classes="show-cpus"):
            n = s.tl.e.n
            with Container(id="cpus", classes="group" + (" many" if n > MANY_CPUS else " quad" if n > 2 else "")):
                if n > MANY_CPUS:
                    yield VcpuListPane(s, id="cpulist")
                    yield VcpuPane(s, s.tl.focus, id="cpudetail")
                else:
                    for c in range(n):
                        yield VcpuPane(s, c, id=f"cpu{c}")
            with Container(id="side", classes="group"):
                yield HexdumpView(id="hexdump")
                yield IrqPane(s, "interrupts", id="irq")
                yield MsrPane(s, "MSRs", id="msrs")
            with Container(id="code", classes="group"):
                yield SourcePane(s, id="source")
                yield BreakpointsPane(s, id="breaks")
            with Container(id="log", classes="group"):
                yield EventLogView(s.tl, id="events")
                yield TranscriptPane(id="transcript")
        yield Static("", id="completions")
        yield CommandLine(lambda: self.session, id="cmdline")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        DirtyOnlyCompositor.use_on(self.screen)
        for w in self.config.warnings:
            self.notify(w, severity="warning", timeout=8)
        self._update_hexdump()
        self._events().set_marks(self.session.marks)
        self._events().follow(self.session.tl.pos)
        if getattr(self.session, "trace_path", None) and not self.synchronous:
            self.session.verification = {"state": "running", "done": 0, "total": 0}
            # after the first paint: the worker holds the GIL for long stretches
            self.call_after_refresh(self.run_worker, self._verify_trace, thread=True, group="verify",
                                    exit_on_error=False)

    def watch_theme(self, theme: str) -> None:
        if self.is_mounted and theme != self.config.theme:
            self.config.theme = theme
            warning = save_theme(theme, self.config.path)
            if warning:
                self.notify(warning, severity="warning")

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        group = event.tab.id.removeprefix("tab-")
        main = self.query_one("#main")
        for g in GROUPS:
            main.set_class(g == group, f"show-{g}")

    # ---------------------------------------------------------------- telling the panes
    def _events(self) -> EventLogView:
        return self.query_one("#events", EventLogView)

    def _hex(self) -> HexdumpView:
        return self.query_one("#hexdump", HexdumpView)

    def _listeners(self, selector: str) -> list:
        """The panes a message goes to (the pane set never changes after mount: queried once)."""
        if selector not in self._listener_cache:
            self._listener_cache[selector] = list(self.query(selector))
        return self._listener_cache[selector]

    def refresh_all(self, branches_changed: bool = False) -> None:
        s = self.session
        tl = s.tl
        for detail in self._listeners("#cpudetail"):        # more than 4 vCPUs: one detail pane
            detail.cpu = tl.focus
        # a method call, not a posted SessionChanged: every pane changes before the next
        # frame, so a step costs one layout and one render, not one per pane's message
        for pane in self._listeners("VcpuPane, VcpuListPane, SourcePane, IrqPane, MsrPane, BreakpointsPane, StatusLine"):
            pane.refresh_view()
        ev = self._events()
        ev.set_timeline(tl)             # follows tl.pos (the same timeline: only that)
        ev.set_marks(s.marks)
        self._update_hexdump()

    def _select(self, selection: tuple) -> None:
        self.selection = selection
        for pane in self._listeners("VcpuPane, IrqPane, MsrPane"):
            pane.post_message(SelectionChanged(selection))

    def _hex_source(self) -> HexSource:
        """What the hexdump shows: the focused vCPU's shared page (RAM or its overlay), or
        the page `:x ADDR` asked for; fields of every structure the hypervisor shares in it;
        the bytes that differ from the compare base highlighted."""
        tl = self.session.tl
        mv = tl.view()
        cpu = tl.focus
        if self.hex_target is not None:
            space, page = self.hex_target
            data = mv.page(space, page)
            base = page if space == RAM else 0
            title = f"{'RAM' if space == RAM else f'overlay(cpu{space})'} page {page:#x}  (v: back to cpu{cpu}'s page)"
        else:
            sp, gpa = views.primary_structure(mv, cpu)
            if sp is None:
                return HexSource(b"", 0, {}, frozenset(), f"cpu{cpu}: no shared page")
            if self.hex_view == "overlay":
                space, data, base = cpu, mv.page(cpu), 0
            else:
                space = RAM
                base = max(gpa, 0) & ~0xFFF
                data = mv.page(RAM, base) if gpa > 0 else None
            msr_v = mv.cpu(cpu).msr(sp.msr) or 0
            title = (f"{sp.structure.title} cpu{cpu} {msr_v:#x} {'enabled' if sp.enabled else 'disabled'} "
                     f"· {self.hex_view.upper()} ·")
        if data is None:
            return HexSource(b"", base, {}, frozenset(), title + "  (no page)")
        fields = {}
        for p in mv.shared_pages(cpu):
            if p.gpa >= 0 and (p.gpa & ~0xFFF) == (base if space == RAM else (p.gpa & ~0xFFF)):
                off0 = p.gpa & 0xFFF
                for off, size, name in p.structure.fields:
                    fields[off0 + off] = (size, f"{p.structure.name}.{name}")
        changed, label = self._changed_bytes(space, base, data)
        self._hex_space = space
        return HexSource(bytes(data), base, fields, frozenset(changed), f"{title}  {label}")

    def _changed_bytes(self, space: int, base: int, data: bytes) -> tuple[set[int], str]:
        """The offsets that differ from the compare base, and what that base is."""
        s = self.session
        tl = s.tl
        ref = None
        if self.compare == "mark" and s.marks:
            name, step = list(s.marks.items())[-1]
            ref, label = tl.state_at(step).page(space, base), f"mark {name} (step {step})"
        elif self.compare == "branch":
            others = [n for n in s.branches if n != s.current]
            if others:
                ref = s.branches[others[0]].state_at(tl.pos).page(space, base)
                label = f"branch {others[0]} at step {tl.pos}"
        if ref is not None:
            changed = {j for j in range(min(len(ref), len(data))) if ref[j] != data[j]}
            return changed, f"changes vs {label}: {len(changed)} byte(s)"
        out = set()
        for cell in views.changed_cells(tl):
            if cell[0] == "mem" and cell[1] == space and (space != RAM or cell[2] & ~0xFFF == base):
                out.add(cell[2] & 0xFFF)
        return out, f"changes vs the previous step: {len(out)} byte(s)"

    def _update_hexdump(self) -> None:
        self._hex().set_source(self._hex_source())

    def on_hexdump_view_cursor_moved(self, message: HexdumpView.CursorMoved) -> None:
        if not self._hex().has_focus:       # a new page shown, not the user's choice
            return
        self._byte_selected = True
        space = "ram" if self._hex_space == RAM else f"overlay:cpu{self._hex_space}"
        self._select(("byte", message.address, message.bit, space))

    def on_event_log_view_goto_step(self, message: EventLogView.GotoStep) -> None:
        self.run_line(f"goto {message.step}")

    def on_vcpu_list_pane_picked(self, message: VcpuListPane.Picked) -> None:
        self.run_line(f"focus cpu{message.cpu}")

    def on_irq_pane_picked(self, message: IrqPane.Picked) -> None:
        """A click on a vector: select it; a vector of another vCPU focuses that vCPU too
        (the selection is the focused vCPU's)."""
        self._select(("vector", (message.kind, message.vector)))
        if message.cpu != self.session.tl.focus:
            self.run_line(f"focus cpu{message.cpu}")
        else:
            self.notify(f"selected {self._selection_text()}")

    def on_msr_pane_picked(self, message: MsrPane.Picked) -> None:
        self._select(("msr", message.msr))
        self.notify(f"selected {self._selection_text()}")

    def on_breakpoints_pane_run(self, message: BreakpointsPane.Run) -> None:
        self.run_line(message.line)

    def on_transcript_pane_search_requested(self, message) -> None:
        self._search_mode = "transcript"
        self.action_prompt("", placeholder="search the output (enter: find, n/N: next/previous in the pane)")

    # ---------------------------------------------------------------- running commands
    def notify(self, message, *, title="", severity="information", timeout=None, markup=False) -> None:
        self.messages.append((severity, str(message)))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def _transcript(self) -> TranscriptPane:
        return self.query_one("#transcript", TranscriptPane)

    def run_line(self, line: str) -> bool:
        """Run one command line through hvdbg.commands, in a worker thread with a Progress
        (its bar shows after a moment; Esc cancels; a cancelled what-if is dropped). Bad
        input -> a notification."""
        if self.busy:
            self.notify("busy - Esc cancels the running command", severity="warning")
            return False
        # the echo is written with the output, in one write (one scroll of the transcript),
        # or when the progress shows if the command runs that long
        self._echo = Text(f": {line}", style="bold")
        if self.synchronous:
            return self._finish(line, self._execute(line, None))
        self.busy = True
        self.progress = Progress(line.split()[0] if line.split() else "")
        self._timer = self.set_timer(PROGRESS_AFTER, self._show_progress)
        self.run_worker(partial(self._background, line, self.progress), thread=True, group="command",
                        exit_on_error=False)
        return True

    def _execute(self, line: str, progress):
        try:
            return self.session.execute(line, stop=progress), None
        except BaseException as e:  # reported on the UI thread
            return None, e

    def _background(self, line: str, progress: Progress) -> None:
        result = self._execute(line, progress)
        try:
            self.call_from_thread(self._finish, line, result)
        except RuntimeError:        # the app is gone (quit while running)
            pass

    def _write(self, *entries) -> None:
        """Write to the transcript the pending echo of the command line, then `entries`."""
        echo, self._echo = self._echo, None
        items = ([echo] if echo is not None else []) + [e if not isinstance(e, str) else Text(e) for e in entries]
        if items:
            self._transcript().write_entries(items)

    def _show_progress(self) -> None:
        self._write()
        if self.busy and self.progress is not None:
            status = self.query_one(StatusLine)
            status.progress = self.progress
            status.refresh_view()
            self._timer = self.set_timer(0.1, self._show_progress)

    def _finish(self, line: str, result) -> bool:
        out, err = result
        self.busy = False
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._hex_space = RAM
        self.query_one(StatusLine).progress = None
        self.progress = None
        before = set(self.session.branches)
        try:
            if err is not None:
                raise err
        except CommandError as e:
            self.notify(str(e), severity="error", timeout=6)
            self._write(Text(str(e), style="red"))
            self.refresh_all()
            return False
        except ExpectationFailed as e:
            self._write()
            self.notify(f"expectation failed: {e}", severity="warning", timeout=6)
            self.refresh_all()
            return False
        except Exception as e:  # never let a command take the UI down
            self._write()
            from ..crash import write_crash_report
            from ..safe import printable
            try:
                raise e
            except Exception:
                path = write_crash_report(f"tui: {line}")
            self.notify(f"internal error ({type(e).__name__}: {printable(str(e), 80)}); crash report written to "
                        f"{path}; the session goes on", severity="error", timeout=10)
            self.refresh_all()
            return False
        self._write(*out.lines)
        words = line.split()
        if words and (words[0] == "save" or words[:2] == ["branch", "save"]):
            self.saved = set(self.session.branches)
        if words and words[0] in ("x",) and out.data.get("addr") is not None:
            space = out.data.get("space", RAM)
            self.hex_target = (space, out.data["addr"] & ~0xFFF if space == RAM else 0)
            self._hex().goto_offset(out.data["addr"] & 0xFFF)
        if words and words[0] == "load":
            self.hex_target = None
        self.refresh_all(branches_changed=set(self.session.branches) != before)
        return True

    # ---------------------------------------------------------------- the `:` line
    def action_cmd(self, line: str) -> None:
        self.run_line(line)

    def action_prompt(self, prefill: str = "", placeholder: str | None = None) -> None:
        inp = self.query_one("#cmdline", CommandLine)
        inp.add_class("open")
        if placeholder:
            inp.placeholder = placeholder
        inp.open(prefill)
        inp.focus()

    def palette_command(self, name: str) -> None:
        if name in NO_ARG:
            self.run_line(name)
        else:
            self.action_prompt(name + " ")

    @on(CommandLine.Submitted, "#cmdline")
    def _submitted(self, event: CommandLine.Submitted) -> None:
        line = event.value.strip()
        mode = self._search_mode
        self._close_prompt()
        if mode == "transcript":
            if line and not self._transcript().search(line):
                self.notify(f"not found in the output: {line}", severity="warning")
            return
        if line:
            self.query_one("#cmdline", CommandLine).remember(line)
            self.run_line(line)

    def on_command_line_closed(self, message: CommandLine.Closed) -> None:
        self._close_prompt()

    def on_command_line_candidates(self, message: CommandLine.Candidates) -> None:
        box = self.query_one("#completions", Static)
        box.update(Text("  ".join(message.words[:40]) + (" …" if len(message.words) > 40 else ""), style="cyan"))
        box.set_class(bool(message.words), "open")

    def _close_prompt(self) -> None:
        inp = self.query_one("#cmdline", CommandLine)
        inp.remove_class("open")
        inp.value = ""
        inp.placeholder = "command (Tab completes, Up/Down history, Esc closes; `help` lists them)"
        self._search_mode = ""
        self.query_one("#completions").remove_class("open")
        self.set_focus(None)

    # ---------------------------------------------------------------- actions bound to keys
    def action_cancel(self) -> None:
        if self.busy and self.progress is not None:
            self.progress.cancel()
            self.notify("cancelling ...")
            return
        if self.selection[0] != "byte":
            self._select(("byte",) + tuple(self.selection[1:4]) if len(self.selection) >= 4 else ("byte", 0, 0, "ram"))
            return
        if self.screen.maximized is not None:
            self.screen.minimize()

    def action_focus_cpu(self, n: int) -> None:
        if n >= self.session.tl.e.n:
            self.notify(f"no cpu{n}", severity="warning")
            return
        self.run_line(f"focus cpu{n}")

    def action_focus_cpu_delta(self, d: int) -> None:
        tl = self.session.tl
        self.run_line(f"focus cpu{(tl.focus + d) % tl.e.n}")

    def action_pick_cpu(self) -> None:
        self.push_screen(VcpuPicker(views.vcpu_rows(self.session)))

    def action_focus_pane(self, pane: str) -> None:
        w = self.query_one(f"#{pane}")
        if self.screen.has_class("-narrow"):
            group = w.parent.id
            self.query_one(Tabs).active = f"tab-{group}"
        w.focus()

    def action_focus_group(self, group: str) -> None:
        if self.screen.has_class("-narrow"):
            self.query_one(Tabs).active = f"tab-{group}"
        first = next((w for w in self.query_one(f"#{group}").query("*") if w.can_focus), None)
        if first is not None:
            first.focus()

    def action_zoom(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
            return
        w = self.focused
        while w is not None and w.parent is not None and w.parent.id not in GROUPS:
            w = w.parent
        if w is None or w.parent is None:
            self.notify("focus a pane first (Tab, or click it)", severity="warning")
            return
        self.screen.maximize(w, container=False)

    def action_cycle_layout(self) -> None:
        order = ["split", "src", "asm"]
        self.layout_mode = order[(order.index(self.layout_mode) + 1) % len(order)]
        self.query_one(SourcePane).post_message(LayoutChanged(self.layout_mode))
        self.notify(f"source view: {self.layout_mode}")

    # ---- the selected cell: a byte of the hexdump (default), an MSR, a vector, a register
    def action_select(self, kind: str) -> None:
        cpu = self.session.tl.focus
        if kind == "msr":
            rows = views.msr_rows(self.session, cpu)
            if not rows:
                self.notify(f"cpu{cpu} has no MSR to select", severity="warning")
                return
            self._select(("msr", rows[0]))
        elif kind == "vector":
            vs = views.selectable_vectors(self.session, cpu)
            if not vs:
                self.notify(f"cpu{cpu} has no vector pending or in service", severity="warning")
                return
            self._select(("vector", vs[0]))
        else:
            self._select(("reg", 0))
        self.notify(f"selected {self._selection_text()} (+/- move it, escape: back to the hexdump byte)")

    def action_select_move(self, delta: int) -> None:
        k = self.selection
        cpu = self.session.tl.focus
        if k[0] == "msr":
            rows = views.msr_rows(self.session, cpu)
            i = rows.index(k[1]) if k[1] in rows else 0
            self._select(("msr", rows[(i + delta) % len(rows)]))
        elif k[0] == "vector":
            vs = views.selectable_vectors(self.session, cpu)
            if vs:
                i = vs.index(k[1]) if k[1] in vs else 0
                self._select(("vector", vs[(i + delta) % len(vs)]))
        elif k[0] == "reg":
            self._select(("reg", (k[1] + delta) % 4))

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
        return f"byte {k[1]:#x} bit {k[2]}"

    def _byte(self) -> tuple[int, int, str]:
        """The byte under the hexdump's cursor (the page it shows: RAM or an overlay)."""
        h = self._hex()
        sp = self._hex_space
        return h.cursor_address, h.cursor_bit, "ram" if sp == RAM else f"overlay:cpu{sp}"

    def action_break_here(self) -> None:
        tl = self.session.tl
        k = self.selection
        if k[0] == "msr":
            self.run_line(f"break msr {k[1]:#x} cpu {tl.focus}")
        elif k[0] == "vector":
            self.run_line(f"break deliver {k[1][1]:#x} cpu {tl.focus}")
        else:
            cv = tl.view().cpu(tl.focus)
            self.run_line(f"break {cv.routine}+{cv.pc} cpu {tl.focus}")

    def action_watch_selection(self) -> None:
        k = self.selection
        cpu = self.session.tl.focus
        if k[0] == "msr":
            self.run_line(f"watch msr cpu{cpu} {k[1]:#x}")
        elif k[0] == "vector":
            self.run_line(f"watch {k[1][0]} cpu{cpu} {k[1][1]:#x}")
        else:
            addr, _bit, space = self._byte()
            self.run_line(f"watch mem {addr:#x} 1 {space}")

    def action_why(self) -> None:
        """y: why the selection holds its value (byte, vector, MSR, register); with nothing
        selected, the outcome's causal chain."""
        k = self.selection
        cpu = self.session.tl.focus
        if k[0] == "msr":
            line = f"why msr cpu{cpu} {k[1]:#x}"
        elif k[0] == "vector":
            line = f"why {k[1][0]} cpu{cpu} {k[1][1]:#x}"
        elif k[0] == "reg":
            line = f"why reg cpu{cpu} r{k[1]}"
        elif self._byte_selected:
            addr, _bit, space = self._byte()
            line = f"why mem {addr:#x} {space}"
        else:
            self.action_why_chain()
            return
        try:
            out = self.session.execute(line)
        except CommandError as e:
            self.notify(str(e), severity="error")
            return
        steps = out.data.get("steps") or ([out.data["step"]] if out.data.get("step") is not None else [])
        links = [{"step": None, "text": ln} for ln in out.lines[:1]]
        links += [{"step": st + 1, "text": ln} for st, ln in zip(steps, out.lines[1:])] \
            if steps else [{"step": None, "text": ln} for ln in out.lines[1:]]
        self.push_screen(WhyScreen(f"why: {self._selection_text() if k[0] != 'byte' else line[4:]}  "
                                   "(Y: the outcome's chain)", links))

    def action_why_chain(self) -> None:
        try:
            out = self.session.execute("why")
        except CommandError as e:
            self.notify(str(e), severity="error")
            return
        chain = out.data.get("chain") or []
        if not chain:
            self.notify(out.lines[0] if out.lines else "nothing to explain")
            return
        self.push_screen(WhyScreen(f"why the {self.session.current} branch ends {out.data.get('outcome', '?')} "
                                   "(enter: go to the step)", chain))

    def action_flip_bit(self) -> None:
        addr, bit, space = self._byte()
        self.run_line(f"flip {addr:#x} {bit} {space}")

    def action_edit_selection(self) -> None:
        k = self.selection
        tl = self.session.tl
        cpu = tl.focus
        if k[0] == "msr":
            cur = tl.view().cpu(cpu).msr(k[1]) or 0
            self.action_prompt(f"set msr cpu{cpu} {k[1]:#x} {cur:#x}")
        elif k[0] == "vector":
            self.action_prompt(f"{'drop irr' if k[1][0] == 'irr' else 'inject'} cpu{cpu} {k[1][1]:#x}")
        elif k[0] == "reg":
            self.action_prompt(f"set reg cpu{cpu} r{k[1]} {tl.view().cpu(cpu).regs[k[1]]:#x}")
        else:
            addr, _bit, space = self._byte()
            sp = RAM if space == "ram" else int(space.split("cpu")[-1])
            v = tl.view().read(sp, addr, 1)
            self.action_prompt(f"set mem {addr:#x} {0 if v is None else v:#04x} 1 {space}")

    def action_whatif_menu(self) -> None:
        self.push_screen(WhatIfScreen(self.session.tl.focus, self.session))

    def action_toggle_view(self) -> None:
        if self.hex_target is not None:
            self.hex_target = None
        else:
            self.hex_view = "overlay" if self.hex_view == "ram" else "ram"
        self._update_hexdump()

    def action_compare_base(self) -> None:
        """Highlight the hexdump's differences against the previous step, the last mark or
        another branch (cycles)."""
        order = ["previous step", "mark", "branch"]
        self.compare = order[(order.index(self.compare) + 1) % len(order)]
        if self.compare == "mark" and not self.session.marks:
            self.notify("no mark yet (`m` marks a step); comparing with another branch")
            self.compare = "branch"
        if self.compare == "branch" and len(self.session.branches) < 2:
            self.notify("no other branch yet; comparing with the previous step")
            self.compare = "previous step"
        else:
            self.notify(f"hexdump: changes vs {self.compare}")
        self._update_hexdump()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_text(self.keys)))

    async def action_quit(self) -> None:
        """ctrl+q (Textual's own quit) asks about unsaved branches as q does."""
        self.action_quit_app()

    def action_quit_app(self) -> None:
        if self.busy and self.progress is not None:
            self.progress.cancel()                     # the worker stops at its next poll
            self.exit(0)
            return
        unsaved = [n for n in self.session.branches if n not in self.saved]
        if unsaved and not self._quit_armed:
            self._quit_armed = True
            self.notify(f"{len(unsaved)} what-if branch(es) not saved (`:save FILE`); press q again to quit",
                        severity="warning")
            return
        self.exit(0)

    # ---------------------------------------------------------------- an opened trace
    def _verify_trace(self) -> None:
        from textual.worker import get_current_worker

        from ..core.journal import JournalError
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
        try:
            self.call_from_thread(self.query_one(StatusLine).refresh_view)
        except Exception:
            pass


def run_tui(session: Session) -> int:
    app = HvdbgApp(session)
    app.run()
    return 0
