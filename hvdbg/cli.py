"""The `hvdbg` command line.

Exit status (design §7, one table for every command): 0 ok / identical / read, 1 internal
error (one line naming a crash report), 2 usage or bad input, 3 hang, 4 divergence,
5 timeout, 6 a script expectation failed, 7 a safety invariant was violated (corruption;
a recorded trace is still written), 8 only a salvaged prefix of a cut or damaged trace
could be verified, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections import Counter

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_HANG, EXIT_DIVERGE, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5
EXIT_CORRUPTION, EXIT_SALVAGED, EXIT_INTR, EXIT_TERM = 7, 8, 130, 143
OUTCOME_EXIT = {"ok": EXIT_OK, "hang": EXIT_HANG, "timeout": EXIT_TIMEOUT, "corruption": EXIT_CORRUPTION,
                "stopped": EXIT_INTR}
RUN_OPTIONS = ("hypervisor", "overlay", "fix", "garbage", "seed", "vcpus", "max_steps")


class UsageError(Exception):
    pass


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: files are flushed and closed on the way out."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        from .safe import printable
        raise UsageError(f"{self.prog}: {printable(message, 300)}")


def _session_options(p: argparse.ArgumentParser, traces: bool = True) -> None:
    from .core import hypervisors, packs
    p.add_argument("scenario", nargs="?", default=None,
                   help="built-in scenario, bug pack, FILE.toml" + (" or a recorded trace" if traces else "")
                   + f" (default {packs.get(packs.DEFAULT_PACK).default_scenario}; `hvdbg bugs` lists the packs)")
    p.add_argument("--hypervisor", choices=hypervisors.names())
    p.add_argument("--overlay", choices=hypervisors.option_values("overlay"),
                   help=f"overlay content policy ({', '.join(hypervisors.models_with('overlay'))} only)")
    p.add_argument("--fix", choices=packs.fix_names(), help="a fix variant of the scenario's pack")
    p.add_argument("--garbage", metavar="SPEC", help="fill byte (0xa5; bit0 must be 1 for the stale-bit bugs) or "
                                                     "random:SEED for pages allocated without __GFP_ZERO")
    p.add_argument("--seed", type=_int, help="PRNG seed of the default choice policy")
    p.add_argument("--vcpus", type=_int, help="vCPU count 2..64")
    p.add_argument("--max-steps", type=_int, dest="max_steps", help="step budget (timeout)")
    p.add_argument("--memory", metavar="SIZE", help="memory budget of a recorded session, e.g. 4G "
                                                    "(default: $HVDBG_MEMORY or 75%% of the available memory); "
                                                    "a quarter of it (64M..512M) holds rebuilt segments")


def _options(args) -> dict:
    """The run options given on the command line, validated (one message, exit 2)."""
    from .core.scenario import check_config_values
    from .core import hypervisors
    opts = {k: getattr(args, k, None) for k in RUN_OPTIONS}
    hv = opts.get("hypervisor")
    if opts.get("overlay") and hv and hv not in hypervisors.models_with("overlay"):
        raise UsageError(f"hvdbg: --overlay applies to --hypervisor {' or '.join(hypervisors.models_with('overlay'))} "
                         f"only ({hv} has no overlay)")
    check_config_values({k: v for k, v in opts.items() if v is not None},
                        lambda k, msg: (_ for _ in ()).throw(UsageError(f"hvdbg: --{k.replace('_', '-')}: {msg}")))
    return opts


def _memory(args) -> int:
    from .core.timeline import memory_budget, parse_size
    m = getattr(args, "memory", None)
    if m is None:
        return memory_budget()
    try:
        return parse_size(m)
    except ValueError as e:
        raise UsageError(f"hvdbg: --memory: {e}") from None


def _is_trace(path) -> bool:
    from .commands import is_trace_file
    return bool(path) and is_trace_file(path)


def _no_run_options_with_trace(args) -> None:
    given = [f"--{k.replace('_', '-')}" for k in RUN_OPTIONS if getattr(args, k, None) is not None]
    if given:
        raise UsageError(f"hvdbg: {', '.join(given)}: a trace carries its own configuration; these options apply to "
                         "scenarios")


def _open_session(args):
    from .commands import CommandError, Session
    if _is_trace(args.scenario):
        _no_run_options_with_trace(args)
    opts = _options(args)
    try:
        return Session.open(args.scenario, memory=_memory(args), **opts)
    except CommandError as e:
        raise UsageError(f"hvdbg: {e}") from None
    except OSError as e:
        from .safe import printable
        raise UsageError(f"hvdbg: {printable(args.scenario)}: cannot read: {getattr(e, 'why', None) or e.strerror or e}") \
            from None


def cmd_tui(args, out) -> int:
    from .serve import in_browser
    if not (sys.stdin.isatty() and sys.stdout.isatty()) and not in_browser():
        raise UsageError("hvdbg: the TUI needs a terminal; use `hvdbg run`, `hvdbg repl` or `hvdbg script` without one")
    from . import import_cli
    if paths := import_cli.tui_text_traces(args, UsageError):
        from .tui.imported import run_imported_tui
        return run_imported_tui(paths, args.format, import_cli.parse_offsets(args.offset, UsageError, "hvdbg tui"))
    session = _open_session(args)
    from .tui import run_tui
    return run_tui(session)


def cmd_serve(args, out) -> int:
    """`hvdbg tui` in a browser (textual-serve, the extra `serve`): each connection runs
    `python -m hvdbg tui ARGS`; the arguments are checked once here, as `tui` checks them."""
    from .serve import require, serve
    require()
    if not 1 <= args.port <= 65535:
        raise UsageError("hvdbg: --port: expected 1..65535")
    tui_args = serve_tui_args(args)
    return serve(tui_args, args.host, args.port, out, title=f"hvdbg {args.scenario or ''}".strip())


def serve_tui_args(args) -> list[str]:
    """The `hvdbg tui` arguments `hvdbg serve ARGS` runs per browser connection, checked once
    here as `tui` checks them (one line, exit 2, rather than a dead page per tab): a text
    trace or an imported .hvt goes to the imported-trace app (with --format / --offset), else
    a scenario, bug pack, TOML file or recording to the simulated TUI."""
    from . import import_cli
    paths = import_cli.tui_text_traces(args, UsageError, "hvdbg serve")
    if paths:
        from .tui.imported import check_paths
        err = check_paths(paths)
        if err:
            raise UsageError(err.replace("hvdbg tui:", "hvdbg serve:", 1))
        import_cli.parse_offsets(args.offset, UsageError, "hvdbg serve")
        opts = ([f"--format={args.format}"] if args.format != "auto" else []) + [f"--offset={o}" for o in args.offset]
        return opts + ["--", *paths]
    if _is_trace(args.scenario):
        _no_run_options_with_trace(args)
    else:
        _load(args)             # unknown scenario, bad file or option: one line now, not a dead page per tab
    _memory(args)
    tui_args = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in RUN_OPTIONS + ("memory",)
                if getattr(args, k, None) is not None]
    if args.scenario is not None:
        tui_args += ["--", args.scenario] if args.scenario.startswith("-") else [args.scenario]
    return tui_args


def cmd_repl(args, out) -> int:
    from .repl import run_repl
    session = _open_session(args)
    return run_repl(session)


def cmd_script(args, out) -> int:
    from rich.console import Console

    from .script import ScriptError, read_script, run_script
    console = Console(file=out, highlight=False)
    try:
        lines = read_script(args.file)
        session = _open_session(args)
        return run_script(session, args.file, lines, console, echo=not args.quiet)
    except ScriptError as e:
        print(f"hvdbg: {e}", file=sys.stderr)
        return e.code


def _int(s: str) -> int:
    try:
        v = int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s[:40]!r}") from None
    if not -(1 << 63) <= v < 1 << 64:
        raise argparse.ArgumentTypeError("integer out of the 64-bit range")
    return v


def make_parser() -> _Parser:
    p = _Parser(prog="hvdbg", description="Time-travel debugger for the Hyper-V guest/hypervisor interface.")
    p.add_argument("--version", action="version", version="hvdbg 0.1.0")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    r = sub.add_parser("run", help="run a scenario headless and explain its outcome (or re-run a trace)")
    _session_options(r)
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--record", metavar="FILE", help="record the run to a msgpack trace (written even on a hang)")
    s = sub.add_parser("sweep", help="run many seeds and print the outcome histogram")
    _session_options(s, traces=False)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--seeds", type=_int, default=100, help="number of seeds, from --seed (default: the scenario's seed)")
    sub.add_parser("scenarios", help="list the built-in scenarios")
    bg = sub.add_parser("bugs", help="list the bug packs: hypervisor, transition, symptom, upstream fix, fix names")
    bg.add_argument("--json", action="store_true")
    tu = sub.add_parser("tui", help="the terminal UI (the default with no arguments); also opens ftrace / trace-cmd / "
                        "perf script text traces")
    _session_options(tu)
    from . import import_cli
    import_cli.add_tui_options(tu)
    sv = sub.add_parser("serve", help="the TUI in a browser (textual-serve: pip install 'hvdbg[serve]')")
    _session_options(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=_int, default=8000, help="port (default 8000)")
    import_cli.add_tui_options(sv)
    rl = sub.add_parser("repl", help="interactive debugger prompt (prompt_toolkit)")
    _session_options(rl)
    sc = sub.add_parser("script", help="run commands from a file; `expect` lines gate CI (exit 6 if one fails)")
    sc.add_argument("file")
    _session_options(sc)
    sc.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    rp = sub.add_parser("replay", help="re-execute a trace with its recorded choices and verify every event")
    rp.add_argument("trace")
    rp.add_argument("--verify", action="store_true", help="print only the verdict: exit 0 identical, 4 diverged, "
                                                           "8 only a salvaged prefix verified")
    rp.add_argument("--json", action="store_true")
    ip = sub.add_parser("info", help="what a trace holds: config, steps, outcome, branches, checkpoints, salvage")
    ip.add_argument("trace")
    ip.add_argument("--json", action="store_true")
    sp = sub.add_parser("show", help="the full machine state at a step of a trace")
    sp.add_argument("trace")
    sp.add_argument("--step", type=_int, help="step (default: the end)")
    sp.add_argument("--branch", default="main")
    sp.add_argument("--json", action="store_true")
    from . import export_cli, import_cli
    import_cli.add_parser(sub)
    export_cli.add_parser(sub)
    from .explore_cli import add_parser as add_explore_parser
    add_explore_parser(sub)
    return p


def _load(args):
    from .core.scenario import load_scenario
    over = _options(args)
    from .core import hypervisors
    scn = load_scenario(args.scenario)
    if over.get("hypervisor") and over["hypervisor"] not in hypervisors.models_with("overlay") and not over.get("overlay"):
        over["overlay"] = hypervisors.default_option("overlay")      # the scenario's policy does not apply
    cfg = scn.config(**over)
    return scn, cfg


def cmd_run(args, out) -> int:
    from .core.engine import Engine
    from .core.timeline import journal_problem
    from .report import build_report, render
    if args.record is not None and not args.record:
        raise UsageError("hvdbg: --record: empty file name")
    if _is_trace(args.scenario):
        _no_run_options_with_trace(args)
        if args.record:
            raise UsageError("hvdbg: --record: the scenario is already a trace (use `hvdbg replay`)")
        return _rerun_trace(args, out)
    scn, cfg = _load(args)
    budget = _memory(args)
    note = ""
    if args.record:
        from .recording import record
        from .safe import printable
        why = journal_problem(cfg.max_steps, budget)
        if why:
            where = "--max-steps" if args.max_steps is not None else f"{printable(scn.source)}: max_steps"
            raise UsageError(f"hvdbg: {where}: {why}")
        try:
            eng = record(scn, cfg, args.record).e
        except OSError as e:
            raise UsageError(f"hvdbg: --record {printable(args.record)}: {getattr(e, 'why', None) or e.strerror or e}") \
                from None
        res = eng._last_result
    else:
        # Without --record nothing needs the journal but a hang's explanation: run without one
        # (memory flat in the number of events), and on a hang re-run the same choices - the
        # run is a pure function of (scenario, config) - with a journal up to the hang.
        eng = Engine(scn, cfg, journal=False)
        res = eng.run()
        if res.outcome in ("hang", "corruption"):
            why = journal_problem(res.steps, budget)
            if why:
                note = f"explanation skipped: {why}"
            else:
                again = Engine(scn, cfg, cache_bytes=64 << 20)   # the explanation rebuilds what it reads
                again.run(max_steps=res.steps)
                if again.step == res.steps and again.m.digest() == eng.m.digest():
                    again._last_result = res
                    eng = again
    rep = build_report(eng, res)
    if note:
        rep["explanation_note"] = note
    _emit(args, out, rep, render)
    return OUTCOME_EXIT.get(res.outcome, EXIT_OK)


def _rerun_trace(args, out) -> int:
    """`hvdbg run TRACE`: the recorded run again (re-executed and verified), its report and
    the run's exit status."""
    from .report import build_report, render
    loaded = _load_trace(args.scenario, journal=True, branches=False)
    status = _verdict_status(args.scenario, loaded)
    if status != EXIT_OK:
        return status
    _emit(args, out, build_report(loaded.engine, loaded.result), render)
    return OUTCOME_EXIT.get(loaded.result.outcome, EXIT_OK)


