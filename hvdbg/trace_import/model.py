"""Reconstruction of per-vCPU LAPIC / MSR / hotplug state from imported events, and findings.

State is rebuilt event by event (:class:`Recon`). Every ``CHECKPOINT`` events a copy is
kept, so the state after any event is a checkpoint plus at most ``CHECKPOINT - 1`` replayed
events (:meth:`Recon.state_at`) - that is what time travel over an imported trace uses.

What the events imply (KVM's lapic.c; docs/import.md): ``kvm_apic_accept_irq`` sets the
vector in the destination's IRR, ``kvm_inj_virq`` moves it from IRR to ISR, ``kvm_eoi`` /
``kvm_pv_eoi`` clear it from ISR. Everything here is inferred from the trace and marked as
such; what the trace cannot show is reported as unknown:

* an EOI done through a PV-EOI / Hyper-V assist page needs no exit. KVM arms it before an
  entry only when exactly one vector is in service and none is pending, and reports it
  (``kvm_pv_eoi``) at the next exit. While the vCPU is in the guest in that situation the
  in-service vector's state is *unknown* (:meth:`VcpuState.unknown_isr`).
* with APICv / posted interrupts there is no ``kvm_inj_virq``: a host trace with
  acceptances and no injection at all has its IRR→ISR moves marked unknown and no
  "accepted but never injected" findings.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .decode import EOI_HINT_MSRS, X2APIC_REGS, msr_name

CHECKPOINT = 2048
MAX_PENDING = 1024        # IPIs sent and not yet accepted, kept per trace
MAX_NEST = 64             # guest handler nesting depth kept per CPU
MIN_RUNS = 8              # guest entries after which a pending / in-service vector with no other
                          # explanation is reported as stuck
HOTPLUG_STALL_S = 0.5     # a hotplug step open this long before the end of the trace is stalled

# event tuple layout (ImportedTrace stores these)
TS, CPU, PID, NAME, VCPU, ARGS, TEXT, LINE, FILE = range(9)


class VcpuState:
    """Inferred state of one vCPU. Values are (value, event index that set it)."""
    __slots__ = ("irr", "isr", "tpr", "msrs", "apic", "hotplug", "exit", "in_guest", "guest_isr", "pv_eoi",
                 "events")

    def __init__(self):
        self.irr: dict[int, int] = {}          # vector -> index of the kvm_apic_accept_irq
        self.isr: dict[int, int] = {}          # vector -> index of the kvm_inj_virq
        self.tpr: tuple | None = None          # (value, index)
        self.msrs: dict[int, tuple] = {}       # msr -> (value, index, "write"|"read")
        self.apic: dict[str, tuple] = {}       # APIC register -> (value, index) of the last write
        self.hotplug: dict | None = None       # phase, state/target, step, callback, index
        self.exit: tuple | None = None         # (reason, index) of the last kvm_exit
        self.in_guest: bool | None = None      # after kvm_entry True, after kvm_exit False
        self.guest_isr: list = []              # [(vector, index)] handler nesting as the guest sees it
        self.pv_eoi: dict[str, tuple] = {}     # EOI-hint MSR name -> (enabled, index)
        self.events = 0                        # events about this vCPU so far

    def copy(self) -> "VcpuState":
        c = VcpuState.__new__(VcpuState)
        c.irr, c.isr, c.tpr, c.msrs, c.apic = dict(self.irr), dict(self.isr), self.tpr, dict(self.msrs), dict(self.apic)
        c.hotplug = dict(self.hotplug) if self.hotplug else None
        c.exit, c.in_guest, c.guest_isr, c.pv_eoi = self.exit, self.in_guest, list(self.guest_isr), dict(self.pv_eoi)
        c.events = self.events
        return c

    def pv_eoi_enabled(self) -> bool:
        return any(en for en, _ in self.pv_eoi.values())

    def unknown_isr(self) -> set[int]:
        """In-service vectors whose EOI may have happened with no exit (PV-EOI armed)."""
        if self.in_guest and self.pv_eoi_enabled() and len(self.isr) == 1 and not self.irr:
            return set(self.isr)
        return set()

    def to_dict(self, apicv: bool = False) -> dict:
        unk = self.unknown_isr()
        return {
            "irr": {f"0x{v:02x}": {"set_by": i, "inferred": True, **({"unknown": "APICv: injection not traced"}
                                                                     if apicv else {})}
                    for v, i in sorted(self.irr.items())},
            "isr": {f"0x{v:02x}": {"set_by": i, "inferred": True,
                                   **({"unknown": "EOI may have been done through the PV-EOI/assist page "
                                                  "without an exit"} if v in unk else {})}
                    for v, i in sorted(self.isr.items())},
            "tpr": None if self.tpr is None else {"value": self.tpr[0], "set_by": self.tpr[1]},
            "msrs": {f"0x{m:x}": {"name": msr_name(m), "value": f"0x{v:x}", "event": i, "access": rw}
                     for m, (v, i, rw) in sorted(self.msrs.items())},
            "apic_writes": {r: {"value": f"0x{v:x}", "event": i} for r, (v, i) in sorted(self.apic.items())},
            "hotplug": self.hotplug,
            "exit_reason": None if self.exit is None else {"reason": self.exit[0], "event": self.exit[1]},
            "in_guest": self.in_guest,
            "guest_isr": [{"vector": f"0x{v:02x}", "event": i} for v, i in self.guest_isr],
            "pv_eoi": {k: {"enabled": en, "event": i} for k, (en, i) in sorted(self.pv_eoi.items())},
        }


@dataclass
class Finding:
    kind: str
    vcpu: int | None
    vector: int | None
    events: tuple            # indexes of the events that prove it, most important first
    text: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "vcpu": self.vcpu, "vector": None if self.vector is None else f"0x{self.vector:02x}",
                "events": list(self.events), "text": self.text}


class State:
    """The reconstruction after some event: ``vcpus`` {id: VcpuState}, ``pending_ipis``."""
    __slots__ = ("vcpus", "pending_ipis", "icr2", "index")

    def __init__(self):
        self.vcpus: dict[int, VcpuState] = {}
        self.pending_ipis: list = []           # [send index, sender, target or None, vector]
        self.icr2: dict[int, int] = {}
        self.index = -1

    def copy(self) -> "State":
        c = State()
        c.vcpus = {k: v.copy() for k, v in self.vcpus.items()}
        c.pending_ipis = list(self.pending_ipis)
        c.icr2 = dict(self.icr2)
        c.index = self.index
        return c

    def vcpu(self, n: int) -> VcpuState:
        v = self.vcpus.get(n)
        if v is None:
            v = self.vcpus[n] = VcpuState()
        return v


def _cls(v: int) -> int:
    return v >> 4


class Recon:
    """Replays events into a :class:`State`; with ``collect`` it also gathers flows (IPI send
    to acceptance) and streaming findings (first pass only)."""

    def __init__(self, events, ipi_from_icr: bool, apicv: bool):
        self.events = events
        self.ipi_from_icr = ipi_from_icr
        self.apicv = apicv
        self.flows: list[tuple] = []         # (send index, accept index, vector)
        self.findings: list[Finding] = []
        self.last_entry: dict[int, int] = {}
        self.entries: dict[int, list] = {}     # vCPU -> indexes of its kvm_entry events
        self.last_seen: dict[int, int] = {}
        self.collect = False

    # -- one event ---------------------------------------------------------------------
    def apply(self, st: State, i: int, ev) -> None:
        vn = ev[VCPU]
        self.step(st, i, ev[NAME], -1 if vn is None else vn, ev[ARGS])

    def step(self, st: State, i: int, name: str, vn: int, a) -> None:
        """Event `i` (`name`, vCPU `vn` or -1, decoded `a` or None) applied to `st`."""
        st.index = i
        if a is None or vn < 0:
            return
        v = st.vcpus.get(vn)
        if v is None:
            v = st.vcpu(vn)
        v.events += 1
        collect = self.collect
        if collect:
            self.last_seen[vn] = i
        if name == "kvm_entry":
            v.in_guest = True
            if collect:
                self.last_entry[vn] = i
                e = self.entries.get(vn)
                if e is None:
                    e = self.entries[vn] = []
                e.append(i)
        elif name == "kvm_exit":
            v.exit = (a[1], i)
            v.in_guest = False
        elif name == "kvm_apic_accept_irq":
            if a[1] not in v.irr:
                v.irr[a[1]] = i
            for k, p in enumerate(st.pending_ipis):
                if p[3] == a[1] and (p[2] is None or p[2] == vn):
                    if self.collect:
                        self.flows.append((p[0], i, a[1]))
                    del st.pending_ipis[k]
                    break
        elif name == "kvm_inj_virq":
            if a[1]:            # soft interrupt / INTn: not from the APIC
                return
            vec = a[0]
            v.irr.pop(vec, None)
            if vec not in v.isr:
                v.isr[vec] = i
        elif name == "kvm_eoi" or name == "kvm_pv_eoi":
            v.isr.pop(a[1], None)
        elif name == "kvm_apic":
            write, reg, val = a
            if write:
                self._apic_write(st, v, vn, reg, val, i)
        elif name == "kvm_msr":
            write, msr, val, gp = a
            if gp:
                return
            v.msrs[msr] = (val, i, "write" if write else "read")
            if write:
                if 0x800 <= msr <= 0x8ff:
                    reg = X2APIC_REGS.get(msr - 0x800)
                    if reg == "APIC_ICR":
                        st.icr2[vn] = (val >> 32) << 24
                        self._apic_write(st, v, vn, reg, val & 0xffffffff, i, x2=val >> 32)
                    elif reg:
                        self._apic_write(st, v, vn, reg, val, i)
                else:
                    self._msr_write(st, v, vn, msr, val, i)
        elif name == "kvm_apic_ipi":
            dst, vec, dm, destmode, sh = a
            if dm == "Fixed":
                self._ipi(st, i, vn, dst, vec, destmode == "logical", sh)
        elif name in ("write_msr", "read_msr"):
            msr, val, gp = a
            if gp:
                return
            v.msrs[msr] = (val, i, "write" if name == "write_msr" else "read")
            if name == "write_msr":
                self._msr_write(st, v, vn, msr, val, i)
        elif name in ("cpuhp_enter", "cpuhp_multi_enter"):
            cpu, target, step, fn = a
            h = st.vcpu(cpu)
            h.hotplug = {"phase": "enter", "target": target, "step": step, "callback": fn, "event": i,
                         "state": (h.hotplug or {}).get("state")}
        elif name == "cpuhp_exit":
            cpu, state, step, ret = a
            h = st.vcpu(cpu)
            h.hotplug = {"phase": "exit", "target": (h.hotplug or {}).get("target"), "state": state, "step": step,
                         "callback": (h.hotplug or {}).get("callback") if (h.hotplug or {}).get("step") == step
                         else None, "ret": ret, "event": i}
        elif name.endswith("_entry"):
            if len(v.guest_isr) < MAX_NEST:
                v.guest_isr.append((a[0], i))
        elif name.endswith("_exit"):
            for k in range(len(v.guest_isr) - 1, -1, -1):
                if v.guest_isr[k][0] == a[0]:
                    del v.guest_isr[k]
                    break

    def _apic_write(self, st, v, vn, reg, val, i, x2=None):
        v.apic[reg] = (val, i)
        if reg == "APIC_TASKPRI":
            v.tpr = (val & 0xff, i)
        elif reg == "APIC_ICR2":
            st.icr2[vn] = val
        elif reg == "APIC_ICR" and self.ipi_from_icr:
            if (val >> 8) & 7 == 0:          # Fixed
                dst = x2 if x2 is not None else st.icr2.get(vn, 0) >> 24
                self._ipi(st, i, vn, dst, val & 0xff, bool(val & (1 << 11)),
                          ("dst", "self", "all", "all-but-self")[(val >> 18) & 3])

    def _ipi(self, st, i, sender, dst, vec, logical, sh):
        if sh == "self":
            targets = [sender]
        elif sh in ("all", "all-but-self"):
            targets = [n for n in sorted(st.vcpus) if sh == "all" or n != sender]
        else:
            targets = [None if logical else dst]
        for t in targets:
            st.pending_ipis.append((i, sender, t, vec))
        if len(st.pending_ipis) > MAX_PENDING:      # bounded: the oldest are reported as lost
            del st.pending_ipis[:len(st.pending_ipis) - MAX_PENDING]

    def _msr_write(self, st, v, vn, msr, val, i):
        if msr in EOI_HINT_MSRS:
            key = msr_name(msr)
            old = v.pv_eoi.get(key)
            v.pv_eoi[key] = (bool(val & 1), i)
            if self.collect and (v.isr or v.guest_isr) and old is not None and old[0]:
                moved = val & 1 and (val >> 12) != (v.msrs.get(msr, (0,))[0] >> 12)
                if not val & 1 or moved:
                    vecs = sorted(v.isr) or [x for x, _ in v.guest_isr]
                    proof = tuple(v.isr[x] for x in sorted(v.isr)) or tuple(j for _, j in v.guest_isr)
                    self.findings.append(Finding(
                        "assist-page-disabled-in-service", vn, vecs[0], (i,) + proof,
                        f"vCPU {vn}: {msr_name(msr)} written to 0x{val:x} at event {i} while vector(s) "
                        f"{', '.join(f'0x{x:02x}' for x in vecs)} in service (injected at event(s) "
                        f"{', '.join(map(str, proof))}): an EOI skipped through the old page is never seen"))

    # -- findings at the end -------------------------------------------------------------
    def final_findings(self, st: State, ts_end: float) -> list[Finding]:
        ev = self.events
        out = list(self.findings)
        for vn in sorted(st.vcpus):
            v = st.vcpus[vn]
            unk = v.unknown_isr()
            last_in = self.last_entry.get(vn, -1)
            seen = self.last_seen.get(vn, -1)
            runs = self.entries.get(vn, [])

            def runs_after(i):
                return len(runs) - bisect.bisect_right(runs, i)
            if not self.apicv:
                for vec, i in sorted(v.irr.items(), key=lambda t: t[1]):
                    if seen <= i:
                        continue
                    why = []
                    blockers = [(x, j) for x, j in sorted(v.isr.items()) if _cls(x) >= _cls(vec) and x not in unk]
                    if blockers:
                        why.append("behind in-service " + ", ".join(f"0x{x:02x} (injected at event {j})"
                                                                    for x, j in blockers))
                    if v.tpr is not None and _cls(vec) <= v.tpr[0] >> 4:
                        why.append(f"TPR 0x{v.tpr[0]:02x} (event {v.tpr[1]})")
                    if not why and runs_after(i) < MIN_RUNS:
                        continue        # maybe interrupts disabled (window exit pending) or the trace ended
                    ran = (f"; the vCPU entered the guest again at event {last_in}" if last_in > i else
                           f"; the vCPU went on (event {seen}: {ev[seen][NAME]})")
                    out.append(Finding(
                        "accepted-not-injected", vn, vec, (i,) + tuple(j for _, j in blockers)
                        + ((last_in,) if last_in > i else (seen,)),
                        f"vCPU {vn}: vector 0x{vec:02x} accepted into IRR at event {i} "
                        f"({ts_end - ev[i][TS]:.6f} s before the end) and never injected"
                        + (" - " + "; ".join(why) if why else "") + ran))
            for vec, j in sorted(v.isr.items(), key=lambda t: t[1]):
                if vec in unk:
                    continue
                behind = sorted((x, k) for x, k in v.irr.items() if k > j and _cls(x) <= _cls(vec))
                if not behind and runs_after(j) < MIN_RUNS:
                    continue        # maybe the handler is still running when the trace ends
                txt = (f"vCPU {vn}: vector 0x{vec:02x} injected at event {j} and never EOI'd "
                       f"({ts_end - ev[j][TS]:.6f} s before the end)")
                if behind:
                    txt += "; held pending behind it (same or lower priority class): " + ", ".join(
                        f"0x{x:02x} (accepted at event {k})" for x, k in behind)
                if last_in > j:
                    txt += f"; the vCPU entered the guest again at event {last_in}"
                out.append(Finding("injected-not-eoied", vn, vec, (j,) + tuple(k for _, k in behind)
                                   + ((last_in,) if last_in > j else ()), txt))
            h = v.hotplug
            if h is not None:
                i = h["event"]
                later = len(ev) - 1 - i
                stuck = h["phase"] == "enter" or (h.get("target") is not None and h.get("state") != h.get("target"))
                if stuck and later > 0 and ts_end - ev[i][TS] >= HOTPLUG_STALL_S:
                    what = (f"entered step {h['step']} ({h.get('callback') or '?'}) and never left it"
                            if h["phase"] == "enter" else
                            f"stopped at state {h.get('state')} short of target {h.get('target')}")
                    out.append(Finding("hotplug-stalled", vn, None, (i,),
                                       f"CPU {vn}: hotplug {what} at event {i}; the trace goes on for "
                                       f"{ts_end - ev[i][TS]:.6f} s ({later} events)"))
        for (i, sender, target, vec) in st.pending_ipis:
            out.append(Finding("ipi-not-accepted", target, vec, (i,),
                               f"IPI vector 0x{vec:02x} sent by vCPU {sender} at event {i} to "
                               f"{'vCPU %d' % target if target is not None else 'a logical destination'} "
                               f"never reached kvm_apic_accept_irq"))
        return out
