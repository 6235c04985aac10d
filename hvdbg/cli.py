"""The `hvdbg` command line.

Exit status (design §7): 0 ok, 1 internal error (one line naming a crash report),
2 usage or bad input, 3 hang, 5 timeout, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_HANG, EXIT_DIVERGE, EXIT_TIMEOUT, EXIT_INTR = 0, 1, 2, 3, 4, 5, 130
OUTCOME_EXIT = {"ok": EXIT_OK, "hang": EXIT_HANG, "timeout": EXIT_TIMEOUT, "stopped": EXIT_INTR}


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _run_options(p: argparse.ArgumentParser) -> None:
    _session_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--record", metavar="FILE", help="record the run to a msgpack trace (written even on a hang)")


def _session_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", nargs="?", default=None, help="built-in scenario, FILE.toml or a trace (default cpu-offline)")
    p.add_argument("--hypervisor", choices=("hyperv", "kvm"))
    p.add_argument("--overlay", choices=("uncover-stale", "copy-back", "restore"), help="hyperv only")
    p.add_argument("--fix", choices=("none", "gfp-zero", "clear-bit"))
    p.add_argument("--garbage", metavar="SPEC", help="fill byte (0xfe) or random:SEED for pages allocated without __GFP_ZERO")
    p.add_argument("--seed", type=_int, help="PRNG seed of the default choice policy")
    p.add_argument("--vcpus", type=_int, help="vCPU count 2..64")
    p.add_argument("--max-steps", type=_int, dest="max_steps", help="step budget (timeout)")


def _options(args) -> dict:
    """The run options given on the command line, validated (one message, exit 2)."""
    from .core.scenario import check_config_values
    opts = {k: getattr(args, k, None) for k in ("hypervisor", "overlay", "fix", "garbage", "seed", "vcpus", "max_steps")}
    if opts.get("overlay") and opts.get("hypervisor") == "kvm":
        raise UsageError("hvdbg: --overlay applies to --hypervisor hyperv only (kvm has no overlay)")
    check_config_values({k: v for k, v in opts.items() if v is not None},
                        lambda k, msg: (_ for _ in ()).throw(UsageError(f"hvdbg: --{k.replace('_', '-')}: {msg}")))
    return opts


def _open_session(args):
    from .commands import CommandError, Session
    opts = _options(args)
    try:
        return Session.open(args.scenario, **opts)
    except CommandError as e:
        raise UsageError(f"hvdbg: {e}") from None
    except OSError as e:
        raise UsageError(f"hvdbg: {args.scenario}: cannot read: {e.strerror or e}") from None


def cmd_tui(args, out) -> int:
    session = _open_session(args)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("hvdbg: the TUI needs a terminal; use `hvdbg run`, `hvdbg repl` or `hvdbg script` without one")
    from .tui import run_tui
    return run_tui(session)


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
        return int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None


def make_parser() -> _Parser:
    p = _Parser(prog="hvdbg", description="Time-travel debugger for the Hyper-V guest/hypervisor interface.")
    p.add_argument("--version", action="version", version="hvdbg 0.1.0")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    r = sub.add_parser("run", help="run a scenario headless and explain its outcome")
    _run_options(r)
    s = sub.add_parser("sweep", help="run many seeds and print the outcome histogram")
    _run_options(s)
    s.add_argument("--seeds", type=_int, default=100, help="number of seeds (from --seed, default 0)")
    sub.add_parser("scenarios", help="list the built-in scenarios")
    tu = sub.add_parser("tui", help="the terminal UI (the default with no arguments)")
    _session_options(tu)
    rl = sub.add_parser("repl", help="interactive debugger prompt (prompt_toolkit)")
    _session_options(rl)
    sc = sub.add_parser("script", help="run commands from a file; `expect` lines gate CI (exit 6 if one fails)")
    sc.add_argument("file")
    _session_options(sc)
    sc.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    rp = sub.add_parser("replay", help="re-execute a trace with its recorded choices")
    rp.add_argument("trace")
    rp.add_argument("--verify", action="store_true", help="compare every event: exit 0 identical, 4 diverged")
    rp.add_argument("--json", action="store_true")
    ip = sub.add_parser("info", help="what a trace holds: config, steps, outcome, branches, checkpoints, salvage")
    ip.add_argument("trace")
    ip.add_argument("--json", action="store_true")
    sp = sub.add_parser("show", help="the full machine state at a step of a trace")
    sp.add_argument("trace")
    sp.add_argument("--step", type=_int, help="step (default: the end)")
    sp.add_argument("--branch", default="main")
    sp.add_argument("--json", action="store_true")
    return p


def _load(args):
    from .core.scenario import load_scenario
    over = _options(args)
    scn = load_scenario(args.scenario)
    cfg = scn.config(**over)
    if cfg.hypervisor == "kvm" and args.overlay is None:
        cfg.overlay = "uncover-stale"
    if not 1 <= scn.target < cfg.vcpus:
        raise UsageError(f"hvdbg: --vcpus {cfg.vcpus}: scenario {scn.name} offlines cpu{scn.target}")
    return scn, cfg


def cmd_run(args, out) -> int:

    from .core.engine import Engine
    from .report import build_report, render
    scn, cfg = _load(args)
    try:
        eng = Engine(scn, cfg)
    except ValueError as e:
        raise UsageError(f"hvdbg: {scn.source}: {e}") from None
    if args.record:
        from .recording import record
        try:
            eng = record(scn, cfg, args.record).e
        except OSError as e:
            raise UsageError(f"hvdbg: --record {args.record}: {e.strerror or e}") from None
        res = eng._result(*_final(eng))
    else:
        res = eng.run()
    _emit(args, out, build_report(eng, res), render)
    return OUTCOME_EXIT.get(res.outcome, EXIT_OK)


def _emit(args, out, rep: dict, render_fn) -> None:
    """Print a report: one JSON object with --json, else rich."""
    if args.json:
        out.write(json.dumps(rep, default=str) + "\n")
    else:
        from rich.console import Console
        render_fn(rep, Console(file=out, highlight=False))


def _final(eng) -> tuple:
    r = eng._last_result
    return r.outcome, r.reason


def _load_trace(args, verify=True):
    from .recording import load
    try:
        return load(args.trace, verify=verify)
    except OSError as e:
        raise UsageError(f"hvdbg: {args.trace}: cannot read: {e.strerror or e}") from None


def _warn_salvage(loaded) -> None:
    sv = loaded.trace.salvage
    if sv:
        print(f"hvdbg: warning: salvaged: {sv.get('message') or sv.get('reason')}", file=sys.stderr)


def cmd_replay(args, out) -> int:

    from .report import build_report, render
    loaded = _load_trace(args)
    _warn_salvage(loaded)
    tl = loaded.timeline
    if loaded.divergence is not None:
        step, why = loaded.divergence
        print(f"hvdbg: {args.trace}: diverged at step {step}: {why}", file=sys.stderr)
        return EXIT_DIVERGE
    if args.verify:
        part = " (the recovered prefix of a salvaged trace)" if loaded.trace.salvage else ""
        msg = (f"identical{part}: {tl.length} events re-executed, {len(loaded.trace.checkpoints)} checkpoint digests "
               f"and every per-event check match; outcome {tl.result.outcome}")
        if args.json:
            out.write(json.dumps({"identical": True, "steps": tl.length, "outcome": tl.result.outcome,
                                  "checkpoints": len(loaded.trace.checkpoints)}) + "\n")
        else:
            out.write(msg + "\n")
        return EXIT_OK
    _emit(args, out, build_report(tl.e, tl.result), render)
    return EXIT_OK


def cmd_info(args, out) -> int:
    from .trace.reader import load_trace
    try:
        tr = load_trace(args.trace)
    except OSError as e:
        raise UsageError(f"hvdbg: {args.trace}: cannot read: {e.strerror or e}") from None
    h = tr.header
    info = {"file": args.trace, "bytes": tr.size, "tool": h.get("tool"), "scenario": h.get("scenario"),
            "config": h.get("config"), "events": len(tr.events),
            "outcome": (tr.footer or {}).get("outcome"), "steps": (tr.footer or {}).get("steps"),
            "checkpoints": [{"step": c[0], "digest": c[1], "offset": c[3]} for c in tr.checkpoints],
            "branches": [{k: b.get(k) for k in ("name", "parent", "fork_step", "edit")} for b in tr.branches],
            "salvaged": tr.salvage, "bytes_per_event": round(tr.size / max(1, len(tr.events)), 2)}
    if tr.salvage:
        print(f"hvdbg: warning: salvaged: {tr.salvage.get('message') or tr.salvage.get('reason')}", file=sys.stderr)
    if args.json:
        out.write(json.dumps(info, default=str) + "\n")
        return EXIT_OK
    c = info["config"] or {}
    out.write(f"{args.trace}: {info['tool']} trace of {info['scenario']}, {info['bytes']} bytes, "
              f"{info['bytes_per_event']} bytes/event\n")
    out.write("config: " + ", ".join(f"{k}={v}" for k, v in c.items()) + "\n")
    out.write(f"events: {info['events']}; outcome: {info['outcome'] or 'none recorded (no footer)'}\n")
    out.write(f"checkpoints: {len(info['checkpoints'])}"
              + (f" (steps {info['checkpoints'][0]['step']}..{info['checkpoints'][-1]['step']})" if info['checkpoints'] else "") + "\n")
    out.write("branches: " + (", ".join(f"{b['name']} (from {b['parent'] or 'main'} at step {b['fork_step']})"
                                        for b in info["branches"]) or "none") + "\n")
    out.write("salvaged: " + (f"yes, at byte {tr.salvage.get('offset')}: {tr.salvage.get('reason')}" if tr.salvage else "no")
              + "\n")
    return EXIT_OK


def cmd_show(args, out) -> int:

    from .report import render_state, state_report
    loaded = _load_trace(args)
    _warn_salvage(loaded)
    tl = loaded.timeline
    if args.branch != "main":
        if args.branch not in loaded.branches:
            raise UsageError(f"hvdbg: {args.trace}: no branch {args.branch!r} "
                             f"(branches: main{''.join(', ' + b for b in loaded.branches)})")
        tl = loaded.branches[args.branch]
    step = tl.length if args.step is None else args.step
    if not 0 <= step <= tl.length:
        raise UsageError(f"hvdbg: --step {step}: the {args.branch} branch has steps 0..{tl.length}")
    tl.goto(step)
    _emit(args, out, state_report(tl.e, step, args.branch), render_state)
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
    t0 = time.perf_counter()
    for seed in range(cfg.seed, cfg.seed + args.seeds):
        cfg.seed = seed
        eng = Engine(scn, cfg)
        res = eng.run()
        hist[res.outcome] += 1
        first.setdefault(res.outcome, seed)
        stats["runs_with_assisted_eoi_before_offline"] += 1 if res.stats.get("eoi_assisted_before_offline") else 0
        stats["runs_with_stale_eoi_skip"] += 1 if res.stats.get("eoi_skipped_stale") else 0
    base = cfg.seed - args.seeds + 1
    rep = {"scenario": scn.name, "hypervisor": cfg.hypervisor, "overlay": cfg.overlay, "fix": cfg.fix,
           "garbage": cfg.garbage, "first_seed": base, "seeds": args.seeds,
           "histogram": dict(sorted(hist.items())), "first_seed_of": first,
           "runs_with_assisted_eoi_before_offline": stats["runs_with_assisted_eoi_before_offline"],
           "runs_with_stale_eoi_skip": stats["runs_with_stale_eoi_skip"],
           "seconds": round(time.perf_counter() - t0, 3)}
    _emit(args, out, rep, render_sweep)
    if hist.get("hang"):
        return EXIT_HANG
    if hist.get("timeout"):
        return EXIT_TIMEOUT
    return EXIT_OK


def cmd_scenarios(args, out) -> int:
    from .core.scenario import builtin_names, load_scenario
    for n in builtin_names():
        s = load_scenario(n)
        out.write(f"{n:20s} {s.vcpus} vCPUs  {s.description}\n")
    return EXIT_OK


def crash_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hvdbg" / "crash"


def main(argv: list[str] | None = None) -> int:
    from .core.engine import RunError
    from .core.program import ProgramError
    from .core.scenario import ScenarioError
    from .trace.format import TraceError
    out = sys.stdout
    try:
        argv = list(argv if argv is not None else sys.argv[1:])
        args = make_parser().parse_args(argv)
        if args.cmd is None:
            # bare `hvdbg [options]`: the TUI on a terminal, the headless story otherwise
            interactive = (sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("HVDBG_HEADLESS")
                           and not {"--json", "--record"} & {a.split("=")[0] for a in argv})
            args = make_parser().parse_args((["tui"] if interactive else ["run"]) + argv)
        return {"run": cmd_run, "sweep": cmd_sweep, "scenarios": cmd_scenarios, "replay": cmd_replay,
                "info": cmd_info, "show": cmd_show, "repl": cmd_repl, "script": cmd_script,
                "tui": cmd_tui}[args.cmd](args, out)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except (ScenarioError, ProgramError, RunError, TraceError) as e:
        print(f"hvdbg: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hvdbg: interrupted", file=sys.stderr)
        return EXIT_INTR
    except BrokenPipeError:
        return EXIT_OK
    except Exception:
        try:
            d = crash_dir()
            d.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix="crash-", suffix=".txt", dir=d)
        except OSError:
            fd, path = tempfile.mkstemp(prefix="hvdbg-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"hvdbg crash report\nargv: {sys.argv!r}\n\n")
            traceback.print_exc(file=f)
        print(f"hvdbg: internal error; crash report written to {path}", file=sys.stderr)
        return EXIT_INTERNAL
