"""`hvdbg explore`: exhaustive exploration of a scenario's choices, one cell or a matrix of
hypervisor x overlay x fix x garbage cells (core/explore.py does the search; docs/explore.md).

Exit status (design §7): 0 every cell proved within its bounds, 3 a hang counterexample,
7 a corruption counterexample (its trace is written), 5 no counterexample but a cell's
search was cut (incomplete), 2 bad input.
"""
from __future__ import annotations

import json
import os
import time

from .cli import EXIT_CORRUPTION, EXIT_HANG, EXIT_OK, EXIT_TIMEOUT, UsageError, _console, _int

BIT0_SET, BIT0_CLEAR = "0xa5", "0xa4"     # the default garbage pair of a matrix (bit0 = 1, bit0 = 0)


def add_parser(sub) -> None:
    from .core import hypervisors
    from .core.explore import DEFAULT_BOUNDS, DEFAULT_MAX_STATES
    e = sub.add_parser("explore", help="try every interleaving (within bounds): prove a fix or find a counterexample")
    e.add_argument("scenario", nargs="?", default=None, help="built-in scenario, bug pack or FILE.toml")
    e.add_argument("--hypervisor", choices=(*hypervisors.names(), "all"))
    e.add_argument("--overlay", choices=(*hypervisors.option_values("overlay"), "all"))
    e.add_argument("--fix", help="a fix of the scenario's pack, none, or all")
    e.add_argument("--garbage", metavar="G[,G...]", help="fill bytes (or random:SEED), comma-separated")
    e.add_argument("--set", action="append", default=[], metavar="VAR=N", dest="set_vars",
                   help="set a scenario [vars] value (e.g. warmup=2 shrinks the boot loop)")
    e.add_argument("--bound", action="append", default=[], metavar="KIND=N",
                   help="at most N actions of KIND (traffic, timer) per path; overrides the scenario's and its "
                        "pack's [explore] bounds; defaults: "
                        + ", ".join(f"{k}={v}" for k, v in DEFAULT_BOUNDS.items()))
    e.add_argument("--max-states", type=_int, default=DEFAULT_MAX_STATES, dest="max_states",
                   help=f"state budget per cell (default {DEFAULT_MAX_STATES}); a cut search is 'incomplete'")
    e.add_argument("--strategy", choices=("dfs", "bfs", "pct"), default="dfs",
                   help="dfs (default), bfs (shallowest counterexample first) or pct (probabilistic concurrency "
                        "testing: random priorities with d-1 change points, for cells too large to exhaust)")
    e.add_argument("--runs", type=_int, default=100, help="pct: runs per cell (default 100)")
    e.add_argument("--pct-depth", type=_int, default=3, dest="pct_depth", help="pct: bug depth d (default 3)")
    e.add_argument("--horizon", type=_int, default=2000, help="pct: steps per run (default 2000)")
    e.add_argument("--jobs", type=_int, default=1, help="cells in parallel in a local process pool")
    e.add_argument("--cluster", metavar="ADDRESS",
                   help="run on Ray: ray://HOST:PORT, auto or local (pip install 'hvdbg[cluster]'); several cells run "
                        "as tasks, one dfs/bfs cell as a hash-partitioned search over --shards actors")
    e.add_argument("--shards", type=_int, default=None,
                   help="--cluster with one cell: shard actors of a hash-partitioned search (default: the "
                        "cluster's CPUs on a multi-node cluster, else 1 = one task)")
    e.add_argument("--matrix", action="store_true",
                   help="every hypervisor x overlay x fix the pack allows x garbage (bit0=1 and bit0=0)")
    e.add_argument("--out", metavar="DIR", help="write each counterexample as a minimised .hvt trace in DIR")
    e.add_argument("--no-minimise", action="store_true", dest="no_minimise",
                   help="write the counterexample's choices as found (no delta debugging)")
    e.add_argument("--por", choices=("on", "off"), default="off",
                   help="partial-order reduction (sleep sets) in the dfs search: on or off (default off: the same "
                        "verdicts and states with about a third fewer transitions, but a little slower on the seed pack)")
    e.add_argument("--json", action="store_true", help="one JSON object listing every cell")
    e.add_argument("--markdown", action="store_true", help="the table as Markdown (verdict, states, transitions, "
                                                             "depth, time, states/s per cell, with the bounds)")