def _emit(args, out, rep: dict, render_fn) -> None:
    """Print a report: one JSON object with --json, else rich."""
    if args.json:
        out.write(json.dumps(rep, default=str) + "\n")
    else:
        render_fn(rep, _console(out))


def _console(out):
    from rich.console import Console
    return Console(file=out, highlight=False)


def _load_trace(path, **kw):
    from .recording import load
    from .safe import printable
    try:
        return load(path, **kw)
    except OSError as e:
        raise UsageError(f"hvdbg: {printable(path)}: cannot read: {getattr(e, 'why', None) or e.strerror or e}") from None


def _warn_salvage(tr) -> None:
    sv = tr.salvage
    if sv:
        print(f"hvdbg: warning: salvaged: {sv.get('message') or sv.get('reason')}", file=sys.stderr)


def _verdict_status(path, loaded) -> int:
    """Divergence -> one line on stderr, 4; a salvaged file -> one warning line, 8; else 0."""
    from .safe import printable
    if loaded.divergence is not None:
        step, why = loaded.divergence
        print(f"hvdbg: {printable(path)}: diverged at step {step}: {why}", file=sys.stderr)
        return EXIT_DIVERGE
    if loaded.trace.salvage:
        _warn_salvage(loaded.trace)
        return EXIT_SALVAGED
    return EXIT_OK


