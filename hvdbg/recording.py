"""Recording runs to msgpack traces and loading them back (docs/trace-format.md).

A trace stores the header (tool, scenario text, resolved config, program digest) and each
event's *choice*; the writes are recomputed on load by re-executing the engine with the
recorded choices (rr's approach). Every ``CHECK_EVERY`` events a checkpoint record holds the
exact state digest and one 16-bit check value per event, so a replay that diverges is
reported at its first differing event.
"""
from __future__ import annotations

import hashlib
import os
import sys
import zlib
from dataclasses import dataclass

import msgpack

from .core import hypervisors
from .core.engine import E_ACT, E_WRITES, Config, Engine, RunError, act_text, edit_problem
from .core.events import event_check  # noqa: F401  (re-exported: the check a trace stores per event)
from .core.program import Program, ProgramError
from .core.scenario import ScenarioError, check_config_values, parse_scenario
from .core.timeline import Timeline
from .safe import open_partial, output_target, printable
from .trace.format import MAGIC, TraceError
from .trace.reader import Trace, load_trace
from .trace.writer import TraceWriter, publish

TOOL = "hvdbg 0.1.0"
CHECK_EVERY = 1000


def program_digest(scn) -> str:
    return hashlib.blake2b(msgpack.packb(scn.program.to_data(), use_bin_type=True), digest_size=12).hexdigest()


def header_for(scn, cfg: Config) -> dict:
    return {"tool": TOOL, "scenario": scn.name, "scenario_file": scn.source, "scenario_text": scn.text,
            "config": cfg.as_dict(), "program_digest": program_digest(scn), "program": scn.program.to_data(),
            "check_every": CHECK_EVERY}


class _Recorder:
    """Writes events with their 16-bit checks, and a checkpoint (digest + checks) every
    CHECK_EVERY events and at the end. `digest_at(step)` gives the state digest at a step."""

    def __init__(self, w: TraceWriter, digest_at, on_event=None):
        self.w, self.digest_at, self.on_event = w, digest_at, on_event
        self.checks = bytearray()

    def hook(self, ev: tuple) -> None:
        if self.on_event is not None:
            self.on_event(ev)
        self.w.event(ev[E_ACT])
        self.checks += event_check(ev[E_WRITES]).to_bytes(2, "little")
        step = ev[0] + 1
        if step % CHECK_EVERY == 0:
            self.w.checkpoint(step, self.digest_at(step), None, bytes(self.checks))
            self.checks = bytearray()

    def finish(self, steps: int) -> None:
        if steps % CHECK_EVERY or steps == 0:
            self.w.checkpoint(steps, self.digest_at(steps), None, bytes(self.checks))


def partial_path(path) -> str:
    return f"{path}.partial"


def record(scn, cfg: Config, path, stop=None, checkpoint_every: int = 1000) -> Timeline:
    """Run and record. The trace is written as the run goes to PATH.partial (append-only,
    flushed at least every 1,000 events or 100 ms), closed with a footer at the outcome - a
    hang included - and then renamed over PATH atomically, so an existing PATH is replaced
    only by a complete trace. A killed recording leaves PATH.partial, loadable up to the
    last flush. PATH must be new, or a regular file that is an hvdbg trace (a symlink to one
    is written through); anything else is refused before the run starts (safe.output_target)."""
    target = output_target(path, MAGIC)
    eng = Engine(scn, cfg)
    tl = Timeline(eng)
    tmp = partial_path(target)
    w = TraceWriter(open_partial(tmp), header_for(scn, cfg), owns=True)
    rec = _Recorder(w, lambda step: eng.m.digest())
    try:
        tl.result = eng.run(stop=stop, hook=rec.hook)
        tl.pos = eng.step
        rec.finish(eng.step)
        w.close(tl.result.outcome, eng.step)
        publish(tmp, target)
    except BaseException:
        w.abandon()
        raise
    return tl


# Outcomes a recording can end with (the footer's "outcome").
OUTCOMES = ("ok", "hang", "timeout", "corruption", "stopped")
HEADER_FIELDS = {"tool": str, "scenario": str, "scenario_file": str, "scenario_text": str, "config": dict,
                 "program_digest": str, "program": dict, "check_every": int}