def _kv(items: list, what: str) -> dict:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise UsageError(f"hvdbg: --{what} {it!r}: expected NAME=N")
        try:
            n = int(v, 0)
        except ValueError:
            raise UsageError(f"hvdbg: --{what} {k}: expected an integer, got {v[:40]!r}") from None
        if not 0 <= n < 1 << 32:
            raise UsageError(f"hvdbg: --{what} {k}: expected 0..2^32-1")
        out[k.strip()] = n
    return out


def plan(args) -> tuple:
    """(scenario, cells, bounds): the cells as config overrides, validated (UsageError)."""
    from .core import hypervisors
    from .core.engine import parse_garbage
    from .core.explore import BOUND_KINDS, with_vars
    from .core.scenario import load_scenario
    args.cluster = args.cluster or os.environ.get("RAY_ADDRESS") or None     # Ray's own variable, as `ray` reads it
    if args.cluster:
        from .explore_ray import require_ray
        require_ray()                      # one line naming the extra when Ray is missing
    if args.shards is not None and not 1 <= args.shards <= 1024:
        raise UsageError("hvdbg: --shards: expected 1..1024")
    if not 1 <= args.jobs <= 256:
        raise UsageError("hvdbg: --jobs: expected 1..256")
    if not 1 <= args.runs <= 1_000_000 or not 1 <= args.pct_depth <= 10 or not 1 <= args.horizon <= 1_000_000:
        raise UsageError("hvdbg: --runs 1..1000000, --pct-depth 1..10, --horizon 1..1000000")
    if not 1 <= args.max_states <= 100_000_000:
        raise UsageError("hvdbg: --max-states: expected 1..100000000")
    bounds = _kv(args.bound, "bound")
    for k in bounds:
        if k not in BOUND_KINDS:
            raise UsageError(f"hvdbg: --bound {k}: the bounded kinds are {', '.join(BOUND_KINDS)}")
    scn = load_scenario(args.scenario)
    try:
        scn = with_vars(scn, _kv(args.set_vars, "set"))
    except ValueError as e:
        raise UsageError(f"hvdbg: {e}") from None
    fixes = ["none", *sorted(scn.program.variants)]
    if args.fix is not None and args.fix != "all" and args.fix not in fixes:
        raise UsageError(f"hvdbg: --fix {args.fix}: scenario {scn.name} has fixes {', '.join(fixes)} (or all)")
    matrix = args.matrix
    d = scn.defaults
    hvs = (hypervisors.names() if args.hypervisor == "all" or (matrix and args.hypervisor is None)
           else [args.hypervisor or d.get("hypervisor", "hyperv")])
    fx = fixes if args.fix == "all" or (matrix and args.fix is None) else [args.fix or d.get("fix", "none")]
    if args.garbage:
        gs = [g.strip() for g in args.garbage.split(",") if g.strip()]
    elif matrix:
        gs = [BIT0_SET, BIT0_CLEAR]
    else:
        gs = [d.get("garbage", BIT0_SET)]
    for g in gs:
        try:
            parse_garbage(g)
        except ValueError as e:
            raise UsageError(f"hvdbg: --garbage: {e}") from None
    with_ov = hypervisors.models_with("overlay")
    cells = []
    for hv in hvs:
        if hv in with_ov:
            ovs = (hypervisors.option_values("overlay") if args.overlay == "all" or (matrix and args.overlay is None)
                   else [args.overlay or d.get("overlay", hypervisors.default_option("overlay"))])
        else:
            if args.overlay not in (None, "all") and len(hvs) == 1:
                raise UsageError(f"hvdbg: --overlay applies to --hypervisor {' or '.join(with_ov)} only "
                                 f"({hv} has no overlay)")
            ovs = [hypervisors.default_option("overlay")]
        for ov in ovs:
            for f in fx:
                for g in gs:
                    cells.append({"hypervisor": hv, "overlay": ov, "fix": f, "garbage": g})
    for c in cells:      # every cell must load (one line, exit 2)
        try:
            scn.config(**c)
        except Exception as e:   # ScenarioError
            raise UsageError(f"hvdbg: {e}") from None
    return scn, cells, bounds


