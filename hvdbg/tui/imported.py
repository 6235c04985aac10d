"""ImportedApp: time travel through a real text trace (KVM host ftrace, guest ftrace; see
docs/import.md, "In the TUI").

The app shows an :class:`~hvdbg.trace_import.ImportedTrace` at one event (the *current*
event): a status line, one pane per vCPU (or a list + the selected vCPU when there are more
than 4) with the state rebuilt up to that event, the findings, and every event in a
virtualised list (Textual's line API: only the visible rows are rendered, so 10^6 events
cost nothing). Views only read ``state_at(i)``, ``describe(i)``, ``find`` and ``findings``:
nothing here changes the trace. There is no model behind a real trace, so there are no
what-if edits.

``run_imported_tui(paths, fmt, offsets)`` is what ``hvdbg tui FILE [FILE2]`` calls (FILE a text
trace, or one imported ``.hvt`` written by ``hvdbg import -o``: its events are read, not
re-parsed): bad input is one line on stderr and exit 2 before the app starts; small files are
imported before the app starts, large ones in a worker thread behind a progress bar (Esc or
q cancels).
"""
from __future__ import annotations

import os
import sys
import threading

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Size
from textual.message import Message
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from ..safe import printable
from .screens import HelpScreen

SYNC_BYTES = 8 << 20          # files up to this size (compressed: a tenth) are imported before the app starts
MANY_VCPUS = 4                # more vCPUs than this: a list + the selected vCPU in detail
TEXT_SEARCH_SPAN = 100_000    # events scanned per key press by a plain-text search
INFERRED = "state: inferred (? help)"
KEYS_LINE = ("s/S next/prev  ]/[ vCPU  g goto  / search  n/N match  w/W watch  tab pane  enter finding  "
             "? help  q quit")
WATCH_KINDS = ("irr", "isr", "msr", "tpr", "hotplug")

HELP = """[b]hvdbg - imported trace[/b]  (the state shown is rebuilt from the events: inferred)

  down / j / s      next event            up / k / S       previous event
  pgdn / pgup       a page of events      home / end       first / last event
  g                 go to an event: an index (1234) or a timestamp (@1907374.5023)
  /                 search: an event name (kvm_inj_virq), part of one (inj), words
                    vcpu=N vector=0x34 msr=0x4b564d04 name=kvm_msr, or any text
  n / N             next / previous match
  ] / [             next / previous event of the selected vCPU (the focused vCPU pane,
                    the one picked in the vCPU list, or the last finding's)
  w                 watch the selected vCPU: irr 0xec, isr 0xfd, msr 0x4b564d04, tpr,
                    hotplug (add vcpu=N for another): go to the next event changing it
  W                 the previous event changing the last watch
  tab / shift+tab   next / previous pane;  on the findings: enter goes to the finding's
                    first event;  with more than 4 vCPUs the list picks the vCPU shown
  ?                 this help;  q  quit

[b]In a vCPU pane[/b]  @N = the event that set it.  IRR/ISR bits, TPR, MSRs and the hotplug
state are what the events imply; an in-service vector whose EOI may have gone through the
PV-EOI / Hyper-V assist page without an exit is marked [b]unknown[/b] (the trace cannot
show it).  With APICv (acceptances, no kvm_inj_virq) IRR->ISR moves are not traced.
What-if edits do not apply to a real trace: there is no model behind it.

  escape / q / ?  close this help"""


class _Cancelled(Exception):
    """Raised inside the import thread by the progress callback to cancel it."""


# ---------------------------------------------------------------------------- views (pure)

def _vec(v: int) -> str:
    return f"0x{v:02x}"


