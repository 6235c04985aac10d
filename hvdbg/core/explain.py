"""Hang explanation: a causal chain computed by queries over the event journal.

Nothing here is a filled-in story: each link is found by asking the journal who wrote
what and when (``last_write``), and each link names the step whose writes hold the
location it claims (``loc``), so a test can check every link against the journal.
"""
from __future__ import annotations

from dataclasses import dataclass

from .defs import MSR_VP_ASSIST_PAGE, PAGE_SHIFT, vector_name
from .program import parse_operand
from .engine import E_ACT, E_CPU, E_NOTES, E_PC, E_RT, E_STEP, E_WRITES, Engine, act_text
from .machine import F_FRAMES, F_HALT, F_IF, F_IRR, F_ISR, F_PC, F_RT, MSR_OFF, RAM


@dataclass
class Link:
    step: int
    text: str
    loc: object = None      # the journal location the link claims was written at `step`
    kind: str = ""

    def as_dict(self) -> dict:
        return {"step": self.step, "text": self.text, "kind": self.kind}


def op_at(eng: Engine, rt: int, pc: int):
    ops = eng.routines[rt].ops
    return ops[pc] if 0 <= pc < len(ops) else None


def where(eng: Engine, rt: int, pc: int, c_text: bool = True) -> str:
    op = op_at(eng, rt, pc)
    if op is None:
        return f"{eng.rnames[rt]}+{pc}"
    line = f"{op.file}:{op.line}" if op.line else f"{op.file}"
    c = f" `{op.c}`" if op.c and c_text else ""
    return f"{op.func}() {line}{c}"


def describe(eng: Engine, ev: tuple) -> str:
    a = ev[E_ACT]
    if a[0] == "op":
        return f"cpu{a[1]} {where(eng, ev[E_RT], ev[E_PC])}"
    return act_text(a)


def last_write(eng: Engine, match, before: int):
    """The newest event before step `before` holding a write (loc, old, new) with
    match(loc, old, new) true. Returns (event, write) or (None, None)."""
    evs = eng.events
    for i in range(min(before, len(evs)) - 1, -1, -1):
        ev = evs[i]
        for w in ev[E_WRITES]:
            if match(*w):
                return ev, w
    return None, None


def _mem_covers(space: int, addr: int):
    """Matches any write of the byte at `addr` in `space` (the last one before a read of
    bit0 = 1 is the one that put it there)."""
    pfn = addr >> PAGE_SHIFT

    def m(loc, old, new):
        if not isinstance(loc, tuple):
            return False
        if loc[0] == "m" and loc[1] == space:
            return loc[2] <= addr < loc[2] + len(new)
        if loc[0] == "pg" and space == RAM and loc[1] == pfn:
            return True
        if loc[0] == "ov" and loc[1] == space:
            return True
        return False
    return m


def _cond_vars(cond_text: str) -> list[str]:
    return [t for t in cond_text.replace("&&", " ").split() if t[0] in "$%"]


