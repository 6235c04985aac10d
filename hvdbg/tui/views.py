"""Pure functions from the session to rich Text for each pane (no Textual here, so they are
cheap to test and reuse)."""
from __future__ import annotations

from rich.text import Text

from ..core.defs import ASSIST_FIELDS, HP_NAMES, MSR_NAMES, VECTOR_NAMES, msr_reset_value, vector_names
from ..core.engine import E_WRITES
from ..core.explain import describe, where
from ..core.machine import F_FRAMES, F_HALT, F_HV, F_IF, F_IRR, F_ISR, F_PC, F_RT, F_TPR, MSR_LIST, MSR_OFF, RAM


vec_names = vector_names


def last_writes(tl) -> list:
    return tl.events[tl.pos - 1][E_WRITES] if tl.pos > 0 else []


def vcpu_pane(session, cpu: int, width: int = 60, context: int = 3, reg: int | None = None) -> Text:
    tl = session.tl
    e = tl.e
    S, b = e.m.S, e.bases[cpu]
    rt, pc = S[b + F_RT], S[b + F_PC]
    focus = cpu == tl.focus
    t = Text(no_wrap=True, overflow="ellipsis")
    hp = HP_NAMES.get(S[b + e.L.P_HP], "?")
    t.append(f"cpu{cpu} ", style="bold reverse" if focus else "bold")
    t.append(f"{hp}", style={"dying": "yellow", "dead": "red", "online": "green"}.get(hp, ""))
    t.append(f"  IF={S[b + F_IF]}{'  halted' if S[b + F_HALT] else ''}  depth {len(S[b + F_FRAMES])}\n")
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
    for i in range(4):
        t.append(f"r{i}={S[b + 4 + i]:#x} ", style="reverse" if reg == i and focus else "dim")
    t.append(f" TPR={S[b + F_TPR]}\n", style="dim")
    frames = S[b + F_FRAMES]
    ints = [f for f in frames if f[0] == 1]
    if ints:
        t.append("nested: " + " > ".join(f"0x{f[8]:02x} in {e.rnames[f[1]]}" for f in ints) + "\n", style="magenta")
    return t


def vcpu_list(session) -> Text:
    """More than 4 vCPUs: one line each (the focused one is shown in full below)."""
    tl = session.tl
    e = tl.e
    S = e.m.S
    t = Text(no_wrap=True, overflow="ellipsis")
    for c in range(e.n):
        b = e.bases[c]
        hp = HP_NAMES.get(S[b + e.L.P_HP], "?")
        line = (f"{'>' if c == tl.focus else ' '}cpu{c:<3d}{hp:<8}IF={S[b + F_IF]} {'H' if S[b + F_HALT] else ' '} "
                f"{e.rnames[S[b + F_RT]]}+{S[b + F_PC]:<3d}")
        t.append(line, style="bold reverse" if c == tl.focus else {"dying": "yellow", "dead": "red"}.get(hp, ""))
        isr, irr = S[b + F_ISR], S[b + F_IRR]
        if isr:
            t.append(" ISR " + ",".join(vec_names(isr)), style="magenta")
        if irr:
            t.append(" IRR " + ",".join(vec_names(irr)), style="yellow")
        t.append("\n")
    return t


def page_at(tl, cpu: int, view: str, step: int) -> bytes | None:
    """The assist page bytes (RAM or overlay view) of `cpu` at `step` of timeline `tl`
    (moves there and back: a read, the position is restored)."""
    here = tl.pos
    tl.goto(min(step, tl.length))
    try:
        e = tl.e
        b = e.bases[cpu]
        if view == "overlay":
            pg = e.m.ovl.get(cpu)
        else:
            msr = e.m.S[b + MSR_OFF[0x40000073]]
            ptr = e.m.S[b + e.L.pvar["hv_vp_assist_page"]] if "hv_vp_assist_page" in e.L.pvar else 0
            gpa = ((msr >> 12) << 12) or ptr
            pg = e.m.ram.get(gpa >> 12) if gpa else None
        return bytes(pg) if pg is not None else None
    finally:
        tl.goto(here)


