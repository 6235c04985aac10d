"""KVM: its own paravirtual features and its emulation of Hyper-V's EOI assist.

Sources: KVM-LAPIC / KVM-X86 / KVM-HV / KVM-MSR (domain-facts §3), and arch/x86/kvm at v5.12
(lapic.c, x86.c) as read for the kvm-pv-hibernation pack (docs/bugs/kvm-pv-hibernation.md).

Guest memory KVM writes, each behind an MSR that holds a guest physical address + enable:

* **PV EOI** (MSR_KVM_PV_EOI_EN 0x4b564d04, a 4-byte aligned word; Hyper-V's
  HV_X64_MSR_VP_ASSIST_PAGE sets the same state, pointing at apic_assist - kvm_hv_set_msr
  → kvm_lapic_set_pv_eoi). Before entry (apic_sync_pv_eoi_to_guest, lapic.c:2709-2727):
  if PV EOI is on, IRR is empty (irr_pending false), ``highest_isr_cache`` is valid (a
  vector was injected since the last EOI: apic_set_isr sets it, apic_clear_isr resets it
  to -1) - write 1 into the byte and set the pending flag. On every exit, before the
  handler (apic_sync_pv_eoi_from_guest, lapic.c:2656-2684; x86.c:9274): if pending, read
  the byte: still 1 → write 0, no EOI; 0 → the guest consumed it → KVM performs the EOI.
  The flag is cleared either way. A remote IRR update kicks a running vCPU (exit + entry).
  The VP-assist path zeroes apic_assist (``__put_user(0)``, u32, since 12e0c6186ba4) before
  enabling; the KVM MSR path leaves memory alone (the guest zeroes its word first).
* **Steal time** (MSR_KVM_STEAL_TIME 0x4b564d03, 64-byte struct kvm_steal_time):
  record_steal_time (x86.c:2988-3040) runs before entry after each vcpu_load
  (KVM_REQ_STEAL_UPDATE, x86.c:4044, 9028) and bumps ``version`` by 2 and ``steal``.
  Reduced: the model writes ``version`` += 2 (u32 at offset 8) at every VM entry - more
  often than real KVM (vcpu_load is per KVM_RUN / reschedule), which only matters for how
  soon a stale registration is written to.
* **Async PF** (MSR_KVM_ASYNC_PF_EN 0x4b564d02): KVM writes the reason/token only when an
  async page fault happens; the model has no host page faults, so it never writes there
  (reduced; the MSR is still set and torn down).

INIT (kvm_vcpu_reset, x86.c:10309-10313; kvm_lapic_reset → pv_eoi.msr_val = 0,
lapic.c:2354) clears all three MSRs and the pending state. Writing an MSR with the enable
bit clear stops the writes; memory is untouched. Exiting ops are the op table's ``exits``.
"""
from __future__ import annotations

from ..machine import F_HALT, F_HV, F_IRR, RAM
from ..msr import MsrSpec, register_msr
from . import HypervisorSpec, register
from .base import HypervisorModel, SharedPage, Structure
from .hyperv import APIC_ASSIST_OFF, MSR_VP_ASSIST_PAGE, VP_ASSIST, VP_ASSIST_ENABLE, _assist_gpa

MSR_KVM_ASYNC_PF_EN = 0x4B564D02
MSR_KVM_STEAL_TIME = 0x4B564D03
MSR_KVM_PV_EOI_EN = 0x4B564D04
KVM_MSR_ENABLED = 1


def _pa(v: int) -> str:
    return f"enable={v & 1} gpa={v & ~0x3:#x}"


for _num, _name in ((MSR_KVM_ASYNC_PF_EN, "MSR_KVM_ASYNC_PF_EN"), (MSR_KVM_STEAL_TIME, "MSR_KVM_STEAL_TIME"),
                    (MSR_KVM_PV_EOI_EN, "MSR_KVM_PV_EOI_EN")):
    register_msr(MsrSpec(_num, _name, effect="model", decode=_pa, source="Documentation/virt/kvm/msr.rst",
                         eoi_hint=_num == MSR_KVM_PV_EOI_EN))

