"""One command language for the TUI's `:` line, the REPL and scripts (design §2).

Every command has exactly one definition here: name, aliases, usage (its arguments),
help, a completion function and a function over the session's timeline that returns an
:class:`Output` the front ends render. `help` is generated from these definitions.
"""
from __future__ import annotations

import difflib
import os
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable

from .core import hypervisors
from .core.defs import VECTORS, vector_name
from .core.explain import describe, explain, where
from .core.machine import RAM
from .core.msr import MSR_NAMES, MSRS
from .core.journal import JournalError
from .core.timeline import Timeline
from .core.why import CellError, why_bit, why_cell, why_mem


class CommandError(Exception):
    """A bad command or argument: one line, with a did-you-mean where it helps."""


@dataclass
class Output:
    lines: list = field(default_factory=list)      # str (rich markup escaped by the renderer) or rich renderables
    data: dict = field(default_factory=dict)        # structured result for JSON / the TUI
    moved: bool = False                             # the position or branch changed


class Progress:
    """A `stop` callback that also measures: long work calls it often (the engine once per
    event, searches once per segment and every few thousand events), so `calls` is a count of
    work done; `cancel()` makes the next call return True. A front end runs the command in a
    worker with one of these and shows `label`, `calls`, `total` and the rate meanwhile."""

    def __init__(self, label: str = "", total: int | None = None):
        self.label = label
        self.total = total
        self.calls = 0
        self.cancelled = False
        self.started = time.monotonic()

    def __call__(self) -> bool:
        self.calls += 1
        return self.cancelled

    def cancel(self) -> None:
        self.cancelled = True

    def rate(self) -> float:
        return self.calls / max(1e-6, time.monotonic() - self.started)


def _cancelled(stop) -> bool:
    return bool(getattr(stop, "cancelled", False))


@dataclass
class Command:
    name: str
    usage: str
    help: str
    func: Callable
    aliases: tuple = ()
    complete: Callable | None = None                # (session, args_so_far) -> list of words
    category: str = "general"


COMMANDS: dict[str, Command] = {}
ALIASES: dict[str, str] = {}


def command(name, usage="", help="", aliases=(), complete=None, category="general"):
    def deco(fn):
        c = Command(name, usage, help, fn, tuple(aliases), complete, category)
        COMMANDS[name] = c
        for a in aliases:
            ALIASES[a] = name
        return fn
    return deco


def lookup(word: str) -> Command:
    if word in COMMANDS:
        return COMMANDS[word]
    if word in ALIASES:
        return COMMANDS[ALIASES[word]]
    names = list(COMMANDS) + list(ALIASES)
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else "; 'help' lists the commands"
    raise CommandError(f"unknown command '{word}'{hint}")


# ---------------------------------------------------------------- argument parsing
def _closest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def parse_int(word: str, what: str = "a number") -> int:
    try:
        return int(word, 0)
    except ValueError:
        raise CommandError(f"expected {what}, got '{word}'") from None


def parse_vector(word: str) -> int:
    w = word.upper()
    if w in VECTORS:
        return VECTORS[w]
    try:
        v = int(word, 0)
    except ValueError:
        raise CommandError(f"unknown vector '{word}'{_closest(w, VECTORS)}") from None
    if not 16 <= v <= 255:
        raise CommandError(f"vector 0x{v:x} is out of range 0x10..0xff")
    return v


def parse_msr(word: str) -> int:
    w = word.upper()
    if w in MSRS:
        return MSRS[w]
    if not w.startswith("HV_X64_MSR_") and "HV_X64_MSR_" + w in MSRS:
        return MSRS["HV_X64_MSR_" + w]
    try:
        return int(word, 0)
    except ValueError:
        raise CommandError(f"unknown MSR '{word}'{_closest(w, MSRS)}") from None


def parse_cpu(s: "Session", word: str) -> int:
    w = word.lower()
    if w.startswith("cpu"):
        w = w[3:]
    try:
        c = int(w, 0)
    except ValueError:
        raise CommandError(f"expected a CPU like cpu1 or 1, got '{word}'") from None
    if not 0 <= c < s.tl.e.n:
        raise CommandError(f"no cpu{c} (this machine has cpu0..cpu{s.tl.e.n - 1})")
    return c


def parse_space(s: "Session", word: str | None, cpu: int | None = None) -> int:
    if word is None or word == "ram":
        return RAM
    if word.startswith("overlay"):
        rest = word[len("overlay"):].lstrip(":")
        c = parse_cpu(s, rest) if rest else (s.tl.focus if cpu is None else cpu)
        return c
    raise CommandError(f"expected ram or overlay[:CPU], got '{word}'")


def need(args: list, n: int, usage: str) -> None:
    if len(args) < n:
        raise CommandError(f"missing argument; usage: {usage}")


# ---------------------------------------------------------------- the session
class Session:
    """What the front ends share: the branches of a run, the current one, marks."""

    def __init__(self, timeline: Timeline, source: str = ""):
        self.branches: dict[str, Timeline] = {"main": timeline}
        self.current = "main"
        self.marks: dict[str, int] = {}
        self.source = source
        self.trace_path: str | None = None
        self.salvaged: dict | None = None       # the salvage report of a cut or damaged trace
        self._n = 0

    @property
    def tl(self) -> Timeline:
        return self.branches[self.current]

    @classmethod
    def open(cls, spec: str | None = None, memory: int | None = None, **options) -> "Session":
        """A built-in scenario, a scenario file, or a trace file (anything with the trace magic).
        A trace opens at its last step from its last snapshot (recording.open_at); each segment
        is re-executed and checked when it is first looked at, and one that diverges ends the
        command with the step. A salvaged trace opens with ``salvaged`` set (scripts then exit
        8). A scenario's step budget must fit the memory budget of a recorded session
        (timeline.journal_problem)."""
        from .core.scenario import ScenarioError, load_scenario
        from .core.timeline import cache_budget, journal_problem, memory_budget
        cache = cache_budget(memory_budget(memory))
        if spec and is_trace_file(spec):
            from .recording import open_at
            from .safe import printable
            loaded = open_at(spec, cache_bytes=cache)
            if loaded.divergence is not None:
                raise CommandError(f"{printable(spec)}: diverged at step {loaded.divergence[0]}: {loaded.divergence[1]}")
            s = cls(loaded.timeline, spec)
            s.branches.update(loaded.branches)
            s.trace_path = spec
            s.scenario = loaded.scenario
            s.salvaged = loaded.trace.salvage
            _freeze()
            return s
        scn = load_scenario(spec)
        try:
            cfg = scn.config(**{k: v for k, v in options.items() if v is not None})
        except ScenarioError as e:
            raise CommandError(str(e)) from None
        why = journal_problem(cfg.max_steps, memory_budget(memory))
        if why:
            raise CommandError(why)
        tl = Timeline.record(scn, cfg, cache_bytes=cache)
        s = cls(tl, spec or "cpu-offline")
        s.scenario = scn
        _freeze()
        return s

    def new_branch_name(self, stem: str) -> str:
        self._n += 1
        name = stem
        while name in self.branches:
            self._n += 1
            name = f"{stem}-{self._n}"
        return name

    def execute(self, line: str, stop=None) -> Output:
        """Run one command line. Raises CommandError for bad input (nothing changes then)."""
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise CommandError(f"cannot parse the line: {e}") from None
        if not words:
            return Output()
        head, args = words[0], words[1:]
        if head.startswith("x/"):
            args = [head[2:]] + args
            head = "x"
        cmd = lookup(head)
        try:
            return cmd.func(self, args, stop=stop)
        except JournalError as e:
            raise CommandError(f"the recording does not re-execute as recorded at step {e.step}: {e}") from None

    # where are we
    def where_line(self) -> str:
        tl = self.tl
        cv = tl.view().cpu(tl.focus)
        at = where(tl.e, cv.routine_id, cv.pc, c_text=False)
        out = tl.result.outcome if tl.result else "?"
        return f"[{self.current}] step {tl.pos}/{tl.length} ({out})  cpu{tl.focus} at {at}"


