"""Pure functions from the session to rich Text for each pane (no Textual here, so they are
cheap to test and reuse). They read a read-only MachineView (core/view.py) and the journal;
they never move a timeline."""
from __future__ import annotations

from rich.text import Text

from ..core.defs import VECTOR_NAMES, vector_names
from ..core.explain import describe, where
from ..core.machine import RAM
from ..core.msr import decode_msr as _decode_msr
from ..core.view import msr_label

vec_names = vector_names


def changed_cells(tl) -> set:
    return set(tl.event_cells(tl.pos - 1)) if tl.pos > 0 else set()


def vcpu_pane(session, cpu: int, width: int = 60, context: int = 3, reg: int | None = None) -> Text:
    tl = session.tl
    e = tl.e
    cv = tl.view().cpu(cpu)
    rt, pc = cv.routine_id, cv.pc
    focus = cpu == tl.focus
    t = Text(no_wrap=True, overflow="ellipsis")
    hp = cv.hotplug
    t.append(f"cpu{cpu} ", style="bold reverse" if focus else "bold")
    t.append(f"{hp}", style={"dying": "yellow", "dead": "red", "online": "green"}.get(hp, ""))
    t.append(f"  IF={cv.IF}{'  halted' if cv.halted else ''}  depth {cv.depth}\n")
    r = e.routines[rt]
    t.append(f"{r.name}", style="bold cyan")
    t.append(f"  {r.file}\n", style="dim")
    lo, hi = max(0, pc - context), min(len(r.ops), pc + context + 1)
    for i in range(lo, hi):
        op = r.ops[i]
        cur = i == pc
        t.append(f"{'→' if cur else ' '}{i:3d} ", style="bold yellow" if cur else "dim")
        t.append(f"{op.text}"[: max(10, width - 12)], style="bold yellow" if cur else "")
        if op.line:
            t.append(f"  :{op.line}", style="dim")
        t.append("\n")
        if cur:
            loc = f"{op.file}:{op.line}" if op.line else op.file
            t.append(f"     {op.func}() {loc}\n", style="cyan")
            if op.c:
                t.append(f"     {op.c}\n", style="yellow")
    for i, x in enumerate(cv.regs):
        t.append(f"r{i}={x:#x} ", style="reverse" if reg == i and focus else "dim")
    t.append(f" TPR={cv.tpr}\n", style="dim")
    ints = [f for f in cv.frames() if f.kind == "interrupt"]
    if ints:
        t.append("nested: " + " > ".join(f"0x{f.vector:02x} in {f.routine}" for f in reversed(ints)) + "\n",
                 style="magenta")
    return t


def vcpu_list(session) -> Text:
    """More than 4 vCPUs: one line each (the focused one is shown in full below)."""
    tl = session.tl
    t = Text(no_wrap=True, overflow="ellipsis")
    for cv in tl.view().cpus():
        c, hp = cv.c, cv.hotplug
        line = (f"{'>' if c == tl.focus else ' '}cpu{c:<3d}{hp:<8}IF={cv.IF} {'H' if cv.halted else ' '} "
                f"{cv.routine}+{cv.pc:<3d}")
        t.append(line, style="bold reverse" if c == tl.focus else {"dying": "yellow", "dead": "red"}.get(hp, ""))
        if cv.isr:
            t.append(" ISR " + ",".join(vec_names(cv.isr)), style="magenta")
        if cv.irr:
            t.append(" IRR " + ",".join(vec_names(cv.irr)), style="yellow")
        t.append("\n")
    return t


def primary_structure(mv, cpu: int):
    """The shared structure the hexdump shows for `cpu` (the pack's first declared one, else the
    hypervisor's first): (SharedPage or None, gpa)."""
    pack = getattr(mv.e, "pack", None)
    names = list(pack.structures) if pack is not None and pack.structures else []
    pages = mv.shared_pages(cpu)
    if not names and pages:
        names = [pages[0].structure.name]
    if not names:
        return None, -1
    return mv.structure_page(cpu, names[0])


def page_bytes(mv, cpu: int, view: str) -> bytes | None:
    """The shown page of `cpu` in view `view` ("ram" or "overlay") in MachineView mv."""
    if view == "overlay":
        return mv.page(cpu)
    _, gpa = primary_structure(mv, cpu)
    return mv.page(RAM, gpa) if gpa > 0 else None


