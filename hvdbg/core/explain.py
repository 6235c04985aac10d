"""Explanations: causal chains computed by queries over the event journal.

Nothing here is a filled-in story: each link is found by asking the journal who wrote what
and when (the journal index, journal.py), and each link names the step whose writes hold the location it
claims (``loc``), so a test can check every link against the journal.

The generic links know the machine, not any one bug: who waits on what, which in-service
vector blocks which pending one (SDM priority classes), who sent a collapsed IPI, when the
blocker entered ISR, where its EOI was skipped (an op the pack marks as consuming the
hypervisor's EOI hint read the hint bit as 1 while no hypervisor lease backed it), where a
byte came from (an allocation, a hypervisor write, a guest write, a what-if edit). A pack
adds links for its bug through ``EXPLAIN`` hooks in its rules.py; topics asked here:

* ``"eoi_skipped"``: fn(ctx, cpu, skip_event, space, addr) -> [Link] - why the hint bit was
  stale (the seed: the overlay was disabled, or the pointer was published before the WRMSR).
* ``"corruption"``: fn(ctx, violation) -> [Link] - the teardown that should have run.
"""
from __future__ import annotations

from dataclasses import dataclass

from .defs import PAGE_SHIFT, vector_name
from .events import Event, act_code, act_text
from .journal import Journal
from .machine import F_FRAMES, F_HALT, F_IF, F_IRR, F_ISR, F_PC, F_RT, RAM
from .program import parse_operand


@dataclass
class Link:
    """One link of a chain. `step` is the index of the event it is about (0-based, as the
    journal numbers them); it is shown as "step step+1": the position right after that
    event, where `goto` lands (docs/time-travel.md: step N = after N events)."""
    step: int
    text: str
    loc: object = None      # the journal location the link claims was written at `step`
    kind: str = ""

    def as_dict(self) -> dict:
        return {"step": self.step + 1, "event": self.step, "text": self.text, "kind": self.kind}


def op_at(eng, rt: int, pc: int):
    ops = eng.routines[rt].ops
    return ops[pc] if 0 <= pc < len(ops) else None


def where(eng, rt: int, pc: int, c_text: bool = True) -> str:
    op = op_at(eng, rt, pc)
    if op is None:
        return f"{eng.rnames[rt]}+{pc}"
    line = f"{op.file}:{op.line}" if op.line else f"{op.file}"
    c = f" `{op.c}`" if op.c and c_text else ""
    return f"{op.func}() {line}{c}"


def describe(eng, ev: Event) -> str:
    a = ev.act
    if a[0] == "op":
        return f"cpu{a[1]} {where(eng, ev.rt, ev.pc)}"
    return act_text(a)


