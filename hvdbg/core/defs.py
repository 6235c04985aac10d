"""Constants of the modelled interface, each with its source.

Sources (keys as in shared/docs/domain-facts.md):
- VEC: arch/x86/include/asm/irq_vectors.h (Linux v5.2).
Hypervisor-specific constants (synthetic MSRs, shared page layouts) live with their model in
hypervisors/; the MSR catalogue in msr.py.
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


def vectors_down(bits: int) -> list[int]:
    """The vectors set in a 256-bit IRR/ISR value, highest first."""
    out = []
    while bits:
        v = bits.bit_length() - 1
        out.append(v)
        bits ^= 1 << v
    return out


def vector_names(bits: int, with_number: bool = False) -> list[str]:
    """The vectors set in a 256-bit IRR/ISR value, highest first, by Linux name."""
    out = []
    for v in vectors_down(bits):
        n = VECTOR_NAMES.get(v)
        out.append((f"{n}(0x{v:02x})" if with_number else n) if n else f"0x{v:02x}")
    return out


def vector_name(v: int) -> str:
    n = VECTOR_NAMES.get(v)
    return f"{n} 0x{v:02x}" if n else f"0x{v:02x}"


# vCPU hotplug states (design §3).
OFFLINE, ONLINE, DYING, DEAD = 0, 1, 2, 3
HP_NAMES = {OFFLINE: "offline", ONLINE: "online", DYING: "dying", DEAD: "dead"}

# Symbolic constants usable in listings and conditions.
# (MSR names come from the catalogue in msr.py, filled by the hypervisor models; program.constants()
# merges them with these.)
CONSTANTS: dict[str, int] = {
    **VECTORS,
    "OFFLINE": OFFLINE, "ONLINE": ONLINE, "DYING": DYING, "DEAD": DEAD,
    "PAGE_SIZE": PAGE_SIZE, "PAGE_SHIFT": PAGE_SHIFT,
    "APIC_EOI_ACK": 0,
}