@dataclass
class Loaded:
    """A trace read, validated and re-executed with its recorded choices.

    status: "identical" (every event of a complete file re-executed, every per-event check
    and checkpoint digest matched, the recorded outcome reproduced at the recorded step),
    "diverged" (``divergence`` = (first differing step, why)) or "salvaged" (a cut or
    damaged file: only the recovered prefix was checked; ``verified`` events of it)."""
    trace: Trace
    scenario: object
    config: Config
    timeline: Timeline | None
    divergence: tuple | None   # (step, why) or None
    branches: dict
    engine: Engine | None = None
    status: str = "identical"
    verified: int = 0          # events re-executed that matched their per-event checks
    program_note: str = ""     # how the trace's program listing compares with this hvdbg's built-in one

    @property
    def result(self):
        return self.engine._last_result if self.engine is not None else None


def _scenario_and_config(tr: Trace, path) -> tuple:
    """The header, checked field by field with the rules a scenario file obeys (one schema,
    scenario.check_config_values), before anything is allocated for the machine."""
    h = tr.header
    for k, t in HEADER_FIELDS.items():
        if not isinstance(h.get(k), t) or (t is int and type(h.get(k)) is not int):
            raise TraceError(path, 12, f"header field {k} is missing or not a {t.__name__}")
    cfgd = h["config"]

    def fail(k, msg):
        raise TraceError(path, 12, f"header config: {k}: {msg}")
    check_config_values(cfgd, fail, complete=True)
    try:
        base = Program.from_data(h["program"])
    except ProgramError as e:
        raise TraceError(path, 12, f"header program: {e}") from None
    digest = hashlib.blake2b(msgpack.packb(h["program"], use_bin_type=True), digest_size=12).hexdigest()
    if digest != h["program_digest"]:
        raise TraceError(path, 12, "header program_digest does not match the program listing it carries "
                                   "(the listing was changed after recording)")
    try:
        scn = parse_scenario(h["scenario_text"], str(h["scenario_file"]), base=base)
        cfg = Config(**cfgd)
        scn.check(cfg)
        scn.program.select(cfg.fix)
    except (ScenarioError, ProgramError) as e:
        raise TraceError(path, 12, f"header scenario does not load: {e}") from None
    if scn.name != cfg.scenario:
        raise TraceError(path, 12, f"header config names scenario {printable(cfg.scenario)}, its text is "
                                   f"{printable(scn.name)}")
    return scn, cfg


def _check_content(tr: Trace, scn, cfg: Config, path) -> None:
    """Every number in the records, against the model: recorded choices name existing vCPUs
    and vectors 16..255, branch edits are in range (bit < 8, 64-bit values, ...), branch
    switches name known fixes / hypervisors / policies, the footer's outcome is one the
    engine produces, and checkpoints carry one check per event."""
    n = cfg.vcpus
    for d in tr.events.distinct():
        cpus, vecs = d[1:-1] if d[0] != "op" else d[1:], d[-1:] if d[0] != "op" else ()
        if not all(0 <= c < n for c in cpus) or not all(16 <= v <= 255 for v in vecs):
            raise TraceError(path, 12, f"recorded choice '{act_text(d)}' is not an action of this {n}-vCPU machine")
    for b in tr.branches:
        if b["edit"] is not None:
            why = edit_problem(b["edit"], n)
            if why:
                raise TraceError(path, b["offset"], f"branch {b['name']}: {why}")
        for k, v in (b["switch"] or {}).items():
            known = {"fix": ("none", *scn.program.variants), "hypervisor": hypervisors.names(),
                     "overlay": hypervisors.option_values("overlay")}[k]
            if v not in known:
                raise TraceError(path, b["offset"], f"branch {b['name']}: unknown {k} {printable(repr(v), 40)}")
    if tr.footer is not None and tr.footer["outcome"] not in OUTCOMES:
        raise TraceError(path, tr.footer_offset, f"footer outcome {printable(repr(tr.footer['outcome']), 40)} is not "
                                                 f"one of {', '.join(OUTCOMES)}")
    for (step, _d, _s, off), chk in zip(tr.checkpoints, tr.checkpoint_checks):
        if chk is None:
            raise TraceError(path, off, f"checkpoint at step {step} carries no per-event checks")
    if tr.footer is not None and len(tr.events) and (not tr.checkpoints or tr.checkpoints[-1][0] != len(tr.events)):
        raise TraceError(path, tr.footer_offset, "the last checkpoint does not cover the last event: "
                                                 "not every event can be verified")


