"""Hypervisor models: where the VP assist page lives and how EOI assist behaves.

Two models, selected by name and never branched on by the engine (it calls hooks):

* :class:`HyperV` - the TLFS overlay model (domain-facts §1.4, §1.5) with one of three
  overlay content policies (:data:`POLICIES`).
* :class:`KVM` - KVM's implementation on top of PV EOI (domain-facts §3.1, §3.2): no
  overlay, ``apic_assist`` lives in guest RAM, bit0 is a one-run lease.

Hooks the engine calls: ``resolve`` (which memory a guest access reaches), ``on_deliver``
(after an injection), ``on_entry`` / ``on_exit`` (around exiting ops, KVM), ``on_irr``
(a vector became pending), ``on_mem_write`` (guest wrote memory), ``on_assist_msr``
(VP_ASSIST_PAGE written), ``on_reset`` (INIT/SIPI).
"""
from __future__ import annotations

from .defs import APIC_ASSIST_OFF, MSR_VP_ASSIST_PAGE, PAGE_SHIFT, PAGE_SIZE, VP_ASSIST_ENABLE
from .machine import F_HALT, F_HV, F_IRR, F_ISR, MSR_OFF, RAM

POLICIES = {
    "uncover-stale": (
        "TLFS 5.2.1 / Hyper-V (MSDN-OVL, FIX note 1). Enable: the hypervisor maps its own page over the "
        "GPA; the first enable of a VP shows a zero-filled page (assumption: hypervisor pages are zeroed "
        "at VP creation), later enables show what the overlay held before (Dexuan: the bit lives in a "
        "separate hypervisor page). Disable: the overlay is removed and the guest sees the RAM page "
        "with whatever it held before (never written while covered). Reset (INIT/SIPI for re-online): "
        "overlay content and synthetic MSRs kept (assumption: the TLFS resets synthetic MSRs only at VP "
        "creation/reset of the partition; Linux rewrites VP_ASSIST_PAGE in hv_cpu_init anyway)."),
    "copy-back": (
        "openvmm hv1 OverlayPage (domain-facts §1.5). Enable: the kept overlay buffer (zero at first) is "
        "copied onto the guest page. Disable: the buffer takes the overlay content and the guest page is "
        "left holding the last overlay content (openvmm does not restore the prior GPA contents). "
        "Reset: buffer kept (assumption, as for uncover-stale)."),
    "restore": (
        "propolis overlay.rs (domain-facts §1.5). Enable: the original guest page content is saved when "
        "the overlay appears; the overlay shows a zero-filled page at first, its previous content later "
        "(assumption). Disable: the saved original content is restored into the guest page. Since in "
        "this model nothing writes the covered RAM page, the result equals uncover-stale; it differs "
        "when a what-if edit writes the covered RAM. Reset: as uncover-stale (assumption)."),
}


class HypervisorModel:
    name = "?"

    def __init__(self, eng):
        self.e = eng
        self.m = eng.m
        self.L = eng.L

    def resolve(self, cpu: int, addr: int) -> int:
        return RAM

    def on_deliver(self, cpu: int, vec: int) -> None: ...
    def on_entry(self, cpu: int) -> None: ...
    def on_exit(self, cpu: int) -> None: ...
    def on_irr(self, cpu: int, vec: int) -> None: ...
    def on_mem_write(self, cpu: int, space: int, addr: int, size: int, old: int, new: int) -> None: ...
    def on_assist_msr(self, cpu: int, old: int, new: int) -> None: ...
    def on_reset(self, cpu: int) -> None: ...


def _assist_gpa(msr_value: int) -> int:
    return (msr_value >> 12) << PAGE_SHIFT


