"""Hyper-V per the TLFS: the synthetic MSRs, the VP assist page as a GPA overlay, EOI assist.

Sources (keys as in shared/docs/domain-facts.md): TLFS-VI / TLFS-VP / TLFS-IPC (synthetic
MSRs, §1.1-1.2), TLFS-VAP (HV_VP_ASSIST_PAGE layout, §1.3), TLFS "EOI Assist" (§1.4),
MSDN-OVL = TLFS 5.2.1 (overlay semantics, §1.5).
"""
from __future__ import annotations

from ..machine import F_HV, F_IRR, RAM
from ..msr import MSR_SPECS, MsrSpec, register_constants, register_msr
from . import HypervisorSpec, register
from .base import HypervisorModel, SharedPage, Structure

PAGE_SHIFT, PAGE_SIZE = 12, 4096


def _page(v: int) -> str:
    return f"enable={v & 1} gpa={(v >> 12) << 12:#x}"


def _sint(v: int) -> str:
    return f"vector={v & 0xFF:#x} masked={v >> 16 & 1} auto_eoi={v >> 17 & 1}"


def _stimer(v: int) -> str:
    return (f"enable={v & 1} periodic={v >> 1 & 1} vector={v >> 4 & 0xFF:#x} direct={v >> 12 & 1} "
            f"sint={v >> 16 & 0xF}")


# --- Synthetic MSRs (domain-facts §1.1; TLFS-VI, TLFS-VP, TLFS-IPC). Reset values at VP creation
# (TLFS-IPC: SINTx reset to 0x10000 = masked; SIEFP/SIMP 0; TLFS-VP: VP_INDEX = the VP's index;
# SVERSION = 1; assumption: others 0). Read-only (write -> #GP): VP_INDEX (TLFS-VP), SVERSION
# (TLFS-IPC), TSC/APIC frequency, reference counter, VP runtime. Write-only: the EOI MSR (TLFS-VI).
for _name, _num, _kw in (
    ("HV_X64_MSR_GUEST_OS_ID", 0x40000000, {}),
    ("HV_X64_MSR_HYPERCALL", 0x40000001, {"decode": _page}),
    ("HV_X64_MSR_VP_INDEX", 0x40000002, {"access": "ro", "reset": lambda cpu: cpu}),
    ("HV_X64_MSR_RESET", 0x40000003, {}),
    ("HV_X64_MSR_VP_RUNTIME", 0x40000010, {"access": "ro"}),
    ("HV_X64_MSR_TIME_REF_COUNT", 0x40000020, {"access": "ro"}),
    ("HV_X64_MSR_REFERENCE_TSC", 0x40000021, {}),
    ("HV_X64_MSR_TSC_FREQUENCY", 0x40000022, {"access": "ro"}),
    ("HV_X64_MSR_APIC_FREQUENCY", 0x40000023, {"access": "ro"}),
    ("HV_X64_MSR_EOI", 0x40000070, {"access": "wo", "effect": "eoi"}),
    ("HV_X64_MSR_ICR", 0x40000071, {"effect": "icr"}),
    ("HV_X64_MSR_TPR", 0x40000072, {"effect": "tpr"}),
    ("HV_X64_MSR_VP_ASSIST_PAGE", 0x40000073, {"effect": "model", "decode": _page, "eoi_hint": True}),
    ("HV_X64_MSR_SCONTROL", 0x40000080, {"decode": lambda v: f"enable={v & 1}"}),
    ("HV_X64_MSR_SVERSION", 0x40000081, {"access": "ro", "reset": 1}),
    ("HV_X64_MSR_SIEFP", 0x40000082, {"decode": _page}),
    ("HV_X64_MSR_SIMP", 0x40000083, {"decode": _page}),
    ("HV_X64_MSR_EOM", 0x40000084, {"read_as": 0}),          # TLFS-IPC: "reads return 0"
):
    register_msr(MsrSpec(_num, _name, source="TLFS", **_kw))
