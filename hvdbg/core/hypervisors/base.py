"""The interface between the engine and a hypervisor model.

Hooks the engine calls: ``resolve`` (which memory a guest access reaches), ``on_deliver``
(after an injection), ``on_entry`` / ``on_exit`` (around exiting ops), ``on_irr`` (a vector
became pending), ``on_eoi`` (the APIC retired an in-service vector), ``on_mem_write`` (the guest wrote memory), ``on_msr_write`` (an MSR the
model handles was written), ``on_reset`` (INIT/SIPI), ``partition_reset`` (the VM powers
off and boots again). Queries views and explanations use: ``hint_armed`` (the model holds
a lease on an EOI hint it set), ``shared_pages`` (where each shared structure of a vCPU
lives now). A model writes guest-visible memory only through :meth:`hv_write`, so every
such write is checked against page ownership (the `hv-writes-owned` invariant).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..machine import F_HV, RAM


@dataclass(frozen=True)
class Structure:
    """A guest structure a hypervisor reads or writes, with its layout (for views)."""
    name: str                      # e.g. "vp_assist"
    title: str                     # e.g. "VP assist page"
    size: int
    fields: tuple = ()             # ((offset, size, name), ...)
    source: str = ""


@dataclass(frozen=True)
class SharedPage:
    """Where a vCPU's shared structure is now."""
    structure: Structure
    msr: int                       # the MSR that points at it
    gpa: int                       # guest physical address (-1: not set)
    enabled: bool
    space: int = RAM               # RAM, or the vCPU's overlay page
    note: str = ""


class HypervisorModel:
    name = "?"
    structures: tuple = ()

    def __init__(self, eng, cfg=None):
        self.e = eng
        self.m = eng.m
        self.L = eng.L

    # ---- engine hooks
    def resolve(self, cpu: int, addr: int) -> int:
        return RAM

    def on_deliver(self, cpu: int, vec: int) -> None: ...
    def on_entry(self, cpu: int) -> None: ...
    def on_exit(self, cpu: int) -> None: ...
    def on_irr(self, cpu: int, vec: int) -> None: ...
    def on_eoi(self, cpu: int, vec: int) -> None: ...
    def on_mem_write(self, cpu: int, space: int, addr: int, size: int, old: int, new: int) -> None: ...
    def on_msr_write(self, cpu: int, msr: int, old: int, new: int) -> None: ...
    def on_reset(self, cpu: int) -> None: ...

    def partition_reset(self) -> None:
        """The VM is powered off and started again: hypervisor-private state goes away
        (the engine resets the MSRs to their reset values and drops overlays)."""
        for c in range(self.e.n):
            self.m.set(self.L.base(c) + F_HV, 0)

    # ---- queries
    def hint_armed(self, cpu: int) -> bool:
        """Does the model hold a lease on an EOI hint it set (so a guest that consumes the
        hint has its EOI done by the hypervisor)?"""
        return bool(self.m.S[self.L.base(cpu) + F_HV])

    def shared_pages(self, cpu: int, m=None) -> list[SharedPage]:
        return []

    # ---- the one way a model writes guest-visible memory
    def hv_write(self, cpu: int, structure: str, space: int, addr: int, size: int, value: int, gpa: int) -> bool:
        """Write `value` at (space, addr), visible to the guest at `gpa`, on behalf of the
        model's `structure` for `cpu`; the engine checks who owns that guest page."""
        ok = self.m.write_mem(space, addr, size, value)
        if ok:
            self.e.on_hv_write(cpu, structure, gpa, size)
        return ok

    def hv_write_bytes(self, cpu: int, structure: str, space: int, addr: int, data: bytes, gpa: int) -> bool:
        ok = self.m.write_bytes(space, addr, data)
        if ok:
            self.e.on_hv_write(cpu, structure, gpa, len(data))
        return ok