def cmd_replay(args, out) -> int:
    from .report import build_report, render
    loaded = _load_trace(args.trace, journal=not args.verify, branches=False)
    status = _verdict_status(args.trace, loaded)
    tr, res = loaded.trace, loaded.result
    if status == EXIT_DIVERGE:
        if args.json:
            out.write(json.dumps({"identical": False, "status": "diverged", "step": loaded.divergence[0],
                                  "why": loaded.divergence[1]}) + "\n")
        return status
    n = len(tr.events)
    if status == EXIT_SALVAGED:
        sv = tr.salvage
        msg = (f"salvaged: {n} recovered events re-executed, {loaded.verified} of them checked against their "
               f"per-event checks, {len(tr.checkpoints)} checkpoint digests matched; lost: everything after byte "
               f"{sv['offset']} ({sv['reason']}), including the recorded outcome - NOT a whole-file verification")
        data = {"identical": False, "status": "salvaged", "events_recovered": n, "events_checked": loaded.verified,
                "checkpoints": len(tr.checkpoints), "lost_after_byte": sv["offset"], "reason": sv["reason"]}
    else:
        msg = (f"identical: {n} events re-executed, {len(tr.checkpoints)} checkpoint digests and every per-event check "
               f"match; outcome {res.outcome} at step {n}, as recorded")
        data = {"identical": True, "status": "identical", "steps": n, "outcome": res.outcome,
                "checkpoints": len(tr.checkpoints)}
    if loaded.program_note:
        msg += f"; note: {loaded.program_note}"
        data["program_note"] = loaded.program_note
    if args.verify or args.json:
        out.write((json.dumps(data) if args.json else msg) + "\n")
    else:
        _emit(args, out, build_report(loaded.engine, res), render)
        out.write(msg + "\n")
    return status