def explain_hang(eng: Engine) -> list[Link]:
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
            ev, w = last_write(eng, lambda loc, o, n, i=b + F_HALT: loc == i and n == 1, now)
            fault = next((n[1] for n in ev[E_NOTES] if n[0] == "fault"), None) if ev else None
            if fault is not None:
                links.append(Link(ev[E_STEP], f"cpu{c} stopped with IRQs off after a fault in {eng.rnames[ev[E_RT]]}: "
                                  f"{fault}", w[0], "fault"))
            else:
                state = "halted with IRQs on, waiting for an interrupt" if S[b + F_IF] else "halted with IRQs off"
                prev = op_at(eng, rt, pc - 1)
                at = where(eng, rt, pc - 1) if prev else eng.rnames[rt]
                links.append(Link(ev[E_STEP] if ev else 0, f"cpu{c} is {state} in {at}", w[0] if w else None, "wait"))
        elif op is not None and op.opcode == "wait" and not eng.holds(c, b, eng.code[rt][pc][1]):
            ev, w = last_write(eng, lambda loc, o, n, i=b + F_PC, p=pc: loc == i and n == p, now)
            cond = op.text.split(None, 1)[1]
            vals = ", ".join(f"{t} = {eng.val(c, b, eng._operand(parse_operand(t)))}" for t in _cond_vars(cond))
            links.append(Link(ev[E_STEP] if ev else 0,
                              f"cpu{c} waits{' with IRQs off' if not S[b + F_IF] else ''} in {where(eng, rt, pc)} "
                              f"until {cond} (now {vals})",
                              w[0] if w else None, "wait"))
        elif S[b + F_FRAMES]:
            # running an interrupt handler: is the interrupted context a wait that cannot finish?
            fr = next((f for f in S[b + F_FRAMES] if f[0] == 1), None)
            if fr is not None:
                iop = op_at(eng, fr[1], fr[2])
                if iop is not None and iop.opcode == "wait" and not eng.holds(c, b, eng.code[fr[1]][fr[2]][1]):
                    cond = iop.text.split(None, 1)[1]
                    ev, w = last_write(eng, lambda loc, o, n, i=b + F_PC, p=fr[2]: loc == i and n == p, now)
                    links.append(Link(ev[E_STEP] if ev else 0,
                                      f"cpu{c} waits in {where(eng, fr[1], fr[2])} until {cond}; it keeps taking "
                                      f"{vector_name(fr[8])} and other interrupts, but the condition never becomes true",
                                      w[0] if w else None, "wait"))
        irr = S[b + F_IRR]
        if irr and not eng.deliverable(c):
            blocked_vectors.append(c)
    # 2. pending vectors that cannot be delivered, and why
    for c in blocked_vectors:
        b = L.base(c)
        irr, isr = S[b + F_IRR], S[b + F_ISR]
        v = irr.bit_length() - 1
        ev, w = last_write(eng, lambda loc, o, n, i=b + F_IRR, v=v: loc == i and (n >> v & 1) and not (o >> v & 1), now)
        src = ""
        if ev is not None and ev[E_ACT][0] == "land":
            sender = _find_send(eng, ev[E_ACT][1], c, v, ev[E_STEP])
            if sender is not None:
                src = f", sent by {describe(eng, sender)} at step {sender[E_STEP]}"
        if not S[b + F_IF]:
            links.append(Link(ev[E_STEP] if ev else 0, f"{vector_name(v)} is pending in cpu{c}'s IRR{src}, but cpu{c} has IRQs off",
                              w[0] if w else None, "pending"))
            continue
        u = isr.bit_length() - 1 if isr else -1
        links.append(Link(ev[E_STEP] if ev else 0,
                          f"{vector_name(v)} is pending in cpu{c}'s IRR{src}; it cannot be delivered: "
                          f"{vector_name(u)} is in service (class 0x{u >> 4:x} >= class 0x{v >> 4:x}, SDM 10.8.3.1)"
                          if u >= 0 else f"{vector_name(v)} is pending in cpu{c}'s IRR but TPR blocks it",
                          w[0] if w else None, "pending"))
        if u < 0:
            continue
        rest = irr & ~(1 << v)
        while rest:
            v2 = rest.bit_length() - 1
            rest &= ~(1 << v2)
            ev2, w2 = last_write(eng, lambda loc, o, n, i=b + F_IRR, v=v2: loc == i and (n >> v & 1) and not (o >> v & 1), now)
            links.append(Link(ev2[E_STEP] if ev2 else 0, f"{vector_name(v2)} is pending in cpu{c}'s IRR too, blocked by the "
                              f"same in-service {vector_name(u)}", w2[0] if w2 else None, "pending"))
        # later sends of the same vector that collapsed into the pending one
        for cev in eng.events[ev[E_STEP] + 1 if ev else 0:]:
            ca = cev[E_ACT]
            if ca[0] == "land" and ca[2] == c and ca[3] == v and any(n[0] == "collapse" for n in cev[E_NOTES]):
                sender = _find_send(eng, ca[1], c, v, cev[E_STEP])
                if sender is not None and sender[E_ACT][0] == "op":
                    iw = next((w for w in sender[E_WRITES] if w[0] == 0), None)
                    links.append(Link(sender[E_STEP], f"{describe(eng, sender)} sent {vector_name(v)} to cpu{c}; "
                                      f"it collapsed into the already pending one at step {cev[E_STEP]} (SDM: one IRR bit per vector)",
                                      iw[0] if iw else None, "collapse"))
        # 3. when the blocking vector entered ISR
        dev, dw = last_write(eng, lambda loc, o, n, i=b + F_ISR, u=u: loc == i and (n >> u & 1) and not (o >> u & 1), now)
        if dev is None:
            continue
        links.append(Link(dev[E_STEP], f"{vector_name(u)} entered cpu{c}'s ISR when the hypervisor delivered it; "
                          f"no EOI has cleared it since", dw[0], "isr"))
        # 4. where its EOI was skipped and why
        skip = None
        for ev2 in eng.events[dev[E_STEP] + 1:]:
            if ev2[E_CPU] == c and ev2[E_ACT][0] == "op":
                if any(nt[0] == "stale_assist" for nt in ev2[E_NOTES]):
                    skip = ev2
                    break
        if skip is None:
            links.append(Link(dev[E_STEP], f"no EOI for {vector_name(u)} was performed after step {dev[E_STEP]}", dw[0], "eoi"))
            continue
        nt = next(n for n in skip[E_NOTES] if n[0] == "stale_assist")
        space, addr, val = nt[1], nt[2], nt[3]
        mw = next((w for w in skip[E_WRITES] if isinstance(w[0], tuple) and w[0][0] == "m" and w[0][2] == addr), None)
        sp = "guest RAM (no overlay enabled)" if space == RAM else f"the overlay page of cpu{space}"
        links.append(Link(skip[E_STEP], f"EOI skipped: {where(eng, skip[E_RT], skip[E_PC])} read apic_assist = 0x{val:08x} "
                          f"(bit0 = 1) from {sp} at 0x{addr:x}; hv_apic_eoi_write returned without writing HV_X64_MSR_EOI, "
                          f"and no hypervisor assist was armed, so nobody performed the EOI", mw[0] if mw else None, "skip"))
        # 5. where that bit came from
        sev, sw = last_write(eng, _mem_covers(space, addr), skip[E_STEP])
        if sev is not None:
            allocs = [n for n in sev[E_NOTES] if n[0] == "alloc"]
            if allocs and sw[0][0] == "pg":
                zero = allocs[0][2]
                links.append(Link(sev[E_STEP], f"bit0 came from the page allocation {where(eng, sev[E_RT], sev[E_PC])} "
                                  f"at step {sev[E_STEP]}: {'zeroed' if zero else 'not zeroed (no __GFP_ZERO)'}, the page held "
                                  f"garbage 0x{sw[2][addr & 0xFFF]:02x} at 0x{addr:x}", sw[0], "source"))
            elif sev[E_ACT][0] == "op":
                who = "a hypervisor write" if any(n[0] == "hv" for n in sev[E_NOTES]) and not _is_guest_store(eng, sev) else "a guest write"
                links.append(Link(sev[E_STEP], f"bit0 came from {who} at step {sev[E_STEP]}: {describe(eng, sev)} "
                                  f"wrote {sw[2].hex()} at {L.describe(sw[0])}", sw[0], "source"))
            else:
                links.append(Link(sev[E_STEP], f"bit0 came from {act_text(sev[E_ACT])} at step {sev[E_STEP]} "
                                  f"({L.describe(sw[0])} = {sw[2].hex() if isinstance(sw[2], bytes) else sw[2]})", sw[0], "source"))
        # 6. when the overlay was disabled
        mi = b + MSR_OFF[MSR_VP_ASSIST_PAGE]
        oev, ow = last_write(eng, lambda loc, o, n, i=mi: loc == i and (o & 1) and not (n & 1), skip[E_STEP])
        if oev is not None and space == RAM:
            links.append(Link(oev[E_STEP], f"the VP assist page overlay was disabled at step {oev[E_STEP]}: "
                              f"{describe(eng, oev)} wrote HV_X64_MSR_VP_ASSIST_PAGE = 0x{ow[2]:x}; from then on "
                              f"cpu{c}'s apic_assist accesses reach the never-zeroed guest page", ow[0], "disable"))
        elif space == RAM:
            # never enabled yet: the pointer was published before the enabling WRMSR
            page = addr & ~0xFFF
            first_var = min(L.pvar.values())
            pev, pw = last_write(eng, lambda loc, o, n: isinstance(loc, int) and n == page and loc >= L.nglobal
                                 and L.split(loc)[0] == c and L.split(loc)[1] >= first_var, skip[E_STEP])
            if pev is not None:
                links.append(Link(pev[E_STEP], f"the overlay was not enabled yet: {describe(eng, pev)} published the page "
                                  f"pointer ({L.describe(pw[0])} = 0x{page:x}) at step {pev[E_STEP]}, before the enabling "
                                  f"WRMSR of HV_X64_MSR_VP_ASSIST_PAGE, with IRQs on", pw[0], "window"))
    links.sort(key=lambda k: k.step)
    return links


def _is_guest_store(eng: Engine, ev: tuple) -> bool:
    op = op_at(eng, ev[E_RT], ev[E_PC])
    return op is not None and op.opcode in ("store", "xchg")


def _find_send(eng: Engine, src: int, dst: int, v: int, before: int):
    for i in range(before - 1, -1, -1):
        ev = eng.events[i]
        a = ev[E_ACT]
        if a[0] == "traffic" and a[1] == src and a[2] == dst and a[3] == v:
            return ev
        if a[0] == "op" and a[1] == src and any(n[0] == "ipi" and n[1] == dst and n[2] == v for n in ev[E_NOTES]):
            return ev
    return None