class HyperV(HypervisorModel):
    """Hyper-V per the TLFS.

    EOI assist (TLFS-VI "EOI Assist", domain-facts §1.4):
    * on injecting an edge-triggered interrupt with no lower-priority interrupt pending,
      set bit0 of the overlay's apic_assist; remember it (``hv`` slot = armed vector);
    * if a lower-priority interrupt is requested later (or pending at injection), clear
      bit0 so the next EOI intercepts;
    * only the innermost EOI can be avoided: the hypervisor keeps no count; a nested
      injection re-arms for the new innermost vector;
    * an EOI is implied when the guest clears an armed bit0. Real Hyper-V may update its
      vAPIC lazily and derive the state from the bit at its next intercept; applying the
      implied EOI at the guest's clearing write is observationally equivalent, because no
      guest-visible decision (delivery) is taken between that write and the next intercept
      other than by the hypervisor, which would first catch up;
    * an EOI MSR write is always honoured (engine: wrmsr HV_X64_MSR_EOI = APIC EOI).
    All our modelled vectors are edge-triggered fixed IPIs / LAPIC timer.
    """

    name = "hyperv"

    def __init__(self, eng, policy: str):
        super().__init__(eng)
        if policy not in POLICIES:
            raise ValueError(f"unknown overlay policy {policy!r}")
        self.policy = policy

    @staticmethod
    def _save_space(cpu: int) -> int:
        # restore policy: the saved original RAM page is hypervisor-private state, kept in the
        # machine (journaled) as a pseudo overlay space so reverse-step restores it too.
        return -2 - cpu

    def _enabled(self, cpu: int) -> int:
        """GPA of the enabled overlay, or -1."""
        v = self.m.S[self.L.base(cpu) + MSR_OFF[MSR_VP_ASSIST_PAGE]]
        return _assist_gpa(v) if v & VP_ASSIST_ENABLE else -1

    def resolve(self, cpu: int, addr: int) -> int:
        # MSDN-OVL: while a GPA is overlaid the VP's accesses reach the overlay page.
        v = self.m.S[self.L.base(cpu) + MSR_OFF[MSR_VP_ASSIST_PAGE]]
        if v & VP_ASSIST_ENABLE and (addr >> PAGE_SHIFT) == (v >> 12):
            return cpu
        return RAM

    def _set_bit0(self, cpu: int, bit: int) -> None:
        old = self.m.read_mem(cpu, APIC_ASSIST_OFF, 4)
        self.m.write_mem(cpu, APIC_ASSIST_OFF, 4, (old & ~1) | bit)

    def on_deliver(self, cpu: int, vec: int) -> None:
        if self._enabled(cpu) < 0:
            return
        b = self.L.base(cpu)
        irr = self.m.S[b + F_IRR]
        lower_pending = irr & ((1 << vec) - 1)
        if lower_pending:
            if self.m.S[b + F_HV]:
                self._set_bit0(cpu, 0)
                self.m.set(b + F_HV, 0)
                self.e.note("hv", f"apic_assist bit0 cleared: lower-priority vector pending at injection of 0x{vec:02x}")
        else:
            self._set_bit0(cpu, 1)
            self.m.set(b + F_HV, vec)
            self.e.note("hv", f"apic_assist bit0 set: 0x{vec:02x} injected, no lower-priority interrupt pending")

    def on_irr(self, cpu: int, vec: int) -> None:
        b = self.L.base(cpu)
        armed = self.m.S[b + F_HV]
        if armed and vec < armed and self._enabled(cpu) >= 0:
            self._set_bit0(cpu, 0)
            self.m.set(b + F_HV, 0)
            self.e.note("hv", f"apic_assist bit0 cleared: lower-priority 0x{vec:02x} requested while 0x{armed:02x} armed")

    def on_mem_write(self, cpu, space, addr, size, old, new) -> None:
        if space != cpu or (addr & (PAGE_SIZE - 1)) != APIC_ASSIST_OFF:
            return
        b = self.L.base(cpu)
        armed = self.m.S[b + F_HV]
        if armed and (old & 1) and not (new & 1):
            self.m.set(b + F_HV, 0)
            self.e.apic_eoi(cpu, implied=True)

    def on_assist_msr(self, cpu: int, old: int, new: int) -> None:
        m = self.m
        b = self.L.base(cpu)
        was, now = bool(old & VP_ASSIST_ENABLE), bool(new & VP_ASSIST_ENABLE)
        old_gpa, new_gpa = _assist_gpa(old), _assist_gpa(new)
        if was and (not now or old_gpa != new_gpa):
            # Disable (or move): the armed assist is forgotten - assumption: the hypervisor then
            # needs a conventional EOI for the in-service vector (TLFS: enabling/disabling may
            # happen at any time; a conventional EOI is always allowed).
            m.set(b + F_HV, 0)
            if self.policy == "copy-back":
                m.write_bytes(RAM, old_gpa, bytes(m.ovl[cpu]))
                self.e.note("hv", f"copy-back: overlay content left in RAM page 0x{old_gpa:x}")
            elif self.policy == "restore" and self._save_space(cpu) in m.ovl:
                m.write_bytes(RAM, old_gpa, bytes(m.ovl[self._save_space(cpu)]))
                self.e.note("hv", f"restore: original RAM content restored at 0x{old_gpa:x}")
            self.e.note("hv", f"overlay disabled: cpu{cpu} now sees RAM at 0x{old_gpa:x}")
        if now and (not was or old_gpa != new_gpa):
            if cpu not in m.ovl:
                m.new_overlay(cpu, bytes(PAGE_SIZE))
            if new_gpa >> PAGE_SHIFT not in m.ram:
                self.e.note("hv", f"overlay GPA 0x{new_gpa:x} has no RAM behind it")
            elif self.policy == "copy-back":
                m.write_bytes(RAM, new_gpa, bytes(m.ovl[cpu]))
            elif self.policy == "restore":
                sp = self._save_space(cpu)
                if sp in m.ovl:
                    m.write_bytes(sp, 0, bytes(m.ram[new_gpa >> PAGE_SHIFT]))
                else:
                    m.new_overlay(sp, bytes(m.ram[new_gpa >> PAGE_SHIFT]))
            self.e.note("hv", f"overlay enabled: cpu{cpu} accesses to 0x{new_gpa:x} reach the hypervisor's page")

    def on_reset(self, cpu: int) -> None:
        self.m.set(self.L.base(cpu) + F_HV, 0)