def cell_name(scn_name: str, c: dict) -> str:
    return f"{scn_name}.{c['hypervisor']}.{c['overlay']}.{c['fix']}.{c['garbage'].replace(':', '-')}"


def explore_cell(job: dict, progress=None) -> dict:
    """One cell (runs in a worker process too): the search, then the counterexample's
    minimisation and trace. Returns a JSON-able dict."""
    from .core.engine import Engine
    from .core.explore import Explorer, pct
    from .core.scenario import parse_scenario
    scn = parse_scenario(job["text"], job["source"])
    cfg = scn.config(**job["cell"])
    if job["strategy"] == "pct":
        r = pct(lambda: Engine(scn, cfg, journal=False), runs=job["runs"], depth=job["pct_depth"],
                horizon=job["horizon"], seed=cfg.seed)
    else:
        ex = Explorer(lambda: Engine(scn, cfg, journal=False), bounds=job["bounds"], max_states=job["max_states"],
                      strategy=job["strategy"], progress=progress, por=job.get("por", False))
        r = ex.run()
    return cell_report(job, scn, cfg, r)


def cell_report(job: dict, scn, cfg, r, extra: dict | None = None) -> dict:
    """A cell's result as a dict (the JSON of one cell): for a counterexample, its choices
    checked by a plain run, minimised (unless --no-minimise) and written to --out."""
    from .core.explore import minimise, run_choices
    d = r.as_dict()
    d.update(job["cell"])
    d["scenario"] = scn.name
    d["cell"] = cell_name(scn.name, job["cell"])
    d.update(extra or {})
    if r.verdict == "counterexample":
        t0 = time.perf_counter()
        choices = list(r.path)
        check = run_choices(scn, cfg, choices)
        d["found_choices"] = len(choices)
        d["found_path"] = d["path"]           # the explorer's path (path: the minimised one)
        if check is None or check.outcome != r.outcome:
            d["trace_note"] = (f"the run from the counterexample's choices ended "
                               f"{'with a choice not enabled' if check is None else check.outcome}, not {r.outcome}")
        else:
            if not job.get("no_minimise"):
                choices, tests = minimise(scn, cfg, choices, r.outcome)
                d["minimise_tests"] = tests
            d["choices"] = len(choices)
            d["path"] = [list(a) for a in choices]
            if job.get("out"):
                target = os.path.join(job["out"], d["cell"] + ".hvt")
                try:
                    d.update(write_counterexample(scn, cfg, choices, r.outcome, target))
                except OSError as e:
                    d["trace_note"] = f"not written: {target}: {getattr(e, 'why', None) or e.strerror or e}"
        d["minimise_seconds"] = round(time.perf_counter() - t0, 3)
    return d


def write_counterexample(scn, cfg, choices, outcome: str, path: str) -> dict:
    """Record `run` with the choices forced first (then its PRNG policy until it reports the
    failure) as a trace: its recorded choices are the whole run, so `replay --verify`
    re-executes exactly the failing run."""
    import dataclasses

    from .core.explore import TAIL_STEPS
    from .recording import record
    cfg2 = dataclasses.replace(cfg, max_steps=len(choices) + TAIL_STEPS)
    tl = record(dataclasses.replace(scn, schedule=list(choices)), cfg2, path)
    res = tl.result
    d = {"trace": path, "trace_outcome": res.outcome, "trace_steps": res.steps, "trace_reason": res.reason}
    if res.outcome != outcome:
        d["trace_note"] = f"the recorded run ended {res.outcome}, not {outcome}"
    return d


