"""A static, conservative independence relation between enabled actions, for the explorer's
partial-order reduction (sleep sets, core/explore.py; docs/explore.md "Reductions").

Every action gets a *footprint* at the state where it is enabled: a read mask R and a write
mask W over abstract locations - one bit per state slot (``Machine.S`` index: globals, then
each vCPU's block), one bit MEM for all of guest RAM, page presence, page owners and
overlay / saved pages, and one bit per bounded kind's counter (the explorer's per-path
budget). R covers everything the action's effect, its enabledness and its invariant check
can depend on; W everything it can change. Two actions a, b enabled in the same state are
independent when W(a) meets neither R(b) nor W(b) and W(b) does not meet R(a): then neither
disables the other, and both orders write the same values to the same locations (so they
reach the same state, and each one's journaled writes are the same in both orders). The
goal condition's reads are added to every R, so an action that can change the goal - and
so make a state terminal - is dependent on every other.

Which op is which is decided here, from the op table, and nowhere else:

* LOCAL ops (moves, ALU, branches, wait, cli/sti, irqsave/irqrestore, call/ret/iret) run on
  the fast path or the generic path without any hypervisor hook (none is exiting) and
  write only the executing vCPU's fixed fields (routine, pc, IF, halted, r0-r3, frames)
  and their destination operand's slot (ops.py);
* LOAD reads memory through the hypervisor's ``resolve`` (the vCPU's own MSR slots) and
  writes only its destination and pc (Engine._mem_op);
* STORE/XCHG write memory, then ``on_mem_write`` may change the vCPU's hypervisor field and
  perform an EOI on that vCPU (hypervisors/*.py): W = the vCPU's fixed, APIC, hypervisor
  and MSR slots + MEM;
* every other op (exiting ops: MSR access, HLT, IPIs, INIT/SIPI; alloc/free; kernel
  lifecycle) is dependent on everything.

Operand slots (Engine._operand): kind 0 literal and 5 the cpu id read nothing; 1 is the
vCPU's own slot ``b + off``; 2 the global slot; 4 (``%var[index]``) may be any vCPU's slot
at that offset, plus what the index reads. Anything unknown is everything.
"""
from __future__ import annotations

from .lifecycle import LIFECYCLE_GLOBALS
from .machine import F_FRAMES, F_HALT, F_IF, F_PC, F_R0, F_RT, N_FIXED
from .ops import ALU, OPS, operand_reads

LOCAL_OPS = frozenset(ALU) | {"mov", "br", "jmp", "nop", "wait", "cli", "sti", "irqsave", "irqrestore",
                              "call", "ret", "iret"}
LOAD_OPS = frozenset({"load"})
STORE_OPS = frozenset({"store", "xchg"})
for _n in LOCAL_OPS | LOAD_OPS | STORE_OPS:
    assert _n in OPS and not OPS[_n].exits, _n
# the fields a local op may write (besides its destination): ret/iret restore routine, pc,
# IF and r0-r3 and pop a frame; a fault or a stack overflow sets IF = 0 and halted = 1
LOCAL_FIELDS = (F_RT, F_PC, F_IF, F_HALT, F_R0, F_R0 + 1, F_R0 + 2, F_R0 + 3, F_FRAMES)