class Ctx:
    """What explanation rules (generic and packs') query: the engine at the explained step."""

    def __init__(self, eng):
        self.e = eng
        self.L = eng.L
        self.now = eng.step
        self.index = eng.events

    def slot_write(self, slot, before: int, cond=None):
        """(event, write) of the newest write of a slot (or ("own", pfn)) before step `before`
        whose (old, new) satisfy cond; (None, None) if none. Indexed (journal.py)."""
        return self.index.last_where(slot, before, cond)

    def describe(self, ev) -> str:
        return describe(self.e, ev)

    def where(self, rt: int, pc: int, c_text: bool = True) -> str:
        return where(self.e, rt, pc, c_text)

    def byte_origin(self, space: int, addr: int, before: int, what: str = "the byte") -> Link | None:
        """Where the byte at (space, addr) last came from before step `before`."""
        sev, sw = self.index.byte_write(space, addr, before)
        if sev is None:
            return None
        L = self.L
        allocs = [n for n in sev.notes if n[0] == "alloc"]
        if allocs and sw[0][0] == "pg":
            zero = allocs[0][2]
            return Link(sev.step, f"{what} came from the page allocation {self.where(sev.rt, sev.pc)}: "
                        f"{'zeroed' if zero else 'not zeroed (no __GFP_ZERO)'}, the page held "
                        f"0x{sw[2][addr & 0xFFF]:02x} at 0x{addr:x}", sw[0], "source")
        if sev.act[0] == "edit":
            return Link(sev.step, f"{what} came from a {act_text(sev.act)}", sw[0], "source")
        if sev.act[0] == "op":
            who = "a hypervisor write" if any(n[0] == "hv" for n in sev.notes) and not _is_guest_store(self.e, sev) \
                else "a guest write"
            new = sw[2]
            return Link(sev.step, f"{what} came from {who}: {self.describe(sev)} wrote "
                        f"{new.hex() if isinstance(new, bytes) else new} at {L.describe(sw[0])}", sw[0], "source")
        new = sw[2]
        return Link(sev.step, f"{what} came from {act_text(sev.act)} "
                    f"({L.describe(sw[0])} = {new.hex() if isinstance(new, bytes) else new})", sw[0], "source")

    def entries(self, routine: str, after: int = 0, before: int | None = None) -> list:
        """Events that ran the first op of `routine` (a call of it) in steps [after, before)."""
        rt = self.e.rid.get(routine)
        if rt is None:
            return []
        j = self.e.events
        hi = len(j) if before is None else min(before, len(j))
        return [ev for ev in j.scan(max(0, after), hi, lambda summ, lo, h: j.has_where(rt << 16, lo, h))
                if ev.act[0] == "op" and ev.rt == rt and ev.pc == 0]

    def first_write(self, ev) -> object:
        """A location the event wrote (for a link that points at the event itself), or None."""
        return ev.writes[0][0] if ev.writes else None

    def pack_links(self, topic: str, *args) -> list[Link]:
        pack = getattr(self.e, "pack", None)
        out: list[Link] = []
        for fn in (pack.explain.get(topic, ()) if pack is not None else ()):
            out += fn(self, *args) or []
        return out


def _cond_vars(cond_text: str) -> list[str]:
    return [t for t in cond_text.replace("&&", " ").split() if t[0] in "$%"]


def _set_bit(v: int):
    return lambda o, n: (n >> v & 1) and not (o >> v & 1)


def explain_hang(eng) -> list[Link]:
    ctx = Ctx(eng)
    L, S = eng.L, eng.m.S
    now = eng.step
    links: list[Link] = []
    blocked_vectors = []
    # 1. who waits on what
    for c in range(eng.n):
        b = L.base(c)
        rt, pc = S[b + F_RT], S[b + F_PC]
        op = op_at(eng, rt, pc)
        if S[b + L.P_HP] == 3:
            continue
        if S[b + F_HALT]:
            ev, w = ctx.slot_write(b + F_HALT, now, lambda o, n: n == 1)
            fault = next((n[1] for n in ev.notes if n[0] == "fault"), None) if ev else None
            if fault is not None:
                links.append(Link(ev.step, f"cpu{c} stopped with IRQs off after a fault in {eng.rnames[ev.rt]}: "
                                  f"{fault}", w[0], "fault"))
            else:
                state = "halted with IRQs on, waiting for an interrupt" if S[b + F_IF] else "halted with IRQs off"
                prev = op_at(eng, rt, pc - 1)
                at = where(eng, rt, pc - 1) if prev else eng.rnames[rt]
                links.append(Link(ev.step if ev else 0, f"cpu{c} is {state} in {at}", w[0] if w else None, "wait"))
        elif op is not None and op.opcode == "wait" and not eng.holds(c, b, eng.code[rt][pc][1]):
            ev, w = ctx.slot_write(b + F_PC, now, lambda o, n, p=pc: n == p)
            cond = op.text.split(None, 1)[1]
            vals = ", ".join(f"{t} = {eng.val(c, b, eng._operand(parse_operand(t)))}" for t in _cond_vars(cond))
            links.append(Link(ev.step if ev else 0,
                              f"cpu{c} waits{' with IRQs off' if not S[b + F_IF] else ''} in {where(eng, rt, pc)} "
                              f"until {cond} (now {vals})", w[0] if w else None, "wait"))
        elif S[b + F_FRAMES]:
            # running an interrupt handler: is the interrupted context a wait that cannot finish?
            fr = next((f for f in S[b + F_FRAMES] if f[0] == 1), None)
            if fr is not None:
                iop = op_at(eng, fr[1], fr[2])
                if iop is not None and iop.opcode == "wait" and not eng.holds(c, b, eng.code[fr[1]][fr[2]][1]):
                    cond = iop.text.split(None, 1)[1]
                    ev, w = ctx.slot_write(b + F_PC, now, lambda o, n, p=fr[2]: n == p)
                    links.append(Link(ev.step if ev else 0,
                                      f"cpu{c} waits in {where(eng, fr[1], fr[2])} until {cond}; it keeps taking "
                                      f"{vector_name(fr[8])} and other interrupts, but the condition never becomes true",
                                      w[0] if w else None, "wait"))
        if S[b + F_IRR] and not eng.deliverable(c):
            blocked_vectors.append(c)
    # 2. pending vectors that cannot be delivered, and why
    for c in blocked_vectors:
        links += _blocked_chain(ctx, c)
    links.sort(key=lambda k: k.step)
    return links