def page_at(tl, cpu: int, view: str, step: int) -> bytes | None:
    """The shown page of `cpu` at `step` of timeline `tl` (a scratch copy: `tl` does not move)."""
    return page_bytes(tl.state_at(step), cpu, view)


def hexdump(session, cpu: int, view: str = "ram", rows: int = 8, cursor: int = 0, bit: int = 0,
            width: int = 80, against: tuple | None = None) -> Text:
    """`against` = (label, bytes) to highlight differences with; default: the last event's writes."""
    tl = session.tl
    mv = tl.view()
    sp, gpa = primary_structure(mv, cpu)
    t = Text(no_wrap=True, overflow="ellipsis")
    if sp is None:
        t.append(f"cpu{cpu}: no shared page (the {tl.e.cfg.hypervisor} model declares none)\n", style="dim")
        return t
    msr_v = mv.cpu(cpu).msr(sp.msr) or 0
    st = sp.structure
    t.append(f"{st.title} cpu{cpu}  {msr_label(sp.msr)}={msr_v:#x} "
             f"({'enabled' if sp.enabled else 'disabled'}{', ' + sp.note if sp.note else ''})  view: {view.upper()}\n",
             style="bold")
    if view == "overlay":
        pg, space, base = mv.page(cpu), cpu, 0
    else:
        pg = mv.page(RAM, gpa) if gpa > 0 else None
        space, base = RAM, max(gpa, 0)
    if pg is None:
        t.append("  (no page)\n", style="dim")
        return t
    changed = set()
    if against is not None and against[1] is not None:
        ref = against[1]
        changed = {j for j in range(min(len(ref), len(pg), rows * 16)) if ref[j] != pg[j]}
        t.append(f"  changes vs {against[0]}: {len(changed)} byte(s)\n", style="magenta")
    else:
        for cell in changed_cells(tl):
            if cell[0] == "mem" and cell[1] == space:
                changed.add(cell[2] & 0xFFF)
    fields = {off: name for off, _, name in st.fields}
    per = 16 if width >= 58 else 8
    for row in range(rows * (16 // per)):
        off = row * per
        if off >= 4096:
            break
        t.append(f"{base + off:08x} ", style="dim")
        for j in range(per):
            a = off + j
            style = ""
            if a in changed:
                style = "bold red"
            if a == cursor:
                style = (style + " reverse").strip()
            t.append(f"{pg[a]:02x}", style=style)
            t.append(" ")
        label = fields.get(off, "")
        if width >= 9 + 3 * per + per + 1 + len(label):
            asc = "".join(chr(x) if 32 <= x < 127 else "." for x in pg[off:off + per])
            t.append(asc, style="dim")
        if label and width >= 9 + 3 * per + 2 + len(label):
            t.append(f" {label}", style="cyan")
        t.append("\n")
    v = pg[cursor]
    t.append(f"cursor 0x{cursor:03x} bit {bit}: byte {v:#04x} = {v:08b}, bit{bit}={v >> bit & 1}", style="bold")
    f0 = st.fields[0] if st.fields else None
    if f0 is not None and cursor < f0[0] + f0[1]:
        word = int.from_bytes(pg[f0[0]:f0[0] + f0[1]], "little")
        t.append(f"   {f0[2]} = {word:#010x} (bit0 = {word & 1})", style="cyan")
    t.append("\n")
    return t


def decode_msr(m: int, v: int) -> str:
    return _decode_msr(m, v)


def msr_rows(session, cpu: int) -> list[int]:
    """The MSRs the table shows (not at reset value, and the ones pointing at shared pages)."""
    return session.tl.view().cpu(cpu).shown_msrs()


def selectable_vectors(session, cpu: int) -> list[tuple[str, int]]:
    """("isr"|"irr", vector) of the vCPU, highest first: what the vector cursor walks."""
    cv = session.tl.view().cpu(cpu)
    out = []
    for kind, bits in (("isr", cv.isr), ("irr", cv.irr)):
        out += [(kind, v) for v in range(255, -1, -1) if bits >> v & 1]
    return out


def msr_table(session, cpu: int, selected: int | None = None) -> Text:
    tl = session.tl
    cv = tl.view().cpu(cpu)
    changed = {c[2] for c in changed_cells(tl) if c[0] == "msr" and c[1] == cpu}
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"MSRs cpu{cpu} (not at reset value)\n", style="bold")
    for m in msr_rows(session, cpu):
        v = cv.msr(m)
        style = "bold red" if m in changed else ""
        if m == selected:
            style = (style + " reverse").strip()
        t.append(f"{msr_label(m):<30} {v:#018x}", style=style)
        dec = decode_msr(m, v)
        if dec:
            t.append(f"  {dec}", style="cyan")
        t.append("\n")
    return t


def irq_queue(session, selected: tuple | None = None) -> Text:
    tl = session.tl
    mv = tl.view()
    t = Text()
    t.append("interrupts\n", style="bold")
    for cv in mv.cpus():
        c = cv.c
        irr, isr = cv.irr, cv.isr
        t.append(f"cpu{c} IF={cv.IF} ", style="bold" if c == tl.focus else "")
        t.append("ISR ", style="magenta" if isr else "dim")
        if not isr:
            t.append("-", style="dim")
        for v in [v for v in range(255, -1, -1) if isr >> v & 1]:
            sel = c == tl.focus and selected == ("isr", v)
            t.append(VECTOR_NAMES.get(v, f"0x{v:02x}"), style="magenta reverse" if sel else "magenta")
            t.append(" ")
        t.append("  IRR ")
        if not irr:
            t.append("-", style="dim")
        for vec in [v for v in range(255, -1, -1) if irr >> v & 1]:
            why = ""
            if not cv.IF:
                why = "IRQs off"
            elif isr and (vec >> 4) <= ((isr.bit_length() - 1) >> 4):
                why = f"blocked by {VECTOR_NAMES.get(isr.bit_length() - 1, hex(isr.bit_length() - 1))} in service"
            sel = c == tl.focus and selected == ("irr", vec)
            t.append(VECTOR_NAMES.get(vec, f"0x{vec:02x}"), style="yellow reverse" if sel else "yellow")
            if why:
                t.append(f" ({why})", style="red")
            t.append(" ")
        if cv.hv_private:
            t.append(f"  EOI hint armed ({cv.hv_private:#x})", style="cyan")
        if cv.timer:
            t.append("  timer", style="dim")
        t.append("\n")
    ipis = mv.in_flight()
    t.append("in flight: " + (", ".join(f"cpu{a}->cpu{b_} {VECTOR_NAMES.get(v, hex(v))}" for a, b_, v in ipis) or "none")
             + "\n", style="dim")
    return t


def event_log(session, n: int = 12) -> Text:
    tl = session.tl
    t = Text(no_wrap=True, overflow="ellipsis")
    lo = max(0, tl.pos - n)
    for i in range(lo, min(tl.length, tl.pos + 1)):
        ev = tl.events[i]
        style = "bold" if i == tl.pos - 1 else ("dim" if i >= tl.pos else "")
        a = ev.act
        text = (f"cpu{a[1]} {where(tl.e, ev.rt, ev.pc, c_text=False)}" if a[0] == "op" else describe(tl.e, ev))
        t.append(f"{'>' if i == tl.pos - 1 else ' '}{i:7d} {text}\n", style=style)
    return t


def status_line(session) -> Text:
    tl = session.tl
    t = Text()
    out = tl.result.outcome if tl.result else "?"
    t.append(f" [{session.current}] ", style="bold reverse")
    t.append(f" step {tl.pos}/{tl.length} ")
    t.append(f" {out.upper()} ", style={"hang": "bold white on red", "corruption": "bold white on magenta",
                                        "ok": "bold black on green"}.get(out, "bold"))
    if tl.result and out != "ok":
        t.append(f" {tl.result.reason}", style="dim")
    v = getattr(session, "verification", None)
    if v:
        if v["state"] == "running":
            t.append(f"  verifying {v['done']}/{v['total'] or '?'}", style="yellow")
        elif v["state"] == "verified":
            t.append("  verified", style="green")
        elif v["state"] == "diverged":
            t.append(f"  DIVERGES at step {v['step']}", style="bold white on red")
    others = [f"{n}:{b.result.outcome if b.result else '…'}" for n, b in session.branches.items() if n != session.current]
    if others:
        t.append("   branches " + " ".join(others), style="cyan")
    t.append(f"   focus cpu{tl.focus}", style="bold")
    return t