def cmd_info(args, out) -> int:
    from .recording import open_trace
    from .safe import printable
    from . import import_cli
    if import_cli.is_imported_hvt(args.trace):
        return import_cli.cmd_info_imported(args, out)
    try:
        tr, scn, cfg = open_trace(args.trace)
    except OSError as e:
        raise UsageError(f"hvdbg: {printable(args.trace)}: cannot read: {getattr(e, 'why', None) or e.strerror or e}") \
            from None
    h = tr.header
    info = {"file": args.trace, "bytes": tr.size, "tool": h.get("tool"), "scenario": scn.name,
            "config": cfg.as_dict(), "events": len(tr.events),
            "outcome": (tr.footer or {}).get("outcome"), "steps": (tr.footer or {}).get("steps"),
            "checkpoints": [{"step": c[0], "digest": c[1], "offset": c[3]} for c in tr.checkpoints],
            "branches": [{k: b.get(k) for k in ("name", "parent", "fork_step", "edit")} for b in tr.branches],
            "salvaged": tr.salvage, "bytes_per_event": round(tr.size / max(1, len(tr.events)), 2),
            "verified": False}
    _warn_salvage(tr)
    if args.json:
        out.write(json.dumps(info, default=str) + "\n")
        return EXIT_OK
    from rich.text import Text
    c = info["config"]
    con = _console(out)
    for line in (
        f"{printable(args.trace)}: {printable(info['tool'])} trace of {scn.name}, {info['bytes']} bytes, "
        f"{info['bytes_per_event']} bytes/event",
        "config: " + ", ".join(f"{k}={v}" for k, v in c.items()),
        f"events: {info['events']}; outcome: {info['outcome'] or 'none recorded (no footer)'}",
        f"checkpoints: {len(info['checkpoints'])}"
        + (f" (steps {info['checkpoints'][0]['step']}..{info['checkpoints'][-1]['step']})" if info['checkpoints'] else ""),
        "branches: " + (", ".join(f"{b['name']} (from {b['parent'] or 'main'} at step {b['fork_step']})"
                                  for b in info["branches"]) or "none"),
        "salvaged: " + (f"yes, at byte {tr.salvage.get('offset')}: {tr.salvage.get('reason')}" if tr.salvage else "no"),
        "verified: no (info reads the file without re-executing it; `hvdbg replay --verify` checks every event)",
    ):
        con.print(Text(line), soft_wrap=True)
    return EXIT_OK