def _freeze() -> None:
    """Move the recorded journal out of the cyclic GC's reach: it is millions of acyclic
    tuples, and a full collection over a 1M-event recording pauses the UI for seconds."""
    import gc
    gc.collect()
    gc.freeze()


def is_trace_file(path) -> bool:
    """Does `path` name a regular file that starts with the trace magic? Never blocks: a FIFO
    or device is not a trace (the loader then refuses it with a reason)."""
    import stat

    from .trace.format import MAGIC
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError, TypeError):
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.read(fd, len(MAGIC)) == MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


# ---------------------------------------------------------------- completion helpers
def _c_cpus(s, args):
    return [f"cpu{c}" for c in range(s.tl.e.n)]


def _c_vectors(s, args):
    return list(VECTORS)


def _c_msrs(s, args):
    return list(MSRS)


def _c_branches(s, args):
    return list(s.branches)


def _c_routines(s, args):
    return list(s.tl.e.rnames)


def _moved(s: Session, why: str = "") -> Output:
    return Output([s.where_line()] + ([why] if why else []), {"step": s.tl.pos, "branch": s.current}, moved=True)


def _count(args, usage) -> int:
    if not args:
        return 1
    n = parse_int(args[0], "a count")
    if n < 0:
        raise CommandError(f"count must be >= 0; usage: {usage}")
    return n


# ---------------------------------------------------------------- movement
@command("step", "step [N]", "Run until the focused vCPU has executed N more ops (others advance as recorded).",
         aliases=("s",), category="movement")
def _step(s, args, stop=None):
    r = s.tl.step(n=_count(args, "step [N]"))
    return _moved(s, "" if r.reason == "step" else r.reason)


@command("rstep", "rstep [N]", "Go back to before the focused vCPU's N-th previous op.", aliases=("S", "reverse-step"),
         category="movement")
def _rstep(s, args, stop=None):
    r = s.tl.rstep(n=_count(args, "rstep [N]"))
    return _moved(s, "" if r.reason == "reverse step" else r.reason)


@command("next", "next", "Step over calls and interrupt handlers on the focused vCPU.", aliases=("n",), category="movement")
def _next(s, args, stop=None):
    s.tl.next(stop=stop)
    return _moved(s)


@command("rnext", "rnext", "Reverse of next.", aliases=("N", "reverse-next"), category="movement")
def _rnext(s, args, stop=None):
    s.tl.rnext(stop=stop)
    return _moved(s)


@command("finish", "finish", "Run until the current routine or handler of the focused vCPU returns.", aliases=("f",),
         category="movement")
def _finish(s, args, stop=None):
    r = s.tl.finish(stop=stop)
    return _moved(s, r.reason if r.reason != "finish" else "")


@command("rfinish", "rfinish", "Go back to before the current routine or handler was entered.", aliases=("F", "reverse-finish"),
         category="movement")
def _rfinish(s, args, stop=None):
    r = s.tl.rfinish(stop=stop)
    return _moved(s, r.reason if r.reason != "reverse finish" else "")


@command("event", "event [N]", "Execute N raw events (any vCPU, delivery, IPI, timer).", aliases=("e",), category="movement")
def _event(s, args, stop=None):
    s.tl.event(_count(args, "event [N]"))
    return _moved(s)


@command("revent", "revent [N]", "Undo N raw events.", aliases=("E",), category="movement")
def _revent(s, args, stop=None):
    s.tl.event(-_count(args, "revent [N]"))
    return _moved(s)


@command("goto", "goto N|MARK|end", "Move to step N (0..length), a mark or the end.", aliases=("g",), category="movement")
def _goto(s, args, stop=None):
    need(args, 1, "goto N|MARK|end")
    w = args[0]
    if w in s.marks:
        k = s.marks[w]
    elif w in ("end", "$"):
        k = s.tl.length
    else:
        k = parse_int(w, "a step, a mark or 'end'")
    if not 0 <= k <= s.tl.length:
        raise CommandError(f"step {k} is outside 0..{s.tl.length}")
    s.tl.goto(k)
    return _moved(s)


@command("continue", "continue", "Run forward to the next breakpoint or watchpoint, or the end.", aliases=("c", "cont"),
         category="movement")
def _continue(s, args, stop=None):
    r = s.tl.continue_(stop=stop)
    return _moved(s, r.reason)


@command("rcontinue", "rcontinue", "Run backward to the previous breakpoint or watchpoint, or the start.",
         aliases=("C", "reverse-continue", "rc"), category="movement")
def _rcontinue(s, args, stop=None):
    r = s.tl.reverse_continue(stop=stop)
    return _moved(s, r.reason)


@command("focus", "focus CPU", "Choose the vCPU that step/next/finish follow.", complete=_c_cpus, category="movement")
def _focus(s, args, stop=None):
    need(args, 1, "focus CPU")
    s.tl.focus = parse_cpu(s, args[0])
    s.tl.frame_sel = 0
    return _moved(s)


