"""Run reports: one data model (dict) rendered as JSON or with rich.

Everything here reads the machine through a read-only view (core/view.py); the shared
structures and their layouts come from the hypervisor model, the statistics worth naming
from the scenario's bug pack.
"""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .core.engine import Engine, Result
from .core.explain import explain, where
from .core.machine import RAM
from .core.view import MachineView, msr_label, vec_list


def shared_summary(mv: MachineView, c: int) -> list[dict]:
    """Each shared structure of vCPU c: the MSR pointing at it, where it is, and its first
    word as the guest sees it in the overlay (if any) and in RAM."""
    out = []
    for sp in mv.shared_pages(c):
        _, gpa = mv.structure_page(c, sp.structure.name)
        ovl = mv.read(c, 0, 4) if sp.space != RAM else None
        ram = mv.read(RAM, gpa, 4) if gpa > 0 else None
        f0 = sp.structure.fields[0][2] if sp.structure.fields else "word0"
        out.append({"structure": sp.structure.name, "title": sp.structure.title, "msr": msr_label(sp.msr),
                    "msr_value": f"0x{mv.cpu(c).msr(sp.msr) or 0:x}", "gpa": f"0x{gpa:x}" if gpa > 0 else None,
                    "enabled": sp.enabled, "field": f0,
                    "overlay": None if ovl is None else f"0x{ovl:08x}", "ram": None if ram is None else f"0x{ram:08x}"})
    return out


def vcpu_summary(mv: MachineView) -> list[dict]:
    out = []
    for cv in mv.cpus():
        out.append({
            "cpu": cv.c, "hotplug": cv.hotplug,
            "at": where(mv.e, cv.routine_id, cv.pc, c_text=False),
            "routine": cv.routine, "pc": cv.pc, "IF": cv.IF, "halted": cv.halted,
            "IRR": vec_list(cv.irr), "ISR": vec_list(cv.isr), "TPR": cv.tpr,
            "shared": shared_summary(mv, cv.c),
        })
    return out


def build_report(eng: Engine, res: Result) -> dict:
    expl = explain(eng, res.outcome)
    cfg = eng.cfg
    pack = eng.pack
    return {
        "scenario": cfg.scenario,
        "pack": pack.name if pack is not None else None,
        "outcome": res.outcome,
        "reason": res.reason,
        "steps": res.steps,
        "hypervisor": cfg.hypervisor,
        "overlay": cfg.overlay if "overlay" in _options(cfg.hypervisor) else None,
        "fix": cfg.fix,
        "garbage": cfg.garbage,
        "seed": cfg.seed,
        "vcpus_count": cfg.vcpus,
        "max_steps": cfg.max_steps,
        "digest": eng.m.digest(),
        "explanation": [lk.as_dict() for lk in expl],
        "vcpus": vcpu_summary(MachineView(eng)),
        "statistics": dict(sorted(res.stats.items())),
        "pack_statistics": {k: lab for k, lab in (pack.stats.items() if pack is not None else ())},
    }


def _options(hv: str) -> dict:
    from .core import hypervisors
    spec = hypervisors.HYPERVISORS.get(hv)
    return spec.options if spec else {}


OUTCOME_STYLE = {"ok": "bold green", "hang": "bold red", "corruption": "bold magenta", "timeout": "bold yellow",
                 "stopped": "yellow"}


def render(rep: dict, console: Console) -> None:
    hv = rep["hypervisor"] + (f" (overlay {rep['overlay']})" if rep["overlay"] else "")
    console.print(Text.assemble(("hvdbg ", "bold"), f"{rep['scenario']}: hypervisor {hv}, fix {rep['fix']}, "
                                f"garbage {rep['garbage']}, seed {rep['seed']}, {rep['vcpus_count']} vCPUs"))
    t = Table(title=None, show_edge=False, pad_edge=False, header_style="bold")
    for col in ("cpu", "hotplug", "at", "IF", "IRR", "ISR", "shared page MSR", "first word ovl/RAM"):
        t.add_column(col, overflow="fold")
    for v in rep["vcpus"]:
        sh = v["shared"][0] if v["shared"] else None
        t.add_row(str(v["cpu"]), v["hotplug"] + (" (halted)" if v["halted"] else ""), escape(v["at"]), str(v["IF"]),
                  " ".join(v["IRR"]) or "-", " ".join(v["ISR"]) or "-", sh["msr_value"] if sh else "-",
                  f"{sh['overlay'] or '-'} / {sh['ram'] or '-'}" if sh else "-")
    console.print(t)
    st = rep["statistics"]
    line = (f"events {st.get('events', 0)}, deliveries {st.get('deliveries', 0)}, EOIs via MSR {st.get('eoi_msr_writes', 0)}, "
            f"EOIs done by the hypervisor's hint {st.get('eoi_assisted', 0)}, EOIs skipped {st.get('eoi_skipped', 0)}, "
            f"collapsed {st.get('collapsed', 0)}")
    extra = [f"{lab}: {st.get(k, 0)}" for k, lab in rep.get("pack_statistics", {}).items() if k != "eoi_skipped"]
    console.print(Text(line + ("; " + "; ".join(extra) if extra else "")))
    console.print(Text.assemble("outcome: ", (rep["outcome"].upper(), OUTCOME_STYLE.get(rep["outcome"], "")),
                                f" after {rep['steps']} steps ({rep['reason']})"))
    if rep.get("explanation_note"):
        console.print(Text(rep["explanation_note"], style="yellow"))
    if rep["explanation"]:
        console.print("[bold]why:[/bold]")
        for i, lk in enumerate(rep["explanation"], 1):
            console.print(Text.assemble(f"  {i}. ", (f"step {lk['step']}", "cyan"), f" {lk['text']}"))