def open_trace(path, max_bytes: int | None = None) -> tuple:
    """Read and validate a trace without executing it: (trace, scenario, config)."""
    tr = load_trace(path, max_bytes)
    scn, cfg = _scenario_and_config(tr, path)
    _check_content(tr, scn, cfg, path)
    return tr, scn, cfg


def builtin_program_note(tr: Trace, scn) -> str:
    """'' when the trace's program is what this hvdbg builds for its scenario text, else which
    routines differ (the trace replays with its own listing either way)."""
    try:
        mine = parse_scenario(tr.header["scenario_text"], "<builtin>").program.to_data()["routines"]
    except (ScenarioError, ProgramError):
        return "this hvdbg's built-in program does not load the trace's scenario"
    theirs = scn.program.to_data()["routines"]
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if not diff:
        return ""
    return (f"the trace's program listing differs from this hvdbg's built-in one in {len(diff)} routine(s): "
            + ", ".join(diff[:5]) + (", ..." if len(diff) > 5 else ""))


def load(path, verify: bool = True, checkpoint_every: int = 1000, stop=None, journal: bool = True,
         upto: int | None = None, branches: bool = True) -> Loaded:
    """Load a trace and re-execute it with its recorded choices (docs/security.md says what
    this proves). Divergence - a recorded choice that is not enabled, a differing per-event
    check or checkpoint digest, an outcome reached before the last event, or a final state
    that is not the recorded outcome - is reported as (first differing step, why) and the
    re-execution stops there. journal=False keeps no per-event journal (verify, show: memory
    flat in the number of events); upto=N stops after N events (show --step N)."""
    tr, scn, cfg = open_trace(path)
    eng = Engine(scn, cfg, journal=journal)
    eng.schedule = tr.events
    eng.schedule_ends_run = True
    tl = Timeline(eng) if journal else None
    all_checks = b"".join(c for c in tr.checkpoint_checks)
    n_checked = len(all_checks) // 2
    ends = {step: digest for step, digest, _s, _o in tr.checkpoints}
    divergence: list = []
    unpack = memoryview(all_checks).cast("H") if all_checks and sys.byteorder == "little" else None

    def hook(ev):
        if divergence:
            return
        i = ev[0]
        if i < n_checked:
            want = unpack[i] if unpack is not None else int.from_bytes(all_checks[2 * i:2 * i + 2], "little")
            if want != event_check(ev[E_WRITES]):
                divergence.append((i, f"event {i} ({act_text(ev[E_ACT])}) wrote different values than when it was recorded"))
                return
        d = ends.get(i + 1)
        if d is not None and d != eng.m.digest():
            divergence.append((i, f"state digest after event {i} differs from the recorded checkpoint"))
    limit = cfg.max_steps if upto is None else min(upto, len(tr.events))
    try:
        res = eng.run(max_steps=limit, stop=(lambda: bool(divergence)) if stop is None else
                      (lambda: bool(divergence) or stop()), hook=hook)
    except RunError as e:
        divergence.append((eng.step, str(e)))
        res = eng._result("stopped", "diverged")
    if tl is not None:
        tl.result = res
        tl.pos = eng.step
    div = divergence[0] if divergence else None
    if div is None and upto is None:
        div = _outcome_divergence(tr, eng, res)
    if div is None and upto is not None and eng.step < limit and res.outcome != "stopped":
        div = (eng.step, f"the re-execution reached '{res.outcome}' after {eng.step} events; the trace has "
                         f"{len(tr.events)}")
    if res.outcome == "end":
        if div is None and tr.footer is not None:
            res.outcome, res.reason = tr.footer["outcome"], f"as recorded ({tr.footer['outcome']}), confirmed on the " \
                                                            "re-executed final state"
        else:
            res.outcome, res.reason = "stopped", "the recording ends here"
    loaded = Loaded(tr, scn, cfg, tl, div, {}, engine=eng,
                    status="diverged" if div else ("salvaged" if tr.salvage else "identical"),
                    verified=min(div[0] if div else eng.step, n_checked),
                    program_note=builtin_program_note(tr, scn))
    if div is None and tl is not None and branches:
        loaded.branches = _load_branches(tr, tl, path)
    return loaded


