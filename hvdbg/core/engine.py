"""The deterministic engine: enabled actions, choices, journaled events, outcomes.

A run is a pure function of (scenario, config, choices). Every step the engine lists the
enabled actions as descriptors (tuples, never indices):

    ("op", cpu)                     the vCPU executes its next guest op
    ("deliver", cpu, vector)        the hypervisor injects the highest deliverable IRR vector
    ("land", src, dst, vector)      an in-flight IPI reaches the destination's IRR
    ("timer", cpu, vector)          the vCPU's LAPIC timer fires (periodic while armed)
    ("traffic", src, dst, vector)   a background source on src sends an IPI

and picks one: from the scenario's schedule if it has one, else by a weighted PRNG keyed
by (seed, step) (no hidden PRNG state). Each executed action is an Event with all its
writes ``(location, old, new)`` and notes.

APIC rules (SDM vol.3 10.8, domain-facts §4): priority class = vector >> 4; PPR class =
max(TPR class, highest ISR class); a fixed interrupt is delivered only when IF = 1 and
its class > PPR class; delivery clears the IRR bit and sets the ISR bit; EOI clears the
highest ISR bit; a vector already pending in IRR collapses.
"""
from __future__ import annotations

import gc
import operator
import random
from collections import Counter, deque
from dataclasses import dataclass, field

from .defs import (CONSTANTS, MSR_EOI, MSR_X2APIC_EOI, MSR_ICR, MSR_NAMES, MSR_READ_ONLY, MSR_TPR,
                   MSR_VP_ASSIST_PAGE, MSR_WRITE_ONLY, PAGE_SHIFT, PAGE_SIZE, VECTORS)
from .hypervisor import POLICIES, make_hypervisor
from .machine import (F_FRAMES, F_HALT, F_HV, F_IF, F_IRR, F_ISR, F_PC, F_R0, F_RT, F_TPR,
                      MSR_OFF, RAM, Layout, Machine)
from .program import EXITING_OPS, parse_cond

# Event tuple fields.
E_STEP, E_ACT, E_CPU, E_RT, E_PC, E_WRITES, E_NOTES = range(7)

DEFAULT_WEIGHTS = {"op": 64, "deliver": 64, "land": 32, "timer": 1, "traffic": 4}
FIXES = ("none", "gfp-zero", "clear-bit")

_CMP = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}
# Shift counts are masked to 6 bits as x86-64 SHL/SHR do (SDM vol.2 "SAL/SAR/SHL/SHR": the count
# is masked to 6 bits in 64-bit mode), so a listing cannot ask for a negative or huge shift.
_ALU = {"add": operator.add, "sub": operator.sub, "and": operator.and_, "or": operator.or_,
        "xor": operator.xor, "shl": lambda a, b: a << (b & 63), "shr": lambda a, b: a >> (b & 63),
        "andn": lambda a, b: a & ~b, "eq": lambda a, b: int(a == b), "ne": lambda a, b: int(a != b),
        "lt": lambda a, b: int(a < b), "ge": lambda a, b: int(a >= b)}
MASK64 = (1 << 64) - 1
# A kernel stack holds a bounded number of frames; deeper nesting is a stack overflow (the
# vCPU takes a fault and stops, see Engine._overflow). 64 call frames is far above any
# listing's real depth and keeps the per-event frame tuples small.
MAX_CALL_DEPTH = 64


class RunError(Exception):
    """Bad run input discovered while running (e.g. a schedule entry that is not enabled)."""


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


def parse_garbage(spec: str) -> tuple:
    """'0xfe' (fill byte) or 'random:SEED'. Raises ValueError with the reason."""
    s = str(spec).strip().lower()
    if s.startswith("random:"):
        try:
            return ("random", int(s[7:], 0))
        except ValueError:
            raise ValueError(f"garbage {spec!r}: random:SEED needs an integer seed") from None
    try:
        v = int(s, 0)
    except ValueError:
        raise ValueError(f"garbage {spec!r}: expected a fill byte like 0xfe or random:SEED") from None
    if not 0 <= v <= 255:
        raise ValueError(f"garbage {spec!r}: a fill byte is 0..255")
    return ("fill", v)


def garbage_bytes(g: tuple, pfn: int) -> bytes:
    """Content of a page __vmalloc'ed without __GFP_ZERO: whatever the page held before."""
    if g[0] == "fill":
        return bytes([g[1]]) * PAGE_SIZE
    return random.Random(g[1] * 1_000_003 + pfn).randbytes(PAGE_SIZE)


