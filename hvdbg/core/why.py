"""`why` for one state cell at a timeline's position: the chain of writes behind it.

A cell is named as the user names it - ("isr"|"irr", cpu, vector), ("msr", cpu, number),
("reg", cpu, n), ("var", name), ("percpu", cpu, name), ("hotplug", cpu) or ("mem", space, addr) - and
mapped to a journal location here, so commands never handle slot offsets. Answers are
(lines, data) built from the indexed ``Timeline.last_write``; every step they name is an
event whose writes hold the cell.
"""
from __future__ import annotations

from .defs import vector_name
from .explain import describe
from .machine import F_IRR, F_ISR, RAM


class CellError(ValueError):
    pass


def cell_slot(tl, cell: tuple) -> int:
    """The journal location (a state slot) of a register-like cell."""
    e = tl.e
    k = cell[0]
    if k in ("isr", "irr"):
        return e.bases[cell[1]] + (F_ISR if k == "isr" else F_IRR)
    if k == "msr":
        off = e.L.msr_off.get(cell[2])
        if off is None:
            raise CellError(f"MSR 0x{cell[2]:x} is not modelled")
        return e.bases[cell[1]] + off
    if k == "var":
        if cell[1] not in e.L.gvar:
            raise CellError(f"no variable ${cell[1]}")
        return e.L.gvar[cell[1]]
    if k == "percpu":
        if cell[2] not in e.L.pvar:
            raise CellError(f"no per-CPU variable %{cell[2]}")
        return e.bases[cell[1]] + e.L.pvar[cell[2]]
    if k == "hotplug":
        return e.bases[cell[1]] + e.L.P_HP
    if k == "reg":
        if not 0 <= cell[2] <= 3:
            raise CellError(f"no register r{cell[2]} (r0..r3)")
        from .machine import F_R0
        return e.bases[cell[1]] + F_R0 + cell[2]
    raise CellError(f"unknown cell {cell!r}")


def event_line(tl, i: int) -> str:
    return f"step {i + 1}: {describe(tl.e, tl.events[i])}"


def why_bit(tl, cpu: int, reg: str, vector: int) -> tuple[list[str], dict]:
    """Who set or cleared `vector` in cpu's IRR/ISR last; for an ISR bit that stays set, the
    EOI that was skipped on this vCPU afterwards and where the hint bit came from."""
    slot = cell_slot(tl, (reg, cpu))
    label = f"{vector_name(vector)} in cpu{cpu}'s {reg.upper()}"
    val = tl.e.m.S[slot] >> vector & 1
    lines = [f"{label} is {'set' if val else 'clear'} at step {tl.pos}"]
    i = tl.last_write(slot)
    while i is not None:
        w = next(w for w in tl.events[i].writes if w[0] == slot)
        if ((w[1] ^ w[2]) >> vector) & 1:
            break
        i = tl.last_write(slot, before=i)
    if i is None:
        lines.append("it has had this value since the start")
        return lines, {"value": val, "step": None, "steps": []}
    lines.append(f"{'set' if val else 'cleared'} by {event_line(tl, i)}")
    chain = [i]
    if val and reg == "isr":
        # a vector that stays in service: the EOI skipped on this vCPU after it was delivered
        from .journal import Journal
        sev = next((ev for ev in tl.events.scan(i + 1, tl.pos, Journal.with_note("eoi_skipped"))
                    if ev.cpu == cpu and ev.act[0] == "op" and any(n[0] == "eoi_skipped" for n in ev.notes)), None)
        j = sev.step if sev is not None else None
        if j is not None:
            nt = next(n for n in sev.notes if n[0] == "eoi_skipped")
            lines.append(f"its EOI was skipped at {event_line(tl, j)}: the EOI hint read 0x{nt[3]:08x} (bit0 = 1) from "
                         f"{'guest RAM' if nt[1] == RAM else 'the overlay'} with no hypervisor lease behind it")
            src = tl.last_write(("mem", nt[1], nt[2]), before=j)
            if src is not None:
                lines.append(f"that bit0 was written by {event_line(tl, src)}")
                chain += [j, src]
    return lines, {"value": val, "step": i, "steps": chain}


def why_cell(tl, cell: tuple, label: str) -> tuple[list[str], dict]:
    slot = cell_slot(tl, cell)
    val = tl.e.m.S[slot]
    i = tl.last_write(slot)
    shown = hex(val) if isinstance(val, int) and val > 9 else repr(val)
    lines = [f"{label} = {shown} at step {tl.pos}",
             f"last written by {event_line(tl, i)}" if i is not None else "unchanged since the start"]
    return lines, {"value": val if isinstance(val, int) else repr(val), "step": i}


def why_mem(tl, space: int, addr: int) -> tuple[list[str], dict]:
    cur = tl.e.m.read_mem(space, addr, 1)
    sp = "RAM" if space == RAM else f"overlay(cpu{space})"
    if cur is None:
        raise CellError(f"no {sp} page at 0x{addr:x} at step {tl.pos}")
    lines = [f"{sp}[0x{addr:x}] = 0x{cur:02x} at step {tl.pos}"]
    own = tl.e.m.own.get(addr >> 12) if space == RAM else None
    if own is not None:
        lines.append(f"the page belongs to kernel generation {own[0]} for {own[1]} (cpu{own[2]})")
    i = tl.last_write(("mem", space, addr))
    chain = []
    while i is not None and len(chain) < 6:
        chain.append(i)
        lines.append(f"{'written' if len(chain) == 1 else 'before that'} by {event_line(tl, i)}")
        ev = tl.events[i]
        if any(isinstance(w[0], tuple) and w[0][0] in ("pg", "ov") for w in ev.writes):
            allocs = [n for n in ev.notes if n[0] == "alloc"]
            if allocs:
                lines.append(f"  the page was allocated {'zeroed' if allocs[0][2] else 'without __GFP_ZERO (garbage)'}")
            break
        i = tl.last_write(("mem", space, addr), before=i)
    return lines, {"value": cur, "steps": chain}