def _outcome_divergence(tr: Trace, eng: Engine, res) -> tuple | None:
    """After the last recorded choice: does the re-execution end as the recording did?"""
    n = len(tr.events)
    if eng.step < n:
        return (eng.step, f"the re-execution reached '{res.outcome}' after {eng.step} events; the trace has {n}")
    if tr.footer is None:                      # salvaged: the recorded outcome is lost
        return None
    want, got = tr.footer["outcome"], res.outcome
    if got == "end":
        if want == "stopped":
            return None
        if want == "hang":
            # the state after the last event must be a hang by the engine's own definition
            # (design §3): nothing enabled changes anything, or every reachable state was
            # explored and none reaches the goal
            if eng.quiescent(eng.enabled()) or eng.unreachable() is True:
                return None
            return (n, "the recording ends with a hang, but in the re-executed final state the goal is still reachable")
        return (n, f"the recording ends with '{want}' after {n} events, but the re-execution needs more events "
                   "to reach an outcome")
    if got != want:
        return (n, f"recorded outcome {want}, replayed {got}")
    return None


def _load_branches(tr: Trace, tl: Timeline, path) -> dict:
    """Re-simulate the branch records (deterministic) in file order; a parent is main or an
    earlier branch (the reader checked names, parents and fork steps)."""
    branches: dict = {}
    for b in tr.branches:
        parent = tl if b["parent"] in (None, "main") else branches[b["parent"]]
        if b["fork_step"] > parent.length:
            raise TraceError(path, b["offset"], f"branch {b['name']} forks at step {b['fork_step']}, but its parent "
                                                f"{parent.name} has {parent.length} events")
        sw = b.get("switch") or {}
        try:
            branches[b["name"]] = parent.branch(b["name"], b["fork_step"], b.get("edit"), fix=sw.get("fix"),
                                                hypervisor=sw.get("hypervisor"), overlay=sw.get("overlay"))
        except (ValueError, ProgramError, RunError) as e:
            raise TraceError(path, b["offset"], f"branch {b['name']!r} does not re-simulate: {e}") from None
    return branches


def save_session(session, path) -> int:
    """Save the session's main recording and its what-if branches as one trace, replacing
    `path` atomically. Branches are stored as records (parent, fork step, edit or switch)
    and re-simulated on load. Returns the number of branches saved."""
    main = session.branches["main"]
    e = main.e
    scn = getattr(session, "scenario", None) or e.scn
    target = output_target(path, MAGIC)
    tmp = partial_path(target)
    w = TraceWriter(open_partial(tmp), header_for(scn, e.cfg), owns=True)
    def digest_at(step: int) -> str:
        here = main.pos
        main.goto(step)
        d = e.m.digest()
        main.goto(here)
        return d

    rec = _Recorder(w, digest_at)
    try:
        for ev in main.events:
            rec.hook(ev)
        rec.finish(main.length)
        n = 0
        order = [b for b in session.branches.values() if b.parent is not None]
        order.sort(key=lambda b: _depth(b))
        for b in order:
            first = b.events[b.fork] if b.fork < b.length else None
            edit = first[E_ACT] if first is not None and first[E_ACT][0] == "edit" else None
            switch = {}
            if b.e.cfg.fix != b.parent.e.cfg.fix:
                switch["fix"] = b.e.cfg.fix
            if b.e.cfg.hypervisor != b.parent.e.cfg.hypervisor:
                switch["hypervisor"] = b.e.cfg.hypervisor
            if b.e.cfg.overlay != b.parent.e.cfg.overlay:
                switch["overlay"] = b.e.cfg.overlay
            w.branch(b.name, b.parent.name, b.fork, edit, switch or None)
            n += 1
        out = main.result.outcome if main.result and main.result.outcome in OUTCOMES else "stopped"
        w.close(out, main.length)
        publish(tmp, target)
    except BaseException:
        w.abandon()
        try:                        # an unfinished save is of no use: the partial file is ours, remove it
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return n


def _depth(tl) -> int:
    d = 0
    while tl.parent is not None:
        d += 1
        tl = tl.parent
    return d
