"""Run reports: one data model (dict) rendered as JSON or with rich."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .core.defs import HP_NAMES, MSR_VP_ASSIST_PAGE, vector_names
from .core.engine import Engine, Result
from .core.explain import explain_hang, where
from .core.machine import F_HALT, F_IF, F_IRR, F_ISR, F_PC, F_RT, F_TPR, MSR_OFF, RAM


def vec_list(bits: int) -> list[str]:
    return vector_names(bits, with_number=True)


def vcpu_summary(eng: Engine) -> list[dict]:
    S, L = eng.m.S, eng.L
    out = []
    for c in range(eng.n):
        b = L.base(c)
        assist = S[b + MSR_OFF[MSR_VP_ASSIST_PAGE]]
        gpa = (assist >> 12) << 12
        ram = eng.m.read_mem(RAM, gpa, 4) if gpa else None
        ovl = eng.m.read_mem(c, 0, 4) if c in eng.m.ovl else None
        page = S[b + L.pvar["hv_vp_assist_page"]] if "hv_vp_assist_page" in L.pvar else 0
        if not gpa and page:
            ram = eng.m.read_mem(RAM, page, 4)
        out.append({
            "cpu": c,
            "hotplug": HP_NAMES.get(S[b + L.P_HP], str(S[b + L.P_HP])),
            "at": where(eng, S[b + F_RT], S[b + F_PC], c_text=False),
            "routine": eng.rnames[S[b + F_RT]], "pc": S[b + F_PC],
            "IF": S[b + F_IF], "halted": S[b + F_HALT],
            "IRR": vec_list(S[b + F_IRR]), "ISR": vec_list(S[b + F_ISR]), "TPR": S[b + F_TPR],
            "vp_assist_page_msr": f"0x{assist:x}",
            "apic_assist_overlay": None if ovl is None else f"0x{ovl:08x}",
            "apic_assist_ram": None if ram is None else f"0x{ram:08x}",
        })
    return out


def build_report(eng: Engine, res: Result) -> dict:
    expl = explain_hang(eng) if res.outcome == "hang" else []
    cfg = eng.cfg
    return {
        "scenario": cfg.scenario,
        "outcome": res.outcome,
        "reason": res.reason,
        "steps": res.steps,
        "hypervisor": cfg.hypervisor,
        "overlay": cfg.overlay if cfg.hypervisor == "hyperv" else None,
        "fix": cfg.fix,
        "garbage": cfg.garbage,
        "seed": cfg.seed,
        "vcpus_count": cfg.vcpus,
        "max_steps": cfg.max_steps,
        "digest": eng.m.digest(),
        "explanation": [lk.as_dict() for lk in expl],
        "vcpus": vcpu_summary(eng),
        "statistics": dict(sorted(res.stats.items())),
        "first_assist_disable_step": eng.first_disable_step,
    }


OUTCOME_STYLE = {"ok": "bold green", "hang": "bold red", "timeout": "bold yellow", "stopped": "yellow"}


def render(rep: dict, console: Console) -> None:
    hv = rep["hypervisor"] + (f" (overlay {rep['overlay']})" if rep["overlay"] else "")
    console.print(Text.assemble(("hvdbg ", "bold"), f"{rep['scenario']}: hypervisor {hv}, fix {rep['fix']}, "
                                f"garbage {rep['garbage']}, seed {rep['seed']}, {rep['vcpus_count']} vCPUs"))
    t = Table(title=None, show_edge=False, pad_edge=False, header_style="bold")
    for col in ("cpu", "hotplug", "at", "IF", "IRR", "ISR", "assist MSR", "apic_assist ovl/RAM"):
        t.add_column(col, overflow="fold")
    for v in rep["vcpus"]:
        t.add_row(str(v["cpu"]), v["hotplug"] + (" (halted)" if v["halted"] else ""), escape(v["at"]), str(v["IF"]),
                  " ".join(v["IRR"]) or "-", " ".join(v["ISR"]) or "-", v["vp_assist_page_msr"],
                  f"{v['apic_assist_overlay'] or '-'} / {v['apic_assist_ram'] or '-'}")
    console.print(t)
    st = rep["statistics"]
    console.print(f"events {st.get('events', 0)}, deliveries {st.get('deliveries', 0)}, "
                  f"EOIs via MSR {st.get('eoi_msr_writes', 0)}, EOIs done by EOI assist {st.get('eoi_assisted', 0)} "
                  f"({st.get('eoi_assisted_before_offline', 0)} before the overlay was disabled), "
                  f"EOIs skipped on a stale bit {st.get('eoi_skipped_stale', 0)}, collapsed {st.get('collapsed', 0)}")
    console.print(Text.assemble("outcome: ", (rep["outcome"].upper(), OUTCOME_STYLE.get(rep["outcome"], "")),
                                f" after {rep['steps']} steps ({rep['reason']})"))
    if rep.get("explanation_note"):
        console.print(Text(rep["explanation_note"], style="yellow"))
    if rep["explanation"]:
        console.print("[bold]why:[/bold]")
        for i, lk in enumerate(rep["explanation"], 1):
            console.print(f"  {i}. [cyan]step {lk['step']}[/cyan] {escape(lk['text'])}", highlight=False)


def render_sweep(rep: dict, console: Console) -> None:
    console.print(f"sweep {rep['scenario']}: hypervisor {rep['hypervisor']}, fix {rep['fix']}, "
                  f"seeds {rep['first_seed']}..{rep['first_seed'] + rep['seeds'] - 1}")
    t = Table(show_edge=False, header_style="bold")
    t.add_column("outcome")
    t.add_column("runs", justify="right")
    t.add_column("share", justify="right")
    t.add_column("first seed", justify="right")
    for k, n in rep["histogram"].items():
        t.add_row(Text(k, OUTCOME_STYLE.get(k, "")), str(n), f"{100 * n / rep['seeds']:.1f}%", str(rep["first_seed_of"][k]))
    console.print(t)
    console.print(f"runs where EOI assist completed an EOI before the overlay was disabled: "
                  f"{rep['runs_with_assisted_eoi_before_offline']}/{rep['seeds']}; runs where an EOI was skipped on a "
                  f"stale apic_assist bit: {rep['runs_with_stale_eoi_skip']}/{rep['seeds']} ({rep['seconds']} s)")


def hexdump(data: bytes, base: int, length: int = 64) -> list[str]:
    out = []
    for off in range(0, min(length, len(data)), 16):
        chunk = data[off:off + 16]
        out.append(f"{base + off:08x}  {' '.join(f'{b:02x}' for b in chunk)}")
    return out


def state_report(eng, step: int | None = None, branch: str = "main") -> dict:
    """The full machine state (what `hvdbg show` and the REPL's `info` print)."""
    from .core.defs import ASSIST_FIELDS, MSR_NAMES, msr_reset_value
    from .core.machine import F_FRAMES, F_HV, MSR_LIST, MSR_OFF
    S, L = eng.m.S, eng.L
    vcpus = []
    for v, c in zip(vcpu_summary(eng), range(eng.n)):
        b = L.base(c)
        msrs = {MSR_NAMES.get(msr, hex(msr)): f"0x{S[b + MSR_OFF[msr]]:x}" for msr in MSR_LIST}
        changed = [MSR_NAMES.get(msr, hex(msr)) for msr in MSR_LIST
                   if S[b + MSR_OFF[msr]] != msr_reset_value(msr, c) or msr == 0x40000073]
        frames = []
        for fr in reversed(S[b + F_FRAMES]):
            if fr[0] == 0:
                frames.append(f"call from {eng.rnames[fr[1]]}+{fr[2]}")
            else:
                frames.append(f"interrupt 0x{fr[8]:02x} in {eng.rnames[fr[1]]}+{fr[2]} (IF={fr[3]})")
        regs = {f"r{i}": f"0x{S[b + 4 + i]:x}" for i in range(4)}
        pvars = {name: S[b + off] for name, off in L.pvar.items()}
        gpa = (S[b + MSR_OFF[0x40000073]] >> 12) << 12 or S[b + L.pvar["hv_vp_assist_page"]] if "hv_vp_assist_page" in L.pvar else 0
        page = {}
        if c in eng.m.ovl:
            page["overlay"] = hexdump(bytes(eng.m.ovl[c]), 0, 32)
        if gpa and (gpa >> 12) in eng.m.ram:
            page["ram"] = hexdump(bytes(eng.m.ram[gpa >> 12]), gpa, 32)
        v.update({"msrs_changed": changed, "registers": regs, "frames": frames, "msrs": msrs, "percpu": pvars, "hv_private": S[b + F_HV],
                  "assist_page": page})
        vcpus.append(v)
    gvars = {n[1:]: S[i] for n, i in L.gindex.items() if n.startswith("$")}
    return {"branch": branch, "step": eng.step if step is None else step, "vcpus": vcpus,
            "in_flight_ipis": [list(t) for t in S[0]], "globals": gvars,
            "assist_layout": [{"offset": o, "size": z, "field": f} for o, z, f in ASSIST_FIELDS[:4]],
            "digest": eng.m.digest()}


def render_state(rep: dict, console: Console) -> None:
    console.print(f"[bold]state at step {rep['step']}[/bold] (branch {rep['branch']}, digest {rep['digest']})")
    for v in rep["vcpus"]:
        console.print(f"[bold]cpu{v['cpu']}[/bold] {v['hotplug']}{' halted' if v['halted'] else ''} IF={v['IF']} "
                      f"at {escape(v['at'])}")
        console.print(f"  regs {' '.join(f'{k}={x}' for k, x in v['registers'].items())}  TPR={v['TPR']}")
        console.print(f"  IRR {' '.join(v['IRR']) or '-'}   ISR {' '.join(v['ISR']) or '-'}   hv={v['hv_private']}")
        for f in v["frames"]:
            console.print(f"  frame: {escape(f)}")
        console.print("  MSRs (not at reset value) " + ", ".join(f"{k}={v['msrs'][k]}" for k in v["msrs_changed"]))
        for view, lines in v["assist_page"].items():
            console.print(f"  assist page ({view}):")
            for ln in lines:
                console.print(f"    {ln}")
    console.print("in-flight IPIs: " + (", ".join(f"cpu{s}->cpu{d} 0x{x:02x}" for s, d, x in rep["in_flight_ipis"]) or "none"))
    console.print("globals: " + ", ".join(f"${k}={x}" for k, x in rep["globals"].items()))
