"""Scenario fuzzing through the real CLI (issue 8 acceptance).

Malformed files (hypothesis edits of a real scenario: hostile values in every key, broken
TOML, deleted and duplicated lines, random bytes) must exit 2 with one line naming the file
(and the line where the problem sits on one); well-formed but hostile ones (huge budgets,
recursion, never-reached goals, floods of traffic) must end within bounded time and memory:
at most 10 s and 64 MB + 8 x the file size. `run` keeps no journal (a hang is re-run with one
for its explanation, within `--memory`), so memory is flat in the step budget; `--max-steps`
bounds the time, as it does for a user. Journaled sessions (script, repl, tui) refuse a step
budget their journal cannot hold. `slow` runs the long version (`make fuzz`)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fuzzkit import MB, check_contract, run_cli

ROOT = Path(__file__).resolve().parent.parent
GOOD = (ROOT / "hvdbg" / "packs" / "vp_assist_offline" / "scenarios" / "cpu-offline.toml").read_text()
LINES = GOOD.splitlines()
ASSIGN = [i for i, ln in enumerate(LINES) if re.match(r"\s*[A-Za-z_]+\s*=", ln)]

FAST = settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))

toml_values = st.sampled_from([
    "0", "1", "-1", "2", "64", "65", "-4096", "4096", "0x7", "9223372036854775808", "99999999999999999999999999",
    "1e400", "nan", "true", '""', '"*"', '"xen"', '"none"', '"gfp-zero"', '"random:1"', '"0x1ff"',
    '"RESCHEDULE"', '"VECTOR_300"', '"periodic"', '"$x == 1"', '"%hp[$target] == 17 && 1 ="', '"\\u001b[2J"',
    '"\\u202e"', "[]", "[1, 2]", "{a = 1}", "{}", '"' + "a" * 3000 + '"', "[" * 400 + "]" * 400,
    '"op 7"', '"deliver 1 0x30"', "1000000000", "10000000",
])
ops = st.sampled_from([
    "call hv_cpu_die", "ret", "iret", "shl r0, r0, -1", "shr r0, r0, 99999", "ipi 0, 300", "ipi 77, 0xfd",
    "load r0, [r1], 8", "store [0xffffffffffffffff], 8, r0", "xchg r0, [0], 4, 1", "wrmsr 0x40000073, r0",
    "rdmsr r0, 0x12345", "wait $never == 1", "br r0 == 0, nowhere", "jmp 0", "alloc r0, nozero", "init_sipi 9",
    "mov %hp[r0], 1", "hlt", "cli", "nop", "mov r0, 0x1" + "0" * 30,
])


@st.composite
def malformed(draw):
    lines = list(LINES)
    kind = draw(st.sampled_from(["value", "value", "value", "delete", "dup", "garbage", "routine", "bytes"]))
    if kind == "value":
        i = ASSIGN[draw(st.integers(0, len(ASSIGN) - 1))]
        key = lines[i].split("=", 1)[0]
        lines[i] = f"{key}= {draw(toml_values)}"
    elif kind == "delete":
        del lines[draw(st.integers(0, len(lines) - 1))]
    elif kind == "dup":
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    elif kind == "garbage":
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=40)))
    elif kind == "routine":
        body = ", ".join(f'["{o}", 1, ""]' for o in draw(st.lists(ops, min_size=1, max_size=6)))
        lines += ["", f"[routines.{draw(st.sampled_from(['hv_cpu_die', 'hv_cpu_init', 'x', 'do_idle']))}]",
                  'file = "x.c"', f"ops = [{body}]"]
    else:
        raw = bytearray("\n".join(lines).encode())
        i = draw(st.integers(0, len(raw) - 1))
        raw[i:i + 3] = draw(st.binary(min_size=1, max_size=3))
        return bytes(raw)
    return "\n".join(lines).encode()


HOSTILE = {
    "huge-budget": GOOD.replace("max_steps = ", "max_steps = 1000000000 #"),
    "never-reached-goal": GOOD.replace('goal = "', 'goal = "$never == 1 && '),
    "recursion": GOOD + '\n[routines.hv_cpu_die]\nfile = "x.c"\nops = [["call hv_cpu_die", 1, ""], ["ret", 1, ""]]\n',
    "mutual-recursion": GOOD + '\n[routines.a]\nfile = "x.c"\nops = [["call b", 1, ""], ["ret", 1, ""]]\n'
                               '[routines.b]\nfile = "x.c"\nops = [["call a", 1, ""], ["ret", 1, ""]]\n'
                               '[routines.hv_cpu_die]\nfile = "x.c"\nops = [["call a", 1, ""], ["ret", 1, ""]]\n',
    "spin-forever": GOOD + '\n[routines.hv_cpu_die]\nfile = "x.c"\nops = [["l: jmp l", 1, ""]]\n',
    "flood": GOOD + "\n[weights]\ntraffic = 1000\n" + "".join(
        f'\n[[traffic]]\nfrom = "*"\nto = "*"\nvector = {v}\n' for v in range(0x30, 0xf0, 0x10)),
    "big-shift": GOOD + '\n[routines.hv_cpu_die]\nfile = "x.c"\nops = [["shl r0, r0, 1099511627776", 1, ""], '
                        '["ipi 0, 300", 1, ""], ["ret", 1, ""]]\n',
    "many-routines": GOOD + "".join(f'\n[routines.r{i}]\nfile = "x.c"\nops = [' + ", ".join(['["nop", 1, ""]'] * 200)
                                    + "]\n" for i in range(100)),
}


def _check(tmp_path, data: bytes, what: str):
    f = tmp_path / "fuzz.toml"
    f.write_bytes(data)
    r = run_cli(["run", f, "--memory", "32M", "--max-steps", "100000"])
    check_contract(r, {0, 2, 3, 5}, len(data), what)
    if r.code == 2:
        err = r.err.strip()
        assert str(f) in err, err
        line = re.search(rf"{re.escape(str(f))}:(\d+):", err)
        if line:
            n = int(line.group(1))
            assert 1 <= n <= data.count(b"\n") + 1, err
    return r


@FAST
@given(data=malformed())
def test_malformed_scenarios(tmp_path_factory, data):
    _check(tmp_path_factory.mktemp("s"), data, "run on a mutated scenario")


@pytest.mark.slow
@LONG
@given(data=malformed())
def test_malformed_scenarios_long(tmp_path_factory, data):
    _check(tmp_path_factory.mktemp("s"), data, "run on a mutated scenario")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_well_formed_hostile_scenarios_are_bounded(tmp_path, name):
    r = _check(tmp_path, HOSTILE[name].encode(), name)
    assert r.rss < 64 * MB + 8 * len(HOSTILE[name])


def test_a_journaled_session_refuses_a_budget_it_cannot_hold(tmp_path, monkeypatch):
    monkeypatch.setenv("HVDBG_MEMORY", "2G")      # 1e9 events x 16 bytes does not fit
    f = tmp_path / "big.toml"
    f.write_text(HOSTILE["huge-budget"])
    script = tmp_path / "s.hvs"
    script.write_text("step\n")
    r = run_cli(["script", script, f])
    check_contract(r, {2}, len(HOSTILE["huge-budget"]), "script with max_steps 1e9")
    assert "journal" in r.err


def test_a_syntax_error_names_its_line(tmp_path):
    text = GOOD.replace("vcpus = 2", "vcpus = = 2")
    r = _check(tmp_path, text.encode(), "syntax")
    n = next(i for i, ln in enumerate(text.splitlines(), 1) if "vcpus = = 2" in ln)
    assert r.code == 2 and f":{n}:" in r.err
