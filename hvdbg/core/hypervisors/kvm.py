"""KVM: its emulation of Hyper-V's EOI assist on top of PV EOI (domain-facts §3.1, §3.2).

No overlay: ``apic_assist`` lives in guest RAM and bit0 is a one-run lease.

* WRMSR VP_ASSIST_PAGE enable=1: ``__put_user(0, apic_assist)`` (only the u32 field,
  since 12e0c6186ba4), then PV EOI is on for that GPA; enable=0: PV EOI off, memory
  untouched (KVM-HV kvm_hv_set_msr).
* before entry: set bit0 (one byte, pv_eoi_put_user) and the host flag only if PV EOI
  is on, IRR is empty and exactly one vector is in service (KVM-LAPIC
  apic_sync_pv_eoi_to_guest; ``hv`` slot = the flag).
* on every exit, before the exit handler: if the flag is set, read bit0; still 1 ->
  write 0, no EOI; 0 -> the guest consumed it -> KVM performs the EOI (kvm_pv_eoi
  tracepoint). Flag cleared (KVM-X86: sync_from_vapic precedes handle_exit).
* a remote IRR update kicks a running vCPU: an exit (sync) and re-entry.
Exiting ops are the op table's ``exits`` flag (ops.py).
"""
from __future__ import annotations

from ..machine import F_HALT, F_HV, F_IRR, F_ISR, RAM
from . import HypervisorSpec, register
from .base import HypervisorModel, SharedPage
from .hyperv import APIC_ASSIST_OFF, MSR_VP_ASSIST_PAGE, VP_ASSIST, VP_ASSIST_ENABLE, _assist_gpa


class KVM(HypervisorModel):
    name = "kvm"
    structures = (VP_ASSIST,)

    def __init__(self, eng, cfg):
        super().__init__(eng, cfg)
        self._msr_off = self.L.msr_off[MSR_VP_ASSIST_PAGE]

    def _pv_gpa(self, cpu: int) -> int:
        v = self.m.S[self.L.base(cpu) + self._msr_off]
        return _assist_gpa(v) if v & VP_ASSIST_ENABLE else -1

    def on_entry(self, cpu: int) -> None:
        b = self.L.base(cpu)
        S = self.m.S
        gpa = self._pv_gpa(cpu)
        if gpa < 0 or S[b + F_IRR] or S[b + F_HV]:
            return
        isr = S[b + F_ISR]
        if isr and not (isr & (isr - 1)):
            if self.m.read_mem(RAM, gpa, 1) is None:
                return
            self.hv_write(cpu, "vp_assist", RAM, gpa, 1, 1, gpa)
            self.m.set(b + F_HV, 1)
            self.e.note("hv", f"pv-eoi: bit0 set before entry (one vector 0x{isr.bit_length() - 1:02x} in service, IRR empty)")

    def on_exit(self, cpu: int) -> None:
        b = self.L.base(cpu)
        if not self.m.S[b + F_HV]:
            return
        gpa = self._pv_gpa(cpu)
        self.m.set(b + F_HV, 0)
        if gpa < 0:
            return
        val = self.m.read_mem(RAM, gpa, 1)
        if val is None:
            return
        if val & 1:
            self.hv_write(cpu, "vp_assist", RAM, gpa, 1, val & ~1, gpa)
            self.e.note("hv", "pv-eoi: exit with bit0 still set - cleared, no EOI")
        else:
            self.e.apic_eoi(cpu, implied=True)

    def on_irr(self, cpu: int, vec: int) -> None:
        if not self.m.S[self.L.base(cpu) + F_HALT]:
            self.on_exit(cpu)     # kick: exit then re-entry
            self.on_entry(cpu)

    def on_msr_write(self, cpu: int, msr: int, old: int, new: int) -> None:
        if msr != MSR_VP_ASSIST_PAGE:
            return
        if old & VP_ASSIST_ENABLE and not new & VP_ASSIST_ENABLE:
            self.e.note("page_disable", "vp_assist", cpu, old, new)
        if new & VP_ASSIST_ENABLE:
            gpa = _assist_gpa(new)
            if not self.hv_write(cpu, "vp_assist", RAM, gpa + APIC_ASSIST_OFF, 4, 0, gpa):
                self.e.note("hv", f"VP assist GPA 0x{gpa:x} has no RAM behind it")
            else:
                self.e.note("hv", f"pv-eoi enabled at 0x{gpa:x}: apic_assist zeroed (__put_user(0))")
        else:
            self.m.set(self.L.base(cpu) + F_HV, 0)
            self.e.note("hv", "pv-eoi disabled: guest memory untouched")

    def on_reset(self, cpu: int) -> None:
        self.m.set(self.L.base(cpu) + F_HV, 0)

    def shared_pages(self, cpu: int, m=None) -> list[SharedPage]:
        v = (m or self.m).S[self.L.base(cpu) + self._msr_off]
        return [SharedPage(VP_ASSIST, MSR_VP_ASSIST_PAGE, _assist_gpa(v) if v else -1, bool(v & VP_ASSIST_ENABLE), RAM,
                           "guest RAM (KVM has no overlay)")]


register(HypervisorSpec("kvm", KVM, "KVM's Hyper-V emulation: apic_assist in guest RAM, PV EOI one-run lease"))
