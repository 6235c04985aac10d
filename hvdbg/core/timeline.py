"""Time travel over a run's journaled events (design §4).

A :class:`Timeline` owns one engine (one branch) and a position ``pos``: the machine
holds the state after events ``0 .. pos-1``. The events live in the engine's journal
(journal.py): segments of K events with a snapshot at each start, rebuilt from it on demand.
Moving backwards applies recorded old values (cost of the events crossed, independent of the
trace length); ``goto`` restores the nearest snapshot and applies deltas forward, or moves
from the current position, whichever crosses fewer events and fewer segments to rebuild.
Breakpoints and watchpoints are searched in the recorded events, forwards or backwards,
skipping segments whose summary cannot match; ``last_write`` answers "who last wrote this?"
without moving. Long operations take a ``stop`` callback. What-if edits create branches
(:meth:`Timeline.branch`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .defs import PAGE_SHIFT, vector_name, vector_names
from collections import Counter

from .engine import E_ACT, E_CPU, E_NOTES, E_PC, E_RT, E_WRITES, Config, Engine, Result, _copy_state
from .events import EDIT_ACT, act_code
from .journal import Journal
from .machine import F_FRAMES, F_IRR, F_ISR, F_PC, F_RT, RAM, Machine
from .view import MachineView

STOP_POLL = 4096
SHORT_MOVE = 512          # events: a move this short inside one built segment skips the cost model
# A what-if branch re-simulates at most this many events past its fork, or twice the
# parent's length if that is more (never past the configuration's max_steps): a branch
# whose future never settles ends as a timeout instead of running for minutes.
BRANCH_MIN_BUDGET = 100_000


# ---------------------------------------------------------------- memory budget
# A journaled session keeps, for the whole history, 8 bytes per event (the choice and the op,
# journal.py) plus a snapshot and a summary per segment - measured about 12 bytes per event on
# soak (bench/timeline.py); the writes live only in the segments built, under a cache budget.
# A session whose step budget cannot fit the memory budget is refused up front instead of
# being OOM-killed hours later.
JOURNAL_BYTES_PER_EVENT = 16
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'512M', '4G', '1073741824' -> bytes (ValueError otherwise)."""
    t = str(text).strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    num = t[:-1] if unit else t
    try:
        v = float(num)
    except ValueError:
        raise ValueError(f"expected a size like 512M or 4G, got {text!r:.40}") from None
    if not 0 < v < 1 << 50:
        raise ValueError(f"expected a size like 512M or 4G, got {text!r:.40}")
    return int(v * _UNITS[unit])


def memory_budget(explicit: int | None = None) -> int:
    """Bytes a journaled session may use: --memory, else $HVDBG_MEMORY, else 75% of the
    memory the kernel reports available (4 GiB when it cannot be read)."""
    if explicit:
        return explicit
    env = os.environ.get("HVDBG_MEMORY")
    if env:
        try:
            return parse_size(env)
        except ValueError:
            pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 * 3 // 4
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30


