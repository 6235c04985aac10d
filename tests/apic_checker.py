"""An independent checker of the local-APIC rules over an engine's event journal.

Written from the Intel SDM vol.3 §10.8 (interrupt handling by the local APIC), not from
the engine: it does not call ``Engine.deliverable`` / ``Engine.ppr_class`` / ``set_irr``.
It keeps its own shadow copy of each vCPU's IRR, ISR, TPR and IF, taken from a fresh
engine before any step, and advances it by replaying the journal writes of every event
onto the shadow (checking on the way that each write's ``old`` value agrees with the
shadow, i.e. the journal is gap-free for these slots).

Rules checked (one violation string per breach):

(a) §10.8.3.1 / §10.8.4: a ``deliver`` of vector v to vCPU c happens only when IF = 1
    before the event, v is the highest set IRR bit, and class(v) = v >> 4 is above the
    processor-priority class PPR = max(TPR >> 4, highest-ISR-vector >> 4) (0 if ISR is
    empty). Delivery clears IRR bit v and sets ISR bit v (and nothing else in IRR/ISR).
(b) §10.8.5: an EOI (note ``("eoi", v, implied)``, v >= 0) clears exactly the highest ISR
    bit set before it; an EOI with v = -1 is only legal with an empty ISR; no other ISR
    bit changes in the event except through delivery (or an INIT reset, §10.4.7.3).
(c) §10.8.4: IRR gains a bit only through a ``land`` / ``timer`` action for that vCPU and
    vector; a land/timer on an already-set IRR bit produces a ``("collapse", v)`` note
    and no IRR change; a land/timer on a clear bit sets exactly that bit and no collapse.
    IRR loses bits only by delivery or INIT reset.
(d) §10.5.2: vectors 0-15 never appear in IRR or ISR.
"""
from __future__ import annotations

# Field offsets inside a vCPU block are layout facts, not APIC logic.
from hvdbg.core.machine import F_IF, F_IRR, F_ISR, F_TPR

E_STEP, E_ACT, E_CPU, E_RT, E_PC, E_WRITES, E_NOTES = range(7)
FIELDS = {F_IRR: "irr", F_ISR: "isr", F_TPR: "tpr", F_IF: "if"}
LOW_VECTORS = 0xFFFF          # bits 0..15


def highest(bits: int) -> int:
    """Highest set bit number, -1 when none."""
    return bits.bit_length() - 1


def ppr_class(tpr: int, isr: int) -> int:
    """SDM 10.8.3.1: PPR[7:4] = max(TPR[7:4], ISRV[7:4]); ISRV = 0 when nothing is in service."""
    isrv = highest(isr) if isr else 0
    return max((tpr >> 4) & 0xF, isrv >> 4)


class Shadow:
    """Per-vCPU IRR/ISR/TPR/IF, maintained only from journal writes."""

    def __init__(self, S: list, nglobal: int, block: int, ncpu: int):
        self.nglobal, self.block, self.ncpu = nglobal, block, ncpu
        self.cpu = []
        for c in range(ncpu):
            b = nglobal + c * block
            self.cpu.append({name: S[b + off] for off, name in FIELDS.items()})

    def copy(self) -> list[dict]:
        return [dict(d) for d in self.cpu]

    def apply(self, writes, where: str, out: list) -> None:
        for loc, old, new in writes:
            if not isinstance(loc, int) or loc < self.nglobal:
                continue
            c, off = divmod(loc - self.nglobal, self.block)
            name = FIELDS.get(off)
            if name is None or c >= self.ncpu:
                continue
            if self.cpu[c][name] != old:
                out.append(f"{where}: journal write to cpu{c}.{name} has old={old!r} but the replayed "
                           f"value was {self.cpu[c][name]!r}")
            self.cpu[c][name] = new


def _initial_state(eng) -> list:
    """Slot values of a fresh engine for the same scenario and configuration (before any step)."""
    from hvdbg.core.engine import Engine
    fresh = Engine(eng.scn, eng.cfg)
    assert fresh.step == 0 and not fresh.events
    return list(fresh.m.S)


def apic_target(act: tuple) -> int:
    """The vCPU whose local APIC an action acts on."""
    return act[2] if act[0] == "land" else act[1]