# ---------------------------------------------------------------- frames
def _frame_text(e, f: dict) -> str:
    rt = e.rid[f["routine"]]
    loc = where(e, rt, f["pc"], c_text=True)
    if f["kind"] == "interrupt":
        return f"interrupted by 0x{f['vector']:02x} in {loc}"
    return loc


@command("bt", "bt", "Backtrace of the focused vCPU: current routine, calls and interrupted contexts.",
         aliases=("backtrace", "where", "w"), category="frames")
def _bt(s, args, stop=None):
    fr = s.tl.frames()
    lines = [f"{'>' if i == s.tl.frame_sel else ' '} #{i} {_frame_text(s.tl.e, f)}" for i, f in enumerate(fr)]
    return Output(lines, {"frames": fr, "selected": s.tl.frame_sel})


@command("up", "up", "Select the next outer frame.", aliases=("u",), category="frames")
def _up(s, args, stop=None):
    f = s.tl.up()
    return Output([f"#{s.tl.frame_sel} {_frame_text(s.tl.e, f)}"], {"frame": f})


@command("down", "down", "Select the next inner frame.", aliases=("d",), category="frames")
def _down(s, args, stop=None):
    f = s.tl.down()
    return Output([f"#{s.tl.frame_sel} {_frame_text(s.tl.e, f)}"], {"frame": f})


# ---------------------------------------------------------------- breakpoints and watchpoints
BREAK_USAGE = ("break ROUTINE[+OP|:LABEL] [cpu N] | break msr MSR [rd|wr] [VALUE] [cpu N] | "
               "break deliver|eoi|skip [VECTOR] [cpu N] | break corruption | break transition [KIND]")
TRANSITIONS = ("kexec", "power_cycle", "save_image", "restore_image")


def _take_cpu(s, args) -> tuple[list, int | None]:
    if len(args) >= 2 and args[-2] == "cpu":
        return args[:-2], parse_cpu(s, args[-1])
    if args and args[-1].lower().startswith("cpu") and args[-1][3:].isdigit():
        return args[:-1], parse_cpu(s, args[-1])
    return args, None


def _c_break(s, args):
    if len(args) == 0:
        return ["msr", "deliver", "eoi", "skip", "corruption", "transition"] + _c_routines(s, args)
    if args[0] == "transition" and len(args) == 1:
        return list(TRANSITIONS)
    if args[0] == "msr" and len(args) == 1:
        return _c_msrs(s, args)
    if args[0] in ("deliver", "eoi") and len(args) == 1:
        return _c_vectors(s, args)
    return ["rd", "wr", "cpu"] if args[0] == "msr" else ["cpu"]


@command("break", BREAK_USAGE, "Set a breakpoint: guest pc, MSR access, vector delivered / EOI'd / EOI skipped, a "
         "corruption (invariant violation), a kernel transition (kexec, power_cycle, save_image, restore_image).",
         aliases=("b",), complete=_c_break, category="breakpoints")
def _break(s, args, stop=None):
    need(args, 1, BREAK_USAGE)
    args, cpu = _take_cpu(s, args)
    tl = s.tl
    k = args[0]
    if k == "msr":
        need(args, 2, BREAK_USAGE)
        msr = parse_msr(args[1])
        acc = args[2] if len(args) > 2 and args[2] in ("rd", "wr") else None
        rest = args[3:] if acc else args[2:]
        val = parse_int(rest[0].lstrip("="), "a value") if rest else None
        b = tl.add_break("msr", msr, acc, val, cpu=cpu)
    elif k in ("deliver", "eoi", "skip"):
        vec = parse_vector(args[1]) if len(args) > 1 else None
        b = tl.add_break("vector", k, vec, cpu=cpu)
    elif k == "corruption":
        b = tl.add_break("note", "violation", None, cpu=cpu)
    elif k == "transition":
        kind = args[1] if len(args) > 1 else None
        if kind is not None and kind not in TRANSITIONS:
            raise CommandError(f"unknown transition '{kind}'{_closest(kind, TRANSITIONS)} (known: {', '.join(TRANSITIONS)})")
        b = tl.add_break("note", "transition", kind, cpu=cpu)
    else:
        routine, op = k, 0
        for sep in ("+", ":"):
            if sep in k:
                routine, o = k.split(sep, 1)
                op = parse_int(o, "an op index") if sep == "+" else o
        if routine not in tl.e.rid:
            raise CommandError(f"no routine '{routine}'{_closest(routine, tl.e.rid)}")
        try:
            b = tl.break_pc(routine, op, cpu=cpu)
        except ValueError as e:
            raise CommandError(str(e)) from None
    return Output([f"breakpoint {b.number}: {b.describe(tl)}"], {"number": b.number})


WATCH_USAGE = "watch mem ADDR [LEN] [ram|overlay[:CPU]] | watch msr CPU MSR | watch irr|isr CPU VECTOR"


def _c_watch(s, args):
    if not args:
        return ["mem", "msr", "irr", "isr"]
    if args[0] in ("msr", "irr", "isr") and len(args) == 1:
        return _c_cpus(s, args)
    if args[0] == "msr" and len(args) == 2:
        return _c_msrs(s, args)
    if args[0] in ("irr", "isr") and len(args) == 2:
        return _c_vectors(s, args)
    return ["ram", "overlay"] if args[0] == "mem" else []


@command("watch", WATCH_USAGE, "Set a watchpoint on guest memory (RAM or an overlay), an MSR or an IRR/ISR bit.",
         complete=_c_watch, category="breakpoints")
def _watch(s, args, stop=None):
    need(args, 2, WATCH_USAGE)
    tl = s.tl
    k = args[0]
    if k == "mem":
        addr = parse_int(args[1], "an address")
        rest = args[2:]
        length = 1
        if rest and rest[0][0].isdigit():
            length = parse_int(rest[0], "a length")
            rest = rest[1:]
        space = parse_space(s, rest[0] if rest else None)
        b = tl.add_break("mem", space, addr, length)
    elif k == "msr":
        need(args, 3, WATCH_USAGE)
        b = tl.watch_msr(parse_cpu(s, args[1]), _checked_msr(args[2]))
    elif k in ("irr", "isr"):
        need(args, 3, WATCH_USAGE)
        b = tl.watch_irr(parse_cpu(s, args[1]), parse_vector(args[2]), isr=(k == "isr"))
    else:
        raise CommandError(f"unknown watch kind '{k}'{_closest(k, ['mem', 'msr', 'irr', 'isr'])}; usage: {WATCH_USAGE}")
    return Output([f"watchpoint {b.number}: {b.describe(tl)}"], {"number": b.number})


