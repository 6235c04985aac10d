"""The compiled-engine evaluation harness (bench/compiled.py, docs/compiled.md) keeps working:
its event-stream hash is the one the engine produces, it refuses a build whose sources
changed, and - when a Cython build exists (`make compiled-eval`) - the compiled engine's
event streams are identical to pure Python's. hvdbg itself never loads compiled modules."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "bench" / "compiled.py"
BUILD = ROOT / "build" / "compiled-plain"


def _child(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HARNESS), "--child", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_harness_hashes_every_event_field():
    from hvdbg.core.engine import Engine
    from hvdbg.core.scenario import load_scenario
    kw = {"seed": 3, "garbage": "random:7"}
    p = _child("parity", "--case", "cpu-offline", "--kw", json.dumps(kw))
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    s = load_scenario("cpu-offline")
    eng = Engine(s, s.config(**kw))
    res = eng.run()
    h = hashlib.sha256()
    for ev in eng.events:
        h.update(repr((ev.step, ev.act, ev.cpu, ev.rt, ev.pc, ev.writes, ev.notes)).encode())
        h.update(b"\n")
    assert got == {"outcome": res.outcome, "steps": res.steps, "reason": res.reason, "events": h.hexdigest(),
                   "digest": eng.m.digest(), "stats": json.loads(json.dumps(res.stats))}


def test_a_stale_build_is_refused(tmp_path):
    man = {"format": 1, "compiler": "cython", "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"), "directives": {},
           "modules": {"hvdbg.core.engine": {"sha256": {"hvdbg/core/engine.py": "0" * 64}}}}
    (tmp_path / "MANIFEST.json").write_text(json.dumps(man))
    p = _child("parity", "--case", "cpu-offline", "--kw", "{}", "--build", str(tmp_path))
    assert p.returncode != 0
    assert "stale: hvdbg/core/engine.py changed" in p.stderr


@pytest.mark.skipif(not (BUILD / "MANIFEST.json").is_file(),
                    reason="no Cython build in build/compiled-plain (make compiled-eval builds one; needs Cython and a C "
                           "compiler)")
@pytest.mark.parametrize("case,kw", [("cpu-offline", {"seed": 0}), ("vp-assist-kexec", {}),
                                     ("smp", {"hypervisor": "kvm", "seed": 5, "vcpus": 4, "max_steps": 5000})])
def test_compiled_engine_streams_are_identical(case, kw):
    ref = _child("parity", "--case", case, "--kw", json.dumps(kw))
    got = _child("parity", "--case", case, "--kw", json.dumps(kw), "--build", str(BUILD))
    assert ref.returncode == 0, ref.stderr
    if "is stale" in got.stderr:
        pytest.skip(f"build/compiled-plain is stale (sources changed since it was built): {got.stderr.strip()}")
    assert got.returncode == 0, got.stderr
    assert got.stdout == ref.stdout
