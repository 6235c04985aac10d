"""A read-only view of the machine at one step: what views, the report, commands and
explanations read. Raw slot offsets stay inside core; a view never writes and never moves
a timeline (``Timeline.state_at(step)`` builds one over a scratch machine).
"""
from __future__ import annotations

from dataclasses import dataclass

from .defs import HP_NAMES, PAGE_SHIFT, PAGE_SIZE, vector_names
from .machine import F_FRAMES, F_HALT, F_HV, F_IF, F_IRR, F_ISR, F_PC, F_R0, F_RT, F_TPR, RAM
from .msr import MSR_NAMES, decode_msr, msr_reset_value


@dataclass(frozen=True)
class Frame:
    kind: str            # "call" | "interrupt"
    routine: str
    pc: int
    IF: int = 0
    vector: int = 0


class CpuView:
    __slots__ = ("mv", "c", "b")

    def __init__(self, mv: "MachineView", c: int):
        self.mv, self.c, self.b = mv, c, mv.e.L.base(c)

    def _s(self, off: int):
        return self.mv.m.S[self.b + off]

    @property
    def routine(self) -> str:
        return self.mv.e.rnames[self._s(F_RT)]

    @property
    def routine_id(self) -> int:
        return self._s(F_RT)

    @property
    def pc(self) -> int:
        return self._s(F_PC)

    @property
    def op(self):
        ops = self.mv.e.routines[self._s(F_RT)].ops
        pc = self.pc
        return ops[pc] if 0 <= pc < len(ops) else None

    @property
    def IF(self) -> int:
        return self._s(F_IF)

    @property
    def halted(self) -> int:
        return self._s(F_HALT)

    @property
    def regs(self) -> tuple:
        return tuple(self._s(F_R0 + i) for i in range(4))

    @property
    def irr(self) -> int:
        return self._s(F_IRR)

    @property
    def isr(self) -> int:
        return self._s(F_ISR)

    @property
    def tpr(self) -> int:
        return self._s(F_TPR)

    @property
    def hv_private(self):
        return self._s(F_HV)

    @property
    def depth(self) -> int:
        return len(self._s(F_FRAMES))

    def frames(self) -> list[Frame]:
        """Outer contexts, innermost first (calls and interrupted contexts)."""
        rn = self.mv.e.rnames
        out = []
        for fr in reversed(self._s(F_FRAMES)):
            if fr[0] == 0:
                out.append(Frame("call", rn[fr[1]], fr[2]))
            else:
                out.append(Frame("interrupt", rn[fr[1]], fr[2], fr[3], fr[8]))
        return out

    def msr(self, number: int) -> int | None:
        off = self.mv.e.L.msr_off.get(number)
        return None if off is None else self._s(off)

    def msrs(self, changed_only: bool = False) -> dict[int, int]:
        L = self.mv.e.L
        out = {}
        for m in L.msr_list:
            v = self._s(L.msr_off[m])
            if not changed_only or v != msr_reset_value(m, self.c):
                out[m] = v
        return out

    def shown_msrs(self) -> list[int]:
        """The MSRs worth showing, in catalogue order: those not at their reset value and those
        that point the hypervisor at a shared page (even while disabled). One list for the MSR
        pane, `info` and the JSON report."""
        keep = {p.msr for p in self.mv.shared_pages(self.c)}
        changed = self.msrs(changed_only=True)
        return [m for m in self.mv.e.L.msr_list if m in changed or m in keep]

    def percpu(self, name: str) -> int | None:
        off = self.mv.e.L.pvar.get(name)
        return None if off is None else self._s(off)

    @property
    def hotplug(self) -> str:
        v = self._s(self.mv.e.L.P_HP)
        return HP_NAMES.get(v, str(v))

    @property
    def timer(self) -> int:
        return self._s(self.mv.e.L.P_TIMER)

    def deliverable(self) -> int:
        """Highest deliverable IRR vector (the APIC rules, apic.py), or 0."""
        irr, isr = self.irr, self.isr
        if not irr or not self.IF:
            return 0
        v = irr.bit_length() - 1
        isrv = isr.bit_length() - 1 if isr else 0
        return v if (v >> 4) > max(self.tpr >> 4, isrv >> 4) else 0


class MachineView:
    """Read-only machine state of engine `eng` (its live machine, or a scratch copy)."""

    def __init__(self, eng, machine=None, step: int | None = None):
        self.e = eng
        self.m = machine if machine is not None else eng.m
        self.step = eng.step if step is None else step

    @property
    def n(self) -> int:
        return self.e.n

    @property
    def cfg(self):
        return self.e.cfg

    def cpu(self, c: int) -> CpuView:
        return CpuView(self, c)

    def cpus(self) -> list[CpuView]:
        return [CpuView(self, c) for c in range(self.e.n)]

    def var(self, name: str) -> int | None:
        i = self.e.L.gvar.get(name)
        return None if i is None else self.m.S[i]

    def global_vars(self) -> dict[str, int]:
        return {n[1:]: self.m.S[i] for n, i in self.e.L.gindex.items() if n.startswith("$")}

    def in_flight(self) -> tuple:
        return tuple(self.m.S[0])

    def read(self, space: int, addr: int, size: int) -> int | None:
        return self.m.read_mem(space, addr, size)

    def page(self, space: int, addr: int = 0) -> bytes | None:
        """The 4 KiB page holding `addr` in RAM, or a vCPU's overlay page."""
        pg = self.m.ram.get(addr >> PAGE_SHIFT) if space == RAM else self.m.ovl.get(space)
        return None if pg is None else bytes(pg)

    def pages(self) -> list[int]:
        return sorted(self.m.ram)

    def owner(self, pfn: int):
        return self.m.own.get(pfn)

    def digest(self) -> str:
        return self.m.digest()

    def shared_pages(self, cpu: int) -> list:
        return self.e.hv.shared_pages(cpu, self.m)

    def structure_page(self, cpu: int, structure: str):
        """(SharedPage or None, gpa) of a shared structure: where the hypervisor points, else
        where the guest's own pointer (the pack's `pointer` variable) says it is."""
        sp = next((p for p in self.shared_pages(cpu) if p.structure.name == structure), None)
        gpa = sp.gpa if sp is not None and sp.gpa > 0 else -1
        if gpa < 0:
            pack = getattr(self.e, "pack", None)
            ptr = (pack.structures.get(structure, {}) if pack is not None else {}).get("pointer")
            if ptr:
                gpa = self.cpu(cpu).percpu(ptr) or -1
        return sp, gpa


def vec_list(bits: int) -> list[str]:
    return vector_names(bits, with_number=True)


def msr_label(number: int) -> str:
    return MSR_NAMES.get(number, hex(number))


__all__ = ["MachineView", "CpuView", "Frame", "vec_list", "msr_label", "decode_msr", "PAGE_SIZE"]
