"""Local APIC rules for the engine (mixed into Engine): priorities, delivery, EOI, IRR, IPIs,
INIT/SIPI.

SDM vol.3 10.8, domain-facts §4: priority class = vector >> 4; PPR class = max(TPR class,
highest ISR class); a fixed interrupt is delivered only when IF = 1 and its class > PPR
class; delivery clears the IRR bit and sets the ISR bit; EOI clears the highest ISR bit; a
vector already pending in IRR collapses (one IRR bit per vector). INIT resets IRR, ISR and
TPR (SDM 10.4.7.3 / 8.4).
"""
from __future__ import annotations

from .machine import F_FRAMES, F_HALT, F_IF, F_IRR, F_ISR, F_PC, F_R0, F_RT, F_TPR


class ApicRules:
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
        self.hv.on_eoi(c, v)

    def set_irr(self, c: int, v: int) -> None:
        b = self.L.base(c)
        irr = self.m.S[b + F_IRR]
        if irr >> v & 1:
            self.note("collapse", v)
            return
        self.m.set(b + F_IRR, irr | (1 << v))
        self.hv.on_irr(c, v)

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
        if v not in self.idt:
            # No handler (a what-if injection, a hostile trace): Linux's do_IRQ acks it at once
            # (ack_APIC_irq) and drops it - "No irq handler for vector" (arch/x86/kernel/irq.c).
            # Net effect modelled: the vector leaves IRR, ISR is as before (assumption: the
            # guest's EOI path is not run for it).
            m.set(b + F_IRR, irr & ~(1 << v))
            self.note("deliver", v)
            self.note("fault", f"no handler for vector 0x{v:02x}: do_IRQ acks and drops it")
            return
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
                     (F_RT, self.start_routine("ap_restart")), (F_PC, 0)):
            m.set(b + f, v)
        self.hv.on_reset(t)
        self.note("init_sipi", t)

