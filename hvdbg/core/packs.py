"""Bug packs: everything hvdbg knows about one real bug, kept with the bug.

A pack is a directory under ``hvdbg/packs/`` holding ``pack.toml`` (what the bug is: its
hypervisor, transition, symptom, upstream fix, the fix variants, which ops consume the
hypervisor's EOI hint, which shared structures the views show, the invariants its
scenarios check), the kernel listing it runs (op grammar, program.py), its scenarios
(``scenarios/*.toml``) and optionally ``rules.py`` with hooks over the generic core:

* ``NOTE_HOOKS = {kind: [fn(engine, note, event)]}`` - statistics or state from notes;
* ``EXPLAIN = {topic: [fn(ctx, ...)]}`` - extra links for explanations (explain.py says
  which topics it asks about);
* ``STATS = {name: label}`` - statistics the report and sweeps print, with their labels.

The generic layers (engine, explain, views, report, CLI) never name a pack, a fix, a
variable or an MSR of one bug: they ask the pack. Add a bug: add a directory.
"""
from __future__ import annotations

import importlib
import re
import tomllib
from dataclasses import dataclass, field
from importlib.resources import files

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
DEFAULT_PACK = "vp-assist-offline"


class PackError(ValueError):
    pass


@dataclass
class Pack:
    name: str
    title: str
    hypervisor: str
    transition: str
    symptom: str
    kernel: str
    upstream_fix: str
    fixes: dict[str, str]
    program_file: str
    default_scenario: str
    package: str                               # python package of the pack directory
    doc: str = ""
    story: str = ""
    eoi_hint_ops: tuple = ()                   # ((routine, opcode), ...)
    structures: dict = field(default_factory=dict)   # structure name -> {"pointer": "%var", ...}
    invariants: tuple = ()
    scenarios: dict = field(default_factory=dict)    # scenario name -> file name
    note_hooks: dict = field(default_factory=dict)
    explain: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    sweep_stats: dict = field(default_factory=dict)
    explore_bounds: dict = field(default_factory=dict)   # `hvdbg explore` bounds defaults ([explore] bounds)
    _program: object = None

    def program(self):
        """The pack's kernel listing (parsed once; callers get a copy to merge into)."""
        from .program import Program
        if self._program is None:
            text = files(self.package).joinpath(self.program_file).read_text()
            self._program = Program.from_data(tomllib.loads(text))
        p = self._program
        return p.merged({})

    def scenario_text(self, name: str) -> str:
        return files(self.package).joinpath("scenarios", self.scenarios[name]).read_text()


PACKS: dict[str, Pack] = {}
_loaded = False


def _load_dir(dirname: str) -> Pack:
    package = f"hvdbg.packs.{dirname}"
    meta = tomllib.loads(files(package).joinpath("pack.toml").read_text())
    p = meta.get("pack", {})
    name = p.get("name", "")
    if not _NAME.match(name):
        raise PackError(f"pack {dirname}: bad name {name!r}")
    scen_dir = files(package).joinpath("scenarios")
    scenarios = {f.name[:-5]: f.name for f in scen_dir.iterdir() if f.name.endswith(".toml")} \
        if scen_dir.is_dir() else {}
    hint = tuple(tuple(x.split(":", 1)) for x in meta.get("eoi_hint", {}).get("ops", []))
    pack = Pack(name=name, title=p.get("title", name), hypervisor=p.get("hypervisor", "hyperv"),
                transition=p.get("transition", ""), symptom=p.get("symptom", ""), kernel=p.get("kernel", ""),
                upstream_fix=p.get("upstream_fix", ""), fixes=dict(meta.get("fixes", {})),
                program_file=p.get("program", "program.toml"), default_scenario=p.get("default_scenario", ""),
                package=package, doc=p.get("doc", ""), story=p.get("story", ""), eoi_hint_ops=hint,
                structures=dict(meta.get("structures", {})), invariants=tuple(p.get("invariants", ())),
                scenarios=scenarios, explore_bounds=_explore_bounds(dirname, meta))
    try:
        rules = importlib.import_module(f"{package}.rules")
    except ModuleNotFoundError as e:
        if e.name != f"{package}.rules":
            raise
        rules = None
    if rules is not None:
        pack.note_hooks = dict(getattr(rules, "NOTE_HOOKS", {}))
        pack.explain = dict(getattr(rules, "EXPLAIN", {}))
        pack.stats = dict(getattr(rules, "STATS", {}))
        pack.sweep_stats = dict(getattr(rules, "SWEEP_STATS", {}))
    return pack


def _explore_bounds(dirname: str, meta: dict) -> dict:
    """pack.toml's `[explore] bounds = {traffic = N, timer = N}`: the explorer's bounds for
    every scenario of the pack (a scenario's own [explore] bounds and --bound override them)."""
    from .explore import bounds_problem
    ex = meta.get("explore", {})
    if not isinstance(ex, dict) or set(ex) - {"bounds"}:
        raise PackError(f"pack {dirname}: [explore]: expected a table with the one key bounds")
    if "bounds" not in ex:
        return {}
    bad = bounds_problem(ex["bounds"])
    if bad is not None:
        raise PackError(f"pack {dirname}: explore.bounds{'.' + bad[0] if bad[0] else ''}: {bad[1]}")
    return dict(ex["bounds"])


def register(pack: Pack) -> Pack:
    PACKS[pack.name] = pack
    return pack


def _discover() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    root = files("hvdbg.packs")
    for d in sorted(root.iterdir(), key=lambda x: x.name):
        if d.is_dir() and d.joinpath("pack.toml").is_file():
            register(_load_dir(d.name))


def packs() -> dict[str, Pack]:
    _discover()
    return PACKS


def get(name: str) -> Pack:
    _discover()
    try:
        return PACKS[name]
    except KeyError:
        raise PackError(f"unknown pack {name!r} (packs: {', '.join(PACKS)})") from None


def scenario_names() -> dict[str, Pack]:
    """Every built-in scenario name -> its pack."""
    out = {}
    for p in packs().values():
        for s in p.scenarios:
            out[s] = p
    return out


def fix_names() -> tuple[str, ...]:
    """'none' and every fix any pack declares (command-line choices)."""
    out = ["none"]
    for p in packs().values():
        out += [f for f in p.fixes if f not in out]
    return tuple(out)