def cmd_show(args, out) -> int:
    from .report import render_state, state_report
    from .safe import printable
    from .core.journal import JournalError
    from .recording import open_at
    main_only = args.branch == "main"
    try:
        loaded = open_at(args.trace, at=args.step if main_only else 0)
    except OSError as e:
        raise UsageError(f"hvdbg: {printable(args.trace)}: cannot read: {getattr(e, 'why', None) or e.strerror or e}") \
            from None
    n = len(loaded.trace.events)
    if args.step is not None and main_only and not 0 <= args.step <= n:
        raise UsageError(f"hvdbg: --step {args.step}: the main branch has steps 0..{n}")
    if loaded.divergence is not None:
        step, why = loaded.divergence
        print(f"hvdbg: {printable(args.trace)}: diverged at step {step}: {why}; `show` shows only states the trace "
              "reproduces", file=sys.stderr)
        return EXIT_DIVERGE
    _warn_salvage(loaded.trace)
    if main_only:
        eng, step = loaded.engine, loaded.engine.step
    else:
        if args.branch not in loaded.branches:
            raise UsageError(f"hvdbg: {printable(args.trace)}: no branch {printable(repr(args.branch))} "
                             f"(branches: main{''.join(', ' + b for b in loaded.branches)})")
        tl = loaded.branches[args.branch]
        step = tl.length if args.step is None else args.step
        if not 0 <= step <= tl.length:
            raise UsageError(f"hvdbg: --step {step}: the {args.branch} branch has steps 0..{tl.length}")
        try:
            tl.goto(step)
        except JournalError as e:
            print(f"hvdbg: {printable(args.trace)}: diverged at step {e.step}: {e}", file=sys.stderr)
            return EXIT_DIVERGE
        eng = tl.e
    rep = state_report(eng, step, args.branch)
    rep["verified"] = (f"the segment holding step {step} was re-executed from the snapshot before it and matched "
                       "its recorded checks; `hvdbg replay --verify` re-executes the whole recording")
    _emit(args, out, rep, render_state)
    return EXIT_OK


