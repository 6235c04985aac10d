"""Constants of the modelled interface, each with its source.

Sources (keys as in shared/docs/domain-facts.md):
- VEC: arch/x86/include/asm/irq_vectors.h (Linux v5.2).
- TLFS-VI / TLFS-VP / TLFS-IPC: Hyper-V TLFS synthetic MSRs (domain-facts §1.1, §1.2).
- TLFS-VAP: HV_VP_ASSIST_PAGE layout (domain-facts §1.3).
"""
from __future__ import annotations

PAGE_SIZE = 4096
PAGE_SHIFT = 12

# --- Linux x86 vectors (VEC, v5.2). Priority class = vector >> 4 (SDM 10.8.3.1).
VECTORS: dict[str, int] = {
    "SPURIOUS": 0xFF,
    "ERROR": 0xFE,
    "RESCHEDULE": 0xFD,
    "CALL_FUNCTION": 0xFC,
    "CALL_FUNCTION_SINGLE": 0xFB,
    "THERMAL": 0xFA,
    "THRESHOLD": 0xF9,
    "REBOOT": 0xF8,
    "X86_PLATFORM_IPI": 0xF7,
    "IRQ_WORK": 0xF6,
    "DEFERRED_ERROR": 0xF4,
    "HYPERVISOR_CALLBACK": 0xF3,
    "POSTED_INTR": 0xF2,
    "POSTED_INTR_WAKEUP": 0xF1,
    "POSTED_INTR_NESTED": 0xF0,
    "HYPERV_REENLIGHTENMENT": 0xEE,
    "HYPERV_STIMER0": 0xED,
    "LOCAL_TIMER": 0xEC,
}
VECTOR_NAMES: dict[int, str] = {v: k for k, v in VECTORS.items()}


def vector_names(bits: int, with_number: bool = False) -> list[str]:
    """The vectors set in a 256-bit IRR/ISR value, highest first, by Linux name."""
    out = []
    for v in range(bits.bit_length() - 1, -1, -1):
        if bits >> v & 1:
            n = VECTOR_NAMES.get(v)
            out.append((f"{n}(0x{v:02x})" if with_number else n) if n else f"0x{v:02x}")
    return out


def vector_name(v: int) -> str:
    n = VECTOR_NAMES.get(v)
    return f"{n} 0x{v:02x}" if n else f"0x{v:02x}"


# --- Synthetic MSRs (domain-facts §1.1; TLFS-VI, TLFS-VP, TLFS-IPC).
MSRS: dict[str, int] = {
    "HV_X64_MSR_GUEST_OS_ID": 0x40000000,
    "HV_X64_MSR_HYPERCALL": 0x40000001,
    "HV_X64_MSR_VP_INDEX": 0x40000002,
    "HV_X64_MSR_RESET": 0x40000003,
    "HV_X64_MSR_VP_RUNTIME": 0x40000010,
    "HV_X64_MSR_TIME_REF_COUNT": 0x40000020,
    "HV_X64_MSR_REFERENCE_TSC": 0x40000021,
    "HV_X64_MSR_TSC_FREQUENCY": 0x40000022,
    "HV_X64_MSR_APIC_FREQUENCY": 0x40000023,
    "HV_X64_MSR_EOI": 0x40000070,
    "HV_X64_MSR_ICR": 0x40000071,
    "HV_X64_MSR_TPR": 0x40000072,
    "HV_X64_MSR_VP_ASSIST_PAGE": 0x40000073,
    "HV_X64_MSR_SCONTROL": 0x40000080,
    "HV_X64_MSR_SVERSION": 0x40000081,
    "HV_X64_MSR_SIEFP": 0x40000082,
    "HV_X64_MSR_SIMP": 0x40000083,
    "HV_X64_MSR_EOM": 0x40000084,
}
# x2APIC EOI register (SDM 10.12.1.2, MSR 0x80B): the native EOI path (native_apic_msr_eoi_write)
# used before hv_apic_init() installs hv_apic_eoi_write.
MSRS["IA32_X2APIC_EOI"] = 0x80B
for _n in range(16):
    MSRS[f"HV_X64_MSR_SINT{_n}"] = 0x40000090 + _n
