"""The deterministic engine: a small façade over the model's parts.

A run is a pure function of (scenario, config, choices). Every step the engine lists the
enabled actions as descriptors (tuples, never indices):

    ("op", cpu)                     the vCPU executes its next guest op
    ("deliver", cpu, vector)        the hypervisor injects the highest deliverable IRR vector
    ("land", src, dst, vector)      an in-flight IPI reaches the destination's IRR
    ("timer", cpu, vector)          the vCPU's LAPIC timer fires (periodic while armed)
    ("traffic", src, dst, vector)   a background source on src sends an IPI

and picks one (scheduler.py). Each executed action is an Event (events.py) with all its
writes ``(location, old, new)`` and notes. Where the rules live:

* ops.py - the op table (shape, VM exit?, execute, fast path);
* apic.py - priorities, delivery, EOI, IRR, IPIs, INIT/SIPI;
* msr.py - the MSR catalogue and RDMSR/WRMSR;
* scheduler.py - enabled actions, the pick, schedules and replays;
* hang.py - quiescence and cycle search;
* hypervisors/ - the hypervisor models (registered by name);
* packs.py - what a bug pack adds (its EOI-hint ops, note hooks, invariants).

The engine never branches on a hypervisor, fix or pack name.
"""
from __future__ import annotations

import gc
import random
from collections import Counter
from dataclasses import dataclass, field

from .apic import ApicRules
from .defs import PAGE_SHIFT, PAGE_SIZE
from .events import (E_ACT, E_CPU, E_NOTES, E_PC, E_RT, E_STEP, E_WRITES, EDIT_FIELDS, Event, act_text,  # noqa: F401
                     edit_problem, edit_text, event_check, make_event, parse_action)
from .events import _new_event
from .hang import NOT_CHECKED, HangSearch
from .journal import DEFAULT_CACHE_BYTES, SEGMENT_EVENTS, Journal, JournalError
from .lifecycle import LIFECYCLE_GLOBALS, Lifecycle
from .hypervisors import make_hypervisor
from .machine import F_HALT, F_IF, F_IRR, F_PC, F_R0, F_RT, RAM, Layout, Machine
from .msr import MsrRules
from .ops import CMP, MASK64, MAX_CALL_DEPTH, OPS, compile_op
from .scheduler import DEFAULT_WEIGHTS, RunError, Scheduler, Traffic  # noqa: F401


@dataclass
class Config:
    scenario: str = "cpu-offline"
    hypervisor: str = "hyperv"
    overlay: str = "uncover-stale"
    fix: str = "none"
    garbage: str = "0xa5"
    seed: int = 1
    vcpus: int = 2
    max_steps: int = 200_000

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Result:
    outcome: str
    steps: int
    reason: str = ""
    stats: dict = field(default_factory=dict)


def parse_garbage(spec: str) -> tuple:
    """'0xa5' (fill byte) or 'random:SEED'. Raises ValueError with the reason."""
    s = str(spec).strip().lower()
    if s.startswith("random:"):
        try:
            return ("random", int(s[7:], 0))
        except ValueError:
            raise ValueError(f"garbage {spec!r}: random:SEED needs an integer seed") from None
    try:
        v = int(s, 0)
    except ValueError:
        raise ValueError(f"garbage {spec!r}: expected a fill byte like 0xa5 or random:SEED") from None
    if not 0 <= v <= 255:
        raise ValueError(f"garbage {spec!r}: a fill byte is 0..255")
    return ("fill", v)


def garbage_bytes(g: tuple, pfn: int) -> bytes:
    """Content of a page __vmalloc'ed without __GFP_ZERO: whatever the page held before."""
    if g[0] == "fill":
        return bytes([g[1]]) * PAGE_SIZE
    return random.Random(g[1] * 1_000_003 + pfn).randbytes(PAGE_SIZE)


