"""Build a compiled variant of the engine for evaluation (docs/compiled.md): Cython compiles
hvdbg/core's hot modules as they are (pure-Python mode: the .py files themselves, plus an
augmenting .pxd where one exists; no .pyx rewrite) into extension modules under one
directory (default build/compiled), never next to the sources - Python's path finder would
prefer an extension module over the .py beside it and the pure-Python path could no longer
be chosen. hvdbg itself never loads them: bench/compiled.py does, in its child processes,
to compare throughput and event streams with pure Python. MANIFEST.json records each
module's source files and their SHA-256, so a build whose sources changed is refused.

Usage: python tools/build_compiled.py [--out DIR] [--modules GLOB ...] [--directive NAME=VALUE ...]
Needs Cython (pip install -e '.[compiled-eval]') and a C compiler; takes 4-8 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What gets compiled: the engine's hot path (profiled with bench/engine.py; see
# docs/compiled.md). Globs relative to the checkout; every module matched is compiled from
# whatever the .py file contains at build time.
DEFAULT_MODULES = [
    "hvdbg/core/engine.py",
    "hvdbg/core/scheduler.py",
    "hvdbg/core/ops.py",
    "hvdbg/core/apic.py",
    "hvdbg/core/machine.py",
    "hvdbg/core/msr.py",
    "hvdbg/core/hang.py",
    "hvdbg/core/lifecycle.py",
    "hvdbg/core/events.py",
    "hvdbg/core/hypervisors/base.py",
    "hvdbg/core/hypervisors/hyperv.py",
    "hvdbg/core/hypervisors/kvm.py",
]

# Compiler directives: Python semantics everywhere. annotation_typing=False: annotations are
# documentation, not C types (with it on, `x: list` rejects a tuple and `x: float` becomes a
# C double - behaviour the pure-Python path does not have).
DIRECTIVES = {
    "language_level": 3,
    "annotation_typing": False,
    "binding": True,
    "embedsignature": False,
}


def module_name(rel: str) -> str:
    return rel[:-3].replace("/", ".")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("HVDBG_COMPILED_DIR", str(ROOT / "build" / "compiled")))
    ap.add_argument("--modules", nargs="*", default=None, help="source globs relative to the checkout")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--directive", action="append", default=[], metavar="NAME=VALUE",
                    help="extra Cython directive (experiments)")
    a = ap.parse_args(argv)
    try:
        import Cython
        from Cython.Build import cythonize
    except ImportError:
        print("build_compiled: Cython is not installed (pip install -e '.[fast]')", file=sys.stderr)
        return 2
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    out = Path(a.out).resolve()
    tmp = out.parent / (out.name + "-tmp")
    rels: list[str] = []
    for pat in a.modules or DEFAULT_MODULES:
        hits = sorted(glob.glob(pat, root_dir=ROOT))
        if not hits:
            print(f"build_compiled: no source matches {pat}", file=sys.stderr)
            return 2
        rels += [h for h in hits if h.endswith(".py") and h not in rels]
    directives = dict(DIRECTIVES)
    for d in a.directive:
        k, _, v = d.partition("=")
        directives[k] = {"True": True, "False": False}.get(v, int(v) if v.isdigit() else v)

    os.environ.setdefault("CFLAGS", "-g0")     # no debug info: a third of the compile time, 5x smaller files
    t0 = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    exts = [Extension(module_name(r), [str(ROOT / r)]) for r in rels]
    cwd = os.getcwd()
    os.chdir(ROOT)   # cythonize names modules from the package layout relative to here
    try:
        ext_modules = cythonize(exts, build_dir=str(tmp / "c"), compiler_directives=directives,
                                nthreads=a.jobs, quiet=True, force=True)
        dist = Distribution({"name": "hvdbg-compiled", "ext_modules": ext_modules})
        cmd = build_ext(dist)
        cmd.build_lib = str(out)
        cmd.build_temp = str(tmp / "obj")
        cmd.inplace = False
        cmd.parallel = a.jobs
        cmd.ensure_finalized()
        cmd.run()
    finally:
        os.chdir(cwd)
    manifest = {
        "format": 1,
        "compiler": "cython",
        "cython": Cython.__version__,
        "python": sys.version.split()[0],
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "directives": directives,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
        # every file the module was compiled from (the .py and an augmenting .pxd) -> SHA-256
        "modules": {module_name(r): {"sha256": {f: sha256(ROOT / f) for f in (r, r[:-3] + ".pxd")
                                                if (ROOT / f).is_file()}} for r in rels},
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"build_compiled: {len(rels)} modules compiled with Cython {Cython.__version__} into {out} "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