class Footprints:
    """Footprints of the actions of one engine (its layout and compiled program)."""

    def __init__(self, eng, bound_kinds: tuple):
        self.e = eng
        L = eng.L
        self.n = eng.n
        self.bases = list(eng.bases)
        size = L.size
        self.MEM = 1 << size
        self.CNT = {k: 1 << (size + 1 + i) for i, k in enumerate(bound_kinds)}
        self.ALL = (1 << (size + 1 + len(bound_kinds))) - 1
        self.INFLIGHT = 1                                    # S[0]: the IPIs in flight
        # the globals the APIC rules and hypervisor hooks read: the kernel generation (the
        # hv-writes-owned check, Lifecycle.on_hv_write) and the other lifecycle globals
        self.LC = sum(1 << L.gindex[g] for g in LIFECYCLE_GLOBALS)
        n_msr = len(L.msr_list)
        self.block = L.block
        # per vCPU: fixed fields a local op may write; the fixed + MSR slots the APIC rules
        # and hypervisor hooks of that vCPU may touch (never a per-CPU kernel variable)
        self.local = [sum(1 << (b + f) for f in LOCAL_FIELDS) for b in self.bases]
        self.hw = [sum(1 << (b + f) for f in range(N_FIXED + n_msr)) for b in self.bases]
        self.timer_slot = [1 << (b + L.P_TIMER) for b in self.bases]
        self.goal = self._cond_reads(eng.goal, 0)
        self._ops: dict = {}          # (cpu, routine, pc) -> (R, W)
        self._other: dict = {}        # action -> (R, W)

    # -- operands
    def _operand(self, o: tuple, c: int) -> tuple[int, int]:
        """(slots read to evaluate operand o on vCPU c, slots it names as a destination)."""
        k = o[0]
        if k in (0, 5):
            return 0, 0
        bases = self.bases
        if k == 1:
            named = 1 << (bases[c] + o[1])
        elif k == 2:
            named = 1 << o[1]
        elif k == 4:
            named = sum(1 << (b + o[1]) for b in bases)
        else:
            return self.ALL, self.ALL
        return _mask(operand_reads(o, bases[c], bases)), named

    def _dest(self, o: tuple, c: int) -> tuple[int, int]:
        """(reads, writes) of a destination operand: an indexed one reads its index."""
        if o[0] == 4:
            return self._operand(o[2], c)[0], self._operand(o, c)[1]
        return 0, self._operand(o, c)[1]

    def _cond_reads(self, cond: tuple, c: int) -> int:
        r = 0
        for _f, x, y in cond:
            r |= self._operand(x, c)[0] | self._operand(y, c)[0]
        return r

    # -- ops
    def _op(self, c: int, rt: int, pc: int) -> tuple[int, int]:
        ops = self.e.code[rt]
        b = self.bases[c]
        if pc >= len(ops):                        # falls off the routine: a fault, IF = 0, halted
            w = self.local[c]
            return w | self.goal, w
        op = ops[pc]
        name = op[0]
        spec = OPS[name]
        shape = spec.shape
        r = w = 0
        if name in LOCAL_OPS:
            w = self.local[c]
            r = w
        elif name in LOAD_OPS:
            w = (1 << (b + F_PC))
            r = self.hw[c] | self.MEM | self.LC
        elif name in STORE_OPS:
            w = self.hw[c] | self.MEM
            r = w | self.LC
        else:
            return self.ALL, self.ALL
        for kind, a in zip(shape, op[1:]):
            if kind == "d":
                rr, ww = self._dest(a, c)
                r |= rr
                w |= ww
            elif kind in "sm":
                r |= self._operand(a, c)[0]
            elif kind == "c":
                r |= self._cond_reads(a, c)
        return r | self.goal, w

    def of(self, a: tuple) -> tuple[int, int]:
        """(R, W) of action `a`, enabled in the engine's current state."""
        k = a[0]
        if k == "op":
            c = a[1]
            S = self.e.m.S
            b = self.bases[c]
            key = (c, S[b + F_RT], S[b + F_PC])
            fp = self._ops.get(key)
            if fp is None:
                fp = self._ops[key] = self._op(*key)
            return fp
        fp = self._other.get(a)
        if fp is None:
            fp = self._other[a] = self._action(a)
        return fp

    def fast_of(self):
        """`of` as a closure over this engine's machine (fewer lookups in the explorer's loop)."""
        m = self.e.m
        bases, ops, other, op, action = self.bases, self._ops, self._other, self._op, self._action

        def of(a: tuple) -> tuple[int, int]:
            if a[0] == "op":
                c = a[1]
                b = bases[c]
                S = m.S
                key = (c, S[b + F_RT], S[b + F_PC])
                fp = ops.get(key)
                if fp is None:
                    fp = ops[key] = op(*key)
                return fp
            fp = other.get(a)
            if fp is None:
                fp = other[a] = action(a)
            return fp
        return of

    def _action(self, a: tuple) -> tuple[int, int]:
        k = a[0]
        if k == "deliver":             # APIC delivery + on_deliver/on_entry of that vCPU (hv writes memory)
            w = self.hw[a[1]] | self.MEM
            return w | self.LC | self.goal, w
        if k == "timer":               # set_irr + on_irr of that vCPU; enabled by its %timer; counted
            w = self.hw[a[1]] | self.MEM | self.CNT.get("timer", 0)
            return w | self.timer_slot[a[1]] | self.LC | self.goal, w
        if k == "land":                # the in-flight list, then set_irr + on_irr of the destination
            w = self.INFLIGHT | self.hw[a[2]] | self.MEM
            return w | self.LC | self.goal, w
        if k == "traffic":
            return self._traffic(a)
        return self.ALL, self.ALL

    def _traffic(self, a: tuple) -> tuple[int, int]:
        """A background send (Scheduler._traffic_dst, Engine.apply): enabled by the source's
        halted/IF/online, its budget, its condition, the destinations' online and the IPIs in
        flight; writes its round-robin and budget slots, the in-flight list and its counter."""
        e = self.e
        r = w = 0
        found = False
        for t in e.traffic:
            if t.src != a[1] or t.vector != a[3]:
                continue
            found = True
            w |= (1 << t.slot_rr) | (1 << t.slot_budget) | self.INFLIGHT
            r |= _mask(e._traffic_reads(t))
        if not found:
            return self.ALL, self.ALL
        w |= self.CNT.get("traffic", 0)
        return r | w | self.goal, w

    def write_mask(self, writes, a: tuple) -> int:
        """The locations a journaled write list touched (for checking W in tests)."""
        x = 0
        for loc, _old, _new in writes:
            x |= (1 << loc) if loc.__class__ is int else self.MEM
        return x | self.CNT.get(a[0], 0)


def _mask(slots) -> int:
    return sum(1 << i for i in slots)