def _blocked_chain(ctx: Ctx, c: int) -> list[Link]:
    eng, L, S, now = ctx.e, ctx.L, ctx.e.m.S, ctx.now
    out: list[Link] = []
    b = L.base(c)
    irr, isr = S[b + F_IRR], S[b + F_ISR]
    v = irr.bit_length() - 1
    ev, w = ctx.slot_write(b + F_IRR, now, _set_bit(v))
    src = ""
    if ev is not None and ev.act[0] == "land":
        sender = _find_send(eng, ev.act[1], c, v, ev.step)
        if sender is not None:
            src = f", sent by {describe(eng, sender)} at step {sender.step + 1}"
    if not S[b + F_IF]:
        out.append(Link(ev.step if ev else 0, f"{vector_name(v)} is pending in cpu{c}'s IRR{src}, but cpu{c} has IRQs off",
                        w[0] if w else None, "pending"))
        return out
    u = isr.bit_length() - 1 if isr else -1
    dev, dw = ctx.slot_write(b + F_ISR, now, _set_bit(u)) if u >= 0 else (None, None)
    since = f" (in service since step {dev.step + 1})" if dev is not None else ""
    out.append(Link(ev.step if ev else 0,
                    f"{vector_name(v)} became pending in cpu{c}'s IRR{src}; it cannot be delivered while "
                    f"{vector_name(u)} is in service{since} (class 0x{u >> 4:x} >= class 0x{v >> 4:x}, SDM 10.8.3.1)"
                    if u >= 0 else f"{vector_name(v)} is pending in cpu{c}'s IRR but TPR blocks it",
                    w[0] if w else None, "pending"))
    if u < 0:
        return out
    rest = irr & ~(1 << v)
    while rest:
        v2 = rest.bit_length() - 1
        rest &= ~(1 << v2)
        ev2, w2 = ctx.slot_write(b + F_IRR, now, _set_bit(v2))
        out.append(Link(ev2.step if ev2 else 0, f"{vector_name(v2)} became pending in cpu{c}'s IRR too; it stays "
                        f"behind the in-service {vector_name(u)}{since}", w2[0] if w2 else None, "pending"))
    # later sends of the same vector that collapsed into the pending one (one link per send)
    seen_senders = set()
    for cev in eng.events.scan(ev.step + 1 if ev else 0, eng.step, Journal.with_note("collapse")):
        ca = cev.act
        if ca[0] == "land" and ca[2] == c and ca[3] == v and any(n[0] == "collapse" for n in cev.notes):
            sender = _find_send(eng, ca[1], c, v, cev.step)
            if sender is not None and sender.act[0] == "op" and sender.step not in seen_senders:
                seen_senders.add(sender.step)
                iw = next((w for w in sender.writes if w[0] == 0), None)
                out.append(Link(sender.step, f"{describe(eng, sender)} sent {vector_name(v)} to cpu{c}; it collapsed "
                                f"into the already pending one when it landed at step {cev.step + 1} (SDM: one IRR bit per "
                                "vector)", iw[0] if iw else None, "collapse"))
    # 3. when the blocking vector entered ISR
    if dev is None:
        return out
    out.append(Link(dev.step, f"{vector_name(u)} entered cpu{c}'s ISR when the hypervisor delivered it; no EOI has "
                    "cleared it since", dw[0], "isr"))
    # 4. where its EOI was skipped and why
    skip = next((e2 for e2 in eng.events.scan(dev.step + 1, eng.step, Journal.with_note("eoi_skipped"))
                 if e2.cpu == c and e2.act[0] == "op" and any(n[0] == "eoi_skipped" for n in e2.notes)), None)
    if skip is None:
        out.append(Link(dev.step, f"no EOI for {vector_name(u)} was performed after it entered ISR", dw[0], "eoi"))
        return out
    nt = next(n for n in skip.notes if n[0] == "eoi_skipped")
    space, addr, val = nt[1], nt[2], nt[3]
    mw = next((w for w in skip.writes if isinstance(w[0], tuple) and w[0][0] == "m" and w[0][2] == addr), None)
    sp = "guest RAM" if space == RAM else f"the overlay page of cpu{space}"
    out.append(Link(skip.step, f"EOI skipped: {where(eng, skip.rt, skip.pc)} read the EOI hint 0x{val:08x} (bit0 = 1) "
                    f"from {sp} at 0x{addr:x} and returned without the EOI; no hypervisor lease backed the bit, so "
                    "nobody performed the EOI", mw[0] if mw else None, "skip"))
    # 5. where that bit came from
    origin = ctx.byte_origin(space, addr, skip.step, "bit0")
    if origin is not None:
        out.append(origin)
    # 6. the pack's own links (why the bit was stale)
    out += ctx.pack_links("eoi_skipped", c, skip, space, addr)
    return out