def cmd_sweep(args, out) -> int:
    from .core.engine import Engine
    from .report import render_sweep
    scn, cfg = _load(args)
    if not 1 <= args.seeds <= 1_000_000:
        raise UsageError("hvdbg: --seeds: expected 1..1000000")
    hist: Counter = Counter()
    first: dict[str, int] = {}
    stats: Counter = Counter()
    per_run = scn.pack.sweep_stats if scn.pack is not None else {}
    t0 = time.perf_counter()
    base = cfg.seed
    for seed in range(base, base + args.seeds):
        cfg.seed = seed & ((1 << 64) - 1)
        eng = Engine(scn, cfg, journal=False)      # a sweep keeps no journal: memory is flat
        res = eng.run()
        hist[res.outcome] += 1
        first.setdefault(res.outcome, seed)
        for k in per_run:
            stats[k] += 1 if res.stats.get(k) else 0
    rep = {"scenario": scn.name, "hypervisor": cfg.hypervisor, "overlay": cfg.overlay, "fix": cfg.fix,
           "garbage": cfg.garbage, "first_seed": base, "seeds": args.seeds,
           "histogram": dict(sorted(hist.items())), "first_seed_of": first,
           "runs_with": {label: stats[k] for k, label in per_run.items()},
           "seconds": round(time.perf_counter() - t0, 3)}
    _emit(args, out, rep, render_sweep)
    if hist.get("corruption"):
        return EXIT_CORRUPTION
    if hist.get("hang"):
        return EXIT_HANG
    if hist.get("timeout"):
        return EXIT_TIMEOUT
    return EXIT_OK


def cmd_bugs(args, out) -> int:
    """The bug library (core/packs.py): one row per pack."""
    from rich.text import Text

    from .core import packs
    rows = [{"pack": p.name, "hypervisor": p.hypervisor, "transition": p.transition, "symptom": p.symptom,
             "kernel": p.kernel, "upstream_fix": p.upstream_fix, "fixes": dict(p.fixes),
             "scenarios": sorted(p.scenarios), "default_scenario": p.default_scenario, "title": p.title, "doc": p.doc}
            for p in packs.packs().values()]
    if args.json:
        out.write(json.dumps(rows) + "\n")
        return EXIT_OK
    con = _console(out)
    for r in rows:
        head = Text()
        head.append(r["pack"], "bold")
        head.append(f"   {r['hypervisor']} · {r['transition']} · {r['symptom']} · Linux {r['kernel']}")
        con.print(head)
        con.print(Text("  " + r["title"]))
        scen = [f"{n} (default)" if n == r["default_scenario"] else n for n in r["scenarios"]]
        con.print(Text(f"  --fix {' | '.join(r['fixes'])}   upstream {r['upstream_fix']}   {r['doc']}", style="dim"))
        con.print(Text(f"  scenarios: {', '.join(scen)}", style="dim"))
    con.print(Text("hvdbg run PACK shows the failure and its chain; --fix FIX runs a fix; hvdbg sweep PACK --seeds N",
                   style="dim"))
    return EXIT_OK


