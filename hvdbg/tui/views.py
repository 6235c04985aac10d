"""Pure functions from the session to rich Text for each pane (no Textual here, so they are
cheap to test and reuse). They read a read-only MachineView (core/view.py) and the journal;
they never move a timeline."""
from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text

from ..core.defs import VECTOR_NAMES, vector_names, vectors_down
from ..core.machine import RAM
from ..core.msr import decode_msr as _decode_msr
from ..core.view import msr_label

vec_names = vector_names


def changed_cells(tl) -> set:
    return set(tl.event_cells(tl.pos - 1)) if tl.pos > 0 else set()


_LISTINGS: dict = {}          # (view, id(routine), pc, breakpoints) -> (routine, (Text, line))


def _listing(view, tl, cpu: int) -> tuple[Text, int]:
    """view(routine, pc, breakpoints) of `cpu`'s current routine, remembered: a routine's
    listing is a function of the routine, the pc and its breakpoints, and stepping (back and
    forth, or round a loop) shows the same few again and again. The Text is shared: callers
    read it and never change it."""
    cv = tl.view().cpu(cpu)
    rt, pc = cv.routine_id, cv.pc
    r, bps = tl.e.routines[rt], frozenset(pc_breaks(tl, rt))
    key = (view, id(r), pc, bps)
    hit = _LISTINGS.get(key)
    if hit is not None and hit[0] is r:
        return hit[1]
    if len(_LISTINGS) >= 512:              # ~6 KB each (a 60-op routine): a few MB at most
        _LISTINGS.clear()
    out = view(r, pc, bps)
    _LISTINGS[key] = (r, out)
    return out


def vcpu_listing(session, cpu: int) -> tuple[Text, int]:
    """The whole listing of `cpu`'s current routine, the current op marked with its function,
    file:line and C text under it; (text, line of the current op)."""
    return _listing(_vcpu_listing, session.tl, cpu)


def _vcpu_listing(r, pc: int, bps: frozenset) -> tuple[Text, int]:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{r.name}", style="bold cyan")
    t.append(f"  {r.file}\n", style="dim")
    cur_line = 1
    for i, op in enumerate(r.ops):
        cur = i == pc
        t.append("●" if i in bps else " ", style="bold red")
        t.append(f"{'→' if cur else ' '}{i:3d} ", style="bold yellow" if cur else "dim")
        t.append(op.text, style="bold yellow" if cur else "")
        if op.line:
            t.append(f"  :{op.line}", style="dim")
        t.append("\n")
        if cur:
            cur_line = len(t.plain.splitlines()) - 1
            loc = f"{op.file}:{op.line}" if op.line else op.file
            t.append(f"      {op.func}() {loc}\n", style="cyan")
            if op.c:
                t.append(f"      {op.c}\n", style="yellow")
    if pc >= len(r.ops):
        t.append(f" →{pc:3d} (past the end)\n", style="bold red")
    return t, cur_line


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
        out += [(kind, v) for v in vectors_down(bits)]
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


def irq_queue(session, selected: tuple | None = None, hits: list | None = None) -> Text:
    """The interrupt queue of every vCPU. `hits`, when given, receives (line, first column,
    end column, cpu, "isr"|"irr", vector) of each vector name shown, for clicks."""
    tl = session.tl
    mv = tl.view()
    t = Text()
    t.append("interrupts\n", style="bold")
    line = 1

    def vector(c: int, kind: str, v: int, style: str) -> None:
        name = VECTOR_NAMES.get(v, f"0x{v:02x}")
        if hits is not None:
            x = cell_len(t.plain[t.plain.rfind("\n") + 1:])
            hits.append((line, x, x + cell_len(name), c, kind, v))
        t.append(name, style=style)

    for cv in mv.cpus():
        c = cv.c
        irr, isr = cv.irr, cv.isr
        t.append(f"cpu{c} IF={cv.IF} ", style="bold" if c == tl.focus else "")
        t.append("ISR ", style="magenta" if isr else "dim")
        if not isr:
            t.append("-", style="dim")
        for v in vectors_down(isr):
            sel = c == tl.focus and selected == ("isr", v)
            vector(c, "isr", v, "magenta reverse" if sel else "magenta")
            t.append(" ")
        t.append("  IRR ")
        if not irr:
            t.append("-", style="dim")
        for vec in vectors_down(irr):
            why = ""
            if not cv.IF:
                why = "IRQs off"
            elif isr and (vec >> 4) <= ((isr.bit_length() - 1) >> 4):
                why = f"blocked by {VECTOR_NAMES.get(isr.bit_length() - 1, hex(isr.bit_length() - 1))} in service"
            sel = c == tl.focus and selected == ("irr", vec)
            vector(c, "irr", vec, "yellow reverse" if sel else "yellow")
            if why:
                t.append(f" ({why})", style="red")
            t.append(" ")
        if cv.hv_private:
            t.append(f"  EOI hint armed ({cv.hv_private:#x})", style="cyan")
        if cv.timer:
            t.append("  timer", style="dim")
        t.append("\n")
        line += 1
    ipis = mv.in_flight()
    t.append("in flight: " + (", ".join(f"cpu{a}->cpu{b_} {VECTOR_NAMES.get(v, hex(v))}" for a, b_, v in ipis) or "none")
             + "\n", style="dim")
    return t


