"""Compiled engine vs pure Python: throughput, instructions per event and identical event streams.

The evaluation of compiling hvdbg/core with Cython (docs/compiled.md). Build one or more
variants with tools/build_compiled.py (each into its own directory), then:

    python bench/compiled.py [--rounds 3] [--events 200000] [--instructions] [--no-parity] NAME=DIR ...

Pure Python is always measured too. Every measurement runs in a fresh child process; a child
for a compiled variant puts a meta-path finder in front of the import system that loads the
modules listed in DIR/MANIFEST.json from DIR (refusing a build whose sources changed since)
and checks that they really came from the extension modules. Nothing in hvdbg/ changes.

* throughput: the workloads of bench/engine.py, rounds interleaved across variants, best
  round per variant; events/s and the ratio to bench/engine.py's calibration loop;
* --instructions: instructions per event counted by valgrind (cachegrind, no cache
  simulation) as the difference between a 22,000- and a 2,000-event run: independent of the
  machine's load, which makes wall-clock ratios on a shared machine swing by +-30 %;
* parity (default on): every scenario below runs in both paths; the SHA-256 over every event
  (step, action, cpu, routine, pc, writes, notes), the outcome, steps, reason, final state
  digest and stats must be identical.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {"soak": ("soak", {}), "smp4": ("smp", {"vcpus": 4, "fix": "gfp-zero"}),
             "smp32": ("smp", {"vcpus": 32, "fix": "gfp-zero"})}
LABELS = {"soak": "soak (4 vCPUs)", "smp4": "smp 4 vCPUs", "smp32": "smp 32 vCPUs"}
PARITY = [
    ("cpu-offline", {"seed": 0}),                                  # the seed hang
    ("cpu-offline", {"seed": 3, "garbage": "random:7"}),
    ("cpu-offline", {"fix": "gfp-zero"}),
    ("cpu-offline", {"fix": "clear-bit", "seed": 9}),
    ("cpu-offline", {"hypervisor": "kvm", "seed": 2}),
    ("smp", {"hypervisor": "kvm", "seed": 5, "vcpus": 4, "max_steps": 20000}),
    ("smp", {"seed": 11, "vcpus": 6, "fix": "gfp-zero", "max_steps": 20000}),
    ("soak", {"max_steps": 20000}),
    ("vp-assist-hibernation", {}),
    ("vp-assist-kexec", {}),
    ("kvm-pv-hibernation", {}),
]


# ------------------------------------------------------------------ child side
def _use_build(directory: str) -> list[str]:
    """Load the build in `directory` for this process; return the compiled module names."""
    import sysconfig
    from importlib.machinery import ExtensionFileLoader, ModuleSpec

    d = Path(directory)
    man = json.loads((d / "MANIFEST.json").read_text())
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    if man["ext_suffix"] != suffix:
        sys.exit(f"{d} was built for {man['ext_suffix']}, this Python loads {suffix}")
    files = {}
    for name, info in man["modules"].items():
        for src, want in info["sha256"].items():
            p = ROOT / src
            if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != want:
                sys.exit(f"{d} is stale: {src} changed since it was built (rebuild it)")
        files[name] = d.joinpath(*name.split(".")[:-1], name.rsplit(".", 1)[1] + suffix)

    class Finder:
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            f = files.get(fullname)
            return None if f is None else ModuleSpec(fullname, ExtensionFileLoader(fullname, str(f)), origin=str(f))

    if any(n in sys.modules for n in files):
        sys.exit("compiled modules imported too early")
    sys.meta_path.insert(0, Finder())
    return sorted(files)


def _check_loaded(names: list[str]) -> None:
    import importlib
    for n in names:
        f = getattr(importlib.import_module(n), "__file__", "") or ""
        if not f.endswith(".so") and not f.endswith(".pyd"):
            sys.exit(f"{n} was not loaded from its extension module ({f})")


def _engine(name: str, kw: dict, warm: bool):
    from hvdbg.core.engine import Engine
    from hvdbg.core.scenario import load_scenario
    s = load_scenario(name)
    if warm:
        s.init_vars["warmup"] = 10 ** 9     # as bench/engine.py: traffic runs for the whole measurement
    return Engine(s, s.config(**kw))


def child(a) -> None:
    names = _use_build(a.build) if a.build else []
    if a.task == "throughput":
        import time
        sys.path.insert(0, str(ROOT / "bench"))
        from engine import calibration      # bench/engine.py's loop, always pure Python
        _check_loaded(names)
        out = {"cal": calibration()}
        for row, (name, over) in WORKLOADS.items():
            eng = _engine(name, dict(over, max_steps=a.events), True)
            t = time.perf_counter()
            res = eng.run()
            out[row] = res.steps / (time.perf_counter() - t)
        print(json.dumps(out))
    elif a.task == "steps":        # for instruction counting: run one workload, nothing else
        _check_loaded(names)
        name, over = WORKLOADS[a.workload]
        res = _engine(name, dict(over, max_steps=a.events), True).run()
        assert res.steps == a.events, res
    elif a.task == "parity":
        _check_loaded(names)
        name, kw = a.case, json.loads(a.kw)
        eng = _engine(name, kw, False)
        res = eng.run()
        h = hashlib.sha256()
        for ev in eng.events:
            h.update(repr((ev.step, ev.act, ev.cpu, ev.rt, ev.pc, ev.writes, ev.notes)).encode())
            h.update(b"\n")
        print(json.dumps({"outcome": res.outcome, "steps": res.steps, "reason": res.reason, "events": h.hexdigest(),
                          "digest": eng.m.digest(), "stats": res.stats}, sort_keys=True))


# ------------------------------------------------------------------ parent side
def _run_child(build: str | None, *args: str, prefix: tuple = (), env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [*prefix, sys.executable, __file__, "--child", *args]
    if build:
        cmd += ["--build", build]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=None if env is None else {**os.environ, **env})


def _ok(p: subprocess.CompletedProcess) -> str:
    if p.returncode != 0:
        sys.exit(f"child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def instructions(build: str | None, workload: str, hashseed: str | None = None) -> int:
    counts = []
    for n in (2_000, 22_000):
        p = _run_child(build, "steps", "--workload", workload, "--events", str(n),
                       prefix=("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"),
                       env=None if hashseed is None else {"PYTHONHASHSEED": hashseed})
        _ok(p)
        m = re.search(r"I\s+refs:\s+([\d,]+)", p.stderr)
        if not m:
            sys.exit(f"no instruction count in valgrind's output:\n{p.stderr[-2000:]}")
        counts.append(int(m.group(1).replace(",", "")))
    return (counts[1] - counts[0]) // 20_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="*", metavar="NAME=DIR", help="a build of tools/build_compiled.py")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--instructions", action="store_true", help="also count instructions per event (valgrind)")
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    if sys.argv[1:2] == ["--child"]:
        cp = argparse.ArgumentParser()
        cp.add_argument("task", choices=("throughput", "steps", "parity"))
        cp.add_argument("--build")
        cp.add_argument("--events", type=int)
        cp.add_argument("--workload")
        cp.add_argument("--case")
        cp.add_argument("--kw")
        return child(cp.parse_args(sys.argv[2:]))
    a = ap.parse_args()
    variants: dict[str, str | None] = {"pure": None}
    for v in a.variants:
        name, _, d = v.partition("=")
        if not d or not (Path(d) / "MANIFEST.json").is_file():
            sys.exit(f"{v}: expected NAME=DIR with DIR a build of tools/build_compiled.py")
        variants[name] = str(Path(d).resolve())
        man = json.loads((Path(d) / "MANIFEST.json").read_text())
        print(f"{name}: {len(man['modules'])} modules, {man['compiler']} {man.get('cython', '')}, "
              f"directives {man['directives']}")

    if not a.no_parity and len(variants) > 1:
        print(f"\nparity: {len(PARITY)} runs, event-stream hash + outcome + state digest + stats")
        bad = 0
        for name, kw in PARITY:
            ref = _ok(_run_child(None, "parity", "--case", name, "--kw", json.dumps(kw)))
            for v, d in variants.items():
                if d is None:
                    continue
                got = _ok(_run_child(d, "parity", "--case", name, "--kw", json.dumps(kw)))
                same = got == ref
                bad += not same
                print(f"  {name:24s} {json.dumps(kw):52s} {v:8s} {'identical' if same else 'DIFFERENT'}"
                      f"  ({json.loads(ref)['outcome']}, {json.loads(ref)['steps']} events)")
        if bad:
            sys.exit(f"parity: {bad} runs differ")

    if not a.no_throughput:
        print(f"\nthroughput: {a.events} events per workload, {a.rounds} rounds interleaved, best round per variant")
        best: dict[str, dict[str, tuple[float, float]]] = {v: {} for v in variants}
        for r in range(a.rounds):
            for v, d in variants.items():
                o = json.loads(_ok(_run_child(d, "throughput", "--events", str(a.events))))
                print(f"  round {r + 1} {v:8s} calibration {o['cal'] / 1e6:5.2f} M/s  " +
                      "  ".join(f"{row} {o[row] / 1e3:6.1f}k ({o[row] / o['cal']:.4f})" for row in WORKLOADS), flush=True)
                for row in WORKLOADS:
                    eps, ratio = best[v].get(row, (0.0, 0.0))
                    best[v][row] = (max(eps, o[row]), max(ratio, o[row] / o["cal"]))
        print(f"\n{'variant':10s}" + "".join(f"{LABELS[r]:>32s}" for r in WORKLOADS))
        for v in variants:
            cells = []
            for row in WORKLOADS:
                eps, ratio = best[v][row]
                gain = ratio / best["pure"][row][1]
                cells.append(f"{eps / 1e3:6.1f}k/s  {ratio:.4f}  x{gain:.2f}")
            print(f"{v:10s}" + "".join(f"{c:>32s}" for c in cells))

    if a.instructions:
        if not shutil.which("valgrind"):
            sys.exit("--instructions needs valgrind")
        print("\ninstructions per event (valgrind; lower is better; x = pure / variant)")
        ref: dict[str, int] = {}
        for v, d in variants.items():
            cells = []
            for row in WORKLOADS:
                n = instructions(d, row)
                ref.setdefault(row, n)
                cells.append(f"{n:8d}  x{ref[row] / n:.2f}")
            print(f"{v:10s}" + "".join(f"{c:>32s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