def hexdump(session, cpu: int, view: str = "ram", rows: int = 8, cursor: int = 0, bit: int = 0,
            width: int = 80, against: tuple | None = None) -> Text:
    """`against` = (label, bytes) to highlight differences with; default: the last event's writes."""
    tl = session.tl
    e = tl.e
    S, b = e.m.S, e.bases[cpu]
    msr = S[b + MSR_OFF[0x40000073]]
    page_ptr = S[b + e.L.pvar["hv_vp_assist_page"]] if "hv_vp_assist_page" in e.L.pvar else 0
    gpa = ((msr >> 12) << 12) or page_ptr
    t = Text(no_wrap=True, overflow="ellipsis")
    enabled = bool(msr & 1)
    t.append(f"VP assist page cpu{cpu}  MSR={msr:#x} ({'overlay enabled' if enabled else 'overlay disabled'})  "
             f"view: {view.upper()}\n", style="bold")
    if view == "overlay":
        pg = e.m.ovl.get(cpu)
        space, base = cpu, 0
    else:
        pg = e.m.ram.get(gpa >> 12) if gpa else None
        space, base = RAM, gpa
    if pg is None:
        t.append("  (no page)\n", style="dim")
        return t
    changed = set()
    if against is not None and against[1] is not None:
        ref = against[1]
        changed = {j for j in range(min(len(ref), len(pg), rows * 16)) if ref[j] != pg[j]}
        t.append(f"  changes vs {against[0]}: {len(changed)} byte(s)\n", style="magenta")
    else:
        for loc, old, new in last_writes(tl):
            if isinstance(loc, tuple) and loc[0] == "m" and loc[1] == space:
                for j in range(len(new)):
                    if old[j] != new[j]:
                        changed.add((loc[2] + j) & 0xFFF)
    fields = {off: name for off, _, name in ASSIST_FIELDS}
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
    if cursor < 4:
        word = int.from_bytes(pg[0:4], "little")
        t.append(f"   apic_assist = {word:#010x} (No EOI Required = {word & 1})", style="cyan")
    t.append("\n")
    return t


def decode_msr(m: int, v: int) -> str:
    """Decoded fields (domain-facts §1.1, TLFS-VP / TLFS-IPC / Linux union hv_stimer_config)."""
    name = MSR_NAMES.get(m, "")
    if m in (0x40000073, 0x40000001, 0x40000082, 0x40000083):
        return f"enable={v & 1} gpa={(v >> 12) << 12:#x}"
    if "SINT" in name:
        return f"vector={v & 0xFF:#x} masked={v >> 16 & 1} auto_eoi={v >> 17 & 1}"
    if name.endswith("_CONFIG"):
        return (f"enable={v & 1} periodic={v >> 1 & 1} vector={v >> 4 & 0xFF:#x} direct={v >> 12 & 1} "
                f"sint={v >> 16 & 0xF}")
    if m == 0x40000080:
        return f"enable={v & 1}"
    return ""


def msr_rows(session, cpu: int) -> list[int]:
    """The MSRs the table shows (not at reset value, VP_ASSIST_PAGE always), in order."""
    e = session.tl.e
    S, b = e.m.S, e.bases[cpu]
    return [m for m in MSR_LIST if S[b + MSR_OFF[m]] != msr_reset_value(m, cpu) or m == 0x40000073]


def selectable_vectors(session, cpu: int) -> list[tuple[str, int]]:
    """("isr"|"irr", vector) of the vCPU, highest first: what the vector cursor walks."""
    e = session.tl.e
    b = e.bases[cpu]
    out = []
    for kind, off in (("isr", F_ISR), ("irr", F_IRR)):
        bits = e.m.S[b + off]
        out += [(kind, v) for v in range(255, -1, -1) if bits >> v & 1]
    return out