def prng(seed: int, step: int) -> int:
    """splitmix64 of (seed, step): the default choice policy holds no state."""
    z = (seed * 0x9E3779B97F4A7C15 + (step + 1) * 0xD1B54A32D192ED03) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def act_text(a: tuple) -> str:
    k = a[0]
    if k == "edit":
        return "what-if edit: " + edit_text(a)
    if k == "op":
        return f"op cpu{a[1]}"
    if k == "deliver":
        return f"deliver cpu{a[1]} 0x{a[2]:02x}"
    if k == "timer":
        return f"timer cpu{a[1]} 0x{a[2]:02x}"
    return f"{k} cpu{a[1]}->cpu{a[2]} 0x{a[3]:02x}"


def edit_text(a: tuple) -> str:
    """Human text of an edit descriptor ("edit", kind, *ints)."""
    k, x = a[1], a[2:]

    def sp(space):
        return "RAM" if space == -1 else f"overlay(cpu{space})"
    try:
        if k == "flip":
            return f"flip bit {x[2]} of {sp(x[0])}[0x{x[1]:x}]"
        if k == "mem":
            return f"{sp(x[0])}[0x{x[1]:x}] ({x[2]} bytes) = 0x{x[3]:x}"
        if k == "msr":
            from .defs import MSR_NAMES
            return f"cpu{x[0]} {MSR_NAMES.get(x[1], hex(x[1]))} = 0x{x[2]:x}"
        if k == "reg":
            return f"cpu{x[0]} r{x[1]} = 0x{x[2]:x}"
        if k == "if":
            return f"cpu{x[0]} IF = {x[1]}"
        if k == "inject":
            return f"inject 0x{x[1]:02x} into cpu{x[0]}'s IRR"
        if k == "drop_irr":
            return f"drop 0x{x[1]:02x} from cpu{x[0]}'s IRR"
        if k == "drop_ipi":
            return f"drop the in-flight IPI cpu{x[0]}->cpu{x[1]} 0x{x[2]:02x}"
    except (IndexError, TypeError, ValueError):
        pass
    return " ".join(str(v) for v in a[1:])


# What-if edit kinds and their integer fields, each with its range (checked for edits typed by a
# user and for edits read from a trace, before anything changes). CPU fields are 0..vcpus-1.
_U64 = (0, (1 << 64) - 1)
EDIT_FIELDS: dict[str, tuple] = {
    "mem": (("space", "space"), ("addr", _U64), ("size", (1, 8)), ("value", "by-size")),
    "flip": (("space", "space"), ("addr", _U64), ("bit", (0, 7))),
    "msr": (("cpu", "cpu"), ("msr", (0, (1 << 32) - 1)), ("value", _U64)),
    "reg": (("cpu", "cpu"), ("register", (0, 3)), ("value", _U64)),
    "if": (("cpu", "cpu"), ("value", (0, 1))),
    "inject": (("cpu", "cpu"), ("vector", (16, 255))),
    "drop_irr": (("cpu", "cpu"), ("vector", (16, 255))),
    "drop_ipi": (("src", "cpu"), ("dst", "cpu"), ("vector", (16, 255))),
}


def edit_problem(desc, ncpu: int) -> str | None:
    """Why `desc` is not a valid what-if edit for a machine of `ncpu` vCPUs, or None."""
    if not isinstance(desc, tuple) or len(desc) < 2 or desc[0] != "edit" or desc[1] not in EDIT_FIELDS:
        return f"unknown edit {str(desc)[:80]} (kinds: {', '.join(EDIT_FIELDS)})"
    fields = EDIT_FIELDS[desc[1]]
    args = desc[2:]
    if len(args) != len(fields):
        return f"edit {desc[1]} takes {len(fields)} numbers ({', '.join(f for f, _ in fields)}), got {len(args)}"
    for (name, rng), x in zip(fields, args):
        if type(x) is not int:
            return f"edit {desc[1]}: {name} must be an integer"
        if rng == "cpu":
            lo, hi = 0, ncpu - 1
        elif rng == "space":
            lo, hi = -1, ncpu - 1
        elif rng == "by-size":
            size = args[2]
            if size not in (1, 2, 4, 8):
                return f"edit {desc[1]}: size must be 1, 2, 4 or 8, got {size}"
            lo, hi = 0, (1 << (8 * size)) - 1
        else:
            lo, hi = rng
        if not lo <= x <= hi:
            what = {"space": "-1 (RAM) or a vCPU's overlay"}.get(rng, "")
            return f"edit {desc[1]}: {name} {x if abs(x) < 1 << 70 else 'of ' + str(x.bit_length()) + ' bits'} " \
                   f"is out of range {lo}..{hi}{' ' + what if what else ''}"
    return None


