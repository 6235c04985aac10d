"""Guest code as data: op listings in a small closed grammar.

Each routine is a list of ops; every op carries the kernel file:line, function and C
text it models. Listings are plain data (lists of strings and ints), so they round-trip
through msgpack and can be given or overridden in a scenario file.

Op grammar (one op per string, optional ``label:`` prefix)::

    mov DST, SRC                      DST = SRC
    add|sub|and|or|xor|shl|shr|andn|eq|ne|lt|ge DST, A, B
    load DST, [ADDR], SIZE            little-endian load of SIZE (1,2,4,8) bytes
    store [ADDR], SIZE, SRC
    xchg DST, [ADDR], SIZE, SRC       atomic exchange (Linux xchg())
    rdmsr DST, MSR  /  wrmsr MSR, SRC
    br COND, LABEL  /  jmp LABEL
    call ROUTINE  /  ret  /  iret
    cli / sti / irqsave DST / irqrestore SRC
    hlt / safe_halt                   safe_halt = sti;hlt with the STI shadow (one op)
    ipi CPU, VECTOR                   apic->send_IPI(cpu, vector)
    wait COND                         blocks until COND holds (spin / wait_for_completion)
    alloc DST, zero|nozero            __vmalloc(PAGE_SIZE) with or without __GFP_ZERO
    init_sipi CPU                     INIT/SIPI the CPU (reset, starts at its start routine)
    nop
    (the op table, with every op's shape, is ops.OPS; this list is its summary)

Operands: r0..r3 (registers), integers, symbolic constants (vector / MSR names,
OFFLINE/ONLINE/DYING/DEAD, ...), ``cpu`` (this CPU), ``$var`` (global kernel
variable), ``%var`` (this CPU's per-CPU variable), ``%var[OPERAND]`` (another CPU's).
``%hp`` is the vCPU's hotplug state and ``%timer`` whether its LAPIC timer is armed.
COND: ``OPERAND OP OPERAND`` with OP in == != < <= > >=, joined by ``&&``.
Variables are declared by use and start at 0 unless the program or scenario says otherwise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import hypervisors as _hypervisors  # noqa: F401  (registers the models' MSRs and constants)
from . import msr as _msr
from .defs import CONSTANTS as _ARCH_CONSTANTS
from .ops import OPS

REGS = {"r0": 0, "r1": 1, "r2": 2, "r3": 3}
COND_OPS = ("==", "!=", "<=", ">=", "<", ">")


def constants() -> dict[str, int]:
    """Names usable as operands: vectors, hotplug states and page sizes (defs), every MSR in
    the catalogue and the constants hypervisor models register."""
    return {**_ARCH_CONSTANTS, **_msr.MSRS, **_msr.CONSTANTS}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


def _table(data: dict, key: str, value_type, what: str = "") -> dict:
    """data[key] as a map with str keys and values of value_type (routine names for str)."""
    t = data.get(key, {})
    label = what or key
    if not isinstance(t, dict):
        raise ProgramError(f"{label} must be a map, got {type(t).__name__}")
    if len(t) > 4 * MAX_ROUTINES:
        raise ProgramError(f"{label} has {len(t)} entries (at most {4 * MAX_ROUTINES})")
    for k, v in t.items():
        if not isinstance(k, str) or len(k) > 128:
            raise ProgramError(f"{label}: key {str(k)[:40]!r} is not a name")
        if value_type is int:
            if type(v) is not int or not INT_MIN <= v <= INT_MAX:
                raise ProgramError(f"{label}.{k[:40]}: expected a 64-bit integer")
        elif value_type is str:
            if not isinstance(v, str) or not _IDENT.match(v):
                raise ProgramError(f"{label}.{k[:40]}: expected a routine name")
        elif not isinstance(v, value_type):
            raise ProgramError(f"{label}.{k[:40]}: expected a {value_type.__name__}")
    return t


class ProgramError(ValueError):
    """A listing does not parse; ``where`` names routine and op index."""

    def __init__(self, msg: str, where: str = ""):
        super().__init__(f"{where}: {msg}" if where else msg)
        self.where = where
        self.msg = msg


# Immediates are 64-bit (signed or unsigned); listings are bounded so that a file cannot
# make a huge program (limits checked in Routine.from_data / Program.from_data).
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
MAX_ROUTINES = 1024
MAX_OPS = 4096              # per routine
MAX_TEXT = 1024             # characters in an op text, C line, file or function name
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def parse_int(text: str) -> int | None:
    t = text.strip().lower()
    if len(t) > 24:
        return None
    try:
        if t.startswith(("0x", "-0x")):
            v = int(t, 16)
        elif re.fullmatch(r"-?\d+", t):
            v = int(t, 10)
        else:
            return None
    except ValueError:
        return None
    return v if INT_MIN <= v <= INT_MAX else None


def check_text(value, what: str, where: str = "") -> str:
    """A string field of a listing: a str of at most MAX_TEXT characters with nothing that
    would garble a terminal (control characters, bidi overrides)."""
    if not isinstance(value, str):
        raise ProgramError(f"{what} must be a string, got {type(value).__name__}", where)
    if len(value) > MAX_TEXT:
        raise ProgramError(f"{what} is {len(value)} characters (at most {MAX_TEXT})", where)
    m = _UNSAFE.search(value)
    if m:
        raise ProgramError(f"{what} contains the control character U+{ord(m.group()):04X}", where)
    return value


def parse_operand(text: str) -> tuple:
    """Operand text -> tuple: ('i', v) | ('r', n) | ('g', name) | ('p', name) | ('q', name, operand) | ('cpu',)."""
    t = text.strip()
    if not t:
        raise ProgramError("empty operand")
    v = parse_int(t)
    if v is not None:
        return ("i", v)
    if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", t):
        raise ProgramError(f"integer {t[:30]!r} is out of the 64-bit range")
    if t in REGS:
        return ("r", REGS[t])
    if t == "cpu":
        return ("cpu",)
    if t[0] == "$" and _IDENT.match(t[1:]):
        return ("g", t[1:])
    if t[0] == "%":
        m = re.fullmatch(r"%([A-Za-z_][A-Za-z0-9_]*)(?:\[(.+)\])?", t)
        if not m:
            raise ProgramError(f"bad per-CPU operand {t!r}")
        if m.group(2) is None:
            return ("p", m.group(1))
        inner = parse_operand(m.group(2))
        if inner[0] == "q":
            raise ProgramError(f"nested per-CPU index in {t!r}")
        return ("q", m.group(1), inner)
    consts = constants()
    if t in consts:
        return ("i", consts[t])
    raise ProgramError(f"unknown operand {t!r} (expected r0-r3, a number, a constant name, cpu, $var or %var)")


def parse_cond(text: str) -> tuple:
    parts = [p.strip() for p in text.split("&&")]
    terms = []
    for p in parts:
        for op in COND_OPS:
            i = p.find(op)
            if i > 0:
                terms.append((op, parse_operand(p[:i]), parse_operand(p[i + len(op):])))
                break
        else:
            raise ProgramError(f"bad condition {p!r} (expected A OP B with OP in {' '.join(COND_OPS)})")
    return ("and", tuple(terms))


def _split_args(rest: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in rest:
        if ch in "[":
            depth += 1
        elif ch in "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def parse_op(text: str) -> tuple[str | None, str, tuple]:
    """One op text -> (label, opcode, args). Args are parsed operand tuples / strings."""
    label = None
    t = text.strip()
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$", t)
    if m and m.group(1) not in OPS:
        label, t = m.group(1), m.group(2)
    if not t:
        raise ProgramError("empty op")
    name, _, rest = t.partition(" ")
    name = name.lower()
    if name not in OPS:
        raise ProgramError(f"unknown op {name!r} (known: {', '.join(sorted(OPS))})")
    shape = OPS[name].shape
    optional = OPS[name].optional
    if shape == "c":
        return label, name, (parse_cond(rest),)
    if shape == "cl":
        cond, _, lab = rest.rpartition(",")
        if not cond:
            raise ProgramError(f"br needs 'COND, LABEL', got {rest!r}")
        return label, name, (parse_cond(cond), lab.strip())
    args = _split_args(rest)
    if not len(shape) - optional <= len(args) <= len(shape):
        want = f"{len(shape) - optional} to {len(shape)}" if optional else str(len(shape))
        raise ProgramError(f"{name} takes {want} operand(s), got {len(args)} in {t!r}")
    out: list = []
    for kind, a in zip(shape, args):
        if kind in "ds":
            o = parse_operand(a)
            if kind == "d" and o[0] in ("i", "cpu"):
                raise ProgramError(f"{name}: destination {a!r} is not writable")
            out.append(o)
        elif kind == "m":
            if not (a.startswith("[") and a.endswith("]")):
                raise ProgramError(f"{name}: memory operand must be [ADDR], got {a!r}")
            out.append(parse_operand(a[1:-1]))
        elif kind == "z":
            z = parse_int(a)
            if z not in (1, 2, 4, 8):
                raise ProgramError(f"{name}: size must be 1, 2, 4 or 8, got {a!r}")
            out.append(z)
        elif kind in "lf":
            if not _IDENT.match(a):
                raise ProgramError(f"{name}: bad name {a!r}")
            out.append(a)
        elif kind == "k":
            if a not in ("zero", "nozero"):
                raise ProgramError(f"alloc: expected zero or nozero, got {a!r}")
            out.append(a == "zero")
        elif kind == "p":
            if not _IDENT.match(a) or len(a) > 40:
                raise ProgramError(f"{name}: a page purpose is a name like vp_assist or slab, got {a!r}")
            out.append(a)
    return label, name, tuple(out)


@dataclass(slots=True)
class Op:
    text: str
    opcode: str
    args: tuple
    file: str
    line: int
    func: str
    c: str
    label: str | None = None

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Routine:
    name: str
    file: str
    ops: list[Op]
    labels: dict[str, int] = field(default_factory=dict)
    doc: str = ""

    @classmethod
    def from_data(cls, name: str, data: dict) -> "Routine":
        """data = {file, doc?, ops: [[text, line, c_text, func?, file?], ...]}."""
        if not isinstance(data, dict):
            raise ProgramError("routine must be a table", name)
        file = data.get("file", "")
        if not isinstance(file, str):
            raise ProgramError("'file' must be a string", name)
        raw = data.get("ops")
        if not isinstance(raw, list) or not raw:
            raise ProgramError("'ops' must be a non-empty list", name)
        if len(raw) > MAX_OPS:
            raise ProgramError(f"{len(raw)} ops (at most {MAX_OPS} per routine)", name)
        check_text(file, "'file'", name)
        unknown = set(data) - {"file", "doc", "ops"}
        if unknown:
            raise ProgramError(f"unknown key {sorted(map(str, unknown))[0]!r} (allowed: doc, file, ops)", name)
        doc = data.get("doc", "")
        if not isinstance(doc, str) or len(doc) > 16 * MAX_TEXT:
            raise ProgramError("'doc' must be a string", name)
        ops: list[Op] = []
        labels: dict[str, int] = {}
        for i, item in enumerate(raw):
            where = f"{name}[{i}]"
            if isinstance(item, str):
                item = [item, 0, ""]
            if not isinstance(item, (list, tuple)) or not (1 <= len(item) <= 5) or not isinstance(item[0], str):
                raise ProgramError("op must be [text, line, c_text, func?, file?]", where)
            text = item[0]
            line = item[1] if len(item) > 1 else 0
            c = item[2] if len(item) > 2 else ""
            func = item[3] if len(item) > 3 else name
            ofile = item[4] if len(item) > 4 else file
            if type(line) is not int or not isinstance(c, str) or not isinstance(func, str) or not isinstance(ofile, str):
                raise ProgramError("op must be [text:str, line:int, c_text:str, func?:str, file?:str]", where)
            if not 0 <= line <= 10_000_000:
                raise ProgramError(f"line {line} is out of range 0..10000000", where)
            for val, what in ((text, "op text"), (c, "C text"), (func, "function name"), (ofile, "file name")):
                check_text(val, what, where)
            try:
                label, opcode, args = parse_op(text)
            except ProgramError as e:
                raise ProgramError(e.msg, where) from None
            if label:
                if label in labels:
                    raise ProgramError(f"duplicate label {label!r}", where)
                labels[label] = i
            ops.append(Op(text, opcode, args, ofile, line, func, c, label))
        for i, op in enumerate(ops):
            if op.opcode in ("br", "jmp"):
                lab = op.args[-1]
                if lab not in labels:
                    raise ProgramError(f"unknown label {lab!r}", f"{name}[{i}]")
        return cls(name, file, ops, labels, doc)

    def to_data(self) -> dict:
        return {"file": self.file, "doc": self.doc,
                "ops": [[o.text, o.line, o.c, o.func, o.file] for o in self.ops]}


@dataclass
class Program:
    """A set of routines plus the IDT (vector -> handler) and the fix variants.

    A fix variant is data: a map from a routine name to the routine that replaces it.
    The engine only ever sees the resulting routine set; it never looks at a fix name.
    """
    routines: dict[str, Routine]
    idt: dict[int, str]
    variants: dict[str, dict[str, str]]
    start: dict[str, str]
    init_vars: dict[str, int] = field(default_factory=dict)
    init_pcpu: dict[str, int] = field(default_factory=dict)
    name: str = ""

    @classmethod
    def from_data(cls, data: dict) -> "Program":
        """A program from plain data (a built-in listing or a trace header): every field is
        type- and range-checked; ProgramError names the first problem."""
        if not isinstance(data, dict):
            raise ProgramError(f"program must be a map, got {type(data).__name__}")
        unknown = set(data) - {"name", "routines", "idt", "variants", "start", "vars", "percpu"}
        if unknown:
            raise ProgramError(f"program: unknown key {sorted(map(str, unknown))[0]!r}")
        raw = _table(data, "routines", dict)
        if len(raw) > MAX_ROUTINES:
            raise ProgramError(f"program has {len(raw)} routines (at most {MAX_ROUTINES})")
        routines = {}
        for n, d in raw.items():
            if not isinstance(n, str) or not _IDENT.match(n) or len(n) > 128:
                raise ProgramError(f"routine name {str(n)[:40]!r} is not an identifier")
            routines[n] = Routine.from_data(n, d)
        idt = {}
        for k, v in _table(data, "idt", str).items():
            vec = parse_operand(str(k)) if isinstance(k, str) and len(k) <= 40 else ("?",)
            if vec[0] != "i" or not 16 <= vec[1] <= 255:
                raise ProgramError(f"idt key {str(k)[:40]!r} is not a vector 0x10..0xff")
            idt[vec[1]] = v
        variants = {}
        for k, v in _table(data, "variants", dict).items():
            if not isinstance(k, str) or not _VARIANT.match(k):
                raise ProgramError(f"variant name {str(k)[:40]!r} is not a fix name (letters, digits, . _ -)")
            variants[k] = _table({"v": v}, "v", str, f"variant {k}")
        start = _table(data, "start", str)
        ivars = _table(data, "vars", int)
        ipcpu = _table(data, "percpu", int)
        name = data.get("name", "")
        if not isinstance(name, str):
            raise ProgramError("program name must be a string")
        return cls(routines, idt, variants, start, ivars, ipcpu, check_text(name, "program name"))

    def to_data(self) -> dict:
        return {"name": self.name,
                "routines": {n: r.to_data() for n, r in self.routines.items()},
                "idt": {f"0x{k:02x}": v for k, v in self.idt.items()},
                "variants": self.variants, "start": self.start,
                "vars": self.init_vars, "percpu": self.init_pcpu}

    def merged(self, overrides: dict[str, Routine]) -> "Program":
        r = dict(self.routines)
        r.update(overrides)
        return Program(r, dict(self.idt), dict(self.variants), dict(self.start),
                       dict(self.init_vars), dict(self.init_pcpu), self.name)

    def select(self, fix: str) -> dict[str, Routine]:
        """The routine table for a fix variant: base routines with the variant's replacements
        installed under the replaced names (so callers are unchanged)."""
        if fix != "none" and fix not in self.variants:
            raise ProgramError(f"unknown fix {fix!r} (known: none, {', '.join(sorted(self.variants))})")
        table = dict(self.routines)
        for target, repl in self.variants.get(fix, {}).items():
            if repl not in self.routines:
                raise ProgramError(f"variant {fix!r}: routine {repl!r} not defined")
            table[target] = self.routines[repl]
        self.check(table)
        return table

    def check(self, table: dict[str, Routine]) -> None:
        for r in table.values():
            for i, op in enumerate(r.ops):
                if op.opcode == "call" and op.args[0] not in table:
                    raise ProgramError(f"call to unknown routine {op.args[0]!r}", f"{r.name}[{i}]")
        for vec, h in self.idt.items():
            if h not in table:
                raise ProgramError(f"idt 0x{vec:02x}: unknown handler {h!r}")
        for role, h in self.start.items():
            if h not in table:
                raise ProgramError(f"start {role!r}: unknown routine {h!r}")
