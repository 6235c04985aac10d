"""record / replay --verify / info / show through the real CLI, salvage and divergence."""
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tracecraft as TC

from hvdbg.core.engine import Engine
from hvdbg.core.scenario import load_scenario
from hvdbg.recording import load, record
from hvdbg.trace.reader import load_trace
from hvdbg.trace.writer import TraceWriter

ROOT = Path(__file__).resolve().parent.parent


def hv(*args, **kw):
    return subprocess.run([sys.executable, "-m", "hvdbg", *args], capture_output=True, text=True, **kw)


@pytest.mark.parametrize("name", ["seed-hang", "fix-gfp-zero", "fix-clear-bit", "kvm"])
def test_shipped_traces_replay_identically(name):
    p = hv("replay", str(ROOT / "traces" / f"{name}.hvt"), "--verify")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("identical")


def test_shipped_seed_trace_is_the_hang():
    info = json.loads(hv("info", str(ROOT / "traces" / "seed-hang.hvt"), "--json").stdout)
    assert info["outcome"] == "hang" and info["config"]["fix"] == "none" and not info["salvaged"]


@pytest.mark.parametrize("over", [dict(), dict(fix="gfp-zero"), dict(hypervisor="kvm"), dict(garbage="random:5", seed=3)])
def test_record_then_replay_is_identical(tmp_path, over):
    s = load_scenario("cpu-offline")
    tl = record(s, s.config(**over), tmp_path / "t.hvt")
    loaded = load(tmp_path / "t.hvt")
    assert loaded.divergence is None
    assert loaded.timeline.length == tl.length
    assert loaded.timeline.e.m.digest() == tl.e.m.digest()
    assert [e[1] for e in loaded.timeline.events] == [e[1] for e in tl.events]


def test_run_record_exit_codes_and_info(tmp_path):
    f = tmp_path / "hang.hvt"
    p = hv("run", "--record", str(f))
    assert p.returncode == 3 and f.exists()          # a hang still writes the trace
    p = hv("info", str(f))
    assert p.returncode == 0 and "outcome: hang" in p.stdout and "salvaged: no" in p.stdout


def test_divergence_names_the_first_differing_step(tmp_path):
    s = load_scenario("cpu-offline")
    tl = record(s, s.config(), tmp_path / "a.hvt")
    tr = load_trace(tmp_path / "a.hvt")
    # same choices, but the header claims a different garbage fill: the page allocation
    # of hv_cpu_init on CPU0 is the first event whose writes differ
    hdr = dict(tr.header)
    hdr["config"] = dict(hdr["config"], garbage="0x5a")
    TC.rewrite(tr, tmp_path / "c.hvt", header=hdr)
    alloc = next(e[0] for e in tl.events if any(n[0] == "alloc" for n in e[6]))
    p = hv("replay", str(tmp_path / "c.hvt"), "--verify")
    assert p.returncode == 4, p.stdout + p.stderr
    assert f"diverged at step {alloc}:" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_a_choice_that_is_not_enabled_diverges(tmp_path):
    s = load_scenario("cpu-offline")
    record(s, s.config(), tmp_path / "a.hvt")
    tr = load_trace(tmp_path / "a.hvt")
    evs = list(tr.events)
    evs[5] = ("deliver", 1, 0x30)
    TC.rewrite(tr, tmp_path / "b.hvt", acts=evs)
    p = hv("replay", str(tmp_path / "b.hvt"), "--verify")
    assert p.returncode == 4 and "diverged at step 5" in p.stderr