for _n in range(16):
    # TLFS-IPC: an unmasked SINT with a vector 0-15 raises #GP
    register_msr(MsrSpec(0x40000090 + _n, f"HV_X64_MSR_SINT{_n}", reset=0x10000, decode=_sint, source="TLFS-IPC",
                         rejects=lambda v: (v & 0xFF) < 16 and not (v >> 16 & 1)))
for _n in range(4):
    register_msr(MsrSpec(0x400000B0 + 2 * _n, f"HV_X64_MSR_STIMER{_n}_CONFIG", decode=_stimer, source="TLFS-IPC"))
    register_msr(MsrSpec(0x400000B1 + 2 * _n, f"HV_X64_MSR_STIMER{_n}_COUNT", source="TLFS-IPC"))

MSR_EOI = 0x40000070
MSR_VP_ASSIST_PAGE = 0x40000073
assert MSR_SPECS[MSR_VP_ASSIST_PAGE].name == "HV_X64_MSR_VP_ASSIST_PAGE"

# VP_ASSIST_PAGE MSR layout (TLFS-VP, domain-facts §1.2).
VP_ASSIST_ENABLE = 0x1
register_constants({"HV_X64_MSR_VP_ASSIST_PAGE_ENABLE": VP_ASSIST_ENABLE,
                    "HV_X64_MSR_VP_ASSIST_PAGE_ADDRESS_SHIFT": 12})

