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
    p.add_argument("scenario", nargs="?", default=None, help="built-in scenario name or FILE.toml (default cpu-offline)")
    p.add_argument("--hypervisor", choices=("hyperv", "kvm"))
    p.add_argument("--overlay", choices=("uncover-stale", "copy-back", "restore"), help="hyperv only")
    p.add_argument("--fix", choices=("none", "gfp-zero", "clear-bit"))
    p.add_argument("--garbage", metavar="SPEC", help="fill byte (0xfe) or random:SEED for pages allocated without __GFP_ZERO")
    p.add_argument("--seed", type=_int, help="PRNG seed of the default choice policy")
    p.add_argument("--vcpus", type=_int, help="vCPU count 2..64")
    p.add_argument("--max-steps", type=_int, dest="max_steps", help="step budget (timeout)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


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
    return p


def _load(args):
    from .core.scenario import ScenarioError, check_config_values, load_scenario
    scn = load_scenario(args.scenario)
    if args.overlay and args.hypervisor == "kvm":
        raise UsageError("hvdbg: --overlay applies to --hypervisor hyperv only (kvm has no overlay)")
    over = {k: getattr(args, k) for k in ("hypervisor", "overlay", "fix", "garbage", "seed", "vcpus", "max_steps")}
    check_config_values({k: v for k, v in over.items() if v is not None},
                        lambda k, msg: (_ for _ in ()).throw(UsageError(f"hvdbg: --{k.replace('_', '-')}: {msg}")))
    cfg = scn.config(**over)
    if cfg.hypervisor == "kvm" and args.overlay is None:
        cfg.overlay = "uncover-stale"
    if not 1 <= scn.target < cfg.vcpus:
        raise UsageError(f"hvdbg: --vcpus {cfg.vcpus}: scenario {scn.name} offlines cpu{scn.target}")
    _ = ScenarioError
    return scn, cfg


def cmd_run(args, out) -> int:
    from rich.console import Console

    from .core.engine import Engine
    from .report import build_report, render
    scn, cfg = _load(args)
    try:
        eng = Engine(scn, cfg)
    except ValueError as e:
        raise UsageError(f"hvdbg: {scn.source}: {e}") from None
    res = eng.run()
    rep = build_report(eng, res)
    if args.json:
        out.write(json.dumps(rep) + "\n")
    else:
        render(rep, Console(file=out, highlight=False, soft_wrap=False))
    return OUTCOME_EXIT.get(res.outcome, EXIT_OK)


def cmd_sweep(args, out) -> int:
    from rich.console import Console

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
    if args.json:
        out.write(json.dumps(rep) + "\n")
    else:
        render_sweep(rep, Console(file=out, highlight=False))
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
    out = sys.stdout
    try:
        args = make_parser().parse_args(argv)
        if args.cmd is None:
            args = make_parser().parse_args(["run"] + list(argv if argv is not None else sys.argv[1:]))
        return {"run": cmd_run, "sweep": cmd_sweep, "scenarios": cmd_scenarios}[args.cmd](args, out)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except (ScenarioError, ProgramError, RunError) as e:
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