def render_sweep(rep: dict, console: Console) -> None:
    console.print(Text(f"sweep {rep['scenario']}: hypervisor {rep['hypervisor']}, fix {rep['fix']}, "
                       f"seeds {rep['first_seed']}..{rep['first_seed'] + rep['seeds'] - 1}"))
    t = Table(show_edge=False, header_style="bold")
    t.add_column("outcome")
    t.add_column("runs", justify="right")
    t.add_column("share", justify="right")
    t.add_column("first seed", justify="right")
    for k, n in rep["histogram"].items():
        t.add_row(Text(k, OUTCOME_STYLE.get(k, "")), str(n), f"{100 * n / rep['seeds']:.1f}%", str(rep["first_seed_of"][k]))
    console.print(t)
    for label, n in rep.get("runs_with", {}).items():
        console.print(Text(f"{label}: {n}/{rep['seeds']}"))
    console.print(Text(f"({rep['seconds']} s)", style="dim"))


def hexdump(data: bytes, base: int, length: int = 64) -> list[str]:
    out = []
    for off in range(0, min(length, len(data)), 16):
        chunk = data[off:off + 16]
        out.append(f"{base + off:08x}  {' '.join(f'{b:02x}' for b in chunk)}")
    return out


def state_report(eng, step: int | None = None, branch: str = "main", mv: MachineView | None = None) -> dict:
    """The full machine state (what `hvdbg show` and the REPL's `info` print)."""
    mv = mv or MachineView(eng, step=step)
    vcpus = []
    for v, cv in zip(vcpu_summary(mv), mv.cpus()):
        msrs = {msr_label(m): f"0x{val:x}" for m, val in cv.msrs().items()}
        changed = [msr_label(m) for m in cv.shown_msrs()]
        frames = [f"call from {f.routine}+{f.pc}" if f.kind == "call" else
                  f"interrupt 0x{f.vector:02x} in {f.routine}+{f.pc} (IF={f.IF})" for f in cv.frames()]
        regs = {f"r{i}": f"0x{x:x}" for i, x in enumerate(cv.regs)}
        pvars = {name: cv.percpu(name) for name in mv.e.L.pvar}
        pages = {}
        for sp in mv.shared_pages(cv.c):
            _, gpa = mv.structure_page(cv.c, sp.structure.name)
            page = {}
            if sp.space != RAM and mv.page(cv.c) is not None:
                page["overlay"] = hexdump(mv.page(cv.c), 0, 32)
            if gpa > 0 and mv.page(RAM, gpa) is not None:
                page["ram"] = hexdump(mv.page(RAM, gpa), gpa, 32)
            pages[sp.structure.name] = page
        v.update({"msrs_changed": changed, "registers": regs, "frames": frames, "msrs": msrs, "percpu": pvars,
                  "hv_private": cv.hv_private, "pages": pages})
        vcpus.append(v)
    owners = {f"0x{pfn << 12:x}": {"generation": o[0], "purpose": o[1], "cpu": o[2]}
              for pfn, o in sorted(mv.m.own.items())}
    return {"branch": branch, "step": mv.step if step is None else step, "vcpus": vcpus,
            "in_flight_ipis": [list(t) for t in mv.in_flight()], "globals": mv.global_vars(),
            "page_owners": owners, "digest": mv.digest()}


def render_state(rep: dict, console: Console) -> None:
    console.print(Text(f"state at step {rep['step']} (branch {rep['branch']}, digest {rep['digest']})", style="bold"))
    for v in rep["vcpus"]:
        console.print(Text.assemble((f"cpu{v['cpu']}", "bold"), f" {v['hotplug']}{' halted' if v['halted'] else ''} "
                                    f"IF={v['IF']} at {v['at']}"))
        console.print(Text(f"  regs {' '.join(f'{k}={x}' for k, x in v['registers'].items())}  TPR={v['TPR']}"))
        console.print(Text(f"  IRR {' '.join(v['IRR']) or '-'}   ISR {' '.join(v['ISR']) or '-'}   hv={v['hv_private']}"))
        for f in v["frames"]:
            console.print(Text(f"  frame: {f}"))
        console.print(Text("  MSRs (not at reset value) " + ", ".join(f"{k}={v['msrs'][k]}" for k in v["msrs_changed"])))
        for name, views in v["pages"].items():
            for view, lines in views.items():
                console.print(Text(f"  {name} ({view}):"))
                for ln in lines:
                    console.print(Text(f"    {ln}"))
    console.print(Text("in-flight IPIs: " + (", ".join(f"cpu{s}->cpu{d} 0x{x:02x}" for s, d, x in rep["in_flight_ipis"])
                                            or "none")))
    console.print(Text("globals: " + ", ".join(f"${k}={x}" for k, x in rep["globals"].items())))
    if rep["page_owners"]:
        console.print(Text("page owners: " + ", ".join(f"{a}={o['purpose']}/cpu{o['cpu']}/gen{o['generation']}"
                                                       for a, o in rep["page_owners"].items())))
    if rep.get("verified"):
        console.print(Text(f"verified: {rep['verified']}", style="dim"))