def cmd_explore(args, out) -> int:
    from .explore_cli import cmd_explore as explore
    return explore(args, out)


def cmd_scenarios(args, out) -> int:
    from .core.scenario import builtin_names, load_scenario
    for n in builtin_names():
        s = load_scenario(n)
        out.write(f"{n:24s} {s.pack.name:22s} {s.vcpus} vCPUs  {s.description}\n")
    return EXIT_OK


class _Stdout:
    """stdout for the commands: a reader that went away (``hvdbg run | head -1``) ends the
    output quietly - later writes go nowhere - and the command still returns its own status."""

    def __init__(self, f):
        self._f = f
        self.closed_pipe = False

    def _gone(self) -> None:
        self.closed_pipe = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._f.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, s: str) -> int:
        if self.closed_pipe:
            return len(s)
        try:
            return self._f.write(s)
        except BrokenPipeError:
            self._gone()
            return len(s)

    def flush(self) -> None:
        if self.closed_pipe:
            return
        try:
            self._f.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name):
        return getattr(self._f, name)


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    from .core.engine import RunError
    from .core.program import ProgramError
    from .core.scenario import ScenarioError
    from .safe import printable
    from .trace.format import TraceError
    from . import export_cli, import_cli
    out = _Stdout(sys.stdout)
    old_term = None
    if threading_main():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        argv = list(argv if argv is not None else sys.argv[1:])
        args = make_parser().parse_args(argv)
        if args.cmd is None:
            # bare `hvdbg [options]`: the TUI on a terminal, the headless story otherwise
            interactive = (sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("HVDBG_HEADLESS")
                           and not {"--json", "--record"} & {a.split("=")[0] for a in argv})
            args = make_parser().parse_args((["tui"] if interactive else ["run"]) + argv)
        code = {"run": cmd_run, "sweep": cmd_sweep, "scenarios": cmd_scenarios, "bugs": cmd_bugs, "replay": cmd_replay,
                "info": cmd_info, "show": cmd_show, "repl": cmd_repl, "script": cmd_script,
                "tui": cmd_tui, "serve": cmd_serve, "import": import_cli.cmd_import,
                "export": export_cli.cmd_export, "explore": cmd_explore}[args.cmd](args, out)
        out.flush()
        return code
    except UsageError as e:
        print(printable(str(e), 600), file=sys.stderr)
        return EXIT_USAGE
    except (ScenarioError, ProgramError, RunError, TraceError) as e:
        print(f"hvdbg: {printable(str(e), 600)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("hvdbg: terminated (SIGTERM); files were flushed and closed (a recording keeps FILE.partial)",
              file=sys.stderr)
        return EXIT_TERM
    except KeyboardInterrupt:
        print("hvdbg: interrupted; files were flushed and closed (a recording keeps FILE.partial)", file=sys.stderr)
        return EXIT_INTR
    except BrokenPipeError:
        out._gone()
        return EXIT_OK
    except Exception:
        from .crash import write_crash_report
        path = write_crash_report()
        print(f"hvdbg: internal error; crash report written to {path}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def threading_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def entry() -> None:
    """The console script: main(), then a fast exit. A session of millions of events would
    otherwise spend seconds freeing its journal at interpreter shutdown (after Ctrl-C too);
    everything the process wrote is flushed first."""
    code = main()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