def _checked_msr(word: str) -> int:
    m = parse_msr(word)
    if m not in MSR_NAMES:
        raise CommandError(f"MSR 0x{m:x} is not modelled")
    return m


@command("delete", "delete [N...]", "Delete breakpoints/watchpoints (all without arguments).", aliases=("del",),
         category="breakpoints")
def _delete(s, args, stop=None):
    if not args:
        n = len(s.tl.breaks)
        s.tl.breaks.clear()
        return Output([f"deleted {n} breakpoint(s)"])
    for a in args:
        num = parse_int(a, "a breakpoint number")
        if not any(b.number == num for b in s.tl.breaks):
            raise CommandError(f"no breakpoint {num}")
        s.tl.delete_break(num)
    return Output([f"deleted {', '.join(args)}"])


def _set_enabled(s, args, on: bool) -> Output:
    want = {parse_int(a, "a breakpoint number") for a in args} if args else {b.number for b in s.tl.breaks}
    hit = [b for b in s.tl.breaks if b.number in want]
    missing = want - {b.number for b in hit}
    if missing:
        raise CommandError(f"no breakpoint {min(missing)} (`breaks` lists them)")
    for b in hit:
        b.enabled = on
    return Output([f"{'enabled' if on else 'disabled'} {len(hit)} breakpoint(s)"], {"numbers": sorted(want)})


@command("enable", "enable [N...]", "Enable breakpoints/watchpoints (all without arguments).", category="breakpoints")
def _enable(s, args, stop=None):
    return _set_enabled(s, args, True)


@command("disable", "disable [N...]", "Disable breakpoints/watchpoints (all without arguments); they stay listed.",
         category="breakpoints")
def _disable(s, args, stop=None):
    return _set_enabled(s, args, False)


@command("breaks", "breaks", "List breakpoints and watchpoints.", aliases=("info-breaks",), category="breakpoints")
def _breaks(s, args, stop=None):
    bl = s.tl.breaks
    lines = [f"{b.number}: {b.describe(s.tl)} (hits {b.hits})" for b in bl] or ["no breakpoints"]
    return Output(lines, {"breaks": [{"number": b.number, "text": b.describe(s.tl)} for b in bl]})


# ---------------------------------------------------------------- marks and diffs
@command("mark", "mark [NAME]", "Remember the current step under NAME (default m1, m2, ...); list marks without a name.",
         category="marks")
def _mark(s, args, stop=None):
    if not args:
        if not s.marks:
            name = "m1"
        else:
            return Output([f"{k}: step {v}" for k, v in s.marks.items()], {"marks": dict(s.marks)})
    else:
        name = args[0]
    s.marks[name] = s.tl.pos
    return Output([f"mark {name} = step {s.tl.pos}"], {"mark": name, "step": s.tl.pos})


@command("diff", "diff [STEP|MARK|BRANCH]", "What differs between now and a step or mark of this branch, or another "
         "branch at the same step (default: the previous step).", complete=_c_branches, category="marks")
def _diff(s, args, stop=None):
    tl = s.tl
    if args and args[0] in s.branches and args[0] != s.current:
        other = s.branches[args[0]]
        lines = tl.state_diff(other, tl.pos)
        return Output([f"{s.current} vs {args[0]} at step {tl.pos}:"] + (lines or ["no difference"]), {"diff": lines})
    if args:
        k = s.marks[args[0]] if args[0] in s.marks else parse_int(args[0], "a step, mark or branch")
    else:
        k = max(0, tl.pos - 1)
    if not 0 <= k <= tl.length:
        raise CommandError(f"step {k} is outside 0..{tl.length}")
    from .core.timeline import diff_states
    lines = diff_states(tl.e, tl.snapshot_at(k), tl.snapshot_at(tl.pos), "->")
    return Output([f"changes from step {k} to step {tl.pos}:"] + (lines or ["no difference"]), {"diff": lines})


def _short(v) -> str:
    if isinstance(v, int):
        return hex(v) if v > 9 else str(v)
    return repr(v)


# ---------------------------------------------------------------- what-if edits (branches)
def _branch_out(s: Session, name: str, child: Timeline, what: str) -> Output:
    import gc
    gc.freeze()
    child.focus = s.tl.focus
    s.branches[name] = child
    s.current = name
    out = child.result.outcome if child.result else "?"
    d = child.e.replay_diverged
    parent = child.parent.name if child.parent else "its parent"
    if d >= 0:
        how = f"; it followed {parent}'s recorded choices up to step {d}, then chose by its own seed"
    elif child.parent is not None and child.length > child.parent.length:
        how = f"; it followed all of {parent}'s recorded choices, then chose by its own seed"
    else:
        how = f"; it followed {parent}'s recorded choices"
    return Output([f"branch {name}: {what} at step {child.fork} -> {out.upper()} after {child.length} steps{how}",
                   s.where_line()], {"branch": name, "outcome": out, "fork": child.fork,
                                     "replayed_until": d if d >= 0 else None}, moved=True)


def _edit_branch(s: Session, stem: str, edit: tuple, stop=None) -> Output:
    from .core.engine import edit_problem
    tl = s.tl
    why = edit_problem(edit, tl.e.n)
    if why:
        raise CommandError(why)
    name = s.new_branch_name(stem)
    if isinstance(stop, Progress):
        stop.label, stop.total = f"what-if {stem}", max(tl.length - tl.pos, 1)
    try:
        child = tl.branch(name, tl.pos, edit, stop=stop)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if _cancelled(stop):
        raise CommandError(f"cancelled: the {stem} branch was dropped; the session is as before")
    from .core.engine import edit_text
    return _branch_out(s, name, child, edit_text(edit))


SET_USAGE = "set mem ADDR VALUE [SIZE] [ram|overlay[:CPU]] | set msr CPU MSR VALUE | set reg CPU rN VALUE | set if CPU 0|1"


def _c_set(s, args):
    if not args:
        return ["mem", "msr", "reg", "if"]
    if args[0] in ("msr", "reg", "if") and len(args) == 1:
        return _c_cpus(s, args)
    if args[0] == "msr" and len(args) == 2:
        return _c_msrs(s, args)
    if args[0] == "reg" and len(args) == 2:
        return ["r0", "r1", "r2", "r3"]
    return ["ram", "overlay"] if args[0] == "mem" else []


@command("set", SET_USAGE, "What-if: change memory, an MSR (as a guest WRMSR), a register or IF at the current step; "
         "a new branch re-simulates from here.", complete=_c_set, category="what-if")