def msr_table(session, cpu: int, selected: int | None = None) -> Text:
    tl = session.tl
    e = tl.e
    S, b = e.m.S, e.bases[cpu]
    changed = {loc for loc, _, _ in last_writes(tl) if isinstance(loc, int)}
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"MSRs cpu{cpu} (not at reset value)\n", style="bold")
    for m in msr_rows(session, cpu):
        slot = b + MSR_OFF[m]
        v = S[slot]
        style = "bold red" if slot in changed else ""
        if m == selected:
            style = (style + " reverse").strip()
        t.append(f"{MSR_NAMES.get(m, hex(m)):<30} {v:#018x}", style=style)
        dec = decode_msr(m, v)
        if dec:
            t.append(f"  {dec}", style="cyan")
        t.append("\n")
    return t


def irq_queue(session, selected: tuple | None = None) -> Text:
    tl = session.tl
    e = tl.e
    S = e.m.S
    t = Text()
    t.append("interrupts\n", style="bold")
    for c in range(e.n):
        b = e.bases[c]
        irr, isr = S[b + F_IRR], S[b + F_ISR]
        t.append(f"cpu{c} IF={S[b + F_IF]} ", style="bold" if c == tl.focus else "")
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
        for v in vec_names(irr):
            vec = next(k for k, n in VECTOR_NAMES.items() if n == v) if v in VECTOR_NAMES.values() else int(v, 16)
            why = ""
            if not S[b + F_IF]:
                why = "IRQs off"
            elif isr and (vec >> 4) <= ((isr.bit_length() - 1) >> 4):
                why = f"blocked by {VECTOR_NAMES.get(isr.bit_length() - 1, hex(isr.bit_length() - 1))} in service"
            sel = c == tl.focus and selected == ("irr", vec)
            t.append(v, style="yellow reverse" if sel else "yellow")
            if why:
                t.append(f" ({why})", style="red")
            t.append(" ")
        hv = S[b + F_HV]
        if hv:
            t.append(f"  assist armed {hv:#x}" if e.cfg.hypervisor == "hyperv" else "  pv-eoi pending", style="cyan")
        if S[b + e.L.P_TIMER]:
            t.append("  timer", style="dim")
        t.append("\n")
    ipis = S[0]
    t.append("in flight: " + (", ".join(f"cpu{a}->cpu{b_} {VECTOR_NAMES.get(v, hex(v))}" for a, b_, v in ipis) or "none") + "\n",
             style="dim")
    return t


def event_log(session, n: int = 12) -> Text:
    tl = session.tl
    t = Text(no_wrap=True, overflow="ellipsis")
    lo = max(0, tl.pos - n)
    for i in range(lo, min(tl.length, tl.pos + 1)):
        ev = tl.events[i]
        style = "bold" if i == tl.pos - 1 else ("dim" if i >= tl.pos else "")
        a = ev[0 + 1]
        text = (f"cpu{a[1]} {where(tl.e, ev[3], ev[4], c_text=False)}" if a[0] == "op" else describe(tl.e, ev))
        t.append(f"{'>' if i == tl.pos - 1 else ' '}{i:7d} {text}\n", style=style)
    return t


def status_line(session) -> Text:
    tl = session.tl
    t = Text()
    out = tl.result.outcome if tl.result else "?"
    t.append(f" [{session.current}] ", style="bold reverse")
    t.append(f" step {tl.pos}/{tl.length} ")
    t.append(f" {out.upper()} ", style={"hang": "bold white on red", "ok": "bold black on green"}.get(out, "bold"))
    if tl.result and out != "ok":
        t.append(f" {tl.result.reason}", style="dim")
    others = [f"{n}:{b.result.outcome if b.result else '…'}" for n, b in session.branches.items() if n != session.current]
    if others:
        t.append("   branches " + " ".join(others), style="cyan")
    t.append(f"   focus cpu{tl.focus}", style="bold")
    return t