def _worker_signals() -> None:
    """A pool worker: Ctrl-C and SIGTERM are the parent's to handle (it stops the workers)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


VERDICT_STYLE = {"counterexample": "bold red", "proved within bounds": "green", "incomplete": "yellow"}


def cmd_explore(args, out) -> int:
    scn, cells, bounds = plan(args)
    from .core.explore import resolve_bounds
    full_bounds, bound_sources = resolve_bounds(scn, bounds)
    if args.out:
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            raise UsageError(f"hvdbg: --out {args.out}: {e.strerror or e}") from None
    jobs = [{"text": scn.text, "source": scn.source, "cell": c, "bounds": full_bounds, "max_states": args.max_states,
             "strategy": args.strategy, "out": args.out, "no_minimise": args.no_minimise, "runs": args.runs,
             "pct_depth": args.pct_depth, "horizon": args.horizon,
             "por": args.por == "on"} for c in cells]
    t0 = time.perf_counter()
    if args.json and args.markdown:
        raise UsageError("hvdbg: --json and --markdown: choose one")
    show = not args.json and not args.markdown and hasattr(out, "isatty") and out.isatty()
    results: list = [None] * len(jobs)
    progress = None
    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
                            TimeElapsedColumn(), console=_console(out), transient=True)
        progress.start()
        task = progress.add_task("exploring", total=len(jobs))
    try:
        if args.cluster:
            from .explore_ray import cluster_run

            def done(i, d):
                if progress is not None:
                    progress.advance(task)

            def states(n, transitions, frontier):
                if progress is not None:
                    progress.update(task, description=f"ray: {n:,} states, frontier {frontier:,}")
            results[:] = cluster_run(jobs, args.cluster, shards=args.shards, progress=done, state_progress=states)
        elif args.jobs > 1 and len(jobs) > 1:
            from concurrent.futures import ProcessPoolExecutor, as_completed
            pool = ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs)), initializer=_worker_signals)
            try:
                futs = {pool.submit(explore_cell, j): i for i, j in enumerate(jobs)}
                for f in as_completed(futs):
                    results[futs[f]] = f.result()
                    if progress is not None:
                        progress.advance(task)
            except BaseException:
                # Ctrl-C, SIGTERM or a failed cell: drop the queued cells and stop the workers
                # now (shutdown(wait=True) would finish every queued cell first)
                procs = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for pr in procs:
                    pr.terminate()
                raise
            pool.shutdown(wait=True)
        else:
            for i, j in enumerate(jobs):
                cb = None
                if progress is not None:
                    t1 = time.perf_counter()
                    name = cell_name(scn.name, j["cell"])

                    def cb(states, transitions, frontier, t1=t1, name=name):
                        dt = max(1e-9, time.perf_counter() - t1)
                        progress.update(task, description=f"{name}: {states:,} states, {states / dt:,.0f}/s, "
                                                          f"{'frontier' if args.strategy == 'bfs' else 'depth'} "
                                                          f"{frontier:,}")
                results[i] = explore_cell(j, cb)
                if progress is not None:
                    progress.advance(task)
    finally:
        if progress is not None:
            progress.stop()
    wall = time.perf_counter() - t0
    rep = {"scenario": scn.name, "bounds": full_bounds, "bound_sources": bound_sources,
           "max_states": args.max_states, "strategy": args.strategy,
           "jobs": args.jobs, "seconds": round(wall, 3), "cells": results, "runs": args.runs,
           "pct_depth": args.pct_depth, "horizon": args.horizon, "por": args.por,
           "hash": "64-bit incremental Zobrist over the journaled writes"}
    if args.json:
        out.write(json.dumps(rep, default=str) + "\n")
    elif args.markdown:
        out.write(markdown(rep))
    else:
        from rich.console import Console
        con = Console(file=out, highlight=False)
        if not show:
            con = Console(file=out, highlight=False, width=140)
        render(rep, con)
    verdicts = [r["verdict"] for r in results]
    if any(r["verdict"] == "counterexample" and r["outcome"] == "corruption" for r in results):
        return EXIT_CORRUPTION
    if "counterexample" in verdicts:
        return EXIT_HANG
    if "incomplete" in verdicts:
        return EXIT_TIMEOUT
    return EXIT_OK


COLUMNS = (("hypervisor", "left"), ("overlay", "left"), ("fix", "left"), ("garbage", "left"), ("verdict", "left"),
           ("states", "right"), ("transitions", "right"), ("depth", "right"), ("time s", "right"),
           ("states/s", "right"))


def por_text(rep: dict) -> str:
    """How partial-order reduction ran: on/off (it applies to the dfs search only)."""
    por = rep.get("por", "off")
    if por == "on" and rep["strategy"] != "dfs":
        return f"por off ({rep['strategy']}: dfs only)"
    if por == "on" and any(c.get("por") is False and c.get("verdict") for c in rep["cells"] if c):
        return "por on (off in a sharded search)"
    return f"por {por}"


def table(rep: dict) -> tuple[str, list, list]:
    """The verdict table of a report, shared by the terminal (rich) and --markdown output:
    (title, columns [(name, justify)], rows [(cells as text, verdict)])."""
    src = rep.get("bound_sources", {})
    b = ", ".join(f"{k}={v}" + (f" ({src[k]})" if k in src else "") for k, v in rep["bounds"].items())
    what = (f"pct: {rep.get('runs')} runs of {rep.get('horizon')} steps per cell, depth {rep.get('pct_depth')}; "
            "'states' counts runs" if rep["strategy"] == "pct" else
            f"bounds {b}; max {rep['max_states']:,} states/cell; {rep['strategy']}; {por_text(rep)}")
    rows = []
    for r in rep["cells"]:
        v = {"proved within bounds": "proved"}.get(r["verdict"], r["verdict"]) + \
            (f" ({r['outcome']})" if r.get("outcome") else "")
        rows.append(([r["hypervisor"], r["overlay"], r["fix"], r["garbage"], v, f"{r['states']:,}",
                      f"{r['transitions']:,}", str(r["depth"]), f"{r['seconds']:.2f}", f"{r['states_per_second']:,}"],
                     r["verdict"]))
    return f"explore {rep['scenario']}  ({what})", list(COLUMNS), rows


def notes(rep: dict) -> list[tuple[str, str]]:
    """The lines under the table: (text, style)."""
    from .core.explore import collision_probability
    n = max((r["states"] for r in rep["cells"]), default=0)
    out = [(f"{len(rep['cells'])} cells in {rep['seconds']:.2f} s (--jobs {rep['jobs']}); state hash: "
            f"{rep['hash']}; expected collision probability at {n:,} states: "
            f"{collision_probability(n):.1e} (n^2/2^65)", "dim"),
           ("'proved within bounds' = no reachable state within these bounds fails (docs/explore.md); "
            "it says nothing about longer traffic/timer sequences or other scenario [vars].", "dim")]
    for r in rep["cells"]:
        if r["verdict"] == "counterexample":
            cx = f"{r['cell']}: {r['outcome']} ({r['reason']}); {r.get('choices', r.get('found_choices', 0))} choices"
            if r.get("found_choices") is not None and r.get("choices") is not None:
                cx += f" (minimised from {r['found_choices']})"
            if r.get("trace"):
                cx += f"; trace {r['trace']} ({r.get('trace_outcome')} at step {r.get('trace_steps')})"
            if r.get("trace_note"):
                cx += f"; {r['trace_note']}"
            out.append((cx, ""))
        elif r["verdict"] == "incomplete":
            out.append((f"{r['cell']}: incomplete: {r['reason']}", "yellow"))
    return out


def render(rep: dict, con) -> None:
    from rich.table import Table
    from rich.text import Text
    title, cols, rows = table(rep)
    t = Table(title=title, title_justify="left")
    for col, just in cols:
        t.add_column(col, justify=just, no_wrap=True, overflow="ellipsis" if col != "verdict" else "fold")
    vi = [c for c, _ in cols].index("verdict")
    for cells, verdict in rows:
        cells = list(cells)
        cells[vi] = Text(cells[vi], VERDICT_STYLE.get(verdict, ""))
        t.add_row(*cells)
    con.print(t)
    for text, style in notes(rep):
        con.print(Text(text, style=style), soft_wrap=True)


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown(rep: dict) -> str:
    """The same table (table()) and notes as Markdown: a title line, a pipe table, the notes
    as a list."""
    title, cols, rows = table(rep)
    out = [f"**{_md(title)}**", "", "| " + " | ".join(c for c, _ in cols) + " |",
           "|" + "|".join("---:" if j == "right" else "---" for _, j in cols) + "|"]
    for cells, _ in rows:
        out.append("| " + " | ".join(_md(c) for c in cells) + " |")
    out.append("")
    for text, _ in notes(rep):
        out.append(f"- {_md(text)}")
    return "\n".join(out) + "\n"


__all__ = ["add_parser", "cmd_explore", "explore_cell", "plan"]
