"""The MSR file: a catalogue every hypervisor model adds its MSRs to, and the RDMSR/WRMSR rules.

A model registers each MSR once (:func:`register_msr`): number, name, access (read-only
and write-only MSRs raise #GP on the other access), reset value, what a write does
(``effect``: ``"eoi"`` an APIC EOI, ``"icr"`` send an IPI, ``"tpr"`` set the TPR,
``"model"`` handed to the hypervisor model's ``on_msr_write``), an optional validity rule
(a write it rejects raises #GP) and a decoder for views. Listings name MSRs by their
catalogue names; views decode them; the state layout gives each catalogue MSR a slot per
vCPU (sorted by number). Unknown MSRs raise #GP (a note, counted; not a crash).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# x2APIC EOI register (SDM 10.12.1.2, MSR 0x80B): the native EOI path (native_apic_msr_eoi_write).
X2APIC_EOI = 0x80B


@dataclass(frozen=True)
class MsrSpec:
    number: int
    name: str
    access: str = "rw"                       # "rw" | "ro" (write -> #GP) | "wo" (read -> #GP)
    reset: int | Callable[[int], int] = 0    # value at VP creation, or cpu -> value
    effect: str = ""                         # "" store only | "eoi" | "icr" | "tpr" | "model"
    read_as: int | None = None               # reads return this constant (e.g. EOM reads 0)
    rejects: Callable[[int], bool] | None = None   # a write of this value raises #GP
    decode: Callable[[int], str] | None = None
    source: str = ""
    eoi_hint: bool = False                   # bit 0 enables a page through which the guest may EOI
                                             # without an exit (read by trace import: such an EOI
                                             # leaves no event, so ISR becomes unknown)

    def reset_value(self, cpu: int) -> int:
        return self.reset(cpu) if callable(self.reset) else self.reset


MSR_SPECS: dict[int, MsrSpec] = {}
MSRS: dict[str, int] = {}           # name -> number (live: grows as models register)
MSR_NAMES: dict[int, str] = {}      # number -> name
CONSTANTS: dict[str, int] = {}      # extra named constants models add for listings


def register_msr(spec: MsrSpec) -> MsrSpec:
    old = MSR_SPECS.get(spec.number)
    if old is not None and old != spec:
        raise ValueError(f"MSR 0x{spec.number:x} is already registered as {old.name}")
    MSR_SPECS[spec.number] = spec
    MSRS[spec.name] = spec.number
    MSR_NAMES[spec.number] = spec.name
    return spec


def register_constants(values: dict[str, int]) -> None:
    CONSTANTS.update(values)


def msr_list() -> list[int]:
    """Every catalogue MSR, by number: the order of the per-vCPU MSR slots."""
    return sorted(MSR_SPECS)


def msr_reset_value(msr: int, cpu: int) -> int:
    spec = MSR_SPECS.get(msr)
    return spec.reset_value(cpu) if spec else 0


def decode_msr(msr: int, value: int) -> str:
    spec = MSR_SPECS.get(msr)
    return spec.decode(value) if spec and spec.decode else ""


register_msr(MsrSpec(X2APIC_EOI, "IA32_X2APIC_EOI", access="wo", effect="eoi",
                     source="SDM 10.12.1.2: x2APIC EOI register, write-only"))


F_TPR = 11   # machine.F_TPR (kept here to avoid an import cycle; machine.py asserts they agree)


class MsrRules:
    """RDMSR / WRMSR for the engine (mixed into Engine)."""

    def _rdmsr(self, c: int, b: int, msr: int) -> int:
        spec = MSR_SPECS.get(msr)
        off = self.L.msr_off.get(msr)
        if spec is None or off is None or spec.access == "wo":
            self.note("gp", msr, "rdmsr")
            return 0
        if spec.effect == "tpr":
            return self.m.S[b + F_TPR]
        self.note("msr", "rd", msr, self.m.S[b + off])
        return spec.read_as if spec.read_as is not None else self.m.S[b + off]

    def _wrmsr(self, c: int, b: int, msr: int, val: int) -> None:
        spec = MSR_SPECS.get(msr)
        off = self.L.msr_off.get(msr)
        if spec is None or off is None or spec.access == "ro" or (spec.rejects is not None and spec.rejects(val)):
            self.note("gp", msr, "wrmsr")
            return
        self.note("msr", "wr", msr, val)
        eff = spec.effect
        if eff == "eoi":
            self.apic_eoi(c)
            return
        if eff == "icr":
            self._send_ipi(c, val >> 32, val & 0xFF)
        elif eff == "tpr":
            self.m.set(b + F_TPR, val & 0xFF)
        old = self.m.S[b + off]
        self.m.set(b + off, val)
        if eff == "model":
            self.hv.on_msr_write(c, msr, old, val)