class KVM(HypervisorModel):
    """KVM's Hyper-V EOI assist (domain-facts §3): apic_assist lives in guest RAM.

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
    Exiting ops are listed in program.EXITING_OPS.
    """

    name = "kvm"

    def _pv_gpa(self, cpu: int) -> int:
        v = self.m.S[self.L.base(cpu) + MSR_OFF[MSR_VP_ASSIST_PAGE]]
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
            self.m.write_mem(RAM, gpa, 1, 1)
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
            self.m.write_mem(RAM, gpa, 1, val & ~1)
            self.e.note("hv", "pv-eoi: exit with bit0 still set - cleared, no EOI")
        else:
            self.e.apic_eoi(cpu, implied=True)

    def on_irr(self, cpu: int, vec: int) -> None:
        if not self.m.S[self.L.base(cpu) + F_HALT]:
            self.on_exit(cpu)     # kick: exit then re-entry
            self.on_entry(cpu)

    def on_assist_msr(self, cpu: int, old: int, new: int) -> None:
        if new & VP_ASSIST_ENABLE:
            gpa = _assist_gpa(new)
            if not self.m.write_mem(RAM, gpa + APIC_ASSIST_OFF, 4, 0):
                self.e.note("hv", f"VP assist GPA 0x{gpa:x} has no RAM behind it")
            else:
                self.e.note("hv", f"pv-eoi enabled at 0x{gpa:x}: apic_assist zeroed (__put_user(0))")
        else:
            self.m.set(self.L.base(cpu) + F_HV, 0)
            self.e.note("hv", "pv-eoi disabled: guest memory untouched")

    def on_reset(self, cpu: int) -> None:
        self.m.set(self.L.base(cpu) + F_HV, 0)


HYPERVISORS = ("hyperv", "kvm")


def make_hypervisor(name: str, eng, policy: str) -> HypervisorModel:
    if name == "hyperv":
        return HyperV(eng, policy)
    if name == "kvm":
        return KVM(eng)
    raise ValueError(f"unknown hypervisor {name!r}")