def _set(s, args, stop=None):
    need(args, 3, SET_USAGE)
    k = args[0]
    if k == "mem":
        addr, val = parse_int(args[1], "an address"), parse_int(args[2], "a value")
        rest = args[3:]
        size = 4
        if rest and rest[0].isdigit():
            size = parse_int(rest[0], "a size")
            rest = rest[1:]
        if size not in (1, 2, 4, 8):
            raise CommandError("size must be 1, 2, 4 or 8")
        space = parse_space(s, rest[0] if rest else None)
        return _edit_branch(s, "set-mem", ("edit", "mem", space, addr, size, val), stop)
    if k == "msr":
        need(args, 4, SET_USAGE)
        return _edit_branch(s, "set-msr", ("edit", "msr", parse_cpu(s, args[1]), parse_msr(args[2]),
                                            parse_int(args[3], "a value")), stop)
    if k == "reg":
        need(args, 4, SET_USAGE)
        r = args[2].lower()
        if r not in ("r0", "r1", "r2", "r3"):
            raise CommandError(f"registers are r0..r3, got '{args[2]}'")
        return _edit_branch(s, "set-reg", ("edit", "reg", parse_cpu(s, args[1]), int(r[1]), parse_int(args[3], "a value")), stop)
    if k == "if":
        return _edit_branch(s, "set-if", ("edit", "if", parse_cpu(s, args[1]), parse_int(args[2], "0 or 1")), stop)
    raise CommandError(f"unknown set target '{k}'{_closest(k, ['mem', 'msr', 'reg', 'if'])}; usage: {SET_USAGE}")


FLIP_USAGE = "flip ADDR BIT [ram|overlay[:CPU]]"


@command("flip", FLIP_USAGE, "What-if: flip one bit of guest RAM (default) or an overlay at the current step.",
         aliases=("x!",), complete=lambda s, a: ["ram", "overlay"] if len(a) == 2 else [], category="what-if")
def _flip(s, args, stop=None):
    need(args, 2, FLIP_USAGE)
    addr, bit = parse_int(args[0], "an address"), parse_int(args[1], "a bit number")
    if not 0 <= bit <= 7:
        raise CommandError("BIT is 0..7 (a bit of the byte at ADDR)")
    space = parse_space(s, args[2] if len(args) > 2 else None)
    return _edit_branch(s, "flip", ("edit", "flip", space, addr, bit), stop)


@command("inject", "inject CPU VECTOR", "What-if: make VECTOR pending in the CPU's IRR at the current step.",
         complete=lambda s, a: _c_cpus(s, a) if not a else _c_vectors(s, a), category="what-if")
def _inject(s, args, stop=None):
    need(args, 2, "inject CPU VECTOR")
    return _edit_branch(s, "inject", ("edit", "inject", parse_cpu(s, args[0]), parse_vector(args[1])), stop)


DROP_USAGE = "drop irr CPU VECTOR | drop ipi SRC DST VECTOR"


@command("drop", DROP_USAGE, "What-if: drop a pending vector or an in-flight IPI at the current step.",
         complete=lambda s, a: ["irr", "ipi"] if not a else (_c_vectors(s, a) if len(a) >= 2 else _c_cpus(s, a)),
         category="what-if")
def _drop(s, args, stop=None):
    need(args, 3, DROP_USAGE)
    if args[0] == "irr":
        return _edit_branch(s, "drop-irr", ("edit", "drop_irr", parse_cpu(s, args[1]), parse_vector(args[2])), stop)
    if args[0] == "ipi":
        need(args, 4, DROP_USAGE)
        return _edit_branch(s, "drop-ipi", ("edit", "drop_ipi", parse_cpu(s, args[1]), parse_cpu(s, args[2]),
                                             parse_vector(args[3])), stop)
    raise CommandError(f"unknown drop target '{args[0]}'; usage: {DROP_USAGE}")


def _switch_branch(s, what: str, value: str, choices, args, stop) -> Output:
    if value not in choices:
        raise CommandError(f"unknown {what} '{value}'{_closest(value, choices)} (choices: {', '.join(choices)})")
    at = 0
    if len(args) >= 3 and args[1] == "from":
        at = s.marks.get(args[2]) if args[2] in s.marks else parse_int(args[2], "a step")
    elif len(args) >= 2 and args[1] == "here":
        at = s.tl.pos
    tl = s.tl
    name = s.new_branch_name(f"{what}-{value}")
    if isinstance(stop, Progress):
        stop.label, stop.total = f"{what} {value}", max(tl.length - at, 1)
    try:
        child = tl.branch(name, at, None, **{what: value}, stop=stop)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if _cancelled(stop):
        raise CommandError(f"cancelled: the {what}-{value} branch was dropped; the session is as before")
    return _branch_out(s, name, child, f"{what} {value}")


def _fixes(s) -> list[str]:
    """The fix variants of the current branch's program (the pack's [fixes])."""
    return ["none", *sorted(s.tl.e.scn.program.variants)]


@command("fix", "fix FIX [from STEP|here]", "Re-run with another fix variant of this bug's pack (`bugs` lists them), "
         "from step 0 by default (a new branch).", complete=lambda s, a: _fixes(s) if not a else ["from", "here"],
         category="what-if")
def _fix(s, args, stop=None):
    need(args, 1, "fix VARIANT [from STEP|here]")
    return _switch_branch(s, "fix", args[0], _fixes(s), args, stop)


@command("hypervisor", "hypervisor MODEL [from STEP|here]", "Re-run with another hypervisor model (a new branch); "
         "the models: " + "the registered ones (completion lists them)",
         complete=lambda s, a: list(hypervisors.names()) if not a else ["from", "here"], category="what-if")
def _hypervisor(s, args, stop=None):
    need(args, 1, "hypervisor MODEL [from STEP|here]")
    return _switch_branch(s, "hypervisor", args[0], list(hypervisors.names()), args, stop)


def _overlays(s) -> list[str]:
    spec = hypervisors.HYPERVISORS.get(s.tl.e.cfg.hypervisor)
    return list(spec.options.get("overlay", {})) if spec else []


@command("overlay", "overlay POLICY [from STEP|here]", "Re-run with another overlay content policy of this branch's "
         "hypervisor model (a new branch).", complete=lambda s, a: _overlays(s) if not a else ["from", "here"],
         category="what-if")
def _overlay(s, args, stop=None):
    need(args, 1, "overlay POLICY [from STEP|here]")
    if not _overlays(s):
        raise CommandError(f"the {s.tl.e.cfg.hypervisor} model has no overlay policies (they apply to "
                           f"{', '.join(hypervisors.models_with('overlay'))})")
    return _switch_branch(s, "overlay", args[0], _overlays(s), args, stop)