def test_show_state_at_a_step_matches_a_fresh_run(tmp_path):
    f = tmp_path / "t.hvt"
    hv("run", "--record", str(f))
    p = hv("show", str(f), "--step", "1040", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    s = load_scenario("cpu-offline")
    e = Engine(s, s.config(max_steps=1040))
    e.run()
    assert d["digest"] == e.m.digest() and d["step"] == 1040
    assert {"registers", "frames", "msrs", "IRR", "ISR", "pages"} <= set(d["vcpus"][1])
    p = hv("show", str(f), "--step", "99999")
    assert p.returncode == 2 and "has steps 0.." in p.stderr


@pytest.mark.parametrize("content,msg", [
    (b"", "byte 0"), (b"hello, world\n", "byte 0: not an hvdbg trace"), (random.Random(7).randbytes(300), "byte 0"),
], ids=["empty", "text", "random"])
def test_bad_trace_files_exit_2(tmp_path, content, msg):
    f = tmp_path / "bad.hvt"
    f.write_bytes(content)
    for cmd in ("info", "replay", "show"):
        p = hv(cmd, str(f))
        assert p.returncode == 2, (cmd, p.stderr)
        assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_missing_trace_file_exit_2(tmp_path):
    p = hv("info", str(tmp_path / "nope.hvt"))
    assert p.returncode == 2 and "cannot read" in p.stderr


def test_salvaged_trace_info_and_replay(tmp_path):
    f = tmp_path / "t.hvt"
    hv("run", "--record", str(f))
    data = f.read_bytes()
    cut = tmp_path / "cut.hvt"
    cut.write_bytes(data[: len(data) - 100])
    p = hv("info", str(cut))
    assert p.returncode == 0 and "salvaged: yes, at byte" in p.stdout and "warning: salvaged" in p.stderr
    p = hv("replay", str(cut), "--verify")
    assert p.returncode == 8 and "salvaged" in p.stdout and "NOT a whole-file verification" in p.stdout
    assert len(p.stderr.strip().splitlines()) == 1 and "warning: salvaged" in p.stderr


def test_sigkill_while_recording_leaves_a_loadable_file(tmp_path):
    final = tmp_path / "soak.hvt"
    older = (ROOT / "traces" / "seed-hang.hvt").read_bytes()     # an older trace that must survive
    final.write_bytes(older)
    f = tmp_path / "soak.hvt.partial"
    proc = subprocess.Popen([sys.executable, "-m", "hvdbg", "run", "soak", "--max-steps", "100000000", "--memory", "64G",
                             "--record", str(final)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (not f.exists() or f.stat().st_size < 60_000):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert f.stat().st_size >= 60_000
    p = hv("info", str(f), "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["salvaged"] and info["events"] > 1000 and info["outcome"] is None
    p = hv("replay", str(f), "--verify")
    assert p.returncode == 8, p.stderr
    assert final.read_bytes() == older    # replaced only by a complete trace


def _base():
    import struct

    from hvdbg.trace import format as F
    return F, F.MAGIC + struct.pack("<I", F.FORMAT_VERSION)


@pytest.mark.parametrize("case", ["4gib", "unknown-kind", "newer"])
def test_malformed_files_exit_2_naming_the_byte(tmp_path, case):
    import struct
    F, base = _base()
    if case == "4gib":
        data, want = base + F.FRAME_HEAD.pack(0xFFFFFFFF, 0, F.K_HEADER) + b"x" * 10, "byte 12"
    elif case == "unknown-kind":
        data, want = base + F.frame(99, b"\x80"), "byte 12"
    else:
        data, want = F.MAGIC + struct.pack("<I", F.FORMAT_VERSION + 6) + b"\0" * 20, "byte 8"
    f = tmp_path / "bad.hvt"
    f.write_bytes(data)
    for cmd in ("info", "replay", "show"):
        p = hv(cmd, str(f))
        assert p.returncode == 2 and want in p.stderr and len(p.stderr.strip().splitlines()) == 1, (cmd, p.stderr)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=8, deadline=None, database=None)
@given(st.sampled_from(["cpu-offline", "smp", "cpu-offline-online"]), st.integers(0, 10_000),
       st.sampled_from(["hyperv", "kvm"]), st.sampled_from(["none", "gfp-zero", "clear-bit"]))
def test_every_recorded_trace_replays_identically(tmp_path_factory, name, seed, hv_, fix):
    s = load_scenario(name)
    f = tmp_path_factory.mktemp("rec") / "t.hvt"
    tl = record(s, s.config(seed=seed, hypervisor=hv_, fix=fix, max_steps=4000), f)
    loaded = load(f)
    assert loaded.divergence is None
    assert loaded.timeline.e.m.digest() == tl.e.m.digest() and loaded.timeline.length == tl.length