def vcpu_text(tr, st, vn: int) -> Text:
    """What one vCPU pane shows after the event of `st` (a State from state_at)."""
    from ..trace_import.decode import msr_name
    t = Text()
    v = st.vcpus.get(vn)
    if v is None:
        t.append(f"vCPU {vn}: no event about it yet", style="dim")
        return t
    if v.in_guest is None:
        t.append("where: ?", style="dim")
    elif v.in_guest:
        t.append("in guest", style="bold green")
    else:
        t.append("in host", style="bold yellow")
    if v.exit is not None:
        t.append(f"  last exit {printable(v.exit[0], 40)} @{v.exit[1]}")
    t.append("\n")
    h = v.hotplug
    t.append("hotplug ", style="bold")
    if h is None:
        t.append("-\n", style="dim")
    else:
        t.append(f"{h['phase']} step {h.get('step')} state {h.get('state')} target {h.get('target')}"
                 f" ({printable(h.get('callback') or '-', 40)}) @{h['event']}\n")
    unk = v.unknown_isr()
    t.append("IRR ", style="bold")
    if not v.irr:
        t.append("-", style="dim")
    for vec, i in sorted(v.irr.items()):
        t.append(f" {_vec(vec)}", style="cyan")
        t.append(f"@{i}" + ("?" if tr.apicv else ""))
    if tr.apicv and v.irr:
        t.append("  (APICv: injection not traced)", style="dim")
    t.append("\nISR ", style="bold")
    if not v.isr:
        t.append("-", style="dim")
    for vec, i in sorted(v.isr.items()):
        t.append(f" {_vec(vec)}", style="magenta")
        t.append(f"@{i}")
        if vec in unk:
            t.append(" unknown", style="bold yellow")
    if unk:
        t.append("  (EOI may have gone through the PV-EOI/assist page, no exit)", style="dim")
    t.append("\nTPR ", style="bold")
    t.append("-" if v.tpr is None else f"0x{v.tpr[0]:02x} @{v.tpr[1]}", style="dim" if v.tpr is None else "")
    t.append("\nguest handlers ", style="bold")
    if not v.guest_isr:
        t.append("-", style="dim")
    else:
        t.append(" > ".join(f"{printable(_handler(tr, i), 30)} {_vec(vec)} @{i}" for vec, i in v.guest_isr))
    t.append("\nPV-EOI ", style="bold")
    if not v.pv_eoi:
        t.append("-", style="dim")
    else:
        t.append("  ".join(f"{'Hyper-V assist page' if k == 'assist' else 'KVM PV-EOI'} "
                           f"{'on' if en else 'off'} @{i}" for k, (en, i) in sorted(v.pv_eoi.items())))
    t.append("\nMSRs", style="bold")
    if not v.msrs:
        t.append(" -", style="dim")
    for m, (val, i, rw) in sorted(v.msrs.items()):
        t.append(f"\n  {printable(msr_name(m), 40)} = 0x{val:x}  {rw}@{i}")
    return t


def _handler(tr, i: int) -> str:
    name = tr.events[i].name
    return name[:-6] if name.endswith("_entry") else name


def vcpu_line(st, vn: int) -> str:
    """One row of the vCPU list (more than MANY_VCPUS vCPUs)."""
    v = st.vcpus.get(vn)
    if v is None:
        return f"{vn:>3} -"
    where = "?" if v.in_guest is None else "G" if v.in_guest else "H"
    return f"{vn:>3} {where} IRR {len(v.irr)} ISR {len(v.isr)}"


def status_text(tr, i: int, message: str = "") -> str:
    ev = tr.events[i]
    files = " + ".join(f"{printable(os.path.basename(f.path), 40)} ({f.role}"
                       + (f" {f.offset:+.6f} s" if f.offset else "") + ")" for f in tr.files)
    out = (f"event {i}/{len(tr.events) - 1}  ts {ev.ts:.6f}  findings {len(tr.findings)}  {INFERRED}"
           + ("  APICv suspected" if tr.apicv else "") + "  " + files)
    if message:
        out = message + "  | " + out
    return out


def parse_search(text: str, kinds) -> tuple[dict, list[str] | None, str | None]:
    """A search line as (find() keywords, event names to look for or None, plain text or None).
    Raises ValueError with a one-line reason."""
    kw: dict = {}
    words = []
    for w in text.split():
        k, eq, val = w.partition("=")
        if eq and k in ("vcpu", "vector", "msr", "name"):
            if k == "name":
                kw["name"] = val
                continue
            try:
                kw[k] = int(val, 0)
            except ValueError:
                raise ValueError(f"{k}={printable(val, 30)}: expected a number (0x.. for hex)") from None
        else:
            words.append(w)
    if not words:
        return kw, None, None
    word = " ".join(words)
    if len(words) == 1:
        if word in kinds:
            return kw, [word], None
        names = sorted(k for k in kinds if word.lower() in k.lower())
        if names and "name" not in kw:
            return kw, names, None
    return kw, None, word


def _matches(tr, j: int, kw: dict) -> bool:
    """Event j meets every find() condition in kw (as ImportedTrace.find tests them)."""
    e = tr.events[j]
    if "name" in kw and e.name != kw["name"]:
        return False
    if "vcpu" in kw and e.vcpu != kw["vcpu"]:
        return False
    if "vector" in kw and type(tr)._vector_of(e.name, e.args) != kw["vector"]:
        return False
    if "msr" in kw and type(tr)._msr_of(e.name, e.args) != kw["msr"]:
        return False
    return True