def status_line(session, progress=None) -> Text:
    tl = session.tl
    t = Text(no_wrap=True, overflow="ellipsis")
    if progress is not None:
        done, total = progress.calls, progress.total
        rate = progress.rate()
        t.append(f" {progress.label or 'working'} ", style="bold black on yellow")
        if total:
            frac = min(1.0, done / total)
            bar = "█" * int(frac * 20) + "░" * (20 - int(frac * 20))
            eta = (total - done) / rate if rate > 0 and done < total else 0
            t.append(f" {bar} {done:,}/{total:,} ({rate / 1e3:,.0f}k/s, ~{eta:.0f} s left)")
        else:
            t.append(f" {done:,} done ({rate / 1e3:,.0f}k/s)")
        t.append("   Esc cancels", style="bold")
        return t
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


# ---------------------------------------------------------------- the source view (gdb's layout src / asm / split)
def pc_breaks(tl, rt: int) -> set[int]:
    """Op indexes of routine rt with an enabled pc breakpoint."""
    return {b.args[1] for b in tl.breaks if b.kind == "pc" and b.enabled and b.args[0] == rt}


def asm_lines(tl, cpu: int) -> tuple[Text, int]:
    """Every op of the focused vCPU's routine, the current one marked; (text, its line)."""
    return _listing(_asm_lines, tl, cpu)


def _asm_lines(r, pc: int, bps: frozenset) -> tuple[Text, int]:
    t = Text(no_wrap=True)
    cur_line = 0
    for i, op in enumerate(r.ops):
        cur = i == pc
        if cur:
            cur_line = i
        t.append("●" if i in bps else " ", style="bold red")
        t.append(f"{'→' if cur else ' '}{i:3d} ", style="bold yellow" if cur else "dim")
        t.append(op.text, style="bold yellow" if cur else "")
        if op.line:
            t.append(f"   :{op.line}", style="dim")
        t.append("\n")
    if pc >= len(r.ops):
        t.append(f" →{pc:3d} (past the end of {r.name})\n", style="bold red")
    return t, cur_line


def src_lines(tl, cpu: int) -> tuple[Text, int]:
    """The C lines of the focused vCPU's routine, from the listing's file:line and C text (in
    op order, one row per source line; model glue marked), the current line highlighted."""
    return _listing(_src_lines, tl, cpu)


def _src_lines(r, pc: int, bps: frozenset) -> tuple[Text, int]:
    rows: list[list] = []        # [file, line, c text, op indexes]
    index: dict = {}
    for i, op in enumerate(r.ops):
        key = (op.file, op.line) if op.line else ("model", -i - 1)
        if key not in index:
            index[key] = len(rows)
            rows.append([op.file, op.line, op.c if op.line else f"(model) {op.c or op.text}", []])
        rows[index[key]][3].append(i)
    t = Text(no_wrap=True)
    cur_line = 0
    last_file = None
    for n, (file, line, c, ops) in enumerate(rows):
        if file != last_file and file != "model":
            t.append(f"  {file}\n", style="dim cyan")
            last_file = file
        cur = pc in ops
        if cur:
            cur_line = len(t.plain.splitlines())
        t.append("●" if bps & set(ops) else " ", style="bold red")
        t.append("→" if cur else " ", style="bold yellow")
        t.append(f"{line:5d}  " if line else "    ·  ", style="bold yellow" if cur else "dim")
        t.append(c or "", style="bold yellow" if cur else ("dim" if not line else ""))
        t.append("\n")
    return t, cur_line


def vcpu_rows(session, compact: bool = False) -> list[tuple[int, str]]:
    """One line per vCPU for the picker and the list: state, where, IRR/ISR (vector numbers
    instead of names when compact)."""
    out = []
    names = (lambda m: [f"{v:02x}" for v in vectors_down(m)]) if compact else vec_names
    for cv in session.tl.view().cpus():
        line = f"{cv.hotplug:<8} IF={cv.IF} {'halted ' if cv.halted else ''}{cv.routine}+{cv.pc}"
        if cv.isr:
            line += "  ISR " + ",".join(names(cv.isr))
        if cv.irr:
            line += "  IRR " + ",".join(names(cv.irr))
        out.append((cv.c, f"cpu{cv.c:<3d} {line}"))
    return out