class Engine(ApicRules, MsrRules, Scheduler, HangSearch, Lifecycle):
    def __init__(self, scenario, cfg: Config, journal: bool = True, segment: int = SEGMENT_EVENTS,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.scn = scenario
        self.cfg = cfg
        # journal=False: events are passed to the run's hook but not kept (replay --verify,
        # show, run, sweep: memory stays flat in the number of events).
        self.journal = journal
        self.pack = getattr(scenario, "pack", None)
        self.garbage = parse_garbage(cfg.garbage)
        routines = scenario.program.select(cfg.fix)
        self.rnames = sorted(routines)
        self.rid = {n: i for i, n in enumerate(self.rnames)}
        self.routines = [routines[n] for n in self.rnames]
        n = cfg.vcpus
        self.n = n
        gvars, pvars = set(scenario.init_vars), set(scenario.init_pcpu)
        for r in self.routines:
            for op in r.ops:
                _collect(op.args, gvars, pvars)
        _collect((scenario.goal,) + tuple(t["when"] for t in scenario.traffic if t.get("when")), gvars, pvars)
        traffic_src = []
        for t in scenario.traffic:
            srcs = range(n) if t["from"] == -1 else [t["from"]]
            for s in srcs:
                traffic_src.append(Traffic(s, t["to"], t["vector"], t["count"], t.get("when")))
        extra = ["alloc_next", *LIFECYCLE_GLOBALS]
        for i, _ in enumerate(traffic_src):
            extra += [f"traffic{i}.rr", f"traffic{i}.budget"]
        self.L = L = Layout(n, sorted(gvars), sorted(pvars), extra)
        for i, t in enumerate(traffic_src):
            t.slot_rr = L.gindex[f"traffic{i}.rr"]
            t.slot_budget = L.gindex[f"traffic{i}.budget"]
        self.traffic = traffic_src
        for t in traffic_src:
            if t.src >= n or t.dst >= n:
                raise ValueError(f"traffic source cpu{t.src}->cpu{t.dst} does not exist with {n} vCPUs")
            if t.when is not None:
                t.when = self._cond(t.when)
        self.m = Machine(L)
        self.hv = make_hypervisor(self, cfg)
        self.code = [[compile_op(self, op, r) for op in r.ops] for r in self.routines]
        self.fast = self._op_paths()
        self.bases = [L.base(c) for c in range(n)]
        self._online_slots = [b + L.P_ONLINE for b in self.bases]
        self._traffic_by_sv: dict[tuple, list] = {}     # (src, vector) -> traffic indexes
        for i, t in enumerate(traffic_src):
            self._traffic_by_sv.setdefault((t.src, t.vector), []).append(i)
        self._info = self._slot_info()
        # per slot: the vCPU whose "light" slot it is (program position, registers), else -1
        self._light = [c if fl == 4 else -1 for c, fl, _ in self._info]
        self._wait_pcs = [frozenset(pc for pc, op in enumerate(ops) if op[0] == "wait") for ops in self.code]
        self._waiting: set[int] = set()
        self._cw: list[int] | None = None
        self._cwsum = 0
        self._cache = None
        self._others: list[tuple] = []         # _landings + the enabled traffic acts
        self._landings: list[tuple] = []
        self._tacts: list = []                 # per traffic source: its act or None
        self._vars_changed = True
        self.idt = {v: self.rid[h] for v, h in scenario.program.idt.items()}
        self.goal = self._cond(scenario.goal)
        self.timer_vec = scenario.timer_vector
        w = dict(DEFAULT_WEIGHTS)
        w.update(scenario.weights)
        self.weights = w
        # The schedule is read through a cursor (never popped from the front): a scenario's
        # schedule or a trace's recorded choices. schedule_ends_run: when the choices run out
        # the run ends ("end") instead of continuing with the PRNG (exact replay of a trace).
        self.schedule = list(scenario.schedule)
        self.sched_i = 0
        self.schedule_ends_run = False
        from collections import deque
        self.replay: deque = deque()
        self.replay_diverged = -1
        self.step = 0
        self.stats: Counter = Counter()
        self._notes: list = []
        self._seedmix = (cfg.seed * 0x9E3779B97F4A7C15) & MASK64
        # what the scenario's pack adds: ops that consume the hypervisor's EOI hint, note hooks
        self.hint_ops = self._pack_hint_ops()
        self._note_hooks = getattr(self.pack, "note_hooks", {}) if self.pack is not None else {}
        self.pack_state: dict = {}
        self._at = (-1, -1)          # (routine, pc) of the op being executed (generic path)
        self._g_kgen, self._g_kgen_next, self._g_image = (L.gindex[n] for n in LIFECYCLE_GLOBALS)
        inv = getattr(scenario, "invariants", {}) or {}
        self._hv_owned = inv["hv-writes-owned"]["purposes"] if "hv-writes-owned" in inv else None
        self._violation = None
        self._init_state()
        self.attach_journal(Journal(segment, cache_bytes=cache_bytes))

    def attach_journal(self, j: Journal) -> None:
        """Make `j` this engine's journal (a new one, or a branch's over its parent's): its
        head starts at the current step, where the current state is its first snapshot."""
        self.events = j
        j.rebuild = self._rebuild
        if self.step not in j.snaps:
            j.snaps[self.step] = self.m.snapshot()
            j.stats_at[self.step] = (Counter(self.stats), _copy_state(self.pack_state))
        self._app = j.head.events.append
        self._jb = j.next_boundary()

    def _close_segment(self) -> None:
        j = self.events
        self._jb = j.close_head(self.m.snapshot(), (Counter(self.stats), _copy_state(self.pack_state)))
        self._app = j.head.events.append

    def scratch(self, machine: Machine, step: int) -> "Engine":
        """A shallow copy for work at `step` on `machine` (explanations, re-executing a
        segment): it shares the program and the journal, keeps no journal of its own and has
        its own statistics, caches, hypervisor model and fast paths (they are bound to a
        machine), so this engine and its machine are never touched."""
        import copy
        e = copy.copy(self)
        e.m = machine
        e.step = step
        e.journal = False
        e._notes = []
        e._cache = None
        e._cw = None
        e._waiting = set()
        e._vars_changed = True
        e.stats = Counter()
        e.pack_state = {}
        e.schedule, e.sched_i = [], 0
        from collections import deque
        e.replay = deque()
        e.hv = make_hypervisor(e, e.cfg)
        e.fast = e._op_paths()
        return e

    def _rebuild(self, start: int, end: int) -> list:
        """Re-execute events [start, end) of this engine's journal from the snapshot at
        `start` with the recorded choices, checking each is enabled (and, for a trace, its
        recorded check and the digest at the end). Runs on a scratch engine: this engine and
        its machine do not move (the journal calls this from any thread)."""
        j = self.events
        m = Machine(self.L)
        m.restore(j.snaps[start])
        e = self.scratch(m, start)
        out = []
        last = None
        checks = j.recorded_checks(start, end)
        off = j.fork
        for i in range(start, end):
            a = j.act(i)
            if a[0] == "edit":
                ev = e.execute_edit(a)
                last = None
            else:
                acts = e._enabled_incremental(last, flat=True)
                if a not in acts:
                    raise JournalError(i, f"recorded choice {act_text(a)} is not enabled at step {i}")
                ev = e.execute(a)
                last = ev[5]
            if checks is not None and 2 * (i - off) + 2 <= len(checks):
                if int.from_bytes(checks[2 * (i - off):2 * (i - off) + 2], "little") != event_check(ev[5]):
                    raise JournalError(i, f"event {i} ({act_text(a)}) wrote different values than when it was recorded")
            out.append(ev)
        want = j.digests.get(end)
        if want is not None and want != m.digest():
            raise JournalError(end - 1, f"state digest after event {end - 1} differs from the recorded one")
        return out

    # ---------- setup ----------
    def start_routine(self, role: str) -> int:
        return self.rid[self.scn.program.start[role]]

    def _init_state(self) -> None:
        m, L, S = self.m, self.L, self.m.S
        S[L.gindex["alloc_next"]] = self.scn.alloc_base >> PAGE_SHIFT
        S[L.gindex["kgen"]] = 1
        S[L.gindex["kgen_next"]] = 2
        for name, v in self.scn.init_vars.items():
            S[L.gvar[name]] = v
        if "nr_cpus" in L.gvar:
            S[L.gvar["nr_cpus"]] = self.n
        if "nr_online" in L.gvar:
            S[L.gvar["nr_online"]] = self.n
        for t in self.traffic:
            S[t.slot_budget] = t.count
            S[t.slot_rr] = (t.src + 1) % self.n
        for c in range(self.n):
            b = L.base(c)
            m.reset_cpu_slots(c)
            for name, v in self.scn.init_pcpu.items():
                S[b + L.pvar[name]] = v
            S[b + L.P_HP] = 1
            S[b + L.P_ONLINE] = 1
            S[b + L.P_TIMER] = 1
            S[b + F_IF] = 1
            S[b + F_RT] = self.start_routine("bsp" if c == 0 else "ap")
        m.w = []

    def _pack_hint_ops(self) -> set:
        """(routine id, op index) of the ops the pack says consume the hypervisor's EOI hint."""
        out = set()
        for rname, opcode in getattr(self.pack, "eoi_hint_ops", ()) if self.pack is not None else ():
            rt = self.rid.get(rname)
            if rt is None:
                continue
            for pc, op in enumerate(self.routines[rt].ops):
                if op.opcode == opcode:
                    out.add((rt, pc))
        return out

    def garbage_page(self, pfn: int) -> bytes:
        return garbage_bytes(self.garbage, pfn)

    def _operand(self, o: tuple) -> tuple:
        k = o[0]
        if k == "i":
            return (0, o[1])
        if k == "r":
            return (1, F_R0 + o[1])
        if k == "g":
            return (2, self.L.gvar[o[1]])
        if k == "p":
            return (1, self.L.pvar[o[1]])
        if k == "q":
            return (4, self.L.pvar[o[1]], self._operand(o[2]))
        if k == "cpu":
            return (5,)
        raise AssertionError(o)

    def _cond(self, c: tuple) -> tuple:
        return tuple((CMP[op], self._operand(a), self._operand(b)) for op, a, b in c[1])

    def _op_paths(self) -> list[list]:
        """Per routine, per op: a closure f(c, b) executing that op on vCPU c (slot base b),
        bound to this engine and its machine: the op table's fast path where it has one, else
        the generic path (_generic_op)."""
        out = []
        for rt, ops in enumerate(self.code):
            row = []
            for pc, op in enumerate(ops):
                spec = OPS[op[0]]
                f = spec.fast(self, op, pc) if spec.fast is not None else None
                row.append(f if f is not None else self._generic_op(spec, op, rt, pc))
            out.append(row)
        return out

    def _generic_op(self, spec, op: tuple, rt: int, pc: int):
        """An op through its table entry's execute: a VM exit runs the hypervisor model's
        on_exit before it and on_entry after it (unless the vCPU halted); the op's returned pc
        is written unless it returned None (it set the pc itself, or stopped the vCPU)."""
        m, execute, at = self.m, spec.execute, (rt, pc)
        if spec.exits:
            def f(c, b):
                hv = self.hv
                hv.on_exit(c)
                self._at = at
                nxt = execute(self, c, b, op, pc)
                if nxt is not None:
                    m.set(b + F_PC, nxt)
                    if not m.S[b + F_HALT]:
                        hv.on_entry(c)
        else:
            def f(c, b):
                self._at = at
                nxt = execute(self, c, b, op, pc)
                if nxt is not None:
                    m.set(b + F_PC, nxt)
        return f

    # ---------- operand access ----------
    def val(self, c: int, b: int, o: tuple) -> int:
        k = o[0]
        if k == 0:
            return o[1]
        if k == 1:
            return self.m.S[b + o[1]]
        if k == 2:
            return self.m.S[o[1]]
        if k == 5:
            return c
        cc = self.val(c, b, o[2])
        if not 0 <= cc < self.n:
            self.note("fault", f"per-CPU index {cc} out of range")
            return 0
        return self.m.S[self.L.base(cc) + o[1]]

    def slot(self, c: int, b: int, o: tuple) -> int:
        k = o[0]
        if k == 1:
            return b + o[1]
        if k == 2:
            return o[1]
        cc = self.val(c, b, o[2])
        if not 0 <= cc < self.n:
            self.note("fault", f"per-CPU index {cc} out of range")
            cc = c
        return self.L.base(cc) + o[1]

    def holds(self, c: int, b: int, cond: tuple) -> bool:
        S = self.m.S
        for f, x, y in cond:
            # val() with its commonest kinds inline: immediate, own per-CPU slot, global
            k = x[0]
            u = x[1] if k == 0 else S[b + x[1]] if k == 1 else S[x[1]] if k == 2 else self.val(c, b, x)
            k = y[0]
            v = y[1] if k == 0 else S[b + y[1]] if k == 1 else S[y[1]] if k == 2 else self.val(c, b, y)
            if not f(u, v):
                return False
        return True

    def note(self, kind: str, *data) -> None:
        self._notes.append((kind, *data))

    # ---------- actions ----------
    def apply(self, a: tuple) -> list:
        """Execute one action; return its writes (the state is changed)."""
        m = self.m
        m.w = []
        self._notes = []
        self._violation = None
        k = a[0]
        if k == "op":
            self._op(a[1])
        elif k == "deliver":
            self._deliver(a[1])
        elif k == "land":
            t = (a[1], a[2], a[3])
            lst = list(m.S[0])
            lst.remove(t)
            m.set(0, tuple(lst))
            self.set_irr(a[2], a[3])
        elif k == "timer":
            self.set_irr(a[1], a[2])
        elif k == "traffic":
            for t in self.traffic:
                if t.src == a[1] and t.vector == a[3] and self._traffic_dst(t) == a[2]:
                    break
            else:
                raise RunError(f"{act_text(a)} is not enabled")
            m.set(t.slot_rr, (a[2] + 1) % self.n)
            if m.S[t.slot_budget] > 0:
                m.set(t.slot_budget, m.S[t.slot_budget] - 1)
            m.set(0, m.S[0] + ((a[1], a[2], a[3]),))
        return m.w

    def execute(self, a: tuple) -> Event:
        """Execute and record one event."""
        S = self.m.S
        c = a[1]
        b = self.bases[c]
        rt, pc = S[b + F_RT], S[b + F_PC]
        writes = self.apply(a)
        notes = self._notes
        ev = make_event(self.step, a, c, rt, pc, writes, tuple(notes) if notes else ())
        self._account(ev)
        self._record(ev)
        return ev

    def _record(self, ev: Event) -> None:
        """The step after `ev`: the event joins the journal (closing its segment at a boundary)."""
        self.step += 1
        if self.journal:
            self._app(ev)
            if self.step == self._jb:
                self._close_segment()

    _KIND_STAT = {"deliver": "deliveries", "land": "ipis_landed", "timer": "timer_fires", "traffic": "ipis_sent"}

    def execute_edit(self, desc: tuple) -> Event:
        """Record a what-if edit as an event of its own kind: ("edit", kind, *ints).
        mem SPACE ADDR SIZE VALUE | flip SPACE ADDR BIT | msr CPU MSR VALUE | reg CPU N VALUE |
        if CPU VALUE | inject CPU VECTOR | drop_irr CPU VECTOR | drop_ipi SRC DST VECTOR.
        SPACE is -1 for guest RAM or a vCPU number for its overlay page. Every field is
        range-checked (edit_problem) before anything changes."""
        why = edit_problem(desc, self.n)
        if why:
            raise ValueError(why)
        m = self.m
        m.w = []
        self._notes = []
        k, args = desc[1], desc[2:]
        cpu = -1
        if k in ("mem", "flip"):
            space, addr = args[0], args[1]
            size = args[2] if k == "mem" else 1
            old = m.read_mem(space, addr, size)
            if old is None:
                raise ValueError(f"no {'RAM' if space == RAM else f'overlay page of cpu{space}'} at 0x{addr:x}")
            new = args[3] if k == "mem" else old ^ (1 << args[2])
            m.write_mem(space, addr, size, new)
            self.note("edit", f"{'RAM' if space == RAM else f'overlay(cpu{space})'}[0x{addr:x}] = 0x{new:x} (was 0x{old:x})")
        else:
            cpu = args[0]
            b = self.bases[cpu]
            if k == "msr":
                self._wrmsr(cpu, b, args[1], args[2])
            elif k == "reg":
                m.set(b + F_R0 + args[1], args[2] & MASK64)
            elif k == "if":
                m.set(b + F_IF, 1 if args[1] else 0)
            elif k == "inject":
                self.set_irr(cpu, args[1])
            elif k == "drop_irr":
                m.set(b + F_IRR, m.S[b + F_IRR] & ~(1 << args[1]))
            elif k == "drop_ipi":
                lst = list(m.S[0])
                t = (args[0], args[1], args[2])
                if t not in lst:
                    raise ValueError(f"no IPI {t} in flight")
                lst.remove(t)
                m.set(0, tuple(lst))
            self.note("edit", f"{k} {' '.join(hex(a) if a > 9 else str(a) for a in args)}")
        ev = make_event(self.step, desc, cpu, -1, -1, m.w, tuple(self._notes))
        self._account(ev)
        self._record(ev)
        self._cache = None
        return ev

    def invalidate(self) -> None:
        """The state was changed from outside (time travel): drop derived caches."""
        self._cache = None
        self._vars_changed = True

    def _account(self, ev: Event) -> None:
        st = self.stats
        st["events"] += 1
        k = self._KIND_STAT.get(ev[E_ACT][0])
        if k is not None:
            st[k] += 1
        notes = ev[E_NOTES]
        if not notes:
            return
        hooks = self._note_hooks
        for nt in notes:
            kind = nt[0]
            if kind == "eoi":
                if nt[2]:
                    st["eoi_assisted"] += 1
                elif nt[1] >= 0:
                    st["eoi_msr_writes"] += 1
            elif kind == "collapse":
                st["collapsed"] += 1
            elif kind == "ipi":
                st["ipis_sent"] += 1
            elif kind == "eoi_skipped":
                st["eoi_skipped"] += 1
            elif kind == "gp":
                st["gp_faults"] += 1
            elif kind == "violation":
                st["violations"] += 1
            fns = hooks.get(kind)
            if fns:
                for fn in fns:
                    fn(self, nt, ev)

    # ---------- guest ops ----------
    def _op(self, c: int) -> None:
        m, S = self.m, self.m.S
        b = self.bases[c]
        rt, pc = S[b + F_RT], S[b + F_PC]
        row = self.fast[rt]
        if pc < len(row):
            row[pc](c, b)
            return
        self.note("fault", f"fell off the end of {self.rnames[rt]}")
        m.set(b + F_IF, 0)
        m.set(b + F_HALT, 1)

    def _overflow(self, c: int, b: int, target: int) -> None:
        """A call past MAX_CALL_DEPTH: the kernel stack would overflow. On real hardware the
        guard page faults (a double fault, then a panic); here the vCPU stops with IRQs off
        and the fault is noted, so the run ends as a hang whose explanation names it."""
        self.note("fault", f"kernel stack overflow: call to {self.rnames[target]} at depth {MAX_CALL_DEPTH} "
                           f"(recursion?)")
        self.m.set(b + F_IF, 0)
        self.m.set(b + F_HALT, 1)

    def _mem_op(self, c: int, b: int, op: tuple) -> None:
        m = self.m
        k = op[0]
        if k == "store":
            addr, size, new = self.val(c, b, op[1]), op[2], self.val(c, b, op[3])
        else:
            addr, size = self.val(c, b, op[2]), op[3]
            new = self.val(c, b, op[4]) if k == "xchg" else None
        space = self.hv.resolve(c, addr)
        old = m.read_mem(space, addr, size)
        if old is None:
            self.note("fault", f"page fault at 0x{addr:x}")
            old = 0
            if k != "store":
                m.set(self.slot(c, b, op[1]), 0)
            return
        self.note("read", space, addr, size, old)
        if k != "load":
            armed = self.hv.hint_armed(c)
            m.write_mem(space, addr, size, new)
            self.hv.on_mem_write(c, space, addr, size, old, new & ((1 << 8 * size) - 1))
            if (old & 1) and not armed and self._at in self.hint_ops:
                # the guest consumed an EOI hint bit (read as 1) that no hypervisor lease
                # backs: it skips its EOI and nobody performs it
                self.note("eoi_skipped", space, addr, old)
        if k != "store":
            m.set(self.slot(c, b, op[1]), old)

    # ---------- running ----------
    def goal_reached(self) -> bool:
        return self.holds(0, self.L.base(0), self.goal)

    def run(self, max_steps: int | None = None, stop=None, hook=None) -> Result:
        """Run until an outcome. The cyclic garbage collector is paused meanwhile: the
        journal is millions of small acyclic tuples that it would scan again and again
        (measured: about a third of the run time), and the engine creates no cycles."""
        was = gc.isenabled()
        gc.disable()
        try:
            return self._run(max_steps, stop, hook)
        finally:
            if was:
                gc.enable()

    def _run(self, max_steps: int | None, stop, hook=None) -> Result:
        max_steps = self.cfg.max_steps if max_steps is None else max_steps
        noop = 0
        last = None
        cycles = self.cycle_check()
        self._vars_changed = True
        schedule = self.schedule
        scheduled = self.sched_i < len(schedule) or bool(self.replay)
        while True:
            if not scheduled and not self.schedule_ends_run and self.FUSED:
                return self._run_free(max_steps, stop, hook, last, noop, cycles)
            acts = self._enabled_incremental(last, flat=scheduled)
            if self._vars_changed and self.goal_reached():   # the goal reads only variables
                return self._result("ok", "goal reached")
            if self.step >= max_steps:
                return self._result("timeout", f"step budget {max_steps} exhausted")
            if stop is not None and stop():
                return self._result("stopped", "stopped by request")
            if scheduled:
                a = self.pick(acts) if acts else None
                scheduled = self.sched_i < len(schedule) or bool(self.replay)
            elif self.schedule_ends_run:
                if not (self._cwsum + self._ow):
                    return self._result("hang", "no action is enabled")
                return self._result("end", "the recorded choices end here")
            else:
                a = self._pick_cached()
            if a is None:
                return self._result("hang", "no action is enabled")
            ev = self.execute(a)
            if hook is not None:
                hook(ev)
            if self._violation is not None:
                return self._corruption()
            last = ev[E_WRITES]
            if ev[E_WRITES]:
                noop = 0
            else:
                noop += 1
                if noop >= 8 and self.sched_i >= len(schedule):
                    if self.quiescent(self.enabled()):
                        return self._result("hang", "quiescent: no enabled action changes the state")
                    last = None
            if self.step >= cycles.next_sample:
                verdict = cycles.sample(self.sched_i >= len(schedule))
                if verdict is not NOT_CHECKED:
                    last = None
                    if verdict:
                        return self._result("hang", "cycle: every reachable state was explored and none reaches the goal")

    # The loop below is the hot path of every long run; the loop above (run with FUSED off) is
    # its reference, and tests/test_fused.py checks both give the same events, results and
    # states. Set FUSED = False on an engine to take the reference loop.
    FUSED = True

    def _run_free(self, max_steps: int, stop, hook, last, noop: int, cycles) -> Result:
        """_run once no schedule or replay is left (the rest of a long run), with its per-event
        calls inlined: the enabled-set update when the last event moved only one vCPU's
        program position and registers (Scheduler._enabled_incremental's "light" case), the
        PRNG pick (_pick_cached), and an op event (execute/apply/_op/_account). Everything
        else goes through those methods, as in _run. Measured with `python bench/engine.py
        --reference` (the speed-up over _run in one run) and `--instructions`."""
        m = self.m
        bases, fast, light, wait_pcs = self.bases, self.fast, self._light, self._wait_pcs
        weights = self.weights
        seedmix = self._seedmix
        stats = self.stats
        journal = self.journal
        new_event = _new_event
        enabled_incremental = self._enabled_incremental
        zat, z0 = -2, 0                 # the PRNG's counter for step zat
        while True:
            if last is None or self._cache is None:
                enabled_incremental(last, False)
            else:
                mv = -1
                for wr in last:
                    loc = wr[0]
                    lc = light[loc] if loc.__class__ is int else -1
                    if lc < 0 or (mv >= 0 and lc != mv):
                        enabled_incremental(last, False)
                        break
                    mv = lc
                else:
                    if mv >= 0:
                        S, b = m.S, bases[mv]
                        if mv in self._waiting or S[b + F_PC] in wait_pcs[S[b + F_RT]]:
                            self._cache[mv] = self._cpu_acts(mv)
                    self._vars_changed = 0
            if self._vars_changed and self.goal_reached():
                return self._result("ok", "goal reached")
            step = self.step
            if step >= max_steps:
                return self._result("timeout", f"step budget {max_steps} exhausted")
            if stop is not None and stop():
                return self._result("stopped", "stopped by request")
            # the (seed, step) PRNG's weighted pick over the cached per-vCPU lists (_pick_cached)
            cw = self._cw
            total = self._cwsum + self._ow
            if not total:
                return self._result("hang", "no action is enabled")
            if step == zat + 1:         # the splitmix64 counter, one step on: add, not multiply
                z0 = (z0 + 0xD1B54A32D192ED03) & MASK64
            else:
                z0 = (seedmix + (step + 1) * 0xD1B54A32D192ED03) & MASK64
            zat = step
            z = ((z0 ^ (z0 >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            r = (z ^ (z >> 31)) % total
            a = None
            c = 0
            for x in cw:
                if r < x:
                    for a in self._cache[c]:
                        r -= weights[a[0]]
                        if r < 0:
                            break
                    break
                r -= x
                c += 1
            else:
                for a in self._others:
                    r -= weights[a[0]]
                    if r < 0:
                        break
            # execute: an op through its closure inline; anything else (a delivery, landing, timer,
            # send, or an op past its routine's end) through execute()
            f = None
            if a[0] == "op":
                c = a[1]
                b = bases[c]
                S = m.S
                rt, pc = S[b + F_RT], S[b + F_PC]
                row = fast[rt]
                if pc < len(row):
                    f = row[pc]
            if f is not None:           # execute(a) for an op, inlined
                m.w = writes = []
                self._notes = notes = []
                self._violation = None
                f(c, b)
                ev = new_event(Event, (step, a, c, rt, pc, writes, tuple(notes) if notes else ()))
                if notes:
                    self._account(ev)
                else:
                    stats["events"] += 1
                self.step = step + 1
                if journal:
                    self._app(ev)
                    if step + 1 == self._jb:
                        self._close_segment()
            else:
                ev = self.execute(a)
                writes = ev[E_WRITES]
            if hook is not None:
                hook(ev)
            if self._violation is not None:
                return self._corruption()
            last = writes
            if writes:
                noop = 0
            else:
                noop += 1
                if noop >= 8:
                    if self.quiescent(self.enabled()):
                        return self._result("hang", "quiescent: no enabled action changes the state")
                    last = None
            if self.step >= cycles.next_sample:
                verdict = cycles.sample(True)
                if verdict is not NOT_CHECKED:
                    last = None
                    if verdict:
                        return self._result("hang", "cycle: every reachable state was explored and none reaches the goal")

    def _corruption(self) -> Result:
        cpu, structure, gpa, own, gen, want = self._violation
        return self._result("corruption", f"the hypervisor wrote cpu{cpu}'s {structure} at GPA 0x{gpa:x}, a page "
                                          f"kernel generation {gen} does not own as {want} of cpu{cpu}")

    def _result(self, outcome: str, reason: str) -> Result:
        self._last_result = r = Result(outcome, self.step, reason, dict(self.stats))
        return r


def _copy_state(d: dict) -> dict:
    """A copy of a pack's state dict deep enough that later runs do not change it (values are
    ints, strings, tuples, lists, sets or dicts of those)."""
    import copy
    return copy.deepcopy(d) if d else {}


def _collect(args, gvars: set, pvars: set) -> None:
    for a in args:
        if isinstance(a, tuple):
            if a and a[0] == "g":
                gvars.add(a[1])
            elif a and a[0] == "p":
                pvars.add(a[1])
            elif a and a[0] == "q":
                pvars.add(a[1])
                _collect((a[2],), gvars, pvars)
            else:
                _collect(a, gvars, pvars)


__all__ = ["Config", "Engine", "Result", "RunError", "parse_garbage", "act_text", "edit_text",
           "edit_problem", "parse_action", "Event", "RAM"]