def parse_action(text: str) -> tuple:
    """Inverse of act_text (used by scenario schedules): 'op 1', 'deliver 1 0xfd', 'land 0 1 RESCHEDULE'."""
    parts = text.replace("cpu", "").replace("->", " ").split()
    if not parts:
        raise ValueError("empty action")
    k = parts[0]
    nums = []
    for p in parts[1:]:
        if p in VECTORS:
            nums.append(VECTORS[p])
        else:
            nums.append(int(p, 0))
    want = {"op": 1, "deliver": 2, "timer": 2, "land": 3, "traffic": 3}
    if k not in want or len(nums) != want[k]:
        raise ValueError(f"bad action {text!r} (expected op C | deliver C V | timer C V | land S D V | traffic S D V)")
    return (k, *nums)


@dataclass
class Traffic:
    src: int
    dst: int            # -1 = round robin over the other online CPUs
    vector: int
    count: int          # -1 = periodic
    when: tuple | None = None   # compiled condition (evaluated on the sender)
    slot_rr: int = 0
    slot_budget: int = 0


@dataclass
class Result:
    outcome: str
    steps: int
    reason: str = ""
    stats: dict = field(default_factory=dict)


class Engine:
    def __init__(self, scenario, cfg: Config, journal: bool = True):
        self.scn = scenario
        # journal=False: events are passed to the run's hook but not kept (replay --verify,
        # show, sweep: memory stays flat in the number of events).
        self.journal = journal
        self.cfg = cfg
        if cfg.overlay not in POLICIES:
            raise ValueError(f"unknown overlay policy {cfg.overlay!r}")
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
        extra = ["alloc_next"]
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
        self.hv = make_hypervisor(cfg.hypervisor, self, cfg.overlay)
        self.code = [[self._compile_op(op, r) for op in r.ops] for r in self.routines]
        self.fast = [[self._fast_op(op, pc) for pc, op in enumerate(ops)] for ops in self.code]
        self.bases = [L.base(c) for c in range(n)]
        self._info = self._slot_info()
        self._waiting: set[int] = set()
        self._cw: list[int] | None = None
        self._cwsum = 0
        self._cache = None
        self._others: list[tuple] = []
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
        self.replay: deque = deque()
        self.replay_diverged = -1
        self.events: list[tuple] = []
        self.step = 0
        self.stats: Counter = Counter()
        self._notes: list = []
        self.first_disable_step = -1
        self._seedmix = (cfg.seed * 0x9E3779B97F4A7C15) & MASK64
        self._init_state()

    # ---------- setup ----------
    def _init_state(self) -> None:
        m, L, S = self.m, self.L, self.m.S
        S[L.gindex["alloc_next"]] = self.scn.alloc_base >> PAGE_SHIFT
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
            role = "bsp" if c == 0 else "ap"
            S[b + F_RT] = self.rid[self.scn.program.start[role]]
        m.w = []

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
        return tuple((_CMP[op], self._operand(a), self._operand(b)) for op, a, b in c[1])

    def _compile_op(self, op, r) -> tuple:
        a = op.args
        k = op.opcode
        if k in ("br",):
            return (k, self._cond(a[0]), r.labels[a[1]])
        if k == "jmp":
            return (k, r.labels[a[0]])
        if k == "call":
            return (k, self.rid[a[0]])
        if k == "wait":
            return (k, self._cond(a[0]))
        if k in ("load", "store", "xchg", "alloc") or k in _ALU or k in ("mov", "rdmsr", "wrmsr", "irqsave",
                                                                         "irqrestore", "ipi", "init_sipi"):
            out = []
            for x in a:
                out.append(self._operand(x) if isinstance(x, tuple) else x)
            return (k, *out)
        return (k,)

    # ---------- fast paths: closures for the common ops (same writes, same order) ----------
    @staticmethod
    def _getter(o: tuple):
        k = o[0]
        if k == 0:
            v = o[1]
            return lambda S, c, b: v
        if k == 1:
            off = o[1]
            return lambda S, c, b: S[b + off]
        if k == 2:
            i = o[1]
            return lambda S, c, b: S[i]
        if k == 5:
            return lambda S, c, b: c
        return None

    def _fast_cond(self, cond: tuple):
        parts = []
        for f, x, y in cond:
            gx, gy = self._getter(x), self._getter(y)
            if gx is None or gy is None:
                return None
            parts.append((f, gx, gy))
        if len(parts) == 1:
            (f, gx, gy), = parts
            return lambda S, c, b: f(gx(S, c, b), gy(S, c, b))
        return lambda S, c, b: all(f(gx(S, c, b), gy(S, c, b)) for f, gx, gy in parts)

    def _fast_op(self, op: tuple, pc: int):
        """A closure doing exactly what the generic path of _op does for this op, or None."""
        m = self.m
        mset = m.set
        k = op[0]
        nxt = pc + 1
        PC = F_PC
        if k in ("nop", "wait"):
            def f(c, b):
                mset(b + PC, nxt)
            return f
        if k == "jmp":
            tgt = op[1]

            def f(c, b):
                mset(b + PC, tgt)
            return f
        if k == "br":
            cond = self._fast_cond(op[1])
            if cond is None:
                return None
            tgt = op[2]

            def f(c, b):
                mset(b + PC, tgt if cond(m.S, c, b) else nxt)
            return f
        if k == "cli" or k == "sti":
            val = 1 if k == "sti" else 0

            def f(c, b):
                mset(b + F_IF, val)
                mset(b + PC, nxt)
            return f
        if k == "mov" or k in _ALU:
            dst = op[1]
            if dst[0] not in (1, 2):
                return None
            doff = dst[1]
            rel = dst[0] == 1
            if k == "mov":
                g = self._getter(op[2])
                if g is None:
                    return None

                def compute(S, c, b):
                    return g(S, c, b)
            else:
                ga, gb, fn = self._getter(op[2]), self._getter(op[3]), _ALU[k]
                if ga is None or gb is None:
                    return None

                def compute(S, c, b):
                    return fn(ga(S, c, b), gb(S, c, b)) & MASK64
            if rel:
                def f(c, b):
                    mset(b + doff, compute(m.S, c, b))
                    mset(b + PC, nxt)
            else:
                def f(c, b):
                    mset(doff, compute(m.S, c, b))
                    mset(b + PC, nxt)
            return f
        if k == "call":
            tgt = op[1]
            overflow = self._overflow

            def f(c, b):
                S = m.S
                fr = S[b + F_FRAMES]
                if len(fr) >= MAX_CALL_DEPTH:
                    overflow(c, b, tgt)
                    return
                mset(b + F_FRAMES, fr + ((0, S[b + F_RT], nxt),))
                mset(b + F_RT, tgt)
                mset(b + PC, 0)
            return f
        return None

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
        for f, x, y in cond:
            if not f(self.val(c, b, x), self.val(c, b, y)):
                return False
        return True

    def note(self, kind: str, *data) -> None:
        self._notes.append((kind, *data))

    # ---------- APIC ----------
    def ppr_class(self, b: int) -> int:
        S = self.m.S
        isr = S[b + F_ISR]
        isrv = isr.bit_length() - 1 if isr else 0
        return max(S[b + F_TPR] >> 4, isrv >> 4)

    def deliverable(self, c: int) -> int:
        """Highest deliverable IRR vector of vCPU c, or 0."""
        S = self.m.S
        b = self.bases[c]
        irr = S[b + F_IRR]
        if not irr or not S[b + F_IF]:
            return 0
        v = irr.bit_length() - 1
        return v if (v >> 4) > self.ppr_class(b) else 0

    def apic_eoi(self, c: int, implied: bool = False) -> None:
        b = self.L.base(c)
        isr = self.m.S[b + F_ISR]
        if not isr:
            self.note("eoi", -1, implied)
            return
        v = isr.bit_length() - 1
        self.m.set(b + F_ISR, isr & ~(1 << v))
        self.note("eoi", v, implied)

    def set_irr(self, c: int, v: int) -> None:
        b = self.L.base(c)
        irr = self.m.S[b + F_IRR]
        if irr >> v & 1:
            self.note("collapse", v)
            return
        self.m.set(b + F_IRR, irr | (1 << v))
        self.hv.on_irr(c, v)

    # ---------- actions ----------
    def _cpu_acts(self, c: int) -> list[tuple]:
        """Enabled actions of vCPU c, in canonical order: op, deliver, timer. Also keeps
        `_waiting` (the vCPUs at a wait op) and `_cw[c]` (the weight of the list) current."""
        S = self.m.S
        b = self.bases[c]
        acts = []
        wt = self.weights
        x = 0
        ops = self.code[S[b + F_RT]]
        pc = S[b + F_PC]
        at_wait = pc < len(ops) and ops[pc][0] == "wait"
        if at_wait:
            self._waiting.add(c)
        else:
            self._waiting.discard(c)
        if not S[b + F_HALT]:
            if not at_wait or self.holds(c, b, ops[pc][1]):
                acts.append(("op", c))
                x += wt["op"]
        v = self.deliverable(c)
        if v:
            acts.append(("deliver", c, v))
            x += wt["deliver"]
        if S[b + self.L.P_TIMER]:
            acts.append(("timer", c, self.timer_vec))
            x += wt["timer"]
        cw = self._cw
        if cw is not None:
            self._cwsum += x - cw[c]
            cw[c] = x
        return acts

    def _other_acts(self) -> list[tuple]:
        acts = []
        seen = set()
        for ipi in self.m.S[0]:
            if ipi not in seen:
                seen.add(ipi)
                acts.append(("land", *ipi))
        for t in self.traffic:
            d = self._traffic_dst(t)
            if d >= 0:
                acts.append(("traffic", t.src, d, t.vector))
        return acts

    def enabled(self) -> list[tuple]:
        """All enabled actions, in canonical order (per vCPU, then IPI landings, then traffic)."""
        acts = []
        for c in range(self.n):
            acts += self._cpu_acts(c)
        return acts + self._other_acts()

    def _slot_info(self) -> list[tuple[int, int]]:
        """Per state slot: (vCPU or -1, what a write to it can change): 3 = a variable (wait
        conditions, traffic, goal), 1 = HALT/IF (traffic sources), 0 = only that vCPU."""
        L = self.L
        info = [(-1, 3)] * L.nglobal
        pv0 = min(L.pvar.values())
        for c in range(self.n):
            for off in range(L.block):
                info.append((c, 3 if off >= pv0 else 1 if off in (F_HALT, F_IF) else 0))
        return info

    def _at_wait(self, c: int) -> bool:
        S = self.m.S
        b = self.bases[c]
        ops = self.code[S[b + F_RT]]
        pc = S[b + F_PC]
        return pc < len(ops) and ops[pc][0] == "wait"

    def _enabled_incremental(self, writes, flat: bool = True) -> list[tuple] | None:
        """enabled(), recomputing only what the last event's writes can have changed.
        Same result and order as enabled() (a property test checks it)."""
        cache = self._cache
        if cache is None or writes is None:
            self._vars_changed = True
            self._cw = [0] * self.n
            self._cwsum = 0
            self._waiting = set()
            cache = self._cache = [self._cpu_acts(c) for c in range(self.n)]
            self._others = self._other_acts()
            wt = self.weights
            self._ow = sum(wt[a[0]] for a in self._others)
        else:
            info = self._info
            flags = 0
            dirty = set()
            for w in writes:
                loc = w[0]
                if loc.__class__ is int:
                    c, fl = info[loc]
                    flags |= fl
                    if c >= 0:
                        dirty.add(c)
            self._vars_changed = flags & 2
            if flags & 2:
                dirty |= self._waiting
            cpu_acts = self._cpu_acts
            for c in dirty:
                cache[c] = cpu_acts(c)
            if flags:
                self._others = self._other_acts()
                wt = self.weights
                self._ow = sum(wt[a[0]] for a in self._others)
        if flat:
            acts = []
            for lst in cache:
                acts += lst
            return acts + self._others
        return None

    def _pick_cached(self):
        """pick() over the cached per-vCPU lists without building the flat list (same result:
        the walk over per-vCPU weight sums is the flat weighted walk, grouped)."""
        cw = self._cw
        total = self._cwsum + self._ow
        if not total:
            return None
        z = (self._seedmix + (self.step + 1) * 0xD1B54A32D192ED03) & MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        r = (z ^ (z >> 31)) % total
        w = self.weights
        for c, x in enumerate(cw):
            if r < x:
                for a in self._cache[c]:
                    r -= w[a[0]]
                    if r < 0:
                        return a
            r -= x
        for a in self._others:
            r -= w[a[0]]
            if r < 0:
                return a
        return None

    def _traffic_dst(self, t: Traffic) -> int:
        S, L = self.m.S, self.L
        bs = self.bases[t.src]
        if S[bs + F_HALT] or not S[bs + F_IF] or not S[bs + L.P_ONLINE] or S[t.slot_budget] == 0:
            return -1
        if t.when is not None and not self.holds(t.src, bs, t.when):
            return -1
        if t.dst >= 0:
            cands = [t.dst]
        else:
            start = S[t.slot_rr]
            cands = [(start + i) % self.n for i in range(self.n)]
        for d in cands:
            if d != t.src and S[L.base(d) + L.P_ONLINE] and (t.src, d, t.vector) not in S[0]:
                return d
        return -1

    def pick(self, acts: list[tuple]) -> tuple:
        if self.sched_i < len(self.schedule):
            want = self.schedule[self.sched_i]
            self.sched_i += 1
            if want not in acts:
                raise RunError(f"schedule entry '{act_text(want)}' is not enabled at step {self.step} "
                               f"(enabled: {', '.join(act_text(a) for a in acts)})")
            return want
        if self.replay:
            # a branch replays its parent's recorded choices while they are still enabled,
            # then falls back to the (seed, step) PRNG (design §4)
            want = self.replay[0]
            if want in acts:
                self.replay.popleft()
                return want
            self.replay.clear()
            self.replay_diverged = self.step
        w = self.weights
        total = 0
        for a in acts:
            total += w[a[0]]
        z = (self._seedmix + (self.step + 1) * 0xD1B54A32D192ED03) & MASK64   # prng(seed, step), inlined
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        r = (z ^ (z >> 31)) % total
        for a in acts:
            r -= w[a[0]]
            if r < 0:
                return a
        return acts[-1]

    def apply(self, a: tuple) -> list:
        """Execute one action; return its writes (the state is changed)."""
        m = self.m
        m.w = []
        self._notes = []
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

    def execute(self, a: tuple) -> tuple:
        """Execute and record one event."""
        S = self.m.S
        c = a[1]
        b = self.bases[c]
        rt, pc = S[b + F_RT], S[b + F_PC]
        writes = self.apply(a)
        notes = self._notes
        ev = (self.step, a, c, rt, pc, writes, tuple(notes) if notes else ())
        if self.journal:
            self.events.append(ev)
        self._account(ev)
        self.step += 1
        return ev

    _KIND_STAT = {"deliver": "deliveries", "land": "ipis_landed", "timer": "timer_fires", "traffic": "ipis_sent"}

    EDIT_KINDS = EDIT_FIELDS

    def execute_edit(self, desc: tuple) -> tuple:
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
            if not 0 <= cpu < self.n:
                raise ValueError(f"no cpu{cpu}")
            b = self.bases[cpu]
            if k == "msr":
                self._wrmsr(cpu, b, args[1], args[2])
            elif k == "reg":
                if not 0 <= args[1] < 4:
                    raise ValueError("registers are r0..r3")
                m.set(b + F_R0 + args[1], args[2] & MASK64)
            elif k == "if":
                m.set(b + F_IF, 1 if args[1] else 0)
            elif k == "inject":
                if not 16 <= args[1] <= 255:
                    raise ValueError("vectors are 16..255")
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
        ev = (self.step, desc, cpu, -1, -1, m.w, tuple(self._notes))
        self.events.append(ev)
        self._account(ev)
        self.step += 1
        self._cache = None
        return ev

    def invalidate(self) -> None:
        """The state was changed from outside (time travel): drop derived caches."""
        self._cache = None
        self._vars_changed = True

    def _account(self, ev: tuple) -> None:
        st = self.stats
        st["events"] += 1
        k = self._KIND_STAT.get(ev[E_ACT][0])
        if k is not None:
            st[k] += 1
        notes = ev[E_NOTES]
        if not notes:
            return
        for nt in notes:
            kind = nt[0]
            if kind == "eoi":
                if nt[2]:
                    st["eoi_assisted"] += 1
                    if self.first_disable_step < 0:
                        st["eoi_assisted_before_offline"] += 1
                elif nt[1] >= 0:
                    st["eoi_msr_writes"] += 1
            elif kind == "collapse":
                st["collapsed"] += 1
            elif kind == "ipi":
                st["ipis_sent"] += 1
            elif kind == "stale_assist":
                st["eoi_skipped_stale"] += 1
            elif kind == "gp":
                st["gp_faults"] += 1
            elif kind == "assist_disable" and self.first_disable_step < 0:
                self.first_disable_step = ev[E_STEP]

    # ---------- guest ops ----------
    def _op(self, c: int) -> None:
        m, S, L = self.m, self.m.S, self.L
        b = self.bases[c]
        rt, pc = S[b + F_RT], S[b + F_PC]
        fast = self.fast[rt]
        if pc < len(fast):
            f = fast[pc]
            if f is not None:
                f(c, b)
                return
        ops = self.code[rt]
        if pc >= len(ops):
            self.note("fault", f"fell off the end of {self.rnames[rt]}")
            m.set(b + F_IF, 0)
            m.set(b + F_HALT, 1)
            return
        op = ops[pc]
        k = op[0]
        exiting = k in EXITING_OPS
        if exiting:
            self.hv.on_exit(c)
        nxt = pc + 1
        if k == "mov":
            m.set(self.slot(c, b, op[1]), self.val(c, b, op[2]))
        elif k in _ALU:
            m.set(self.slot(c, b, op[1]), _ALU[k](self.val(c, b, op[2]), self.val(c, b, op[3])) & MASK64)
        elif k == "br":
            if self.holds(c, b, op[1]):
                nxt = op[2]
        elif k == "jmp":
            nxt = op[1]
        elif k == "wait":
            pass
        elif k == "call":
            if len(S[b + F_FRAMES]) >= MAX_CALL_DEPTH:
                self._overflow(c, b, op[1])
                return
            m.set(b + F_FRAMES, S[b + F_FRAMES] + ((0, rt, pc + 1),))
            m.set(b + F_RT, op[1])
            nxt = 0
        elif k == "ret" or k == "iret":
            fr = S[b + F_FRAMES]
            want = 0 if k == "ret" else 1
            if not fr or fr[-1][0] != want:
                self.note("fault", f"{k} without a matching {'call' if want == 0 else 'interrupt'} frame")
                m.set(b + F_IF, 0)
                m.set(b + F_HALT, 1)
                return
            top = fr[-1]
            m.set(b + F_FRAMES, fr[:-1])
            m.set(b + F_RT, top[1])
            nxt = top[2]
            if want == 1:
                m.set(b + F_IF, top[3])
                for i in range(4):
                    m.set(b + F_R0 + i, top[4 + i])
        elif k in ("load", "store", "xchg"):
            self._mem_op(c, b, op)
        elif k == "rdmsr":
            m.set(self.slot(c, b, op[1]), self._rdmsr(c, b, self.val(c, b, op[2])))
        elif k == "wrmsr":
            self._wrmsr(c, b, self.val(c, b, op[1]), self.val(c, b, op[2]))
        elif k == "cli":
            m.set(b + F_IF, 0)
        elif k == "sti":
            m.set(b + F_IF, 1)
        elif k == "irqsave":
            m.set(self.slot(c, b, op[1]), S[b + F_IF])
            m.set(b + F_IF, 0)
        elif k == "irqrestore":
            m.set(b + F_IF, 1 if self.val(c, b, op[1]) else 0)
        elif k == "hlt":
            m.set(b + F_HALT, 1)
        elif k == "safe_halt":
            m.set(b + F_IF, 1)
            m.set(b + F_HALT, 1)
        elif k == "ipi":
            self._send_ipi(c, self.val(c, b, op[1]), self.val(c, b, op[2]))
        elif k == "alloc":
            pfn = S[L.gindex["alloc_next"]]
            m.set(L.gindex["alloc_next"], pfn + 1)
            zero = op[2]
            m.new_page(pfn, bytes(PAGE_SIZE) if zero else garbage_bytes(self.garbage, pfn))
            m.set(self.slot(c, b, op[1]), pfn << PAGE_SHIFT)
            self.note("alloc", pfn, zero)
        elif k == "init_sipi":
            self._init_sipi(self.val(c, b, op[1]))
        m.set(b + F_PC, nxt)
        if exiting and not S[b + F_HALT]:
            self.hv.on_entry(c)

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
            lease = m.S[b + F_HV]
            m.write_mem(space, addr, size, new)
            self.hv.on_mem_write(c, space, addr, size, old, new & ((1 << 8 * size) - 1))
            if k == "xchg" and (old & 1) and not lease and (addr & (PAGE_SIZE - 1)) == 0:
                # bit0 read as 1 with no assist lease held by the hypervisor: an EOI the
                # guest skips that nobody performs (the seed bug's mechanism).
                self.note("stale_assist", space, addr, old)
        if k != "store":
            m.set(self.slot(c, b, op[1]), old)

    def _rdmsr(self, c: int, b: int, msr: int) -> int:
        off = MSR_OFF.get(msr)
        if off is None or msr in MSR_WRITE_ONLY:
            self.note("gp", msr, "rdmsr")
            return 0
        if msr == MSR_TPR:
            return self.m.S[b + F_TPR]
        self.note("msr", "rd", msr, self.m.S[b + off])
        return 0 if msr == CONSTANTS["HV_X64_MSR_EOM"] else self.m.S[b + off]

    def _wrmsr(self, c: int, b: int, msr: int, val: int) -> None:
        off = MSR_OFF.get(msr)
        if off is None or msr in MSR_READ_ONLY:
            self.note("gp", msr, "wrmsr")
            return
        if 0x40000090 <= msr <= 0x4000009F and (val & 0xFF) < 16 and not (val >> 16 & 1):
            self.note("gp", msr, "wrmsr")      # TLFS-IPC: SINT vector 0-15 unmasked -> #GP
            return
        self.note("msr", "wr", msr, val)
        if msr == MSR_EOI or msr == MSR_X2APIC_EOI:
            self.apic_eoi(c)
            return
        if msr == MSR_ICR:
            self._send_ipi(c, val >> 32, val & 0xFF)
        if msr == MSR_TPR:
            self.m.set(b + F_TPR, val & 0xFF)
        old = self.m.S[b + off]
        self.m.set(b + off, val)
        if msr == MSR_VP_ASSIST_PAGE:
            if old & 1 and not val & 1:
                self.note("assist_disable", old, val)
            self.hv.on_assist_msr(c, old, val)

    def _send_ipi(self, c: int, dst: int, vec: int) -> None:
        if not 0 <= dst < self.n or not 16 <= vec <= 255:
            self.note("fault", f"IPI to cpu{dst} vector 0x{vec:02x} is invalid")
            return
        self.m.set(0, self.m.S[0] + ((c, dst, vec),))
        self.note("ipi", dst, vec)

    def _deliver(self, c: int) -> None:
        m, S = self.m, self.m.S
        b = self.L.base(c)
        v = self.deliverable(c)
        irr, isr = S[b + F_IRR], S[b + F_ISR]
        m.set(b + F_IRR, irr & ~(1 << v))
        m.set(b + F_ISR, isr | (1 << v))
        frame = (1, S[b + F_RT], S[b + F_PC], S[b + F_IF], S[b + F_R0], S[b + F_R0 + 1], S[b + F_R0 + 2],
                 S[b + F_R0 + 3], v)
        m.set(b + F_FRAMES, S[b + F_FRAMES] + (frame,))
        m.set(b + F_IF, 0)
        m.set(b + F_HALT, 0)
        m.set(b + F_RT, self.idt[v])
        m.set(b + F_PC, 0)
        self.note("deliver", v)
        self.hv.on_deliver(c, v)
        self.hv.on_entry(c)

    def _init_sipi(self, t: int) -> None:
        """INIT then SIPI (SDM 10.4.7.3 / 8.4: INIT resets the local APIC: IRR, ISR, TPR cleared);
        the vCPU restarts at the program's 'ap_restart' routine with IF = 0."""
        if not 0 <= t < self.n:
            self.note("fault", f"INIT/SIPI to missing cpu{t}")
            return
        m = self.m
        b = self.L.base(t)
        for f, v in ((F_IRR, 0), (F_ISR, 0), (F_TPR, 0), (F_IF, 0), (F_HALT, 0), (F_FRAMES, ()),
                     (F_R0, 0), (F_R0 + 1, 0), (F_R0 + 2, 0), (F_R0 + 3, 0),
                     (F_RT, self.rid[self.scn.program.start["ap_restart"]]), (F_PC, 0)):
            m.set(b + f, v)
        self.hv.on_reset(t)
        self.note("init_sipi", t)

    # ---------- running ----------
    def goal_reached(self) -> bool:
        return self.holds(0, self.L.base(0), self.goal)

    def quiescent(self, acts: list[tuple]) -> bool:
        """True when no enabled action changes anything (design §3 hang definition 1)."""
        for a in acts:
            w = self.apply(a)
            if w:
                self.m.undo(w)
                return False
        return True

    def unreachable(self, budget: int = 20_000) -> bool | None:
        """Explore every interleaving from the current state (depth-first, undo by journal).
        True: the reachable set is closed and never meets the goal (a cycle without the goal,
        design §3 hang definition 2); False: goal reachable; None: budget exhausted."""
        m = self.m
        seen = {m.zob}
        stack = [iter(self.enabled())]
        path: list[list] = []
        count = 0
        result: bool | None = True
        while stack:
            a = next(stack[-1], None)
            if a is None:
                stack.pop()
                if path:
                    m.undo(path.pop())
                continue
            w = self.apply(a)
            z = m.zob
            if self.goal_reached():
                result = False
            elif z in seen:
                m.undo(w)
                continue
            else:
                count += 1
                if count > budget:
                    result = None
            if result is not True:
                m.undo(w)
                while path:
                    m.undo(path.pop())
                break
            seen.add(z)
            path.append(w)
            stack.append(iter(self.enabled()))
        self._notes = []
        return result

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
        samples: dict[int, int] = {}
        next_sample = 1024
        backoff = 1
        self._vars_changed = True
        schedule = self.schedule
        scheduled = self.sched_i < len(schedule) or bool(self.replay)
        while True:
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
            last = ev[E_WRITES]
            if ev[E_WRITES]:
                noop = 0
            else:
                noop += 1
                if noop >= 8 and self.sched_i >= len(schedule):
                    if self.quiescent(self.enabled()):
                        return self._result("hang", "quiescent: no enabled action changes the state")
                    last = None
            if self.step >= next_sample:
                next_sample += 1024
                z = self.m.zob
                if z in samples and self.sched_i >= len(schedule):
                    verdict = self.unreachable()
                    last = None
                    if verdict:
                        return self._result("hang", "cycle: every reachable state was explored and none reaches the goal")
                    samples.clear()
                    # an exploration cut by its budget (None) says the reachable set is large:
                    # retrying soon would cost as much for the same answer, so back off
                    backoff = backoff * 2 if verdict is None else 1
                    next_sample += 4096 * min(backoff, 1024)
                if len(samples) > 4096:
                    samples.clear()
                samples[z] = self.step

    def _result(self, outcome: str, reason: str) -> Result:
        self._last_result = r = Result(outcome, self.step, reason, dict(self.stats))
        return r


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


def run_scenario(scenario, cfg: Config) -> tuple[Engine, Result]:
    eng = Engine(scenario, cfg)
    return eng, eng.run()


__all__ = ["Config", "Engine", "Result", "RunError", "FIXES", "parse_garbage", "prng", "act_text",
           "parse_action", "parse_cond", "MSR_NAMES", "RAM"]
