"""Events and choices: what an event records, and the text of choices and edits.

An event is one action (one op of one vCPU, one delivery, one IPI landing, one timer tick,
one traffic send, or a what-if edit) with every write it made ``(location, old, new)`` and
its notes. Choices are descriptors (tuples), never indexes into a list.
"""
from __future__ import annotations

import zlib
from typing import NamedTuple

from .defs import VECTORS


class Event(NamedTuple):
    step: int           # the event's index: the position before it is `step`, after it `step + 1`
    act: tuple          # the choice (descriptor)
    cpu: int            # the vCPU it concerns (-1 for an edit of memory)
    rt: int             # routine id of the op (ops) or the interrupted routine
    pc: int             # op index before it ran
    writes: list        # [(location, old, new), ...] in order
    notes: tuple        # (kind, *data) ...


# Positional indexes (core only; everything else uses the attribute names).
E_STEP, E_ACT, E_CPU, E_RT, E_PC, E_WRITES, E_NOTES = range(7)
_new_event = tuple.__new__


def make_event(step, act, cpu, rt, pc, writes, notes) -> Event:
    return _new_event(Event, (step, act, cpu, rt, pc, writes, notes))


def act_text(a: tuple) -> str:
    k = a[0]
    if k == "edit":
        return "what-if edit: " + edit_text(a)
    if k == "op":
        return f"op cpu{a[1]}"
    if k == "deliver":
        return f"deliver cpu{a[1]} 0x{a[2]:02x}"
    if k == "timer":
        return f"timer cpu{a[1]} 0x{a[2]:02x}"
    return f"{k} cpu{a[1]}->cpu{a[2]} 0x{a[3]:02x}"


def edit_text(a: tuple) -> str:
    """Human text of an edit descriptor ("edit", kind, *ints)."""
    k, x = a[1], a[2:]

    def sp(space):
        return "RAM" if space == -1 else f"overlay(cpu{space})"
    try:
        if k == "flip":
            return f"flip bit {x[2]} of {sp(x[0])}[0x{x[1]:x}]"
        if k == "mem":
            return f"{sp(x[0])}[0x{x[1]:x}] ({x[2]} bytes) = 0x{x[3]:x}"
        if k == "msr":
            from .msr import MSR_NAMES
            return f"cpu{x[0]} {MSR_NAMES.get(x[1], hex(x[1]))} = 0x{x[2]:x}"
        if k == "reg":
            return f"cpu{x[0]} r{x[1]} = 0x{x[2]:x}"
        if k == "if":
            return f"cpu{x[0]} IF = {x[1]}"
        if k == "inject":
            return f"inject 0x{x[1]:02x} into cpu{x[0]}'s IRR"
        if k == "drop_irr":
            return f"drop 0x{x[1]:02x} from cpu{x[0]}'s IRR"
        if k == "drop_ipi":
            return f"drop the in-flight IPI cpu{x[0]}->cpu{x[1]} 0x{x[2]:02x}"
    except (IndexError, TypeError, ValueError):
        pass
    return " ".join(str(v) for v in a[1:])


# What-if edit kinds and their integer fields, each with its range (checked for edits typed by a
# user and for edits read from a trace, before anything changes). CPU fields are 0..vcpus-1.
_U64 = (0, (1 << 64) - 1)
EDIT_FIELDS: dict[str, tuple] = {
    "mem": (("space", "space"), ("addr", _U64), ("size", (1, 8)), ("value", "by-size")),
    "flip": (("space", "space"), ("addr", _U64), ("bit", (0, 7))),
    "msr": (("cpu", "cpu"), ("msr", (0, (1 << 32) - 1)), ("value", _U64)),
    "reg": (("cpu", "cpu"), ("register", (0, 3)), ("value", _U64)),
    "if": (("cpu", "cpu"), ("value", (0, 1))),
    "inject": (("cpu", "cpu"), ("vector", (16, 255))),
    "drop_irr": (("cpu", "cpu"), ("vector", (16, 255))),
    "drop_ipi": (("src", "cpu"), ("dst", "cpu"), ("vector", (16, 255))),
}


def edit_problem(desc, ncpu: int) -> str | None:
    """Why `desc` is not a valid what-if edit for a machine of `ncpu` vCPUs, or None."""
    if not isinstance(desc, tuple) or len(desc) < 2 or desc[0] != "edit" or desc[1] not in EDIT_FIELDS:
        return f"unknown edit {str(desc)[:80]} (kinds: {', '.join(EDIT_FIELDS)})"
    fields = EDIT_FIELDS[desc[1]]
    args = desc[2:]
    if len(args) != len(fields):
        return f"edit {desc[1]} takes {len(fields)} numbers ({', '.join(f for f, _ in fields)}), got {len(args)}"
    for (name, rng), x in zip(fields, args):
        if type(x) is not int:
            return f"edit {desc[1]}: {name} must be an integer"
        if rng == "cpu":
            lo, hi = 0, ncpu - 1
        elif rng == "space":
            lo, hi = -1, ncpu - 1
        elif rng == "by-size":
            size = args[2]
            if size not in (1, 2, 4, 8):
                return f"edit {desc[1]}: size must be 1, 2, 4 or 8, got {size}"
            lo, hi = 0, (1 << (8 * size)) - 1
        else:
            lo, hi = rng
        if not lo <= x <= hi:
            what = {"space": "-1 (RAM) or a vCPU's overlay"}.get(rng, "")
            return f"edit {desc[1]}: {name} {x if abs(x) < 1 << 70 else 'of ' + str(x.bit_length()) + ' bits'} " \
                   f"is out of range {lo}..{hi}{' ' + what if what else ''}"
    return None