BRANCH_USAGE = "branch list | branch switch NAME | branch compare NAME [NAME] | branch save FILE"


@command("branch", BRANCH_USAGE, "List, switch to, compare or save branches.",
         complete=lambda s, a: ["list", "switch", "compare", "save"] if not a else _c_branches(s, a), category="what-if")
def _branch(s, args, stop=None):
    sub = args[0] if args else "list"
    if sub == "list":
        lines = []
        for name, tl in s.branches.items():
            out = tl.result.outcome if tl.result else "?"
            parent = f" from {tl.parent.name} at step {tl.fork}" if tl.parent else ""
            lines.append(f"{'*' if name == s.current else ' '} {name}{parent}: {out}, {tl.length} steps")
        return Output(lines, {"branches": list(s.branches), "current": s.current})
    if sub == "switch":
        need(args, 2, "branch switch NAME")
        if args[1] not in s.branches:
            raise CommandError(f"no branch '{args[1]}'{_closest(args[1], s.branches)}")
        focus = s.tl.focus
        s.current = args[1]
        s.tl.focus = focus if focus < s.tl.e.n else 0
        return _moved(s)
    if sub == "compare":
        need(args, 2, "branch compare NAME [NAME]")
        a = s.branches.get(args[2]) if len(args) > 2 else s.tl
        b = s.branches.get(args[1])
        if a is None or b is None:
            missing = args[1] if b is None else args[2]
            raise CommandError(f"no branch '{missing}'{_closest(missing, s.branches)}")
        cmp = a.compare(b)
        fd = cmp["first_difference"]
        lines = [f"first difference at step {fd}" if fd is not None else "identical event streams",
                 ", ".join(f"{k}: {v}" for k, v in cmp["outcomes"].items())]
        if fd is not None:
            for tl_ in (a, b):
                if fd < tl_.length:
                    lines.append(f"  {tl_.name} step {fd}: {describe(tl_.e, tl_.events[fd])}")
        return Output(lines, cmp)
    if sub == "save":
        need(args, 2, "branch save FILE")
        return _save(s, args[1:], stop)
    raise CommandError(f"unknown branch subcommand '{sub}'{_closest(sub, ['list', 'switch', 'compare', 'save'])}")


# ---------------------------------------------------------------- why
WHY_USAGE = ("why | why isr CPU VECTOR | why irr CPU VECTOR | why mem ADDR [ram|overlay[:CPU]] | why msr CPU MSR | "
             "why reg CPU rN")


def _c_why(s, args):
    if not args:
        return ["isr", "irr", "mem", "msr", "reg"]
    if args[0] in ("isr", "irr", "msr", "reg") and len(args) == 1:
        return _c_cpus(s, args)
    if args[0] in ("isr", "irr") and len(args) == 2:
        return _c_vectors(s, args)
    if args[0] == "msr" and len(args) == 2:
        return _c_msrs(s, args)
    if args[0] == "reg" and len(args) == 2:
        return ["r0", "r1", "r2", "r3"]
    return []


@command("why", WHY_USAGE, "Explain: the hang chain (no argument), or the chain of writes behind a state cell at the "
         "current step.", complete=_c_why, category="inspect")
def _why(s, args, stop=None):
    tl = s.tl
    if not args:
        outcome = tl.result.outcome if tl.result else "?"
        links = explain(tl.engine_at(tl.length), outcome)
        if not links:
            return Output([f"the run's outcome is {outcome}: no hang to explain"], {"outcome": outcome, "chain": []})
        return Output([f"{i}. step {lk.step + 1}: {lk.text}" for i, lk in enumerate(links, 1)],
                      {"outcome": outcome, "chain": [lk.as_dict() for lk in links]})
    k = args[0]
    try:
        if k in ("isr", "irr"):
            need(args, 3, WHY_USAGE)
            c, v = parse_cpu(s, args[1]), parse_vector(args[2])
            lines, data = why_bit(tl, c, k, v)
            return Output(lines, data)
        if k == "msr":
            need(args, 3, WHY_USAGE)
            c, msr = parse_cpu(s, args[1]), _checked_msr(args[2])
            lines, data = why_cell(tl, ("msr", c, msr), f"cpu{c} {MSR_NAMES.get(msr, hex(msr))}")
            return Output(lines, data)
        if k == "mem":
            need(args, 2, WHY_USAGE)
            addr = parse_int(args[1], "an address")
            space = parse_space(s, args[2] if len(args) > 2 else None)
            lines, data = why_mem(tl, space, addr)
            return Output(lines, data)
        if k == "reg":
            need(args, 3, WHY_USAGE)
            c, r = parse_cpu(s, args[1]), args[2].lower().lstrip("r")
            if not r.isdigit():
                raise CommandError(f"expected a register r0..r3, got '{args[2]}'")
            lines, data = why_cell(tl, ("reg", c, int(r)), f"cpu{c} r{r}")
            return Output(lines, data)
    except CellError as e:
        raise CommandError(str(e)) from None
    raise CommandError(f"unknown why target '{k}'{_closest(k, ['isr', 'irr', 'mem', 'msr', 'reg'])}; usage: {WHY_USAGE}")


# ---------------------------------------------------------------- info and x
INFO_USAGE = "info vcpu [CPU] | info msr [CPU] | info irq | info assist [CPU] | info branches | info trace"


@command("info", INFO_USAGE, "Show machine state at the current step (rendered like `hvdbg show`).",
         aliases=("i",), complete=lambda s, a: ["vcpu", "msr", "irq", "assist", "branches", "trace"] if not a else _c_cpus(s, a),
         category="inspect")