PV_EOI = Structure("pv_eoi", "PV EOI word", 4, ((0, 4, "kvm_apic_eoi"),), source="KVM-MSR MSR_KVM_PV_EOI_EN")
STEAL_TIME = Structure("steal_time", "steal time", 64, ((0, 8, "steal"), (8, 4, "version"), (12, 4, "flags"),
                                                        (16, 1, "preempted")), source="struct kvm_steal_time")
APF_REASON = Structure("apf_reason", "async PF reason", 64, ((0, 4, "flags"), (4, 4, "token")),
                       source="struct kvm_vcpu_pv_apf_data")

PENDING, ISR_CACHE = 1, 2        # bits of the private `hv` slot: PV EOI pending flag, highest_isr_cache valid


class KVM(HypervisorModel):
    name = "kvm"
    structures = (VP_ASSIST, PV_EOI, STEAL_TIME, APF_REASON)

    def __init__(self, eng, cfg):
        super().__init__(eng, cfg)
        off = self.L.msr_off
        self._vp, self._eoi = off[MSR_VP_ASSIST_PAGE], off[MSR_KVM_PV_EOI_EN]
        self._st, self._apf = off[MSR_KVM_STEAL_TIME], off[MSR_KVM_ASYNC_PF_EN]

    def _pv(self, cpu: int, m=None) -> tuple[int, str]:
        """(GPA of the PV EOI byte or -1, the structure it belongs to)."""
        S, b = (m or self.m).S, self.L.base(cpu)
        v = S[b + self._eoi]
        if not v & KVM_MSR_ENABLED:
            return -1, ""
        gpa = v & ~0x3
        vp = S[b + self._vp]
        return gpa, "vp_assist" if vp & VP_ASSIST_ENABLE and _assist_gpa(vp) == gpa else "pv_eoi"

    def hint_armed(self, cpu: int) -> bool:
        return bool(self.m.S[self.L.base(cpu) + F_HV] & PENDING)

    def on_deliver(self, cpu: int, vec: int) -> None:
        b = self.L.base(cpu)
        self.m.set(b + F_HV, self.m.S[b + F_HV] | ISR_CACHE)      # apic_set_isr: highest_isr_cache = vec

    def on_eoi(self, cpu: int, vec: int) -> None:
        b = self.L.base(cpu)
        self.m.set(b + F_HV, self.m.S[b + F_HV] & ~ISR_CACHE)     # apic_clear_isr: highest_isr_cache = -1

    def on_entry(self, cpu: int) -> None:
        b = self.L.base(cpu)
        S = self.m.S
        st = S[b + self._st]
        if st & KVM_MSR_ENABLED:                                   # record_steal_time
            gpa = st & ~0x3F
            ver = self.m.read_mem(RAM, gpa + 8, 4)
            if ver is not None:
                self.hv_write(cpu, "steal_time", RAM, gpa + 8, 4, (ver + 2) & 0xFFFFFFFF, gpa)
        gpa, structure = self._pv(cpu)
        h = S[b + F_HV]
        if gpa < 0 or S[b + F_IRR] or h & PENDING or not h & ISR_CACHE:
            return
        if self.m.read_mem(RAM, gpa, 1) is None:
            return
        self.hv_write(cpu, structure, RAM, gpa, 1, 1, gpa)
        self.m.set(b + F_HV, h | PENDING)
        self.e.note("hv", "pv-eoi: bit0 set before entry (a vector injected since the last EOI, IRR empty)")

    def on_exit(self, cpu: int) -> None:
        b = self.L.base(cpu)
        h = self.m.S[b + F_HV]
        if not h & PENDING:
            return
        gpa, structure = self._pv(cpu)
        self.m.set(b + F_HV, h & ~PENDING)
        if gpa < 0:
            return
        val = self.m.read_mem(RAM, gpa, 1)
        if val is None:
            return
        if val & 1:
            self.hv_write(cpu, structure, RAM, gpa, 1, val & ~1, gpa)
            self.e.note("hv", "pv-eoi: exit with bit0 still set - cleared, no EOI")
        else:
            self.e.apic_eoi(cpu, implied=True)

    def on_irr(self, cpu: int, vec: int) -> None:
        if not self.m.S[self.L.base(cpu) + F_HALT]:
            self.on_exit(cpu)     # kick: exit then re-entry
            self.on_entry(cpu)

    def on_msr_write(self, cpu: int, msr: int, old: int, new: int) -> None:
        b = self.L.base(cpu)
        if msr == MSR_VP_ASSIST_PAGE:
            if old & VP_ASSIST_ENABLE and not new & VP_ASSIST_ENABLE:
                self.e.note("page_disable", "vp_assist", cpu, old, new)
            if new & VP_ASSIST_ENABLE:
                gpa = _assist_gpa(new)
                if not self.hv_write(cpu, "vp_assist", RAM, gpa + APIC_ASSIST_OFF, 4, 0, gpa):
                    self.e.note("hv", f"VP assist GPA 0x{gpa:x} has no RAM behind it")
                    return
                self.m.set(b + self._eoi, gpa | KVM_MSR_ENABLED)          # kvm_lapic_set_pv_eoi
                self.e.note("hv", f"pv-eoi enabled at 0x{gpa:x}: apic_assist zeroed (__put_user(0))")
            else:
                self.m.set(b + self._eoi, 0)
                self.m.set(b + F_HV, self.m.S[b + F_HV] & ~PENDING)
                self.e.note("hv", "pv-eoi disabled: guest memory untouched")
        elif msr in (MSR_KVM_PV_EOI_EN, MSR_KVM_STEAL_TIME, MSR_KVM_ASYNC_PF_EN):
            name = {MSR_KVM_PV_EOI_EN: "pv_eoi", MSR_KVM_STEAL_TIME: "steal_time", MSR_KVM_ASYNC_PF_EN: "apf_reason"}[msr]
            if old & KVM_MSR_ENABLED and not new & KVM_MSR_ENABLED:
                self.e.note("page_disable", name, cpu, old, new)
            if msr == MSR_KVM_PV_EOI_EN and not new & KVM_MSR_ENABLED:
                self.m.set(b + F_HV, self.m.S[b + F_HV] & ~PENDING)
            self.e.note("hv", f"{name} {'enabled at 0x%x' % (new & ~0x3F) if new & 1 else 'disabled'}")

    def on_reset(self, cpu: int) -> None:
        b = self.L.base(cpu)
        self.m.set(b + F_HV, 0)
        for off in (self._eoi, self._st, self._apf):              # kvm_vcpu_reset / kvm_lapic_reset on INIT
            self.m.set(b + off, 0)

    def shared_pages(self, cpu: int, m=None) -> list[SharedPage]:
        S, b = (m or self.m).S, self.L.base(cpu)
        out = []
        vp = S[b + self._vp]
        if vp or not (S[b + self._eoi] | S[b + self._st]):
            out.append(SharedPage(VP_ASSIST, MSR_VP_ASSIST_PAGE, _assist_gpa(vp) if vp else -1,
                                  bool(vp & VP_ASSIST_ENABLE), RAM, "guest RAM (KVM has no overlay)"))
        v = S[b + self._eoi]
        if v and not (vp & VP_ASSIST_ENABLE and _assist_gpa(vp) == v & ~0x3):
            out.append(SharedPage(PV_EOI, MSR_KVM_PV_EOI_EN, v & ~0x3, bool(v & 1), RAM))
        for off, st, msr in ((self._st, STEAL_TIME, MSR_KVM_STEAL_TIME), (self._apf, APF_REASON, MSR_KVM_ASYNC_PF_EN)):
            v = S[b + off]
            if v:
                out.append(SharedPage(st, msr, v & ~0x3F, bool(v & 1), RAM))
        return out


register(HypervisorSpec("kvm", KVM, "KVM: PV EOI (also behind Hyper-V's VP assist page), steal time and async PF "
                                    "in guest RAM; PV EOI is a one-run lease"))