def check_events(events: list, initial_S: list, nglobal: int, block: int, ncpu: int,
                 max_violations: int = 50) -> list[str]:
    out: list[str] = []
    sh = Shadow(initial_S, nglobal, block, ncpu)
    for c, d in enumerate(sh.cpu):
        for name in ("irr", "isr"):
            if d[name] & LOW_VECTORS:
                out.append(f"initial: cpu{c}.{name} has a vector below 16: 0x{d[name]:x}")
    for ev in events:
        if len(out) >= max_violations:
            out.append("... (stopped after too many violations)")
            break
        step, act, notes = ev[E_STEP], ev[E_ACT], ev[E_NOTES]
        where = f"step {step} {act}"
        pre = sh.copy()
        sh.apply(ev[E_WRITES], where, out)
        post = sh.cpu
        kind = act[0]
        tgt = apic_target(act)

        # ---- (a) delivery ----
        deliver_notes = [n for n in notes if n[0] == "deliver"]
        if kind == "deliver":
            c, v = act[1], act[2]
            p = pre[c]
            if p["if"] != 1:
                out.append(f"{where}: (a) delivered with IF={p['if']}")
            if highest(p["irr"]) != v:
                out.append(f"{where}: (a) delivered 0x{v:02x} but the highest IRR vector was "
                           f"0x{max(highest(p['irr']), 0):02x} (IRR=0x{p['irr']:x})")
            pc = ppr_class(p["tpr"], p["isr"])
            if not (v >> 4) > pc:
                out.append(f"{where}: (a) delivered 0x{v:02x} (class {v >> 4}) not above PPR class {pc} "
                           f"(TPR=0x{p['tpr']:x}, ISR=0x{p['isr']:x})")
            if post[c]["irr"] != p["irr"] & ~(1 << v):
                out.append(f"{where}: (a) IRR after delivery 0x{post[c]['irr']:x}, expected "
                           f"0x{p['irr'] & ~(1 << v):x}")
            if post[c]["isr"] != p["isr"] | (1 << v):
                out.append(f"{where}: (a) ISR after delivery 0x{post[c]['isr']:x}, expected "
                           f"0x{p['isr'] | (1 << v):x}")
            if [n[1] for n in deliver_notes] != [v]:
                out.append(f"{where}: (a) deliver notes {deliver_notes} do not match the action")
        elif deliver_notes:
            out.append(f"{where}: (a) a deliver note outside a deliver action: {deliver_notes}")

        # ---- (b) EOI / ISR changes: expected ISR per vCPU from the notes, in order ----
        exp_isr = [d["isr"] for d in pre]
        exp_irr = [d["irr"] for d in pre]
        reset = set()
        for n in notes:
            if n[0] == "eoi":
                v = n[1]
                cur = exp_isr[tgt]
                if v >= 0:
                    if not cur:
                        out.append(f"{where}: (b) EOI note for 0x{v:02x} on cpu{tgt} but its ISR was empty")
                    elif highest(cur) != v:
                        out.append(f"{where}: (b) EOI cleared 0x{v:02x} on cpu{tgt} but the highest ISR "
                                   f"vector was 0x{highest(cur):02x} (ISR=0x{cur:x})")
                    exp_isr[tgt] = cur & ~(1 << v)
                elif cur:
                    out.append(f"{where}: (b) EOI on cpu{tgt} reported an empty ISR but ISR=0x{cur:x}")
            elif n[0] == "deliver" and kind == "deliver":
                exp_isr[act[1]] |= 1 << n[1]
                exp_irr[act[1]] &= ~(1 << n[1])
            elif n[0] == "init_sipi":
                t = n[1]
                exp_isr[t] = 0
                exp_irr[t] = 0
                reset.add(t)
        for c in range(ncpu):
            if post[c]["isr"] != exp_isr[c]:
                out.append(f"{where}: (b) cpu{c} ISR changed 0x{pre[c]['isr']:x} -> 0x{post[c]['isr']:x}, "
                           f"expected 0x{exp_isr[c]:x} from the EOI/delivery notes")

        # ---- (c) IRR gains and collapses ----
        collapse = [n[1] for n in notes if n[0] == "collapse"]
        if kind in ("land", "timer"):
            c, v = (act[2], act[3]) if kind == "land" else (act[1], act[2])
            was = pre[c]["irr"] >> v & 1
            if was:
                if collapse != [v]:
                    out.append(f"{where}: (c) 0x{v:02x} already pending on cpu{c} but collapse notes are {collapse}")
                if post[c]["irr"] != pre[c]["irr"] and c not in reset:
                    out.append(f"{where}: (c) collapsed 0x{v:02x} but IRR changed 0x{pre[c]['irr']:x} -> "
                               f"0x{post[c]['irr']:x}")
            else:
                if collapse:
                    out.append(f"{where}: (c) collapse note {collapse} but 0x{v:02x} was not pending on cpu{c}")
                exp_irr[c] |= 1 << v
        elif collapse:
            out.append(f"{where}: (c) collapse note {collapse} outside land/timer")
        for c in range(ncpu):
            gained = post[c]["irr"] & ~pre[c]["irr"]
            lost = pre[c]["irr"] & ~post[c]["irr"]
            if gained and post[c]["irr"] != exp_irr[c]:
                out.append(f"{where}: (c) cpu{c} IRR gained 0x{gained:x} not explained by a land/timer of that vector")
            elif lost and post[c]["irr"] != exp_irr[c]:
                out.append(f"{where}: (c) cpu{c} IRR lost 0x{lost:x} without delivery or INIT")
            elif post[c]["irr"] != exp_irr[c]:
                out.append(f"{where}: (c) cpu{c} IRR is 0x{post[c]['irr']:x}, expected 0x{exp_irr[c]:x}")

        # ---- (d) reserved vectors ----
        for c in range(ncpu):
            for name in ("irr", "isr"):
                if post[c][name] & LOW_VECTORS:
                    out.append(f"{where}: (d) cpu{c}.{name} holds a vector below 16: 0x{post[c][name]:x}")
    return out


def check_apic(eng, initial_S: list | None = None) -> list[str]:
    """Violations of the APIC rules over ``eng.events`` (empty list = none)."""
    if initial_S is None:
        initial_S = _initial_state(eng)
    return check_events(eng.events, initial_S, eng.L.nglobal, eng.L.block, eng.n)