def parse_action(text: str) -> tuple:
    """Inverse of act_text (used by scenario schedules): 'op 1', 'deliver 1 0xfd', 'land 0 1 RESCHEDULE'."""
    parts = text.replace("cpu", "").replace("->", " ").split()
    if not parts:
        raise ValueError("empty action")
    k = parts[0]
    nums = []
    for p in parts[1:]:
        if p in VECTORS:
            nums.append(VECTORS[p])
        else:
            nums.append(int(p, 0))
    want = {"op": 1, "deliver": 2, "timer": 2, "land": 3, "traffic": 3}
    if k not in want or len(nums) != want[k]:
        raise ValueError(f"bad action {text!r} (expected op C | deliver C V | timer C V | land S D V | traffic S D V)")
    return (k, *nums)




# ---------------------------------------------------------------- packed choices
# A model action packs into one u32: kind code in the low 3 bits, then its int arguments (each
# 0..255: vCPUs < 64, vectors < 256), last argument lowest: ("op", 2) -> 16,
# ("deliver", 1, 0xfb) -> 2009. The journal keeps every event's choice this way (4 bytes) and
# trace files store these codes. An edit never packs: its code is EDIT_ACT and the descriptor
# lives beside the column.
ACT_KINDS = {"op": 0, "deliver": 1, "land": 2, "timer": 3, "traffic": 4}
ACT_NAMES = {v: k for k, v in ACT_KINDS.items()}
ACT_ARITY = {"op": 1, "deliver": 2, "land": 3, "timer": 2, "traffic": 3}
_ARITY = {ACT_KINDS[k]: n for k, n in ACT_ARITY.items()}
EDIT_ACT = 0xFFFFFFFF
_PACKED: dict = {}
_UNPACKED: dict = {}


def act_code(a: tuple) -> int:
    """pack_act for the engine's own actions (their arguments are ints by construction): cached."""
    code = _PACKED.get(a)
    if code is None:
        code = pack_act(a)
        if len(_PACKED) < 65536:
            _PACKED[a] = code
    return code


def pack_act(a: tuple) -> int:
    """The u32 code of a model action (ValueError for anything that does not pack: another
    kind, a wrong arity, an argument that is not an int in 0..255 - a bool is not an int)."""
    k = ACT_KINDS.get(a[0]) if isinstance(a, tuple) and a and isinstance(a[0], str) else None
    if k is None or len(a) != ACT_ARITY[a[0]] + 1:
        raise ValueError(f"{str(a)[:60]} is not a model action")
    code, shift = k, 3
    for x in reversed(a[1:]):
        if type(x) is not int or not 0 <= x <= 255:
            raise ValueError(f"{str(a)[:60]}: argument {str(x)[:20]} does not pack (0..255)")
        code |= x << shift
        shift += 8
    return code


def unpack_act(code: int) -> tuple:
    """Inverse of pack_act (ValueError on a code no action packs to)."""
    a = _UNPACKED.get(code)
    if a is not None:
        return a
    if type(code) is not int or code < 0:
        raise ValueError(f"malformed action code {str(code)[:20]}")
    n = _ARITY.get(code & 7)
    if n is None or code >> (3 + 8 * n):
        raise ValueError(f"malformed action code {code}")
    args = [(code >> (3 + 8 * i)) & 0xFF for i in range(n)]
    a = (ACT_NAMES[code & 7], *reversed(args))
    if len(_UNPACKED) < 65536:
        _UNPACKED[code] = a
    return a


def event_check(writes) -> int:
    """A 16-bit check of an event's writes, the same in every process."""
    h = len(writes)
    for loc, old, new in writes:
        if loc.__class__ is int:
            if new.__class__ is int:
                h = (h * 1000003) ^ (loc << 7) ^ (new & 0xFFFFFFFF) ^ (new >> 200)
            else:
                h = (h * 1000003) ^ (loc << 7) ^ len(new)
        else:
            data = new if new.__class__ is bytes else b"" if new is None else repr(new).encode()
            h = (h * 1000003) ^ zlib.crc32(data) ^ (loc[-1] if isinstance(loc[-1], int) else 0)
        h &= 0xFFFFFFFFFFFF
    return (h ^ (h >> 16) ^ (h >> 32)) & 0xFFFF