def _info(s, args, stop=None):
    from .report import state_report
    sub = args[0] if args else "vcpu"
    tl = s.tl
    rep = state_report(tl.e, tl.pos, s.current)
    cpus = [parse_cpu(s, args[1])] if len(args) > 1 else list(range(tl.e.n))
    if sub == "vcpu":
        lines = []
        for c in cpus:
            v = rep["vcpus"][c]
            lines.append(f"cpu{c} {v['hotplug']}{' halted' if v['halted'] else ''} IF={v['IF']} at {v['at']}")
            lines.append("  " + " ".join(f"{k}={x}" for k, x in v["registers"].items()) + f" TPR={v['TPR']}")
            lines += [f"  frame: {f}" for f in v["frames"]]
        return Output(lines, {"vcpus": [rep["vcpus"][c] for c in cpus]})
    if sub == "msr":
        lines = []
        for c in cpus:
            v = rep["vcpus"][c]
            lines.append(f"cpu{c}: " + ", ".join(f"{k}={v['msrs'][k]}" for k in v["msrs_changed"]))
        return Output(lines, {"msrs": {c: rep["vcpus"][c]["msrs"] for c in cpus}})
    if sub == "irq":
        lines = []
        for c in range(tl.e.n):
            v = rep["vcpus"][c]
            hint = "  ".join(f"{x['field']} ovl/RAM {x['overlay'] or '-'}/{x['ram'] or '-'}" for x in v["shared"])
            lines.append(f"cpu{c} IF={v['IF']} IRR {' '.join(v['IRR']) or '-'}  ISR {' '.join(v['ISR']) or '-'}  {hint}")
        ipis = rep["in_flight_ipis"]
        lines.append("in flight: " + (", ".join(f"cpu{a}->cpu{b} 0x{x:02x}" for a, b, x in ipis) or "none"))
        timers = [f"cpu{cv.c}" for cv in tl.view().cpus() if cv.timer]
        lines.append("LAPIC timers armed: " + (", ".join(timers) or "none"))
        return Output(lines, {"vcpus": [{k: rep["vcpus"][c][k] for k in ("IRR", "ISR", "IF")} for c in range(tl.e.n)],
                              "in_flight": ipis})
    if sub == "assist":
        lines = []
        for c in cpus:
            v = rep["vcpus"][c]
            for x in v["shared"]:
                lines.append(f"cpu{c} {x['title']}: {x['msr']}={x['msr_value']}")
            for name, views in v["pages"].items():
                for where_, hx in views.items():
                    lines.append(f"  {name} {where_}:")
                    lines += [f"    {h}" for h in hx]
        return Output(lines, {"assist": {c: rep["vcpus"][c]["pages"] for c in cpus}})
    if sub == "branches":
        return _branch(s, ["list"])
    if sub == "trace":
        cfg = tl.e.cfg.as_dict()
        lines = [f"source: {s.source}", "config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()),
                 f"branch {s.current}: {tl.length} events, outcome {tl.result.outcome if tl.result else '?'}, "
                 f"segments of {tl.journal.K} events: {len(tl.journal.cache) + 1} built in memory "
                 f"({tl.journal.built_events()} events), {tl.journal.builds} rebuilt so far"]
        return Output(lines, {"config": cfg, "length": tl.length, "segment": tl.journal.K,
                              "built_events": tl.journal.built_events(), "rebuilds": tl.journal.builds})
    raise CommandError(f"unknown info topic '{sub}'{_closest(sub, ['vcpu', 'msr', 'irq', 'assist', 'branches', 'trace'])}")


@command("x", "x/N ADDR [ram|overlay[:CPU]]", "Hexdump N bytes (default 64) of guest RAM or an overlay page.",
         complete=lambda s, a: ["ram", "overlay"] if len(a) >= 2 else [], category="inspect")
def _x(s, args, stop=None):
    n = 64
    if len(args) >= 2 and (args[0].isdigit() or args[0] == ""):
        n = parse_int(args[0], "a byte count") if args[0] else 64
        args = args[1:]
    need(args, 1, "x/N ADDR [ram|overlay[:CPU]]")
    addr = parse_int(args[0], "an address")
    space = parse_space(s, args[1] if len(args) > 1 else None)
    pg = s.tl.view().page(space, addr)
    if pg is None:
        raise CommandError(f"no {'RAM' if space == RAM else f'overlay(cpu{space})'} page at 0x{addr:x} at step {s.tl.pos}")
    off = addr & 0xFFF
    data = bytes(pg[off:off + n])
    from .report import hexdump
    return Output(hexdump(data, addr, n), {"addr": addr, "space": space, "bytes": data.hex()})


# ---------------------------------------------------------------- files
@command("save", "save FILE", "Save the recording and its what-if branches to a trace file (atomic replace).",
         category="files")
def _save(s, args, stop=None):
    need(args, 1, "save FILE")
    from .recording import save_session
    try:
        n = save_session(s, args[0])
    except OSError as e:
        raise CommandError(f"cannot save {args[0]}: {e.strerror or e}") from None
    return Output([f"saved {s.branches['main'].length} events and {n} branch(es) to {args[0]}"], {"file": args[0]})


@command("load", "load FILE|SCENARIO", "Load a trace or a scenario (replaces the current session).", category="files")
def _load(s, args, stop=None):
    need(args, 1, "load FILE|SCENARIO")
    from .core.scenario import ScenarioError
    from .trace.format import TraceError
    try:
        new = Session.open(args[0])
    except (ScenarioError, TraceError) as e:
        raise CommandError(str(e)) from None
    s.__dict__.update(new.__dict__)
    return _moved(s, f"loaded {args[0]}")


@command("verify", "verify", "Re-execute every segment of the current branch's recording from its snapshot and check "
         "it against what was recorded (for a trace: the whole file, segment by segment); Ctrl-C stops it.",
         category="files")
def _verify(s, args, stop=None):
    tl = s.tl
    j = tl.journal
    t0 = time.perf_counter()
    try:
        n = j.verify(stop=stop)
    except JournalError as e:
        raise CommandError(f"the recording does not re-execute as recorded at step {e.step}: {e}") from None
    total = len([x for x in j.starts() if x < j.head.start])
    done = n == total
    what = "every segment" if done else f"{n} of {total} segments (stopped)"
    return Output([f"verified {what} of branch {s.current}: {j.head.start - j.fork:,} events re-executed from their "
                   f"snapshots and checked, in {time.perf_counter() - t0:.1f} s"],
                  {"verified": done, "segments": n, "total": total})


# ---------------------------------------------------------------- expectations (scripts)
OUTCOMES = ("ok", "hang", "timeout", "corruption", "stopped")
EXPECT_USAGE = ("expect outcome ok|hang|corruption|timeout | expect isr|irr CPU has|lacks VECTOR | expect msr CPU MSR OP VALUE | "
                "expect mem ADDR OP VALUE [ram|overlay[:CPU]] | expect var NAME OP VALUE | expect step OP N | "
                "expect hotplug CPU STATE | expect branch NAME outcome OUTCOME")


class ExpectationFailed(Exception):
    pass


_OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _cmp(found, op: str, want, what: str) -> None:
    if op not in _OPS:
        raise CommandError(f"unknown comparison '{op}' (use == != < <= > >=)")
    if not _OPS[op](found, want):
        raise ExpectationFailed(f"{what}: found {_short(found)}, expected {op} {_short(want)}")