def cache_budget(budget: int) -> int:
    """Bytes of built segments a session keeps (journal.py) out of its memory budget: a quarter,
    between 64 MiB and the journal's default."""
    from .journal import DEFAULT_CACHE_BYTES
    return max(64 << 20, min(budget // 4, DEFAULT_CACHE_BYTES))


def journal_problem(max_steps: int, budget: int) -> str | None:
    """Why a journaled session of `max_steps` events does not fit `budget` bytes, or None."""
    need = max_steps * JOURNAL_BYTES_PER_EVENT
    if need <= budget:
        return None
    return (f"a step budget of {max_steps} events needs up to {need / (1 << 30):.1f} GiB for the journal "
            f"(about {JOURNAL_BYTES_PER_EVENT} bytes per event), over the memory budget of "
            f"{budget / (1 << 30):.1f} GiB; lower --max-steps or raise --memory")


# ---------------------------------------------------------------- breakpoints and watchpoints
@dataclass
class Break:
    """A breakpoint or watchpoint. ``kind``:
    pc (routine, op index, cpu?) - stop before that op executes;
    msr (msr, access 'rd'|'wr'|None, value?) / vector (what 'deliver'|'eoi'|'skip', vector?) /
    note (note kind 'violation'|'transition', its first argument?) /
    mem (space, addr, length) / slot (state slot, bit?) - stop after the event that matches."""
    kind: str
    args: tuple
    cpu: int | None = None
    enabled: bool = True
    number: int = 0
    hits: int = 0

    @property
    def before(self) -> bool:
        return self.kind == "pc"

    def describe(self, tl: "Timeline") -> str:
        a = self.args
        where = f" on cpu{self.cpu}" if self.cpu is not None else ""
        if self.kind == "pc":
            return f"break at {tl.e.rnames[a[0]]}+{a[1]}{where}"
        if self.kind == "msr":
            acc = {"rd": "read", "wr": "write", None: "access"}[a[1]]
            return f"break on MSR 0x{a[0]:x} {acc}{'' if a[2] is None else f' = 0x{a[2]:x}'}{where}"
        if self.kind == "vector":
            return f"break on {a[0]} of {'any vector' if a[1] is None else hex(a[1])}{where}"
        if self.kind == "mem":
            sp = "RAM" if a[0] == RAM else f"overlay(cpu{a[0]})"
            return f"watch {sp}[0x{a[1]:x}..+{a[2]}]"
        if self.kind == "note":
            what = {"violation": "a safety invariant violation (corruption)", "transition": "a kernel transition"}
            return f"break on {what.get(a[0], a[0])}{'' if a[1] is None else ' ' + str(a[1])}{where}"
        return f"watch {tl.e.L.describe(a[0])}{'' if a[1] is None else f' bit 0x{a[1]:x}'}"

    def may_match(self, tl: "Timeline", start: int, end: int) -> bool:
        """Can an event in [start, end) match? Answered from the journal's columns and the
        segment's summary, without rebuilding the segment (True when unsure)."""
        j = tl.e.events
        a = self.args
        k = self.kind
        if k == "pc":
            return j.has_where(a[0] << 16 | a[1], start, end)
        summ = j.summary_of(j.seg_start(start))
        if summ is None:
            return True
        if k == "mem":
            space, addr, length = a
            if space == RAM:
                return any(("pg", p) in summ.writes for p in range(addr >> PAGE_SHIFT, ((addr + length - 1) >> PAGE_SHIFT) + 1))
            return ("ov", space) in summ.writes
        if k == "slot":
            return a[0] in summ.writes
        notes = summ.notes
        if k == "msr":
            return any((n[0] == "msr" and n[2] == a[0] and (a[1] is None or n[1] == a[1])) or
                       (n[0] == "gp" and n[1] == a[0]) for n in notes)
        if k == "note":
            return any(n[0] == a[0] and (a[1] is None or n[1] == a[1]) for n in notes)
        if k == "vector":
            what, vec = a
            kind = {"deliver": "deliver", "eoi": "eoi", "skip": "eoi_skipped"}[what]
            return any(n[0] == kind and (vec is None or what == "skip" or n[1] == vec) for n in notes)
        return True

    def matches(self, tl: "Timeline", ev: tuple) -> bool:
        a = self.args
        act = ev[E_ACT]
        if self.cpu is not None and ev[E_CPU] != self.cpu:
            return False
        k = self.kind
        if k == "pc":
            return act[0] == "op" and ev[E_RT] == a[0] and ev[E_PC] == a[1]
        if k == "msr":
            return any(n[0] == "msr" and n[2] == a[0] and (a[1] is None or n[1] == a[1]) and (a[2] is None or n[3] == a[2])
                       for n in ev[E_NOTES]) or any(n[0] == "gp" and n[1] == a[0] for n in ev[E_NOTES])
        if k == "note":
            kind, arg = a
            return any(n[0] == kind and (arg is None or n[1] == arg) for n in ev[E_NOTES])
        if k == "vector":
            what, vec = a
            for n in ev[E_NOTES]:
                if what == "deliver" and n[0] == "deliver" and (vec is None or n[1] == vec):
                    return True
                if what == "eoi" and n[0] == "eoi" and n[1] >= 0 and (vec is None or n[1] == vec):
                    return True
                if what == "skip" and n[0] == "eoi_skipped":
                    return True
            return False
        if k == "mem":
            space, addr, length = a
            for loc, old, new in ev[E_WRITES]:
                if isinstance(loc, tuple):
                    if loc[0] == "m" and loc[1] == space and loc[2] < addr + length and addr < loc[2] + len(new):
                        return True
                    if loc[0] == "pg" and space == RAM and loc[1] == addr >> PAGE_SHIFT:
                        return True
                    if loc[0] == "ov" and loc[1] == space:
                        return True
            return False
        slot, bit = a
        for loc, old, new in ev[E_WRITES]:
            if loc == slot and (bit is None or ((old >> bit) ^ (new >> bit)) & 1):
                return True
        return False


@dataclass
class Stop:
    """Why a movement stopped."""
    pos: int
    reason: str
    brk: Break | None = None


# ---------------------------------------------------------------- the timeline
class Timeline:
    def __init__(self, engine: Engine, checkpoint_every: int | None = None, name: str = "main",
                 parent: "Timeline | None" = None, fork: int = 0):
        self.e = engine
        self.K = engine.events.K
        self.name = name
        self.parent = parent
        self.fork = fork
        self.result: Result | None = None
        self.breaks: list[Break] = []
        self._next_break = 1
        self.focus = 0
        self.frame_sel = 0
        self.stop_poll = STOP_POLL
        self.pos = engine.step

    # ---- recording ----
    @classmethod
    def record(cls, scenario, cfg: Config, checkpoint_every: int | None = None, stop=None,
               **engine_options) -> "Timeline":
        """Run a scenario with a journal. `checkpoint_every` is the segment size K (events
        between snapshots; default journal.SEGMENT_EVENTS)."""
        if checkpoint_every:
            engine_options["segment"] = checkpoint_every
        eng = Engine(scenario, cfg, **engine_options)
        tl = cls(eng)
        tl.run(stop=stop)
        return tl

    def run(self, max_steps: int | None = None, stop=None, hook=None) -> Result:
        """Extend the recording from the head until an outcome."""
        self.goto(len(self.e.events))
        self.e.invalidate()
        self.result = self.e.run(max_steps, stop=stop, hook=hook)
        self.pos = self.e.step
        return self.result

    @property
    def events(self) -> Journal:
        return self.e.events

    @property
    def journal(self) -> Journal:
        return self.e.events

    @property
    def length(self) -> int:
        return len(self.e.events)

    # ---- raw movement ----
    def _set(self, pos: int) -> None:
        self.frame_sel = 0
        self.pos = pos
        self.e.step = pos
        self.e.invalidate()

    def _cost(self, a: int, b: int) -> int:
        """Events crossed moving between a and b, plus K for each segment that would have to be
        rebuilt on the way."""
        j = self.e.events
        lo, hi = min(a, b), max(a, b)
        cost = hi - lo
        if hi > lo:
            s = j.seg_start(hi - 1)
            while True:
                if not j.is_built(s):
                    cost += self.K
                if s <= lo:
                    break
                s = j.seg_start(s - 1)
        return cost

    def goto(self, k: int, stop=None) -> int:
        """Move to position k (0..length): undo/redo from here, or restore the snapshot at the
        start of k's segment and redo, whichever is cheaper (journal.py rebuilds a segment that
        is not in memory). Never re-executes the live engine."""
        if not 0 <= k <= self.length:
            raise ValueError(f"step {k} is outside 0..{self.length}")
        pos = self.pos
        if k == pos:
            return k
        m, j = self.e.m, self.e.events
        if abs(k - pos) <= SHORT_MOVE:
            seg = j.built_segment(min(k, pos), max(k, pos))
            if seg is not None:          # a short move inside one built segment: undo/redo directly
                evs, base = seg.events, seg.start
                if k < pos:
                    undo = m.undo
                    for i in range(pos - 1 - base, k - 1 - base, -1):
                        undo(evs[i][5])
                else:
                    redo = m.redo
                    for i in range(pos - base, k - base):
                        redo(evs[i][5])
                self._set(k)
                return k
        s, snap = j.snapshot_floor(k)
        restore = self._cost(s, k) < self._cost(self.pos, k)
        # build what the move reads first: a segment that fails its checks (JournalError)
        # then leaves the machine and the position as they were
        j.ensure(s, k) if restore else j.ensure(min(self.pos, k), max(self.pos, k))
        if restore:
            m.restore(snap)
            redo = m.redo
            for ev in j.iter_range(s, k):
                redo(ev[5])
        elif k < self.pos:
            undo = m.undo
            for ev in j.iter_back(self.pos, k):
                undo(ev[5])
        else:
            redo = m.redo
            for ev in j.iter_range(self.pos, k):
                redo(ev[5])
        self._set(k)
        return k

    def event(self, n: int = 1) -> int:
        """Raw event steps forward (n > 0) or backward (n < 0)."""
        return self.goto(min(self.length, max(0, self.pos + n)))

    # ---- per-vCPU granularity ----
    def depth(self, cpu: int) -> int:
        return len(self.e.m.S[self.e.bases[cpu] + F_FRAMES])

    def step(self, cpu: int | None = None, n: int = 1, stop=None) -> Stop:
        """Run events until `cpu` has executed its next op (others advance as recorded). The
        search reads the choice column (no segment is rebuilt to find it)."""
        cpu = self.focus if cpu is None else cpu
        code = act_code(("op", cpu))
        for _ in range(n):
            if stop is not None and stop():
                return Stop(self.pos, "interrupted")
            i = self.e.events.find_code(code, self.pos, self.length)
            if i is None:
                self.goto(self.length)
                return Stop(self.pos, "end of the recording")
            self.goto(i + 1)
        return Stop(self.pos, "step")

    def rstep(self, cpu: int | None = None, n: int = 1, stop=None) -> Stop:
        """Back to just before `cpu`'s previous op."""
        cpu = self.focus if cpu is None else cpu
        code = act_code(("op", cpu))
        for _ in range(n):
            if stop is not None and stop():
                return Stop(self.pos, "interrupted")
            i = self.e.events.rfind_code(code, self.pos, 0)
            if i is None:
                self.goto(0)
                return Stop(0, "start of the recording")
            self.goto(i)
        return Stop(self.pos, "reverse step")

    def next(self, cpu: int | None = None, stop=None) -> Stop:
        """Step over calls and interrupt handlers."""
        cpu = self.focus if cpu is None else cpu
        d0 = self.depth(cpu)
        r = self.step(cpu, stop=stop)
        count = 0
        while self.depth(cpu) > d0 and self.pos < self.length and r.reason != "interrupted":
            r = self.step(cpu, stop=stop)
            count += 1
            if stop is not None and count % 256 == 0 and stop():
                return Stop(self.pos, "interrupted")
        return r

    def rnext(self, cpu: int | None = None, stop=None) -> Stop:
        cpu = self.focus if cpu is None else cpu
        d0 = self.depth(cpu)
        r = self.rstep(cpu, stop=stop)
        count = 0
        while self.depth(cpu) > d0 and self.pos > 0 and r.reason != "interrupted":
            r = self.rstep(cpu, stop=stop)
            count += 1
            if stop is not None and count % 256 == 0 and stop():
                return Stop(self.pos, "interrupted")
        return r

    def finish(self, cpu: int | None = None, stop=None) -> Stop:
        """Run until the current routine or handler of `cpu` returns."""
        cpu = self.focus if cpu is None else cpu
        d0 = self.depth(cpu)
        if d0 == 0:
            return Stop(self.pos, "outermost frame: nothing to finish")
        count = 0
        while self.pos < self.length:
            self.event(1)
            if self.depth(cpu) < d0:
                return Stop(self.pos, "finish")
            count += 1
            if stop is not None and count % self.stop_poll == 0 and stop():
                return Stop(self.pos, "interrupted")
        return Stop(self.pos, "end of the recording")

    def rfinish(self, cpu: int | None = None, stop=None) -> Stop:
        """Back to just before the current routine or handler of `cpu` was entered."""
        cpu = self.focus if cpu is None else cpu
        d0 = self.depth(cpu)
        if d0 == 0:
            return Stop(self.pos, "outermost frame: nothing to finish")
        count = 0
        while self.pos > 0:
            self.event(-1)
            if self.depth(cpu) < d0:
                return Stop(self.pos, "reverse finish")
            count += 1
            if stop is not None and count % self.stop_poll == 0 and stop():
                return Stop(self.pos, "interrupted")
        return Stop(self.pos, "start of the recording")

    def frames(self, cpu: int | None = None) -> list[dict]:
        """Backtrace of `cpu`: the current routine/pc, then each interrupted or calling context."""
        cpu = self.focus if cpu is None else cpu
        S, b, e = self.e.m.S, self.e.bases[cpu], self.e
        out = [{"kind": "current", "routine": e.rnames[S[b + F_RT]], "pc": S[b + F_PC]}]
        for fr in reversed(S[b + F_FRAMES]):
            if fr[0] == 0:
                out.append({"kind": "call", "routine": e.rnames[fr[1]], "pc": fr[2]})
            else:
                out.append({"kind": "interrupt", "routine": e.rnames[fr[1]], "pc": fr[2], "IF": fr[3],
                            "vector": fr[8]})
        return out

    def up(self, cpu: int | None = None) -> dict:
        """Select the next outer frame of `cpu` (gdb `up`); returns it."""
        fr = self.frames(cpu)
        self.frame_sel = min(len(fr) - 1, self.frame_sel + 1)
        return fr[self.frame_sel]

    def down(self, cpu: int | None = None) -> dict:
        fr = self.frames(cpu)
        self.frame_sel = max(0, min(len(fr) - 1, self.frame_sel - 1))
        return fr[self.frame_sel]

    # ---- breakpoints ----
    def add_break(self, kind: str, *args, cpu: int | None = None) -> Break:
        b = Break(kind, tuple(args), cpu, number=self._next_break)
        self._next_break += 1
        self.breaks.append(b)
        return b

    def break_pc(self, routine: str, op: int | str = 0, cpu: int | None = None) -> Break:
        if routine not in self.e.rid:
            raise ValueError(f"no routine {routine!r}")
        rt = self.e.rid[routine]
        r = self.e.routines[rt]
        if isinstance(op, str):
            if op not in r.labels:
                raise ValueError(f"{routine} has no label {op!r}")
            op = r.labels[op]
        if not 0 <= op < len(r.ops):
            raise ValueError(f"{routine} has ops 0..{len(r.ops) - 1}")
        return self.add_break("pc", rt, op, cpu=cpu)

    def watch_msr(self, cpu: int, msr: int) -> Break:
        return self.add_break("slot", self.e.bases[cpu] + self.e.L.msr_off[msr], None)

    def watch_irr(self, cpu: int, vector: int, isr: bool = False) -> Break:
        return self.add_break("slot", self.e.bases[cpu] + (F_ISR if isr else F_IRR), vector)

    def delete_break(self, number: int) -> None:
        self.breaks = [b for b in self.breaks if b.number != number]

    def _search(self, forward: bool, stop=None) -> Stop:
        """Scan the recorded events from the position for the first enabled breakpoint that
        matches, segment by segment; a segment no breakpoint may match (may_match) is skipped
        without being rebuilt."""
        active = [b for b in self.breaks if b.enabled]
        j = self.e.events
        n = self.length
        pos = self.pos
        count = 0
        i = pos if forward else pos - 1
        while (i < n) if forward else (i >= 0):
            s = j.seg_start(i)
            end = min(j.seg_end(s), n)
            lo, hi = (i, end) if forward else (s, i + 1)
            if stop is not None and stop():
                self.goto(lo if forward else hi)
                return Stop(self.pos, "interrupted")
            hits = [b for b in active if b.may_match(self, lo, hi)]
            if hits:
                evs = j.iter_range(lo, hi) if forward else j.iter_back(hi, lo)
                for ev in evs:
                    count += 1
                    if stop is not None and count % self.stop_poll == 0 and stop():
                        self.goto(ev[0] if forward else ev[0] + 1)
                        return Stop(self.pos, "interrupted")
                    for b in hits:
                        target = ev[0] if b.before else ev[0] + 1
                        if (target > pos) if forward else (target < pos):
                            if b.matches(self, ev):
                                b.hits += 1
                                self.goto(target)
                                return Stop(self.pos, b.describe(self), b)
            i = end if forward else s - 1
        if forward:
            self.goto(n)
            out = self.result.outcome if self.result else "end"
            return Stop(self.pos, f"end of the recording: {out}")
        self.goto(0)
        return Stop(0, "start of the recording")

    def continue_(self, stop=None) -> Stop:
        return self._search(True, stop)

    def reverse_continue(self, stop=None) -> Stop:
        return self._search(False, stop)

    # ---- who wrote this? ----
    def last_write(self, loc, before: int | None = None) -> int | None:
        """Step of the newest event before `before` (default: the current position) that wrote
        `loc`: a state slot (int), ("own", pfn) or ("mem", space, addr) for one byte. The
        journal's segment summaries say which segment to look in (journal.py), not a scan."""
        return self.e.events.last(loc, self.pos if before is None else before)

    # ---- what-if branches ----
    def branch(self, name: str, at: int, edit: tuple | None = None, fix: str | None = None,
               hypervisor: str | None = None, stop=None, overlay: str | None = None) -> "Timeline":
        """A new timeline that shares this one's first `at` events, applies a what-if edit
        (an event of its own kind) and re-simulates: the parent's recorded choices are replayed
        while they are still enabled, then the (seed, step) PRNG takes over. `fix` /
        `hypervisor` switch the fix variant or hypervisor model from `at` on (routines
        entered later use the new listings; a vCPU inside a changed routine keeps its pc).
        The parent never moves: the fork state is built from its snapshots (machine_at), and
        the branch's journal reads the parent's for the prefix (nothing is copied), so a branch
        can be computed in a worker while the UI reads and moves the parent."""
        if not 0 <= at <= self.length:
            raise ValueError(f"step {at} is outside 0..{self.length}")
        cfg = Config(**self.e.cfg.as_dict())
        if fix:
            cfg.fix = fix
        if hypervisor:
            cfg.hypervisor = hypervisor
        if overlay:
            cfg.overlay = overlay
        pj = self.e.events
        eng = Engine(self.e.scn, cfg, segment=pj.K, cache_bytes=pj.cache_bytes)
        if eng.L.size != self.e.L.size:
            raise ValueError("the new configuration has a different state layout")
        eng.m.restore(self.machine_at(at).snapshot())
        s0, (stats, pstate) = pj.stats_floor(at)  # statistics and pack state of the shared prefix
        eng.stats, eng.pack_state = Counter(stats), _copy_state(pstate)
        for ev in pj.iter_range(s0, at):
            eng._account(ev)
        eng.step = at
        eng.attach_journal(Journal(pj.K, base=pj, fork=at, cache_bytes=pj.cache_bytes))
        child = Timeline(eng, name=name, parent=self, fork=at)
        child.focus = self.focus
        for b in self.breaks:                    # breakpoints follow onto the branch
            child.breaks.append(Break(b.kind, b.args, b.cpu, b.enabled, b.number))
        child._next_break = self._next_break
        if edit is not None:
            eng.execute_edit(edit)
        eng.replay = ReplayCursor(pj, at, len(pj))
        child.pos = eng.step
        budget = min(cfg.max_steps, eng.step + max(BRANCH_MIN_BUDGET, 2 * self.length))
        child.run(max_steps=budget, stop=stop)
        return child

    def compare(self, other: "Timeline") -> dict:
        """First differing step (the first event whose choice or op differs: from the journal
        columns, no segment is rebuilt), each outcome."""
        a, b = self.e.events, other.e.events
        n = min(len(a), len(b))
        start = 0
        if b.base is a:
            start = min(b.fork, n)
        elif a.base is b:
            start = min(a.fork, n)
        first = next((i for i in range(start, n) if a.code(i) != b.code(i) or a.where(i) != b.where(i)
                      or (a.code(i) == EDIT_ACT and a.act(i) != b.act(i))), None)
        if first is None and len(a) != len(b):
            first = n
        return {"first_difference": first,
                "outcomes": {self.name: self.result.outcome if self.result else None,
                             other.name: other.result.outcome if other.result else None},
                "lengths": {self.name: len(a), other.name: len(b)}}

    def state_diff(self, other: "Timeline", step: int) -> list[str]:
        """Slots and memory that differ between the two timelines at `step`."""
        return diff_states(self.e, self.snapshot_at(step), other.snapshot_at(step), "!=", other.e.rnames)

    def snapshot_at(self, step: int) -> tuple:
        """A copy of the machine state at `step` (the timeline does not move)."""
        return self.machine_at(step).snapshot()

    def machine_at(self, step: int) -> Machine:
        """A scratch machine holding the state at `step`: the snapshot at the start of its
        segment, then the recorded writes forward. Reads only the journal, so it is safe while
        another thread moves this timeline."""
        step = max(0, min(step, self.length))
        j = self.e.events
        c, snap = j.snapshot_floor(step)
        m = Machine(self.e.L)
        m.restore(snap)
        redo = m.redo
        for ev in j.iter_range(c, step):
            redo(ev[5])
        return m

    def state_at(self, step: int) -> MachineView:
        """A read-only view of the state at `step` (never moves this timeline)."""
        step = max(0, min(step, self.length))
        return MachineView(self.e, self.machine_at(step), step)

    def engine_at(self, step: int):
        """The engine as it was at `step`, for read-only queries (explanations): a shallow copy
        sharing the program and the journal, with a scratch machine. This timeline does not move."""
        step = max(0, min(step, self.length))
        e = self.e.scratch(self.machine_at(step), step)
        e.stats, e.pack_state = self.e.stats, self.e.pack_state    # read-only: what the run found
        return e

    def event_cells(self, i: int) -> list[tuple]:
        """What event i changed, as cells: ("msr", cpu, number), ("isr"|"irr"|"reg"|"field", cpu,
        name), ("var", name), ("percpu", cpu, name), ("mem", space, addr) for each changed
        byte, ("page", space, pfn) for a page that appeared, ("owner", pfn)."""
        if not 0 <= i < self.length:
            return []
        L = self.e.L
        out = []
        for loc, old, new in self.e.events[i].writes:
            if isinstance(loc, tuple):
                if loc[0] == "m":
                    out += [("mem", loc[1], loc[2] + j) for j in range(len(new)) if old is None or old[j] != new[j]]
                elif loc[0] in ("pg", "ov"):
                    out.append(("page", RAM if loc[0] == "pg" else loc[1], loc[1] if loc[0] == "pg" else 0))
                elif loc[0] == "own":
                    out.append(("owner", loc[1]))
                continue
            cpu, off = L.split(loc)
            if cpu < 0:
                name = L.gnames[off]
                out.append(("var", name[1:]) if name.startswith("$") else ("global", name))
            elif off in L.msr_by_off:
                out.append(("msr", cpu, L.msr_by_off[off]))
            elif off in L.pvar_by_off:
                out.append(("percpu", cpu, L.pvar_by_off[off]))
            else:
                from .machine import FIELD_NAMES
                out.append(("field", cpu, FIELD_NAMES[off]))
        return out

    def view(self) -> MachineView:
        """A read-only view of the state at the current position."""
        return MachineView(self.e, self.e.m, self.pos)


class ReplayCursor:
    """A branch's replay of its parent's recorded choices from the fork on (edits skipped),
    read through a cursor over the parent's journal columns: what Scheduler.pick uses as
    `replay` (peek with [0], popleft, clear, truthiness)."""

    def __init__(self, journal: Journal, start: int, end: int):
        self.j, self.i, self.end = journal, start, end
        self._skip()

    def _skip(self) -> None:
        while self.i < self.end and self.j.code(self.i) == EDIT_ACT:
            self.i += 1

    def __bool__(self) -> bool:
        return self.i < self.end

    def __len__(self) -> int:
        return max(0, self.end - self.i)

    def __getitem__(self, k: int) -> tuple:
        if k != 0 or self.i >= self.end:
            raise IndexError(k)
        return self.j.act(self.i)

    def popleft(self) -> tuple:
        a = self[0]
        self.i += 1
        self._skip()
        return a

    def clear(self) -> None:
        self.i = self.end


def _vectors(bits: int) -> str:
    return "{" + ",".join(vector_names(bits)) + "}"


def _fmt(v) -> str:
    return hex(v) if isinstance(v, int) and v > 9 else repr(v)


def _frames(fr: tuple, rnames: list) -> str:
    """A frame stack as a backtrace: call frames (0, routine, return pc), interrupt frames
    (1, routine, pc, IF, r0..r3, vector)."""
    if not fr:
        return "(none)"
    parts = []
    for f in fr:
        name = rnames[f[1]] if 0 <= f[1] < len(rnames) else f"#{f[1]}"
        parts.append(f"{name}+{f[2]}" if f[0] == 0 else f"irq 0x{f[-1]:02x} in {name}+{f[2]}")
    return " > ".join(parts)


def diff_states(e, a: tuple, b: tuple, sep: str, rnames_b: list | None = None) -> list[str]:
    """Lines naming what differs between two machine snapshots of engine `e`'s layout
    (`Machine.snapshot()`: slots, RAM pages, overlay pages): slots (IRR/ISR as vector sets,
    routines by name), RAM and overlay bytes, pages present in one only."""
    L = e.L
    rb = rnames_b or e.rnames
    out = []
    for i, (x, y) in enumerate(zip(a[0], b[0])):
        if x != y:
            cpu, off = L.split(i)
            if cpu >= 0 and off in (F_IRR, F_ISR):
                fx, fy = _vectors(x), _vectors(y)
            elif cpu >= 0 and off == F_RT:
                fx, fy = e.rnames[x], rb[y]
            elif cpu < 0 and i == 0:                      # the IPIs in flight: (from, to, vector)
                fx, fy = (", ".join(f"cpu{f}->cpu{t} {vector_name(v)}" for f, t, v in z) or "none" for z in (x, y))
            elif cpu >= 0 and off == F_FRAMES:
                fx, fy = _frames(x, e.rnames), _frames(y, rb)
            else:
                fx, fy = _fmt(x), _fmt(y)
            out.append(f"{L.describe(i)}: {fx} {sep} {fy}")
    for pages, name in ((1, "RAM"), (2, "overlay")):
        for k in sorted(set(a[pages]) | set(b[pages])):
            pa, pb = a[pages].get(k), b[pages].get(k)
            where = (lambda j: f"RAM[0x{(k << PAGE_SHIFT) + j:x}]") if pages == 1 else \
                    (lambda j: f"overlay({'cpu%d' % k if k >= 0 else 'saved%d' % k})[0x{j:x}]")
            if pa is None or pb is None:
                at = f"at 0x{k << PAGE_SHIFT:x}" if pages == 1 else f"of {'cpu%d' % k if k >= 0 else 'saved%d' % k}"
                out.append(f"{name} page {at} exists on one side only")
            elif pa != pb:
                out += [f"{where(j)}: 0x{pa[j]:02x} {sep} 0x{pb[j]:02x}" for j in range(len(pa)) if pa[j] != pb[j]]
    return out
