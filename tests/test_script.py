"""`hvdbg script`: the seed story gates CI; failures are exit 6, malformed scripts exit 2 with file:line."""
import subprocess
import sys
from pathlib import Path

import pytest

from hvdbg.commands import ALIASES, COMMANDS, CommandError, ExpectationFailed, Session, lookup

ROOT = Path(__file__).resolve().parent.parent


def hv(*args):
    return subprocess.run([sys.executable, "-m", "hvdbg", *args], capture_output=True, text=True)


def test_the_seed_story_script_passes():
    p = hv("script", str(ROOT / "examples" / "seed-story.hvs"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert "7 expectation(s) held" in p.stdout
    assert "EOI skipped" in p.stdout and "flip bit 0 of RAM[0x10001000]" in p.stdout


def test_a_failing_expectation_exits_6_with_line_and_found(tmp_path):
    f = tmp_path / "s.hvs"
    f.write_text("# comment\nexpect outcome hang\nfix gfp-zero\nexpect outcome hang\n")
    p = hv("script", str(f), "--quiet")
    assert p.returncode == 6
    assert f"{f}:4: expectation failed: expect outcome hang (outcome of branch fix-gfp-zero: found ok, expected hang)" in p.stderr


@pytest.mark.parametrize("line,msg", [
    ("stpe", "unknown command 'stpe'; did you mean 'step'?"),
    ("break msr HV_X64_MSR_VP_ASSIST_PAG", "did you mean 'HV_X64_MSR_VP_ASSIST_PAGE'?"),
    ("focus cpu9", "no cpu9"),
    ("inject cpu1 RESCHEDUL", "did you mean 'RESCHEDULE'?"),
    ("goto 99999999", "outside 0.."),
    ("expect outcome maybe", "outcome is ok, hang, timeout, corruption, stopped"),
    ("flip 0x10001000 9", "BIT is 0..7"),
])
def test_malformed_lines_exit_2_with_file_line(tmp_path, line, msg):
    f = tmp_path / "bad.hvs"
    f.write_text(f"step\n{line}\nstep\n")
    p = hv("script", str(f), "--quiet")
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and f"{f}:2:" in err and msg in err, err


def test_missing_script_exit_2(tmp_path):
    p = hv("script", str(tmp_path / "none.hvs"))
    assert p.returncode == 2 and "cannot read" in p.stderr


def test_script_over_a_trace_and_with_options(tmp_path):
    f = tmp_path / "s.hvs"
    f.write_text("expect outcome hang\nexpect hotplug cpu1 dying\n")
    assert hv("script", str(f), str(ROOT / "traces" / "seed-hang.hvt"), "--quiet").returncode == 0
    g = tmp_path / "t.hvs"
    g.write_text("expect outcome ok\nexpect hotplug cpu1 dead\nexpect var offline_done == 1\n")
    assert hv("script", str(g), "--fix", "gfp-zero", "--quiet").returncode == 0


# ---------------------------------------------------------------- every command, one definition
SAMPLES = {
    "step": "step 2", "rstep": "rstep", "next": "next", "rnext": "rnext", "finish": "finish", "rfinish": "rfinish",
    "event": "event 3", "revent": "revent 2", "goto": "goto 1040", "continue": "continue", "rcontinue": "rcontinue",
    "enable": "enable", "disable": "disable", "focus": "focus cpu1", "bt": "bt", "up": "up", "down": "down", "break": "break hv_apic_eoi_write:eoi cpu 1",
    "watch": "watch mem 0x10001000 4", "delete": "delete", "breaks": "breaks", "mark": "mark here", "diff": "diff 1000",
    "set": "set msr cpu1 HV_X64_MSR_VP_ASSIST_PAGE 0", "flip": "flip 0x10001000 0", "inject": "inject cpu1 CALL_FUNCTION",
    "drop": "drop irr cpu1 RESCHEDULE", "fix": "fix gfp-zero", "hypervisor": "hypervisor kvm", "branch": "branch list",
    "why": "why", "info": "info irq", "x": "x/16 0x10001000", "save": "save {tmp}/s.hvt", "load": "load {tmp}/s.hvt",
    "expect": "expect step >= 0", "help": "help why", "overlay": "overlay copy-back", "verify": "verify",
}


def test_every_command_runs_and_is_documented(tmp_path):
    assert set(SAMPLES) == set(COMMANDS), set(COMMANDS) ^ set(SAMPLES)
    s = Session.open("cpu-offline")
    help_text = "\n".join(s.execute("help").lines)
    for name, line in SAMPLES.items():
        c = COMMANDS[name]
        assert c.usage and c.help and name in help_text
        assert lookup(name) is c and all(lookup(a) is c for a in c.aliases)
        s.execute("branch switch main") if "main" in s.branches else None
        s.execute("goto 1040")
        out = s.execute(line.format(tmp=tmp_path))
        assert out.lines or out.data, name
    assert set(ALIASES.values()) <= set(COMMANDS)


def test_vector_and_msr_names_wherever_numbers_are():
    s = Session.open("cpu-offline")
    s.execute("goto 1040")
    a = s.execute("expect isr cpu1 has RESCHEDULE")
    b = s.execute("expect isr 1 has 0xfd")
    assert a.data == b.data == {"held": True}
    s.execute("expect msr cpu1 HV_X64_MSR_VP_ASSIST_PAGE == 0")
    s.execute("expect msr 1 0x40000073 == 0")
    s.execute("expect msr cpu1 VP_ASSIST_PAGE == 0")
    with pytest.raises(ExpectationFailed):
        s.execute("expect msr cpu0 HV_X64_MSR_VP_ASSIST_PAGE == 0")
    with pytest.raises(CommandError):
        s.execute("expect msr cpu0 NOT_AN_MSR == 0")


def test_docs_commands_md_is_generated_from_the_definitions():
    from hvdbg.commands import markdown_reference
    assert (ROOT / "docs" / "commands.md").read_text() == markdown_reference() + "\n"


EXPECT_SAMPLES = {   # kind -> (a line that holds at step 1040 of cpu-offline, one that does not)
    "outcome": ("expect outcome hang", "expect outcome ok"),
    "isr": ("expect isr cpu1 has RESCHEDULE", "expect isr cpu1 lacks RESCHEDULE"),
    "irr": ("expect irr cpu0 lacks 0x30", "expect irr cpu0 has 0x30"),
    "msr": ("expect msr cpu1 HV_X64_MSR_VP_ASSIST_PAGE == 0", "expect msr cpu1 HV_X64_MSR_VP_ASSIST_PAGE != 0"),
    "mem": ("expect mem 0x10001004 == 0xa5a5a5a5 ram", "expect mem 0x10001004 == 0 ram"),
    "var": ("expect var nr_cpus == 2", "expect var nr_cpus == 3"),
    "step": ("expect step == 1040", "expect step > 1040"),
    "hotplug": ("expect hotplug cpu1 dying", "expect hotplug cpu1 online"),
    "branch": ("expect branch main outcome hang", "expect branch main outcome ok"),
}


@pytest.mark.parametrize("kind", sorted(EXPECT_SAMPLES))
def test_every_expect_kind_holds_and_fails(kind):
    """Each `expect` kind both holds and fails through the command layer (one had a NameError)."""
    from hvdbg.commands import EXPECT_USAGE
    assert kind in EXPECT_USAGE
    s = Session.open("cpu-offline")
    s.execute("goto 1040")
    good, bad = EXPECT_SAMPLES[kind]
    assert s.execute(good).data == {"held": True}
    with pytest.raises(ExpectationFailed):
        s.execute(bad)