@command("expect", EXPECT_USAGE, "Assert something about the run or the state at the current step (scripts exit 6 "
         "when it does not hold).", complete=lambda s, a: ["outcome", "isr", "irr", "msr", "mem", "var", "step",
                                                            "hotplug", "branch"] if not a else [], category="scripts")
def _expect(s, args, stop=None):
    need(args, 2, EXPECT_USAGE)
    tl = s.tl
    k = args[0]
    if k == "outcome":
        found = tl.result.outcome if tl.result else None
        if args[1] not in OUTCOMES:
            raise CommandError(f"outcome is {', '.join(OUTCOMES)}; got '{args[1]}'")
        if found != args[1]:
            raise ExpectationFailed(f"outcome of branch {s.current}: found {found}, expected {args[1]}")
    elif k in ("isr", "irr"):
        need(args, 4, EXPECT_USAGE)
        c, v = parse_cpu(s, args[1]), parse_vector(args[3])
        cv = tl.view().cpu(c)
        bits = cv.isr if k == "isr" else cv.irr
        has = bool(bits >> v & 1)
        if args[2] not in ("has", "lacks"):
            raise CommandError(f"expected has or lacks, got '{args[2]}'")
        if has != (args[2] == "has"):
            raise ExpectationFailed(f"cpu{c} {k.upper()} {'has' if has else 'lacks'} {vector_name(v)} at step {tl.pos}")
    elif k == "msr":
        need(args, 5, EXPECT_USAGE)
        c, msr = parse_cpu(s, args[1]), _checked_msr(args[2])
        _cmp(tl.view().cpu(c).msr(msr), args[3], parse_int(args[4], "a value"),
             f"cpu{c} {MSR_NAMES.get(msr, hex(msr))} at step {tl.pos}")
    elif k == "mem":
        need(args, 4, EXPECT_USAGE)
        addr = parse_int(args[1], "an address")
        space = parse_space(s, args[4] if len(args) > 4 else None)
        val = tl.view().read(space, addr, 4)
        if val is None:
            raise ExpectationFailed(f"no page at 0x{addr:x} at step {tl.pos}")
        _cmp(val, args[2], parse_int(args[3], "a value"), f"u32 at 0x{addr:x} at step {tl.pos}")
    elif k == "var":
        need(args, 4, EXPECT_USAGE)
        name = args[1].lstrip("$")
        val = tl.view().var(name)
        if val is None:
            raise CommandError(f"no variable ${name}{_closest(name, tl.view().global_vars())}")
        _cmp(val, args[2], parse_int(args[3], "a value"), f"${name} at step {tl.pos}")
    elif k == "step":
        need(args, 3, EXPECT_USAGE)
        _cmp(tl.pos, args[1], parse_int(args[2], "a step"), "the current step")
    elif k == "hotplug":
        need(args, 3, EXPECT_USAGE)
        c = parse_cpu(s, args[1])
        found = tl.view().cpu(c).hotplug
        if found != args[2]:
            raise ExpectationFailed(f"cpu{c} hotplug state at step {tl.pos}: found {found}, expected {args[2]}")
    elif k == "branch":
        need(args, 4, EXPECT_USAGE)
        b = s.branches.get(args[1])
        if b is None:
            raise CommandError(f"no branch '{args[1]}'{_closest(args[1], s.branches)}")
        found = b.result.outcome if b.result else None
        if found != args[3]:
            raise ExpectationFailed(f"outcome of branch {args[1]}: found {found}, expected {args[3]}")
    else:
        raise CommandError(f"unknown expectation '{k}'{_closest(k, ['outcome', 'isr', 'irr', 'msr', 'mem', 'var', 'step', 'hotplug', 'branch'])}")
    return Output(["ok"], {"held": True})


# ---------------------------------------------------------------- help
@command("help", "help [COMMAND]", "List the commands, or show one command's usage and help.", aliases=("h", "?"),
         complete=lambda s, a: sorted(COMMANDS) if not a else [], category="general")
def _help(s, args, stop=None):
    if args:
        c = lookup(args[0])
        al = f" (aliases: {', '.join(c.aliases)})" if c.aliases else ""
        return Output([f"{c.usage or c.name}{al}", f"  {c.help}"], {"command": c.name})
    lines = []
    cats: dict[str, list] = {}
    for c in COMMANDS.values():
        cats.setdefault(c.category, []).append(c)
    for cat, cs in cats.items():
        lines.append(f"{cat}:")
        for c in cs:
            lines.append(f"  {c.name:<11} {c.help}")
    return Output(lines, {"commands": sorted(COMMANDS)})


def complete(s: Session, text_before_cursor: str) -> list[str]:
    """Words that can follow at the cursor (the REPL's and the TUI's completer use this)."""
    try:
        words = shlex.split(text_before_cursor)
    except ValueError:
        words = text_before_cursor.split()
    if text_before_cursor and not text_before_cursor[-1].isspace():
        partial = words.pop() if words else ""
    else:
        partial = ""
    if not words:
        cands = sorted(set(COMMANDS) | set(ALIASES))
    else:
        try:
            c = lookup(words[0])
        except CommandError:
            return []
        cands = c.complete(s, words[1:]) if c.complete else []
        if c.name in ("save", "load"):
            cands = _complete_path(partial)
    return [w for w in cands if w.startswith(partial)]


def _complete_path(partial: str) -> list[str]:
    d, base = os.path.split(partial)
    try:
        names = os.listdir(d or ".")
    except OSError:
        return []
    return [os.path.join(d, n) + ("/" if os.path.isdir(os.path.join(d or ".", n)) else "") for n in sorted(names)
            if n.startswith(base)]


def markdown_reference() -> str:
    """docs/commands.md, generated from the command definitions (a test keeps it current)."""
    out = ["# Commands", "",
           "One command language for the REPL (`hvdbg repl`), scripts (`hvdbg script`) and the TUI's `:` line.",
           "Generated from `hvdbg/commands.py` by `python -m hvdbg.commands` - do not edit by hand.",
           "Vector names (RESCHEDULE, LOCAL_TIMER, ...) and MSR names (HV_X64_MSR_EOI, ...) are accepted wherever",
           "numbers are; CPUs are written `cpu1` or `1`.", ""]
    cats: dict[str, list] = {}
    for c in COMMANDS.values():
        cats.setdefault(c.category, []).append(c)
    for cat, cs in cats.items():
        out += [f"## {cat}", "", "| command | aliases | what it does |", "|---|---|---|"]
        for c in cs:
            usage = (c.usage or c.name).replace("|", "\\|")
            out.append(f"| `{usage}` | {', '.join(f'`{a}`' for a in c.aliases)} | {c.help} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_reference())
