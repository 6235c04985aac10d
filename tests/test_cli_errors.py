"""Bad input: exit 2, one line naming file:line and the problem, no traceback."""
import subprocess
import sys

import pytest

GOOD = open(__file__.replace("tests/test_cli_errors.py", "hvdbg/packs/vp_assist_offline/scenarios/cpu-offline.toml")).read()


def hv(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hvdbg", *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(p):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def line_of(text, needle):
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def bad(name, old, new, msg, with_line=True):
    text = GOOD.replace(old, new, 1) if old else GOOD + new
    return (name, text, msg, line_of(text, new.strip().splitlines()[0]) if with_line else None)


BAD = [
    bad("syntax", "vcpus = 2", "vcpus = = 2", "TOML syntax error"),
    bad("unknown_key", "vcpus = 2", "colour = 3\nvcpus = 2", "scenario.colour: unknown key"),
    bad("unknown_key2", "vcpus = 2", "colour = 3", "scenario.colour: unknown key"),
    bad("wrong_type", "vcpus = 2", 'vcpus = "two"', "expected an integer"),
    bad("zero_vcpus", "vcpus = 2", "vcpus = 0", "0 vCPUs: expected 2..64"),
    bad("many_vcpus", "vcpus = 2", "vcpus = 1000", "1000 vCPUs: expected 2..64"),
    bad("low_vector", 'vector = "RESCHEDULE"', "vector = 15", "vectors 0-15 are reserved"),
    bad("bad_fix", 'fix = "none"', 'fix = "magic"', "unknown fix 'magic'"),
    bad("bad_hv", 'hypervisor = "hyperv"', 'hypervisor = "xen"', "unknown hypervisor 'xen'"),
    bad("bad_op", "", '\n[routines.hv_cpu_die]\nfile = "x.c"\nops = [["frobnicate r0", 1, ""]]\n', "unknown op 'frobnicate'"),
]


@pytest.mark.parametrize("name,text,msg,line", BAD, ids=[b[0] for b in BAD])
def test_bad_scenario_files(tmp_path, name, text, msg, line):
    f = tmp_path / f"{name}.toml"
    f.write_text(text)
    err = one_line_error(hv("run", str(f)))
    assert str(f) in err and msg in err, err
    if line is not None:
        assert f"{f}:{line}:" in err, err


def test_good_file_runs(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(GOOD)
    p = hv("run", str(f), "--fix", "gfp-zero")
    assert p.returncode == 0, p.stderr


def test_user_patch_overrides_routine(tmp_path):
    # A user's own patch, in the listing grammar: hv_cpu_die that clears apic_assist completely.
    f = tmp_path / "patch.toml"
    f.write_text(GOOD + '''
[routines.hv_cpu_die]
file = "arch/x86/hyperv/hv_init.c"
ops = [
  ["mov r0, %hv_vp_assist_page", 234, "if (hvp)"],
  ["br r0 == 0, out", 234, "if (hvp)"],
  ["irqsave r2", 0, "local_irq_save(flags);"],
  ["wrmsr HV_X64_MSR_VP_ASSIST_PAGE, 0", 235, "wrmsrl(HV_X64_MSR_VP_ASSIST_PAGE, 0);"],
  ["store [r0], 4, 0", 0, "hvp->apic_assist = 0;"],
  ["irqrestore r2", 0, "local_irq_restore(flags);"],
  ["out: ret", 238, "return 0;"],
]
''')
    p = hv("run", str(f))
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("args,msg", [
    (["run", "--fix", "nope"], "invalid choice"),
    (["run", "--hypervisor", "kvm", "--overlay", "copy-back"], "--overlay applies to --hypervisor hyperv only"),
    (["run", "--vcpus", "1"], "expected 2..64"),
    (["run", "--vcpus", "65"], "expected 2..64"),
    (["run", "--garbage", "0x1ff"], "fill byte is 0..255"),
    (["run", "--garbage", "random:x"], "random:SEED needs an integer"),
    (["run", "no-such-scenario"], "no such scenario, pack or file"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_options(args, msg):
    err = one_line_error(hv(*args))
    assert msg in err, err


def test_exit_codes_by_outcome():
    assert hv("run").returncode == 3
    assert hv("run", "--fix", "clear-bit").returncode == 0
    assert hv("run", "--max-steps", "100").returncode == 5


def test_sweep_histogram_and_exit():
    p = hv("sweep", "--seeds", "12")
    assert p.returncode == 3 and "hang" in p.stdout and "first seed" in p.stdout
    p = hv("sweep", "--seeds", "12", "--fix", "gfp-zero", "--json")
    assert p.returncode == 0 and '"ok": 12' in p.stdout


def test_scenarios_lists_builtins():
    p = hv("scenarios")
    assert p.returncode == 0
    for n in ("cpu-offline", "cpu-offline-online", "smp", "soak"):
        assert n in p.stdout


def test_core_imports_no_ui():
    code = ("import sys, hvdbg.core.engine, hvdbg.core.scenario, hvdbg.core.explain, hvdbg.core.program;"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('textual','prompt_toolkit')];"
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_listings_round_trip_msgpack():
    import msgpack

    from hvdbg.core.packs import get
    from hvdbg.core.program import Program
    p = get("vp-assist-offline").program()
    data = msgpack.unpackb(msgpack.packb(p.to_data()), raw=False, strict_map_key=True)
    q = Program.from_data(data)
    assert q.to_data() == p.to_data()
    for name, r in p.routines.items():
        assert [(o.opcode, o.args, o.line, o.c, o.func, o.file) for o in r.ops] == \
               [(o.opcode, o.args, o.line, o.c, o.func, o.file) for o in q.routines[name].ops]


def test_unknown_msr_is_gp_not_crash(tmp_path):
    f = tmp_path / "gp.toml"
    f.write_text(GOOD + '''
[routines.hv_cpu_die]
file = "x.c"
ops = [
  ["rdmsr r0, 0x12345", 1, "rdmsr of an unknown MSR"],
  ["wrmsr HV_X64_MSR_VP_INDEX, 5", 2, "write to a read-only MSR"],
  ["wrmsr HV_X64_MSR_VP_ASSIST_PAGE, 0", 3, "disable"],
  ["ret", 4, ""],
]
''')
    p = hv("run", str(f), "--json")
    import json
    d = json.loads(p.stdout)
    assert d["statistics"]["gp_faults"] == 2


def test_internal_error_writes_crash_report(tmp_path, monkeypatch, capsys):
    from hvdbg import cli
    from hvdbg.core import engine

    def boom(self, *a, **k):
        raise RuntimeError("model bug")
    monkeypatch.setattr(engine.Engine, "run", boom)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "crash report written to" in err
    path = err.rsplit(" ", 1)[1]
    assert path.startswith(str(tmp_path)) and "RuntimeError: model bug" in open(path).read()


def test_interrupt_exits_130(monkeypatch, capsys):
    from hvdbg import cli
    from hvdbg.core import engine

    def stop(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(engine.Engine, "run", stop)
    assert cli.main(["run"]) == 130