for _n in range(4):
    MSRS[f"HV_X64_MSR_STIMER{_n}_CONFIG"] = 0x400000B0 + 2 * _n
    MSRS[f"HV_X64_MSR_STIMER{_n}_COUNT"] = 0x400000B1 + 2 * _n
MSR_NAMES: dict[int, str] = {v: k for k, v in MSRS.items()}

MSR_EOI = MSRS["HV_X64_MSR_EOI"]
MSR_X2APIC_EOI = MSRS["IA32_X2APIC_EOI"]
MSR_ICR = MSRS["HV_X64_MSR_ICR"]
MSR_TPR = MSRS["HV_X64_MSR_TPR"]
MSR_VP_INDEX = MSRS["HV_X64_MSR_VP_INDEX"]
MSR_VP_ASSIST_PAGE = MSRS["HV_X64_MSR_VP_ASSIST_PAGE"]
MSR_EOM = MSRS["HV_X64_MSR_EOM"]
MSR_SVERSION = MSRS["HV_X64_MSR_SVERSION"]

# Write-only MSRs: a read raises #GP (TLFS-VI: HV_X64_MSR_EOI is write-only).
# EOM "reads return 0" (TLFS-IPC) so it is not listed here.
MSR_WRITE_ONLY = frozenset({MSR_EOI, MSR_X2APIC_EOI})
# Read-only MSRs: a write raises #GP (TLFS-VP: VP_INDEX read-only; TLFS-IPC: SVERSION).
MSR_READ_ONLY = frozenset({MSR_VP_INDEX, MSR_SVERSION, MSRS["HV_X64_MSR_TSC_FREQUENCY"],
                           MSRS["HV_X64_MSR_APIC_FREQUENCY"], MSRS["HV_X64_MSR_TIME_REF_COUNT"],
                           MSRS["HV_X64_MSR_VP_RUNTIME"]})


def msr_reset_value(msr: int, cpu: int) -> int:
    """Value at VP creation (TLFS-IPC: SINTx reset to 0x10000 = masked; SIEFP/SIMP 0;
    TLFS-VP: VP_INDEX = the VP's index; assumption: others 0)."""
    if msr == MSR_VP_INDEX:
        return cpu
    if 0x40000090 <= msr <= 0x4000009F:
        return 0x10000
    if msr == MSR_SVERSION:
        return 1  # TLFS-IPC: SynIC version 1
    return 0


# VP_ASSIST_PAGE MSR layout (TLFS-VP, domain-facts §1.2).
VP_ASSIST_ENABLE = 0x1
VP_ASSIST_ADDRESS_SHIFT = 12

# struct hv_vp_assist_page (TLFS-VAP, domain-facts §1.3): apic_assist u32 at offset 0.
ASSIST_FIELDS: list[tuple[int, int, str]] = [
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
]
APIC_ASSIST_OFF = 0x000

# vCPU hotplug states (design §3).
OFFLINE, ONLINE, DYING, DEAD = 0, 1, 2, 3
HP_NAMES = {OFFLINE: "offline", ONLINE: "online", DYING: "dying", DEAD: "dead"}

# Symbolic constants usable in listings and conditions.
CONSTANTS: dict[str, int] = {
    **VECTORS, **{k: v for k, v in MSRS.items()},
    "OFFLINE": OFFLINE, "ONLINE": ONLINE, "DYING": DYING, "DEAD": DEAD,
    "PAGE_SIZE": PAGE_SIZE, "PAGE_SHIFT": PAGE_SHIFT,
    "HV_X64_MSR_VP_ASSIST_PAGE_ENABLE": VP_ASSIST_ENABLE,
    "HV_X64_MSR_VP_ASSIST_PAGE_ADDRESS_SHIFT": VP_ASSIST_ADDRESS_SHIFT,
    "APIC_EOI_ACK": 0,
}