# struct hv_vp_assist_page (TLFS-VAP, domain-facts §1.3): apic_assist u32 at offset 0.
VP_ASSIST = Structure("vp_assist", "VP assist page", PAGE_SIZE, (
    (0x000, 4, "apic_assist"),
    (0x004, 4, "reserved"),
    (0x008, 4, "vtl_entry_reason"),
    (0x00C, 4, "vtl_reserved"),
    (0x010, 8, "vtl_ret_x64rax"),
    (0x018, 8, "vtl_ret_x64rcx"),
    (0x020, 8, "nested_control"),
    (0x028, 1, "enlighten_vmentry"),
    (0x030, 8, "current_nested_vmcs"),
    (0x038, 1, "synthetic_time_unhalted_timer_expired"),
    (0x040, 40, "virtualization_fault_information"),
    (0x070, 256, "intercept_message"),
    (0x170, 256, "vtl_ret_actions"),
), source="TLFS-VAP")
APIC_ASSIST_OFF = 0x000

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
    * an EOI MSR write is always honoured (the catalogue's HV_X64_MSR_EOI effect = APIC EOI).
    All our modelled vectors are edge-triggered fixed IPIs / LAPIC timer.
    Partition reset (power off and boot): overlays and private state go away, MSRs return to
    their reset values (the engine does the MSRs).
    """

    name = "hyperv"
    structures = (VP_ASSIST,)

    def __init__(self, eng, cfg):
        super().__init__(eng, cfg)
        policy = cfg.overlay
        if policy not in POLICIES:
            raise ValueError(f"unknown overlay policy {policy!r}")
        self.policy = policy
        self._msr_off = self.L.msr_off[MSR_VP_ASSIST_PAGE]

    @staticmethod
    def _save_space(cpu: int) -> int:
        # restore policy: the saved original RAM page is hypervisor-private state, kept in the
        # machine (journaled) as a pseudo overlay space so reverse-step restores it too.
        return -2 - cpu

    def _enabled(self, cpu: int) -> int:
        """GPA of the enabled overlay, or -1."""
        v = self.m.S[self.L.base(cpu) + self._msr_off]
        return _assist_gpa(v) if v & VP_ASSIST_ENABLE else -1

    def resolve(self, cpu: int, addr: int) -> int:
        # MSDN-OVL: while a GPA is overlaid the VP's accesses reach the overlay page.
        v = self.m.S[self.L.base(cpu) + self._msr_off]
        if v & VP_ASSIST_ENABLE and (addr >> PAGE_SHIFT) == (v >> 12):
            return cpu
        return RAM

    def _set_bit0(self, cpu: int, bit: int) -> None:
        old = self.m.read_mem(cpu, APIC_ASSIST_OFF, 4)
        self.hv_write(cpu, "vp_assist", cpu, APIC_ASSIST_OFF, 4, (old & ~1) | bit, self._enabled(cpu))

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

    def on_msr_write(self, cpu: int, msr: int, old: int, new: int) -> None:
        if msr != MSR_VP_ASSIST_PAGE:
            return
        m = self.m
        b = self.L.base(cpu)
        was, now = bool(old & VP_ASSIST_ENABLE), bool(new & VP_ASSIST_ENABLE)
        old_gpa, new_gpa = _assist_gpa(old), _assist_gpa(new)
        if was and not now:
            self.e.note("page_disable", "vp_assist", cpu, old, new)
        if was and (not now or old_gpa != new_gpa):
            # Disable (or move): the armed assist is forgotten - assumption: the hypervisor then
            # needs a conventional EOI for the in-service vector (TLFS: enabling/disabling may
            # happen at any time; a conventional EOI is always allowed).
            m.set(b + F_HV, 0)
            if self.policy == "copy-back":
                self.hv_write_bytes(cpu, "vp_assist", RAM, old_gpa, bytes(m.ovl[cpu]), old_gpa)
                self.e.note("hv", f"copy-back: overlay content left in RAM page 0x{old_gpa:x}")
            elif self.policy == "restore" and self._save_space(cpu) in m.ovl:
                self.hv_write_bytes(cpu, "vp_assist", RAM, old_gpa, bytes(m.ovl[self._save_space(cpu)]), old_gpa)
                self.e.note("hv", f"restore: original RAM content restored at 0x{old_gpa:x}")
            self.e.note("hv", f"overlay disabled: cpu{cpu} now sees RAM at 0x{old_gpa:x}")
        if now and (not was or old_gpa != new_gpa):
            if cpu not in m.ovl:
                m.new_overlay(cpu, bytes(PAGE_SIZE))
            if new_gpa >> PAGE_SHIFT not in m.ram:
                self.e.note("hv", f"overlay GPA 0x{new_gpa:x} has no RAM behind it")
            elif self.policy == "copy-back":
                self.hv_write_bytes(cpu, "vp_assist", RAM, new_gpa, bytes(m.ovl[cpu]), new_gpa)
            elif self.policy == "restore":
                sp = self._save_space(cpu)
                if sp in m.ovl:
                    m.write_bytes(sp, 0, bytes(m.ram[new_gpa >> PAGE_SHIFT]))
                else:
                    m.new_overlay(sp, bytes(m.ram[new_gpa >> PAGE_SHIFT]))
            self.e.note("hv", f"overlay enabled: cpu{cpu} accesses to 0x{new_gpa:x} reach the hypervisor's page")

    def on_reset(self, cpu: int) -> None:
        self.m.set(self.L.base(cpu) + F_HV, 0)

    def partition_reset(self) -> None:
        super().partition_reset()
        for c in list(self.m.ovl):
            self.m.drop_overlay(c)

    def shared_pages(self, cpu: int, m=None) -> list[SharedPage]:
        v = (m or self.m).S[self.L.base(cpu) + self._msr_off]
        on = bool(v & VP_ASSIST_ENABLE)
        return [SharedPage(VP_ASSIST, MSR_VP_ASSIST_PAGE, _assist_gpa(v) if v else -1, on, cpu if on else RAM,
                           "overlay" if on else "")]


register(HypervisorSpec(
    "hyperv", HyperV,
    "Hyper-V per the TLFS: the VP assist page is a GPA overlay; EOI assist sets apic_assist bit0 on injection",
    options={"overlay": dict(POLICIES)}))
