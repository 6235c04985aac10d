"""Scenario files (TOML, stdlib tomllib), validated with file:line errors.

A scenario names its bug pack (whose kernel listing it runs; the seed pack when it names
none), the machine (vCPU count; the CPU taken offline, for packs that offline one), the
background traffic, the goal, the default run configuration and optionally routine
listings that add to or override the pack's program (same op grammar, see program.py).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..safe import printable, read_text
from .defs import VECTORS
from . import hypervisors, packs
from .engine import DEFAULT_WEIGHTS, Config, parse_action, parse_garbage
from .program import INT_MAX, INT_MIN, Program, ProgramError, Routine, check_text, parse_cond

MIN_VCPUS, MAX_VCPUS = 2, 64
MAX_SCENARIO_BYTES = 1 << 20        # a scenario file (TOML) is read only up to this size
MAX_GPA = (1 << 52) - 4096          # x86-64 physical address width (52 bits), last page
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ScenarioError(ValueError):
    """One line: FILE[:LINE]: problem. Every part that came from a file is escaped."""

    def __init__(self, file: str, line: int | None, msg: str):
        file, msg = printable(file, 200), printable(msg, 300)
        self.file, self.line, self.msg = file, line, msg
        super().__init__(f"{file}:{line}: {msg}" if line else f"{file}: {msg}")


@dataclass
class Scenario:
    name: str
    description: str
    vcpus: int
    target: int | None
    goal: tuple
    goal_text: str
    program: Program
    timer_vector: int
    traffic: list[dict]
    defaults: dict
    init_vars: dict[str, int] = field(default_factory=dict)
    init_pcpu: dict[str, int] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    schedule: list[tuple] = field(default_factory=list)
    alloc_base: int = 0x10000000
    source: str = ""
    text: str = ""
    pack: object = None
    persist: tuple = ()          # global variables that survive kernel transitions (the harness's state)
    invariants: dict = field(default_factory=dict)   # name -> its settings (checked on every event)
    explore_bounds: dict = field(default_factory=dict)   # `hvdbg explore` bounds defaults ([explore] bounds)

    def config(self, **over) -> Config:
        """Resolved run configuration: scenario defaults, then explicit overrides (None = keep),
        checked against this scenario's machine (ScenarioError, one line)."""
        d = dict(self.defaults)
        d.update({k: v for k, v in over.items() if v is not None})
        d.setdefault("vcpus", self.vcpus)
        cfg = Config(scenario=self.name, **d)
        self.check(cfg)
        return cfg

    def check(self, cfg: Config) -> None:
        """Does this scenario run with `cfg`? Every value is in range (check_config_values)
        and the machine fits: the offlined CPU and every traffic source exist."""
        def fail(k, msg, path=None):
            line = _line_of(self.text, path) if path else None
            raise ScenarioError(self.source or self.name, line, f"{k}: {msg}")
        check_config_values(cfg.as_dict(), fail, complete=True)
        if self.target is not None and not 1 <= self.target < cfg.vcpus:
            fail("vcpus", f"{cfg.vcpus} vCPUs, but scenario {self.name} offlines cpu{self.target}")
        spec = hypervisors.HYPERVISORS.get(cfg.hypervisor)
        if spec is not None and "overlay" not in spec.options and cfg.overlay != hypervisors.default_option("overlay"):
            fail("overlay", f"{cfg.hypervisor} has no overlay policies (they apply to "
                            f"{', '.join(hypervisors.models_with('overlay'))})")
        for i, t in enumerate(self.traffic):
            for key in ("from", "to"):
                if t[key] >= cfg.vcpus:
                    fail(f"traffic.{i}.{key}", f"cpu{t[key]} does not exist with {cfg.vcpus} vCPUs",
                         ["traffic", i, key])
        if cfg.fix != "none" and cfg.fix not in self.program.variants:
            fail("fix", f"unknown fix {cfg.fix!r} (this program has: none, {', '.join(sorted(self.program.variants))})")


_TOP = {"scenario", "defaults", "vars", "percpu", "traffic", "weights", "schedule", "routines", "idt", "invariants",
        "explore"}