def _is_guest_store(eng, ev: Event) -> bool:
    op = op_at(eng, ev.rt, ev.pc)
    return op is not None and op.opcode in ("store", "xchg")


def _find_send(eng, src: int, dst: int, v: int, before: int):
    j = eng.events
    code = act_code(("traffic", src, dst, v))

    def may(summ, lo, hi):
        return summ is None or any(n[0] == "ipi" and n[1] == dst and n[2] == v for n in summ.notes) or \
            j.rfind_code(code, hi, lo) is not None
    for ev in j.scan(0, before, may, reverse=True):
        a = ev.act
        if a[0] == "traffic" and a[1] == src and a[2] == dst and a[3] == v:
            return ev
        if a[0] == "op" and a[1] == src and any(n[0] == "ipi" and n[1] == dst and n[2] == v for n in ev.notes):
            return ev
    return None


def generation_at(ctx: Ctx, step: int) -> int:
    """The running kernel's generation just before event `step`."""
    ev, w = ctx.slot_write(ctx.L.gindex["kgen"], step)
    return w[2] if ev is not None else 1


def explain_corruption(eng) -> list[Link]:
    """Why the hypervisor wrote into a page the running kernel does not own for that purpose:
    the write; the page's owner at that time and since when; the MSR write that pointed the
    hypervisor there and its kernel generation; the transitions in between; the teardown that
    never ran (the pack names it)."""
    ctx = Ctx(eng)
    L = eng.L
    vev = next((ev for ev in eng.events.scan(0, eng.step, Journal.with_note("violation"), reverse=True)
                if any(n[0] == "violation" for n in ev.notes)), None)
    if vev is None:
        return []
    nt = next(n for n in vev.notes if n[0] == "violation")
    _, name, cpu, structure, gpa, own, gen, want = nt
    pfn = gpa >> PAGE_SHIFT
    links: list[Link] = []
    mw = next((w for w in vev.writes if isinstance(w[0], tuple) and w[0][0] == "m"), None)
    where_ = "its overlay page, mapped" if mw is not None and mw[0][1] >= 0 else "guest RAM"
    links.append(Link(vev.step, f"the {eng.cfg.hypervisor} hypervisor wrote cpu{cpu}'s {structure} in {where_} at GPA "
                      f"0x{gpa:x} ({describe(eng, vev)}); kernel generation {gen} is running", mw[0] if mw else None,
                      "write"))
    oev, ow = ctx.slot_write(("own", pfn), vev.step)
    if own is None:
        prev = f"; its last owner was generation {ow[1][0]}'s {ow[1][1]} of cpu{ow[1][2]}" if oev is not None and ow[1] \
            else ""
        links.append(Link(oev.step if oev else 0, f"page 0x{pfn << PAGE_SHIFT:x} is owned by no kernel of generation "
                          f"{gen}{' since ' + describe(eng, oev) if oev else ''}{prev}; the hypervisor may write there "
                          f"only into a page the running kernel owns as {want} of cpu{cpu}",
                          ow[0] if ow else None, "owner"))
    else:
        links.append(Link(oev.step if oev else 0, f"page 0x{pfn << PAGE_SHIFT:x} belongs to kernel generation {own[0]} as "
                          f"{own[1]} of cpu{own[2]}{' since ' + describe(eng, oev) if oev else ''}, not as {want} of "
                          f"cpu{cpu}", ow[0] if ow else None, "owner"))
    # the MSR write that pointed the hypervisor at the page
    sp = next((p for p in eng.hv.shared_pages(cpu) if p.structure.name == structure), None)
    msr = sp.msr if sp is not None else None
    zev = None
    if msr is not None and msr in L.msr_off:
        slot = L.base(cpu) + L.msr_off[msr]
        zev, zw = ctx.slot_write(slot, vev.step, lambda o, n: n & 1 and (n >> PAGE_SHIFT) == pfn)
        if zev is not None:
            from .msr import MSR_NAMES
            g = generation_at(ctx, zev.step)
            links.append(Link(zev.step, f"{MSR_NAMES.get(msr, hex(msr))} = 0x{zw[2]:x} pointed the hypervisor at GPA "
                              f"0x{pfn << PAGE_SHIFT:x}: {describe(eng, zev)}, in kernel generation {g}", zw[0], "pointer"))
            # the transitions since then: the guest changed kernels, the hypervisor kept the pointer
            kslot = L.gindex["kgen"]
            for tev in eng.events.scan(zev.step + 1, vev.step, Journal.with_note("transition")):
                tn = next((n for n in tev.notes if n[0] == "transition"), None)
                if tn is not None:
                    kw = next((w for w in tev.writes if w[0] == kslot), None)
                    links.append(Link(tev.step, f"{tn[1].replace('_', ' ')} on cpu{tn[3]}: the running kernel became "
                                      f"generation {tn[2]}; the hypervisor still held the pointer",
                                      kw[0] if kw else None, "transition"))
            dis = ctx.slot_write(slot, vev.step, lambda o, n: (o & 1) and not (n & 1))[0]
            if dis is None or dis.step < zev.step:
                links.append(Link(vev.step, f"no write disabled cpu{cpu}'s {MSR_NAMES.get(msr, hex(msr))} between step "
                                  f"{zev.step} and this write: the teardown never ran", None, "teardown"))
    links += ctx.pack_links("corruption", nt, vev, zev)
    links.sort(key=lambda k: k.step)
    return links


def explain(eng, outcome: str) -> list[Link]:
    """The causal chain of a run's outcome at the engine's current state."""
    if outcome == "hang":
        return explain_hang(eng)
    if outcome == "corruption":
        return explain_corruption(eng)
    return []