# ---------------------------------------------------------------------------- widgets

class EventList(ScrollView, can_focus=True):
    """Every event of the trace, one row each (line API: only visible rows are rendered);
    the current event highlighted and centred. A click goes to the event."""

    COMPONENT_CLASSES = {"events--current", "events--proof", "events--match"}
    DEFAULT_CSS = """
    EventList {
        & > .events--current { background: $accent 40%; text-style: bold; }
        & > .events--proof { color: $warning; }
        & > .events--match { color: $success; }
    }
    """

    # the list's cursor is the current event: moving it moves the app (ScrollView's own
    # bindings would only scroll)
    BINDINGS = [
        Binding("down", "app.step(1)", "next", show=False),
        Binding("up", "app.step(-1)", "prev", show=False),
        Binding("pagedown", "app.page(1)", "page down", show=False),
        Binding("pageup", "app.page(-1)", "page up", show=False),
        Binding("home", "app.edge(0)", "first", show=False),
        Binding("end", "app.edge(1)", "last", show=False),
    ]

    class Goto(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, trace, **kw) -> None:
        super().__init__(**kw)
        self.trace = trace
        self.current = 0
        self._rows: LRUCache[int, str] = LRUCache(4096)
        self._proof = {i for f in trace.findings for i in f.events}
        self._tags = len(trace.files) > 1
        self._match: set[str] = set()
        self._styles: dict = {}
        self._pending = True
        self.virtual_size = Size(1, len(trace.events))

    def follow(self, i: int) -> None:
        self.current = i
        self.center()
        self.refresh()

    def center(self) -> None:
        h = self.scrollable_content_region.height
        if not self.is_mounted or not h:
            self._pending = True
            return
        self._pending = False
        self.scroll_to(y=max(0, self.current - h // 2), animate=False)

    def set_match_names(self, names) -> None:
        self._match = set(names or ())
        self.refresh()

    def page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def on_resize(self, event: events.Resize) -> None:
        self.center()

    def on_mount(self) -> None:
        self.call_after_refresh(self.center)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = {}

    def _style(self, *names: str) -> Style:
        st = self._styles.get(names)
        if st is None:
            st = self.rich_style
            for n in names:
                st = st + self.get_component_rich_style(f"events--{n}", partial=n != "current")
            self._styles[names] = st
        return st

    def row_text(self, i: int) -> str:
        t = self._rows.get(i)
        if t is None:
            tr = self.trace
            t = tr.describe(i)
            if self._tags:
                t = ("H " if tr.files[tr.events[i].file].role == "host" else "G ") + t
            self._rows[i] = t
        return t

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        sx, sy = self.scroll_offset
        i = sy + y
        if not 0 <= i < len(self.trace.events):
            return Strip.blank(width, self.rich_style)
        names = []
        if i == self.current:
            names.append("current")
        if self._match and self.trace.events[i].name in self._match:
            names.append("match")
        style = self._style(*names)
        gutter = ">" if i == self.current else ("!" if i in self._proof else " ")
        g = Segment(gutter, self._style(*names, "proof") if gutter == "!" else style)
        body = Strip([Segment(self.row_text(i), style)]).crop_extend(sx, sx + max(0, width - 1), style)
        return Strip.join([Strip([g], 1), body])

    def on_click(self, event: events.Click) -> None:
        off = event.get_content_offset(self)
        if off is None:
            return
        i = self.scroll_offset.y + off.y
        if 0 <= i < len(self.trace.events):
            self.post_message(self.Goto(i))


class VcpuPane(VerticalScroll):
    """One vCPU's rebuilt state at the current event (scrolls when the MSR table is long)."""

    def __init__(self, vcpu: int, **kw) -> None:
        super().__init__(**kw)
        self.vcpu = vcpu
        self.text = Text()
        self.border_title = f"vCPU {vcpu}"

    def compose(self) -> ComposeResult:
        yield Static("", classes="body", markup=False)

    def show(self, tr, st, vcpu: int | None = None) -> None:
        if vcpu is not None:
            self.vcpu = vcpu
            self.border_title = f"vCPU {vcpu}"
        old = self.text
        self.text = vcpu_text(tr, st, self.vcpu)
        # the same number of lines: no new layout (it costs more than the rest of a step)
        a, b = old.plain.split("\n"), self.text.plain.split("\n")
        same = len(a) == len(b) and all(len(y) <= len(x) for x, y in zip(a, b))
        self.query_one(".body", Static).update(self.text, layout=not same)


class FindingsPane(OptionList):
    """The findings; Enter (or a click) goes to the finding's first event."""


class LoadingScreen(Screen):
    """The import of large files: a progress bar and the line count; Esc or q cancels."""
    BINDINGS = [Binding("escape,q", "cancel", "cancel")]

    def __init__(self, total_lines: int | None, **kw) -> None:
        super().__init__(**kw)
        self.total = total_lines

    def compose(self) -> ComposeResult:
        with Vertical(id="loadbox"):
            yield Static("importing ...", id="loadtitle")
            yield ProgressBar(total=self.total, show_eta=False, id="loadbar")
            yield Static("", id="loadcount")
            yield Static("esc or q: cancel", classes="hint")

    def on_mount(self) -> None:
        self.set_interval(0.1, self.poll)
        self.poll()

    def poll(self) -> None:
        app = self.app
        fi, n, phase = app.load_progress
        paths = app.paths
        if phase == "rebuild":
            self.query_one("#loadtitle", Static).update(
                f"rebuilding the per-vCPU state: event {n:,}")
            # events <= lines: the lines read bound the events to rebuild
            total = max(app.load_lines, self.total or 0, n) or None
            self.query_one("#loadbar", ProgressBar).update(total=total, progress=n)
            self.query_one("#loadcount", Static).update(f"{app.load_lines:,} lines read")
            return
        name = printable(os.path.basename(str(paths[min(fi, len(paths) - 1)])), 60) if paths else ""
        done = app.load_lines_before + n
        self.query_one("#loadtitle", Static).update(f"importing {name} ({fi + 1}/{len(paths)})")
        if self.total:
            self.query_one("#loadbar", ProgressBar).update(progress=min(done, self.total))
        self.query_one("#loadcount", Static).update(f"{done:,} lines read")

    def action_cancel(self) -> None:
        self.app.cancel_import()


# ---------------------------------------------------------------------------- the app

class ImportedApp(App):
    CSS_PATH = "imported.tcss"
    TITLE = "hvdbg import"

    BINDINGS = [
        Binding("s,down,j", "step(1)", "next"),
        Binding("S,up,k", "step(-1)", "prev"),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("home", "edge(0)", "first", show=False),
        Binding("end", "edge(1)", "last", show=False),
        Binding("g", "ask('goto')", "goto"),
        Binding("slash", "ask('search')", "search"),
        Binding("n", "match(1)", "next match"),
        Binding("N", "match(-1)", "prev match", show=False),
        Binding("w", "ask('watch')", "watch"),
        Binding("W", "watch(-1)", "watch back", show=False),
        Binding("right_square_bracket", "vcpu_step(1)", "vCPU next", show=False),
        Binding("left_square_bracket", "vcpu_step(-1)", "vCPU prev", show=False),
        Binding("x,e,exclamation_mark", "what_if", "what-if", show=False),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit_app", "quit"),
        Binding("escape", "close_input", "close", show=False),
    ]

    def __init__(self, trace=None, paths=None, fmt: str = "auto", offsets: dict | None = None,
                 total_lines: int | None = None) -> None:
        super().__init__()
        self.trace = trace
        self.paths = list(paths or ())
        self.fmt = fmt
        self.offsets = offsets or {}
        self.total_lines = total_lines
        self.index = 0
        self.error: str | None = None          # one line for stderr after exit (run_imported_tui)
        self.message = ""
        self.search: tuple | None = None        # (find kw, names, text)
        self.watching: tuple | None = None      # (vcpu, "irr"|"isr"|"msr"|"tpr"|"hotplug", key)
        self.sel_vcpu: int | None = None
        self.load_progress = (0, 0, "read")
        self.load_lines = 0
        self.load_lines_before = 0
        self._file_lines: dict = {}
        self._cancel = threading.Event()
        self._asking: str | None = None
        self._resume: tuple | None = None       # a text search stopped after TEXT_SEARCH_SPAN events
        self._built = False

    # -- composition ----------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("", id="status", markup=False)
        yield Horizontal(id="main")
        yield Input(id="ask")
        # a fixed line rather than a Footer: the Footer rebuilds itself on every focus change
        yield Static(KEYS_LINE, id="keys", markup=False)

    def on_mount(self) -> None:
        self._size_classes(self.size.width, self.size.height)
        if self.trace is None:
            self.push_screen(LoadingScreen(self.total_lines))
            self.run_worker(self._import, thread=True, exclusive=True, name="import")
        else:
            self._build()

    def _build(self) -> None:
        tr = self.trace
        main = self.query_one("#main")
        vcpus = tr.vcpus()
        self.sel_vcpu = vcpus[0] if vcpus else None
        left = Vertical(id="cpus", classes="many" if len(vcpus) > MANY_VCPUS else f"n{min(len(vcpus), 4)}")
        right = Vertical(id="side")
        main.mount(left, right)
        if not vcpus:
            left.mount(Static("no vCPU in this trace (no event decoded to a vCPU)", id="novcpu"))
        elif len(vcpus) > MANY_VCPUS:
            lst = OptionList(*[Option(f"vCPU {n}", id=f"v{n}") for n in vcpus], id="vcpulist")
            lst.border_title = f"vCPUs ({len(vcpus)})"
            left.mount(lst, VcpuPane(vcpus[0], id="cpudetail"))
        else:
            left.mount(*[VcpuPane(n, id=f"cpu{n}", classes="cpu") for n in vcpus])
        fl = FindingsPane(*[Option(Text.assemble((f"[{f.kind}] ", "bold"), printable(f.text, 400)), id=f"f{k}")
                            for k, f in enumerate(tr.findings)] or [Option("no findings", disabled=True)],
                          id="findings")
        fl.border_title = f"findings ({len(tr.findings)})"
        ev = EventList(tr, id="events")
        ev.border_title = f"events ({len(tr.events):,})"
        right.mount(fl)
        main.mount(ev)
        if not tr.findings:
            right.add_class("empty")
        self._built = True
        ev.focus()
        self.call_after_refresh(self._first_show)

    def _first_show(self) -> None:
        self.query_one(EventList).focus()
        self.goto(self.index)

    # -- the import worker (large files) ---------------------------------------------
    def _import(self) -> None:
        from textual.worker import get_current_worker
        worker = get_current_worker()

        def progress(fi: int, n: int) -> None:
            # ends the import thread soon after a cancel, an exit (ctrl+q) or a worker cancel
            if self._cancel.is_set() or worker.is_cancelled:
                raise _Cancelled()
            if fi >= len(self.paths):
                if self.load_progress[2] != "rebuild":
                    self.load_lines = self.load_lines_before + self.load_progress[1]
                self.load_progress = (fi, n, "rebuild")
                return
            if fi != self.load_progress[0]:
                self.load_lines_before += self._file_lines.get(self.load_progress[0], self.load_progress[1])
            self._file_lines[fi] = n
            self.load_progress = (fi, n, "read")

        try:
            tr = load(self.paths, self.fmt, self.offsets, progress)
        except _Cancelled:
            return
        if self._cancel.is_set():
            return
        if isinstance(tr, str):
            self._fail(tr)
            return
        self.call_from_thread(self._loaded, tr)

    def _fail(self, line: str) -> None:
        self.error = line
        if not self._cancel.is_set():
            self.call_from_thread(self.exit, 2, 2)

    def _loaded(self, tr) -> None:
        self.trace = tr
        if isinstance(self.screen, LoadingScreen):
            self.pop_screen()
        self._size_classes(self.size.width, self.size.height)
        self._build()

    def cancel_import(self) -> None:
        self._cancel.set()
        self.error = "hvdbg tui: import cancelled"
        self.exit(1, 1)

    # -- layout by size --------------------------------------------------------------
    def on_resize(self, event: events.Resize) -> None:
        self._size_classes(event.size.width, event.size.height)

    def _size_classes(self, w: int, h: int) -> None:
        narrow = w < 100 or h < 30
        for screen in self.screen_stack:          # the main screen too while a loading / help screen is on top
            screen.set_class(narrow, "-narrow")
            screen.set_class(not narrow, "-wide")
        self.set_class(narrow, "-narrow")

    # -- moving ----------------------------------------------------------------------
    def goto(self, i: int) -> None:
        tr = self.trace
        if tr is None:
            return
        i = max(0, min(len(tr.events) - 1, i))
        self.index = i
        self.refresh_views()

    def refresh_views(self) -> None:
        tr = self.trace
        if tr is None or not self._built:
            return
        st = tr.state_at(self.index)
        self.query_one("#status", Static).update(status_text(tr, self.index, self.message), layout=False)
        for p in self.query(VcpuPane):
            if p.id == "cpudetail":
                p.show(tr, st, self.sel_vcpu)
            else:
                p.show(tr, st)
        lst = self.query("#vcpulist")
        if lst:
            ol = lst.first(OptionList)
            for n in tr.vcpus():
                ol.replace_option_prompt(f"v{n}", vcpu_line(st, n))
        self.query_one(EventList).follow(self.index)

    def say(self, text: str) -> None:
        self.message = text
        self.refresh_views()

    def action_step(self, d: int) -> None:
        self.message = ""
        self.goto(self.index + d)

    def action_page(self, d: int) -> None:
        if self.trace is not None:
            self.message = ""
            self.goto(self.index + d * self.query_one(EventList).page())

    def action_edge(self, last: int) -> None:
        if self.trace is not None:
            self.message = ""
            self.goto(len(self.trace.events) - 1 if last else 0)

    # -- goto / search line ----------------------------------------------------------
    def action_ask(self, what: str) -> None:
        if self.trace is None:
            return
        inp = self.query_one("#ask", Input)
        self._asking = what
        inp.value = ""
        inp.placeholder = {
            "goto": "goto: an event index (1234) or @TIMESTAMP",
            "search": "search: event name, part of one, vcpu=N vector=0x.. msr=0x.., or text",
            "watch": f"watch vCPU {self.sel_vcpu}: irr 0xNN | isr 0xNN | msr 0xNNNN | tpr | hotplug  [vcpu=N]",
        }[what]
        inp.add_class("open")
        inp.focus()

    def action_close_input(self) -> None:
        inp = self.query_one("#ask", Input)
        if inp.has_class("open"):
            inp.remove_class("open")
            self._asking = None
            if self._built:
                self.query_one(EventList).focus()

    @on(Input.Submitted, "#ask")
    def _submitted(self, event: Input.Submitted) -> None:
        what, text = self._asking, event.value.strip()
        self.action_close_input()
        if not text:
            return
        if what == "goto":
            self.goto_text(text)
        elif what == "watch":
            self.watch_text(text)
        else:
            self.search_text(text)

    def goto_text(self, text: str) -> bool:
        tr = self.trace
        s = text.strip()
        try:
            if s.startswith("@"):
                i = tr.index_at(float(s[1:]))
            else:
                i = int(s, 0)
        except ValueError:
            self.say(f"goto {printable(s, 40)}: expected an event index or @TIMESTAMP")
            return False
        if not 0 <= i < len(tr.events):
            self.say(f"goto {i}: the trace has events 0..{len(tr.events) - 1}")
            return False
        self.message = ""
        self.goto(i)
        return True

    def search_text(self, text: str) -> int | None:
        try:
            self.search = parse_search(text, self.trace.kinds)
        except ValueError as e:
            self.search = None
            self.say(f"search: {e}")
            return None
        self.query_one(EventList).set_match_names(self.search[1] or ([self.search[0]["name"]]
                                                                     if "name" in self.search[0] else ()))
        return self.action_match(1)

    def action_match(self, d: int) -> int | None:
        tr = self.trace
        if tr is None:
            return None
        if self.search is None:
            self.say("no search yet: press / first")
            return None
        kw, names, text = self.search
        fwd = d > 0
        i = None
        if text is None:
            hits = ([tr.find(self.index, fwd, name=n, **kw) for n in names] if names else
                    [tr.find(self.index, fwd, **kw)])
            hits = [h for h in hits if h is not None]
            if hits:
                i = min(hits) if fwd else max(hits)
        else:
            # plain text: describe() of each event, TEXT_SEARCH_SPAN events per key press; the
            # next press of the same search goes on from where this one stopped
            needle = text.lower()
            start = self.index
            if self._resume is not None and self._resume[:3] == (self.search, fwd, self.index):
                start = self._resume[3]
            self._resume = None
            stop = (min(len(tr.events), start + 1 + TEXT_SEARCH_SPAN) if fwd else max(-1, start - 1 - TEXT_SEARCH_SPAN))
            for j in range(start + 1, stop) if fwd else range(start - 1, stop, -1):
                if needle in tr.describe(j).lower() and (not kw or _matches(tr, j, kw)):
                    i = j
                    break
            if i is None and 0 <= stop < len(tr.events):
                self._resume = (self.search, fwd, self.index, stop - (1 if fwd else -1))
                self.say(f"no match in events {min(start, stop)}..{max(start, stop)}: press "
                         f"{'n' if fwd else 'N'} to search on")
                return None
        if i is None:
            self.say(f"no match {'after' if fwd else 'before'} event {self.index}")
            self.bell()
            return None
        self.message = f"match at {i}"
        self.goto(i)
        return i

    # -- watchpoints and per-vCPU steps ---------------------------------------------------
    def watch_text(self, text: str) -> int | None:
        words = text.split()
        vcpu = self.sel_vcpu
        rest = []
        for w in words:
            if w.startswith("vcpu="):
                try:
                    vcpu = int(w[5:], 0)
                except ValueError:
                    self.say(f"watch: {printable(w, 30)}: expected vcpu=N")
                    return None
            else:
                rest.append(w)
        if not rest or rest[0].lower() not in WATCH_KINDS:
            self.say("watch: irr 0xNN, isr 0xNN, msr 0xNNNN, tpr or hotplug [vcpu=N]")
            return None
        what = rest[0].lower()
        key = None
        if what in ("irr", "isr", "msr"):
            try:
                key = int(rest[1], 0) if len(rest) > 1 else None
            except ValueError:
                key = None
            if key is None:
                self.say(f"watch {what}: give the {'MSR' if what == 'msr' else 'vector'} (0x.. for hex)")
                return None
        if vcpu is None or vcpu not in self.trace.vcpus():
            have = ", ".join(map(str, self.trace.vcpus())) or "none"
            self.say(f"watch: no vCPU {vcpu} in this trace (vCPUs: {have})")
            return None
        self.watching = (vcpu, what, key)
        return self.action_watch(1)

    def _watch_label(self) -> str:
        vcpu, what, key = self.watching
        k = "" if key is None else f" 0x{key:x}" if what == "msr" else f" 0x{key:02x}"
        return f"vCPU {vcpu} {what}{k}"

    def action_watch(self, d: int) -> int | None:
        tr = self.trace
        if tr is None:
            return None
        if self.watching is None:
            self.say("no watch yet: press w first")
            return None
        vcpu, what, key = self.watching
        if d > 0:
            i = tr.watch(self.index, vcpu, what, key, True)
        else:
            i = tr.watch(self.index - 1, vcpu, what, key, False) if self.index > 0 else None
        if i is None:
            self.say(f"watch {self._watch_label()}: no change {'after' if d > 0 else 'before'} event {self.index}")
            self.bell()
            return None
        self.message = f"watch {self._watch_label()}: changed at {i}"
        self.goto(i)
        return i

    def action_vcpu_step(self, d: int) -> None:
        tr = self.trace
        if tr is None or self.sel_vcpu is None:
            return
        i = tr.find(self.index, d > 0, vcpu=self.sel_vcpu)
        if i is None:
            self.say(f"no event of vCPU {self.sel_vcpu} {'after' if d > 0 else 'before'} event {self.index}")
            return
        self.message = f"vCPU {self.sel_vcpu}"
        self.goto(i)

    def action_what_if(self) -> None:
        if self.trace is not None:
            self.say("what-if edits do not apply to a real trace: there is no model behind it")

    def on_descendant_focus(self, event) -> None:
        w = event.widget if hasattr(event, "widget") else None
        if isinstance(w, VcpuPane) and w.id != "cpudetail":
            self.sel_vcpu = w.vcpu

    # -- panes -------------------------------------------------------------------------
    @on(OptionList.OptionSelected, "#findings")
    def _finding(self, event: OptionList.OptionSelected) -> None:
        oid = event.option.id
        if oid and oid.startswith("f"):
            f = self.trace.findings[int(oid[1:])]
            if f.events:
                self.message = f"finding: {f.kind}" + (f" vCPU {f.vcpu}" if f.vcpu is not None else "")
                self.goto(f.events[0])
                if f.vcpu is not None and f.vcpu in self.trace.vcpus():
                    self.sel_vcpu = f.vcpu
                    self._select_vcpu(f.vcpu)

    @on(OptionList.OptionHighlighted, "#vcpulist")
    def _vcpu_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        oid = event.option.id
        if oid and oid.startswith("v"):
            self.sel_vcpu = int(oid[1:])
            self.refresh_views()

    def _select_vcpu(self, vn: int) -> None:
        lst = self.query("#vcpulist")
        if lst:
            ol = lst.first(OptionList)
            ol.highlighted = ol.get_option_index(f"v{vn}")
            self.sel_vcpu = vn
            self.refresh_views()

    @on(EventList.Goto)
    def _clicked(self, event: EventList.Goto) -> None:
        self.message = ""
        self.goto(event.index)

    def action_help(self) -> None:
        if not isinstance(self.screen, (HelpScreen, LoadingScreen)):
            self.push_screen(HelpScreen(Text.from_markup(HELP), commands=False))

    def on_unmount(self) -> None:
        self._cancel.set()          # whatever ended the app: the import thread stops at its next progress call

    def action_quit_app(self) -> None:
        self._cancel.set()
        self.exit(0)


# ---------------------------------------------------------------------------- entry point

def check_paths(paths) -> str | None:
    """One line saying why `paths` cannot be opened as text traces, or None."""
    from ..trace_import import is_text_trace
    import stat as _stat
    for p in paths:
        s = printable(str(p), 120)
        try:
            st = os.stat(p)
        except OSError as e:
            return f"hvdbg tui: {s}: cannot read: {e.strerror or e}"
        if not _stat.S_ISREG(st.st_mode):
            return f"hvdbg tui: {s}: not a regular file"
        if not os.access(p, os.R_OK):
            return f"hvdbg tui: {s}: cannot read: permission denied"
        if _imported(p):
            if len(paths) > 1:
                return f"hvdbg tui: {s}: an imported trace (.hvt) opens alone"
            continue
        if not is_text_trace(p):
            return (f"hvdbg tui: {s}: not a text trace (ftrace trace / trace_pipe, trace-cmd report or "
                    f"perf script, plain, .gz or .xz) nor an hvdbg recording")
    return None


def _imported(path) -> bool:
    from ..trace_import.hvt import is_imported
    return is_imported(path)


def _plain(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(6)
    return not (head[:2] == b"\x1f\x8b" or head == b"\xfd7zXZ\x00")


def _estimate_lines(paths) -> tuple[int, bool]:
    """(estimated number of lines, every file plain) from the file sizes and the average line
    length of their first 64 KiB."""
    total = 0
    plain = True
    for p in paths:
        size = os.path.getsize(p)
        with open(p, "rb") as f:
            head = f.read(1 << 16)
        if head[:2] == b"\x1f\x8b" or head[:6] == b"\xfd7zXZ\x00":
            plain = False
            continue
        nl = head.count(b"\n")
        total += size // max(1, len(head) // max(1, nl)) if nl else 1
    return total, plain


def run_imported_tui(paths, fmt: str = "auto", offsets: dict | None = None, *, sync_bytes: int = SYNC_BYTES) -> int:
    """`hvdbg tui FILE [FILE2 ...]` for text traces: 0, or 2 with one line on stderr when the
    files cannot be opened or hold no trace (1 when the import was cancelled)."""
    paths = [os.fspath(p) for p in paths]
    if fmt == "trace-pipe":
        fmt = "trace"
    err = check_paths(paths)
    if err:
        print(err, file=sys.stderr)
        return 2
    try:
        if len(paths) == 1 and _imported(paths[0]):
            # an imported .hvt holds ~8 bytes per event where its text held ~100 per line
            lines, plain = None, False
            size = os.path.getsize(paths[0]) * 12
        else:
            lines, plain = _estimate_lines(paths)
            size = sum(os.path.getsize(p) * (1 if _plain(p) else 10) for p in paths)
    except OSError as e:
        print(f"hvdbg tui: cannot read: {printable(e.strerror or str(e), 200)}", file=sys.stderr)
        return 2
    trace = None
    if size <= sync_bytes:
        trace = load(paths, fmt, offsets)
        if isinstance(trace, str):
            print(trace, file=sys.stderr)
            return 2
    app = ImportedApp(trace, paths=paths, fmt=fmt, offsets=offsets, total_lines=lines if plain else None)
    rc = app.run()
    if app.error:
        print(app.error, file=sys.stderr)
    return rc if isinstance(rc, int) else 0


def load(paths, fmt: str = "auto", offsets: dict | None = None, progress=None):
    """The ImportedTrace of `paths`, or one line saying why not (never raises for bad input)."""
    from ..safe import UnsafeFile
    from ..trace.format import TraceError
    from ..trace_import import TraceImportError, import_trace
    try:
        if len(paths) == 1 and _imported(paths[0]):
            from ..trace_import import hvt
            return hvt.read(paths[0], progress)
        return import_trace(paths, fmt, offsets, progress=progress)
    except TraceError as e:
        return f"hvdbg tui: {printable(str(e), 400)}"
    except TraceImportError as e:
        return f"hvdbg tui: {printable(str(e), 300)}"
    except (UnsafeFile, OSError, EOFError) as e:
        why = getattr(e, "why", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__
        return (f"hvdbg tui: {printable(getattr(e, 'filename', None) or ' '.join(map(str, paths)), 120)}: "
                f"cannot read: {printable(why, 200)}")
    except MemoryError:
        return "hvdbg tui: out of memory importing the trace (`hvdbg import` reads it with less)"


__all__ = ["ImportedApp", "check_paths", "run_imported_tui", "vcpu_text"]