_EXPLORE = {"bounds"}
_SCEN = {"name", "description", "vcpus", "target", "goal", "timer_vector", "alloc_base", "pack", "persist"}
_TOP_INV = "invariants"
# Invariants a scenario may declare: name -> the keys of its settings table.
INVARIANTS = {"hv-writes-owned": {"purposes"}}
_DEF = {"hypervisor", "overlay", "fix", "garbage", "seed", "max_steps"}
_TRAFFIC = {"from", "to", "vector", "count", "when"}


def _line_of(text: str, path: list) -> int | None:
    """Best-effort source line of a key path like ['scenario', 'vcpus'], ['traffic', 2, 'vector']
    or ['routines', 'NAME']: the key's line inside its table, else the table's header line."""
    if not path or not isinstance(path[0], str):
        return None
    lines = text.splitlines()
    head = re.escape(path[0])
    idx = path[1] if len(path) > 1 and isinstance(path[1], int) else None
    rest = [k for k in path[1:] if isinstance(k, str)]
    hdr, count = None, -1
    for n, ln in enumerate(lines):
        s = ln.strip()
        if idx is not None:
            if re.fullmatch(rf"\[\[\s*{head}\s*\]\]", s):
                count += 1
                if count == idx:
                    hdr = n
                    break
        else:
            if rest and re.fullmatch(rf"\[\s*{head}\.{re.escape(rest[0])}\s*\]", s):
                return n + 1                       # e.g. [routines.NAME]
            if re.fullmatch(rf"\[\s*{head}\s*\]", s) or re.match(rf"{head}\s*=", s):
                hdr = n
                break
    if hdr is None:
        return None
    if not rest:
        return hdr + 1
    key = re.escape(rest[-1])
    for n in range(hdr + 1, len(lines)):
        s = lines[n].strip()
        if s.startswith("["):
            break
        if re.match(rf'"?{key}"?\s*=', s):
            return n + 1
    return hdr + 1


