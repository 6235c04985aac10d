"""The guest op table: every op defined once - its operand shape, whether it is a VM exit,
how it executes, and (for the hot ones) a fast path - like py65's ``@instruction``.

Shapes (the grammar in program.py is derived from them): d = destination operand,
s = source operand, m = memory [operand], z = size, c = condition, l = label, f = routine,
k = zero|nozero, p = an optional page purpose (a name: vp_assist, slab, ...).

``execute(eng, c, b, op, pc)`` runs compiled op `op` on vCPU `c` (slot base `b`) at `pc`
and returns the next pc, or None when the op already decided what happens (a fault that
stops the vCPU, a ret/iret or a transition that set the pc itself). ``fast(eng, op, pc)``
may return a closure ``f(c, b)`` doing exactly the same writes in the same order (the
engine uses it when present). Exiting ops (``exits=True``) are VM exits: the hypervisor
model's ``on_exit`` runs before them and ``on_entry`` after (domain-facts §3.2: MSR
accesses and HLT always exit on KVM/VMX; sending an IPI writes the ICR MSR or issues a
hypercall - both exit).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

from .defs import PAGE_SHIFT, PAGE_SIZE
from .machine import F_FRAMES, F_HALT, F_IF, F_PC, F_R0, F_RT

MASK64 = (1 << 64) - 1
# A kernel stack holds a bounded number of frames; deeper nesting is a stack overflow (the
# vCPU takes a fault and stops, see Engine._overflow). 64 call frames is far above any
# listing's real depth and keeps the per-event frame tuples small.
MAX_CALL_DEPTH = 64

CMP = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}
# Shift counts are masked to 6 bits as x86-64 SHL/SHR do (SDM vol.2 "SAL/SAR/SHL/SHR": the count
# is masked to 6 bits in 64-bit mode), so a listing cannot ask for a negative or huge shift.
ALU = {"add": operator.add, "sub": operator.sub, "and": operator.and_, "or": operator.or_,
       "xor": operator.xor, "shl": lambda a, b: a << (b & 63), "shr": lambda a, b: a >> (b & 63),
       "andn": lambda a, b: a & ~b, "eq": lambda a, b: int(a == b), "ne": lambda a, b: int(a != b),
       "lt": lambda a, b: int(a < b), "ge": lambda a, b: int(a >= b)}


@dataclass(frozen=True)
class OpSpec:
    name: str
    shape: str
    exits: bool
    doc: str
    execute: Callable
    fast: Callable | None = None
    optional: int = 0          # trailing operands that may be left out


OPS: dict[str, OpSpec] = {}


def op(name: str, shape: str = "", exits: bool = False, doc: str = "", fast=None, optional: int = 0):
    def deco(fn):
        OPS[name] = OpSpec(name, shape, exits, doc, fn, fast, optional)
        return fn
    return deco


def exiting_ops() -> frozenset:
    return frozenset(n for n, s in OPS.items() if s.exits)


def compile_op(eng, o, routine) -> tuple:
    """A listing op -> the tuple the engine executes: (name, *compiled operands)."""
    spec = OPS[o.opcode]
    out: list = [o.opcode]
    for kind, a in zip(spec.shape, o.args):
        if kind in "dsm":
            out.append(eng._operand(a))
        elif kind == "c":
            out.append(eng._cond(a))
        elif kind == "l":
            out.append(routine.labels[a])
        elif kind == "f":
            out.append(eng.rid[a])
        else:                       # z, k, p: literals
            out.append(a)
    return tuple(out)


def operand_reads(o: tuple, b: int, bases: list[int]) -> set[int]:
    """The state slots a compiled operand (Engine._operand: 0 immediate, 1 per-CPU slot of
    the vCPU at base b, 2 global, 4 another vCPU's per-CPU slot by index, 5 the cpu number)
    reads when evaluated on the vCPU at base b."""
    k = o[0]
    if k == 1:
        return {b + o[1]}
    if k == 2:
        return {o[1]}
    if k == 4:
        return {base + o[1] for base in bases} | operand_reads(o[2], b, bases)
    return set()


# ---------------------------------------------------------------- fast-path helpers
def getter(o: tuple):
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


def fast_cond(cond: tuple):
    parts = []
    for f, x, y in cond:
        gx, gy = getter(x), getter(y)
        if gx is None or gy is None:
            return None
        parts.append((f, gx, gy))
    if len(parts) == 1:
        (f, gx, gy), = parts
        return lambda S, c, b: f(gx(S, c, b), gy(S, c, b))
    return lambda S, c, b: all(f(gx(S, c, b), gy(S, c, b)) for f, gx, gy in parts)


# ---------------------------------------------------------------- data movement and arithmetic
def _fast_move(eng, op, pc):
    m = eng.m
    mset = m.set
    nxt = pc + 1
    dst = op[1]
    if dst[0] not in (1, 2):
        return None
    doff = dst[1]
    rel = dst[0] == 1
    if op[0] == "mov":
        g = getter(op[2])
        if g is None:
            return None

        def compute(S, c, b):
            return g(S, c, b)
    else:
        ga, gb, fn = getter(op[2]), getter(op[3]), ALU[op[0]]
        if ga is None or gb is None:
            return None

        def compute(S, c, b):
            return fn(ga(S, c, b), gb(S, c, b)) & MASK64
    if rel:
        def f(c, b):
            mset(b + doff, compute(m.S, c, b))
            mset(b + F_PC, nxt)
    else:
        def f(c, b):
            mset(doff, compute(m.S, c, b))
            mset(b + F_PC, nxt)
    return f


@op("mov", "ds", doc="DST = SRC", fast=_fast_move)
def _mov(eng, c, b, op, pc):
    eng.m.set(eng.slot(c, b, op[1]), eng.val(c, b, op[2]))
    return pc + 1


def _alu(name):
    fn = ALU[name]

    def execute(eng, c, b, op, pc):
        eng.m.set(eng.slot(c, b, op[1]), fn(eng.val(c, b, op[2]), eng.val(c, b, op[3])) & MASK64)
        return pc + 1
    return execute


for _n in ALU:
    op(_n, "dss", doc=f"DST = A {_n} B (64-bit)", fast=_fast_move)(_alu(_n))


# ---------------------------------------------------------------- control flow
def _fast_br(eng, op, pc):
    cond = fast_cond(op[1])
    if cond is None:
        return None
    m, mset, tgt, nxt = eng.m, eng.m.set, op[2], pc + 1

    def f(c, b):
        mset(b + F_PC, tgt if cond(m.S, c, b) else nxt)
    return f


@op("br", "cl", doc="branch to LABEL when COND holds", fast=_fast_br)
def _br(eng, c, b, op, pc):
    return op[2] if eng.holds(c, b, op[1]) else pc + 1


def _fast_jmp(eng, op, pc):
    mset, tgt = eng.m.set, op[1]

    def f(c, b):
        mset(b + F_PC, tgt)
    return f


@op("jmp", "l", doc="jump to LABEL", fast=_fast_jmp)
def _jmp(eng, c, b, op, pc):
    return op[1]


def _fast_next(eng, op, pc):
    mset, nxt = eng.m.set, pc + 1

    def f(c, b):
        mset(b + F_PC, nxt)
    return f


@op("nop", doc="nothing", fast=_fast_next)
def _nop(eng, c, b, op, pc):
    return pc + 1


@op("wait", "c", doc="block until COND holds (spin / wait_for_completion); enabled only when it holds", fast=_fast_next)
def _wait(eng, c, b, op, pc):
    return pc + 1


def _fast_call(eng, op, pc):
    m, mset, tgt, nxt = eng.m, eng.m.set, op[1], pc + 1
    overflow = eng._overflow

    def f(c, b):
        S = m.S
        fr = S[b + F_FRAMES]
        if len(fr) >= MAX_CALL_DEPTH:
            overflow(c, b, tgt)
            return
        mset(b + F_FRAMES, fr + ((0, S[b + F_RT], nxt),))
        mset(b + F_RT, tgt)
        mset(b + F_PC, 0)
    return f


@op("call", "f", doc="call ROUTINE", fast=_fast_call)
def _call(eng, c, b, op, pc):
    S = eng.m.S
    if len(S[b + F_FRAMES]) >= MAX_CALL_DEPTH:
        eng._overflow(c, b, op[1])
        return None
    eng.m.set(b + F_FRAMES, S[b + F_FRAMES] + ((0, S[b + F_RT], pc + 1),))
    eng.m.set(b + F_RT, op[1])
    return 0


def _return(kind: str):
    want = 0 if kind == "ret" else 1

    def execute(eng, c, b, op, pc):
        m, S = eng.m, eng.m.S
        fr = S[b + F_FRAMES]
        if not fr or fr[-1][0] != want:
            eng.note("fault", f"{kind} without a matching {'call' if want == 0 else 'interrupt'} frame")
            m.set(b + F_IF, 0)
            m.set(b + F_HALT, 1)
            return None
        top = fr[-1]
        m.set(b + F_FRAMES, fr[:-1])
        m.set(b + F_RT, top[1])
        if want == 1:
            m.set(b + F_IF, top[3])
            for i in range(4):
                m.set(b + F_R0 + i, top[4 + i])
        return top[2]
    return execute


op("ret", doc="return from a call")(_return("ret"))
op("iret", doc="return from an interrupt handler (restores IF and r0-r3)")(_return("iret"))


# ---------------------------------------------------------------- interrupts flag, halt
def _fast_if(val):
    def fast(eng, op, pc):
        mset, nxt = eng.m.set, pc + 1

        def f(c, b):
            mset(b + F_IF, val)
            mset(b + F_PC, nxt)
        return f
    return fast


@op("cli", doc="IF = 0 (local_irq_disable)", fast=_fast_if(0))
def _cli(eng, c, b, op, pc):
    eng.m.set(b + F_IF, 0)
    return pc + 1


@op("sti", doc="IF = 1 (local_irq_enable)", fast=_fast_if(1))
def _sti(eng, c, b, op, pc):
    eng.m.set(b + F_IF, 1)
    return pc + 1


@op("irqsave", "d", doc="DST = IF; IF = 0 (local_irq_save)")
def _irqsave(eng, c, b, op, pc):
    eng.m.set(eng.slot(c, b, op[1]), eng.m.S[b + F_IF])
    eng.m.set(b + F_IF, 0)
    return pc + 1


@op("irqrestore", "s", doc="IF = SRC != 0 (local_irq_restore)")
def _irqrestore(eng, c, b, op, pc):
    eng.m.set(b + F_IF, 1 if eng.val(c, b, op[1]) else 0)
    return pc + 1


@op("hlt", exits=True, doc="halt until an interrupt")
def _hlt(eng, c, b, op, pc):
    eng.m.set(b + F_HALT, 1)
    return pc + 1


@op("safe_halt", exits=True, doc="sti; hlt with the STI shadow (one op)")
def _safe_halt(eng, c, b, op, pc):
    eng.m.set(b + F_IF, 1)
    eng.m.set(b + F_HALT, 1)
    return pc + 1


# ---------------------------------------------------------------- memory
def _mem(kind):
    def execute(eng, c, b, op, pc):
        eng._mem_op(c, b, op)
        return pc + 1
    return execute


op("load", "dmz", doc="little-endian load of SIZE (1,2,4,8) bytes")(_mem("load"))
op("store", "mzs", doc="store SIZE bytes")(_mem("store"))
op("xchg", "dmzs", doc="atomic exchange (Linux xchg())")(_mem("xchg"))


@op("alloc", "dkp", optional=1, doc="__vmalloc(PAGE_SIZE) with or without __GFP_ZERO; PURPOSE names what the "
                                     "page is for (its owner in the running kernel)")
def _alloc(eng, c, b, op, pc):
    m, S, L = eng.m, eng.m.S, eng.L
    pfn = S[L.gindex["alloc_next"]]
    m.set(L.gindex["alloc_next"], pfn + 1)
    zero = op[2]
    m.new_page(pfn, bytes(PAGE_SIZE) if zero else eng.garbage_page(pfn))
    purpose = op[3] if len(op) > 3 else None
    if purpose is not None:
        eng.set_owner(pfn, purpose, c)
    m.set(eng.slot(c, b, op[1]), pfn << PAGE_SHIFT)
    eng.note("alloc", pfn, zero)
    return pc + 1


@op("free", "s", doc="free_page / vfree: the page at address SRC goes back to the allocator (its owner becomes free)")
def _free(eng, c, b, op, pc):
    addr = eng.val(c, b, op[1])
    if addr > 0:
        eng.set_owner(addr >> PAGE_SHIFT, "free", -1)
        eng.note("free", addr >> PAGE_SHIFT)
    return pc + 1


# ---------------------------------------------------------------- MSRs, IPIs, INIT/SIPI
@op("rdmsr", "ds", exits=True, doc="DST = MSR (unknown or write-only MSR: #GP)")
def _rdmsr(eng, c, b, op, pc):
    eng.m.set(eng.slot(c, b, op[1]), eng._rdmsr(c, b, eng.val(c, b, op[2])))
    return pc + 1


@op("wrmsr", "ss", exits=True, doc="MSR = SRC (unknown or read-only MSR: #GP)")
def _wrmsr(eng, c, b, op, pc):
    eng._wrmsr(c, b, eng.val(c, b, op[1]), eng.val(c, b, op[2]))
    return pc + 1


@op("ipi", "ss", exits=True, doc="apic->send_IPI(cpu, vector)")
def _ipi(eng, c, b, op, pc):
    eng._send_ipi(c, eng.val(c, b, op[1]), eng.val(c, b, op[2]))
    return pc + 1


@op("init_sipi", "s", exits=True, doc="INIT/SIPI the CPU (reset; it starts at the program's ap_restart routine)")
def _init_sipi(eng, c, b, op, pc):
    eng._init_sipi(eng.val(c, b, op[1]))
    return pc + 1


# ---------------------------------------------------------------- kernel lifecycle (lifecycle.py)
@op("kexec", doc="kexec: this vCPU jumps into a new kernel generation (start role bsp, IRQs off); the other "
                 "vCPUs are parked until INIT/SIPI; hypervisor state survives")
def _kexec(eng, c, b, op, pc):
    eng._kexec(c)
    return None


@op("power_cycle", doc="the VM powers off and boots again: partition reset, a new kernel generation on every vCPU")
def _power_cycle(eng, c, b, op, pc):
    eng._power_cycle(c)
    return None


@op("save_image", doc="swsusp: save the running kernel's image (variables, page owners, owned pages)")
def _save_image(eng, c, b, op, pc):
    eng._save_image(c)
    return pc + 1


@op("restore_image", "f", doc="restore the saved image's kernel and continue at ROUTINE with IRQs off "
                              "(restore_registers returning into create_image)")
def _restore_image(eng, c, b, op, pc):
    eng._restore_image(c, op[1])
    return None