class _V:
    """Validation helper bound to a file and its text."""

    def __init__(self, file: str, text: str):
        self.file, self.text = file, text

    def err(self, path: list, msg: str):
        where = ".".join(printable(p, 40) for p in path)
        raise ScenarioError(self.file, _line_of(self.text, path), f"{where}: {msg}")

    def keys(self, d: dict, allowed: set, path: list) -> None:
        for k in d:
            if k not in allowed:
                self.err(path + [k], f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def typ(self, d: dict, k: str, t, path: list, required=False):
        if k not in d:
            if required:
                self.err(path + [k], "missing")
            return None
        v = d[k]
        if t is int and (isinstance(v, bool) or not isinstance(v, int)):
            self.err(path + [k], f"expected an integer, got {type(v).__name__} {printable(repr(v), 40)}")
        if t is int and not INT_MIN <= v <= INT_MAX:
            self.err(path + [k], "integer out of the 64-bit range")
        if t is str and not isinstance(v, str):
            self.err(path + [k], f"expected a string, got {type(v).__name__} {printable(repr(v), 40)}")
        if t is dict and not isinstance(v, dict):
            self.err(path + [k], f"expected a table, got {type(v).__name__}")
        if t is list and not isinstance(v, list):
            self.err(path + [k], f"expected an array, got {type(v).__name__}")
        return v

    def var(self, k, x, path: list) -> None:
        if not _VAR.match(k):
            self.err(path + [k], "expected a variable name (letters, digits, _; at most 64)")
        self.typ({k: x}, k, int, path)

    def vector(self, v, path: list) -> int:
        if isinstance(v, str):
            if v in VECTORS:
                v = VECTORS[v]
            else:
                try:
                    v = int(v, 0)
                except ValueError:
                    self.err(path, f"unknown vector {printable(repr(v), 40)} (a number or one of {', '.join(VECTORS)})")
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(path, f"expected a vector, got {printable(repr(v), 40)}")
        if not 16 <= v <= 255:
            shown = f"0x{v:x}" if abs(v) < 1 << 64 else "value"
            self.err(path, f"vector {shown} is out of range: vectors 0-15 are reserved (SDM 10.5.2), maximum 255")
        return v


def parse_scenario(text: str, file: str = "<scenario>", base: Program | None = None) -> Scenario:
    v = _V(file, text)
    if len(text) > MAX_SCENARIO_BYTES:
        raise ScenarioError(file, None, f"{len(text)} characters, over the {MAX_SCENARIO_BYTES} limit for a scenario")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise ScenarioError(file, int(m.group(1)) if m else None, f"TOML syntax error: {msg}") from None
    except RecursionError:
        raise ScenarioError(file, None, "TOML nesting too deep (a scenario needs at most a few levels)") from None
    v.keys(data, _TOP, [])
    sc = v.typ(data, "scenario", dict, [], required=True)
    v.keys(sc, _SCEN, ["scenario"])
    name = v.typ(sc, "name", str, ["scenario"], required=True)
    if not _NAME.match(name):
        v.err(["scenario", "name"], "expected a name of letters, digits, '-', '_' or '.' (at most 64)")
    desc = v.typ(sc, "description", str, ["scenario"]) or ""
    try:
        check_text(desc, "description")
    except ProgramError as e:
        v.err(["scenario", "description"], e.msg)
    vcpus = v.typ(sc, "vcpus", int, ["scenario"], required=True)
    if not MIN_VCPUS <= vcpus <= MAX_VCPUS:
        v.err(["scenario", "vcpus"], f"{vcpus} vCPUs: expected {MIN_VCPUS}..{MAX_VCPUS}")
    pack_name = v.typ(sc, "pack", str, ["scenario"]) or packs.DEFAULT_PACK
    try:
        pack = packs.get(pack_name)
    except packs.PackError as e:
        v.err(["scenario", "pack"], str(e))
    target = v.typ(sc, "target", int, ["scenario"])
    if target is not None and not 1 <= target < vcpus:
        v.err(["scenario", "target"], f"cpu{target} cannot be offlined: expected 1..{vcpus - 1} (cpu0 is the control CPU)")
    goal_text = v.typ(sc, "goal", str, ["scenario"], required=True)
    try:
        goal = parse_cond(goal_text)
    except ProgramError as e:
        v.err(["scenario", "goal"], e.msg)
    tv = v.vector(sc.get("timer_vector", "LOCAL_TIMER"), ["scenario", "timer_vector"])
    alloc_base = v.typ(sc, "alloc_base", int, ["scenario"])
    alloc_base = 0x10000000 if alloc_base is None else alloc_base
    if not 0 < alloc_base <= MAX_GPA or alloc_base % 4096:
        v.err(["scenario", "alloc_base"], f"expected a page-aligned guest physical address 0x1000..0x{MAX_GPA:x}")

    defaults = {}
    d = v.typ(data, "defaults", dict, []) or {}
    v.keys(d, _DEF, ["defaults"])
    for k in ("hypervisor", "overlay", "fix", "garbage"):
        if k in d:
            defaults[k] = v.typ(d, k, str, ["defaults"])
    for k in ("seed", "max_steps"):
        if k in d:
            defaults[k] = v.typ(d, k, int, ["defaults"])
    check_config_values(defaults, lambda k, msg: v.err(["defaults", k], msg))

    init_vars = {}
    for k, x in (v.typ(data, "vars", dict, []) or {}).items():
        v.var(k, x, ["vars"])
        init_vars[k] = x
    init_pcpu = {}
    for k, x in (v.typ(data, "percpu", dict, []) or {}).items():
        v.var(k, x, ["percpu"])
        init_pcpu[k] = x
    if target is not None:
        init_vars.setdefault("target", target)

    traffic = []
    for i, t in enumerate(v.typ(data, "traffic", list, []) or []):
        p = ["traffic", i]
        if not isinstance(t, dict):
            v.err(p, "expected a table")
        v.keys(t, _TRAFFIC, p)
        src = t.get("from", "*")
        dst = t.get("to", "*")
        ent = {}
        for key, val in (("from", src), ("to", dst)):
            if val == "*":
                ent[key] = -1
            elif isinstance(val, int) and not isinstance(val, bool) and 0 <= val < MAX_VCPUS:
                ent[key] = val
            else:
                v.err(p + [key], f"expected a CPU number or \"*\", got {val!r}")
        if "vector" not in t:
            v.err(p + ["vector"], "missing")
        ent["vector"] = v.vector(t["vector"], p + ["vector"])
        cnt = t.get("count", "periodic")
        if cnt == "periodic":
            ent["count"] = -1
        elif isinstance(cnt, int) and not isinstance(cnt, bool) and 0 <= cnt <= 10 ** 9:
            ent["count"] = cnt
        else:
            v.err(p + ["count"], f"expected a count 0..1000000000 or \"periodic\", got {printable(cnt, 40)}")
        if "when" in t:
            w = v.typ(t, "when", str, p)
            try:
                ent["when"] = parse_cond(w)
            except ProgramError as e:
                v.err(p + ["when"], e.msg)
        traffic.append(ent)

    weights = {}
    for k, x in (v.typ(data, "weights", dict, []) or {}).items():
        if k not in DEFAULT_WEIGHTS:
            v.err(["weights", k], f"unknown action kind (known: {', '.join(DEFAULT_WEIGHTS)})")
        v.typ({k: x}, k, int, ["weights"])
        if not 1 <= x <= 1000:
            v.err(["weights", k], "expected 1..1000")
        weights[k] = x

    schedule = []
    for i, s in enumerate(v.typ(data, "schedule", list, []) or []):
        if not isinstance(s, str):
            v.err(["schedule"], f"entry {i}: expected a string like 'op 1'")
        try:
            schedule.append(parse_action(s))
        except ValueError as e:
            v.err(["schedule"], f"entry {i}: {e}")

    program = base or pack.program()
    over = {}
    for rname, rdata in (v.typ(data, "routines", dict, []) or {}).items():
        if not _VAR.match(rname) or len(over) >= 1024:
            v.err(["routines", rname], "expected a routine name (letters, digits, _; at most 64), at most 1024 routines")
        try:
            over[rname] = Routine.from_data(rname, rdata)
        except ProgramError as e:
            v.err(["routines", rname], e.msg if not e.where else f"{e.where}: {e.msg}")
    program = program.merged(over)
    for k, h in (v.typ(data, "idt", dict, []) or {}).items():
        vec = v.vector(k, ["idt", k])
        if not isinstance(h, str):
            v.err(["idt", k], "expected a routine name")
        program.idt[vec] = h
    for t in traffic:
        if t["vector"] not in program.idt:
            v.err(["traffic"], f"no handler for vector 0x{t['vector']:02x} in the IDT")
    if tv not in program.idt:
        v.err(["scenario", "timer_vector"], f"no handler for vector 0x{tv:02x} in the IDT")
    for fx in ("none", *program.variants):
        try:
            program.select(fx)
        except ProgramError as e:
            v.err(["routines"], str(e))
    persist = v.typ(sc, "persist", list, ["scenario"]) or []
    for x in persist:
        if not isinstance(x, str) or not _VAR.match(x):
            v.err(["scenario", "persist"], f"expected global variable names, got {printable(repr(x), 40)}")
    invariants = {}
    for iname, settings in (v.typ(data, "invariants", dict, []) or {}).items():
        if iname not in INVARIANTS:
            v.err(["invariants", iname], f"unknown invariant (known: {', '.join(INVARIANTS)})")
        if not isinstance(settings, dict):
            v.err(["invariants", iname], "expected a table")
        v.keys(settings, INVARIANTS[iname], ["invariants", iname])
        purposes = settings.get("purposes", {})
        if not isinstance(purposes, dict) or not all(isinstance(k, str) and isinstance(x, str) and _VAR.match(x)
                                                     for k, x in purposes.items()):
            v.err(["invariants", iname, "purposes"], "expected a table: structure = \"page purpose\"")
        invariants[iname] = {"purposes": dict(purposes)}
    ex = v.typ(data, "explore", dict, []) or {}
    v.keys(ex, _EXPLORE, ["explore"])
    explore_bounds = {}
    if "bounds" in ex:
        from .explore import bounds_problem
        bad = bounds_problem(ex["bounds"])
        if bad is not None:
            v.err(["explore", "bounds"] + ([bad[0]] if bad[0] else []), bad[1])
        explore_bounds = dict(ex["bounds"])
    return Scenario(name, desc, vcpus, target, goal, goal_text, program, tv, traffic, defaults,
                    init_vars, init_pcpu, weights, schedule, alloc_base, file, text, pack, tuple(persist), invariants,
                    explore_bounds)


# One schema for a run configuration, wherever it comes from: a scenario's [defaults], the
# command line, or a trace header's resolved config (complete=True: every key present).
CONFIG_TYPES = {"scenario": str, "hypervisor": str, "overlay": str, "fix": str, "garbage": str,
                "seed": int, "vcpus": int, "max_steps": int}


def check_config_values(d, fail, complete: bool = False) -> None:
    """Validate run options with one message each: `fail(key, message)` is called (and is
    expected to raise) for the first problem. Types first, then ranges and names."""
    if not isinstance(d, dict):
        fail("config", f"expected a map, got {type(d).__name__}")
        return
    for k, v in d.items():
        if k not in CONFIG_TYPES:
            fail(printable(k, 40), f"unknown setting (known: {', '.join(CONFIG_TYPES)})")
        t = CONFIG_TYPES[k]
        if t is int and (type(v) is not int):
            fail(k, f"expected an integer, got {type(v).__name__} {printable(repr(v), 40)}")
        if t is str and not isinstance(v, str):
            fail(k, f"expected a string, got {type(v).__name__} {printable(repr(v), 40)}")
        if t is str and len(v) > 64:
            fail(k, f"{len(v)} characters is too long for a {k} name")
    if complete:
        for k in CONFIG_TYPES:
            if k not in d:
                fail(k, "missing")
    if "scenario" in d and not _NAME.match(d["scenario"]):
        fail("scenario", f"{printable(repr(d['scenario']), 60)} is not a scenario name")
    if "hypervisor" in d and d["hypervisor"] not in hypervisors.HYPERVISORS:
        fail("hypervisor", f"unknown hypervisor {printable(repr(d['hypervisor']), 60)} "
                           f"(expected {' or '.join(hypervisors.names())})")
    if "overlay" in d and d["overlay"] not in hypervisors.option_values("overlay"):
        fail("overlay", f"unknown overlay policy {printable(repr(d['overlay']), 60)} "
                        f"(expected {', '.join(hypervisors.option_values('overlay'))})")
    if "fix" in d and d["fix"] not in packs.fix_names():
        fail("fix", f"unknown fix {printable(repr(d['fix']), 60)} (expected {', '.join(packs.fix_names())})")
    if "garbage" in d:
        try:
            parse_garbage(d["garbage"])
        except ValueError as e:
            fail("garbage", str(e))
    if "seed" in d and not 0 <= d["seed"] < 2 ** 64:
        fail("seed", "expected 0 <= seed < 2**64")
    if "max_steps" in d and not 0 <= d["max_steps"] <= 10 ** 9:
        fail("max_steps", "expected 0..1000000000")
    if "vcpus" in d and not MIN_VCPUS <= d["vcpus"] <= MAX_VCPUS:
        fail("vcpus", f"{d['vcpus']} vCPUs: expected {MIN_VCPUS}..{MAX_VCPUS}")


def builtin_names() -> list[str]:
    """Every pack's scenarios, by name."""
    return sorted(packs.scenario_names())


def load_scenario(spec: str | None) -> Scenario:
    """A built-in scenario name, a pack name (its default scenario) or a path to a .toml file
    (a regular file of at most MAX_SCENARIO_BYTES: FIFOs and devices are refused before a byte
    is read)."""
    spec = spec or packs.get(packs.DEFAULT_PACK).default_scenario
    builtin = packs.scenario_names()
    if spec not in builtin and spec in packs.packs():
        spec = packs.get(spec).default_scenario
    if spec in builtin:
        pack = builtin[spec]
        return parse_scenario(pack.scenario_text(spec), f"<{pack.name}>/{spec}.toml")
    p = Path(spec)
    if not p.exists():
        raise ScenarioError(spec, None, f"no such scenario, pack or file (scenarios: {', '.join(builtin_names())}; "
                                        f"packs: {', '.join(packs.packs())})")
    try:
        text = read_text(p, MAX_SCENARIO_BYTES, "scenario file")
    except UnicodeDecodeError as e:
        raise ScenarioError(spec, None, f"not UTF-8 text (byte {e.start}); a scenario is a TOML file") from None
    except OSError as e:
        raise ScenarioError(spec, None, f"cannot read: {getattr(e, 'why', None) or e.strerror or e}") from None
    return parse_scenario(text, spec)
