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
import zlib
from dataclasses import dataclass

import msgpack

from .core.engine import E_ACT, E_WRITES, Config, Engine, RunError
from .core.program import Program, ProgramError
from .core.scenario import ScenarioError, parse_scenario
from .core.timeline import Timeline
from .trace.format import TraceError
from .trace.reader import Trace, load_trace
from .trace.writer import TraceWriter

TOOL = "hvdbg 0.1.0"
CHECK_EVERY = 1000


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
            h = (h * 1000003) ^ zlib.crc32(new if new is not None else b"") ^ (loc[-1] if isinstance(loc[-1], int) else 0)
        h &= 0xFFFFFFFFFFFF
    return (h ^ (h >> 16) ^ (h >> 32)) & 0xFFFF


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
    last flush."""
    eng = Engine(scn, cfg)
    tl = Timeline(eng, checkpoint_every)
    tmp = partial_path(path)
    w = TraceWriter(tmp, header_for(scn, cfg))
    rec = _Recorder(w, lambda step: eng.m.digest(), on_event=tl._hook)
    try:
        tl.result = eng.run(stop=stop, hook=rec.hook)
        tl.pos = eng.step
        rec.finish(eng.step)
        w.close(tl.result.outcome, eng.step)
        os.replace(tmp, path)
    except BaseException:
        w.abandon()
        raise
    return tl


@dataclass
class Loaded:
    trace: Trace
    scenario: object
    config: Config
    timeline: Timeline
    divergence: tuple | None   # (step, why) or None
    branches: dict


def _scenario_and_config(tr: Trace, path) -> tuple:
    h = tr.header
    text, cfgd = h.get("scenario_text"), h.get("config")
    if not isinstance(text, str) or not isinstance(cfgd, dict):
        raise TraceError(path, 12, "header lacks the scenario text or the resolved config")
    try:
        base = Program.from_data(h["program"]) if isinstance(h.get("program"), dict) else None
        scn = parse_scenario(text, str(h.get("scenario_file") or "<trace scenario>"), base=base)
        cfg = Config(**{k: cfgd[k] for k in Config().as_dict() if k in cfgd})
    except (ScenarioError, ProgramError, TypeError, KeyError, ValueError) as e:
        raise TraceError(path, 12, f"header scenario or program does not load: {e}") from None
    return scn, cfg


def load(path, verify: bool = True, checkpoint_every: int = 1000, stop=None) -> Loaded:
    """Load a trace and re-execute it with its recorded choices. Divergence (a recorded
    choice that is not enabled, a differing per-event check or checkpoint digest) is
    reported as (first differing step, why), and the timeline stops there."""
    tr = load_trace(path)
    scn, cfg = _scenario_and_config(tr, path)
    eng = Engine(scn, cfg)
    eng.schedule = list(tr.events)
    tl = Timeline(eng, checkpoint_every)
    checks = {}
    ends = {}
    for (step, digest, _snap, _off), ev_n, chk in zip(tr.checkpoints, tr.checkpoint_events, tr.checkpoint_checks):
        ends[step] = digest
        if chk:
            start = step - len(chk) // 2
            for i in range(len(chk) // 2):
                checks[start + i] = int.from_bytes(chk[2 * i:2 * i + 2], "little")
    divergence = []

    def hook(ev):
        tl._hook(ev)
        if divergence:
            return
        i = ev[0]
        want = checks.get(i)
        if want is not None and want != event_check(ev[E_WRITES]):
            divergence.append((i, f"event {i} ({ev[E_ACT]}) wrote different values than when it was recorded"))
        d = ends.get(i + 1)
        if d is not None and d != eng.m.digest():
            divergence.append((i, f"state digest after event {i} differs from the recorded checkpoint"))
    try:
        tl.result = eng.run(max_steps=len(tr.events), stop=(lambda: bool(divergence)) if stop is None else
                            (lambda: bool(divergence) or stop()), hook=hook)
    except RunError as e:
        divergence.append((eng.step, str(e)))
    tl.pos = eng.step
    div = divergence[0] if divergence else None
    if div is None and eng.step < len(tr.events):
        div = (eng.step, f"the re-execution reached '{tl.result.outcome}' after {eng.step} events; "
                         f"the trace has {len(tr.events)}")
    if div is None and tr.footer and tr.footer.get("outcome") not in (None, tl.result.outcome) and eng.step == len(tr.events):
        if not (tr.footer.get("outcome") in ("hang", "ok") and tl.result.outcome == "timeout"):
            div = (eng.step, f"recorded outcome {tr.footer.get('outcome')}, replayed {tl.result.outcome}")
    # branches: re-simulated from their records (deterministic)
    branches = {}
    if div is None:
        for b in tr.branches:
            parent = branches.get(b.get("parent"), tl) if b.get("parent") not in (None, "main") else tl
            sw = b.get("switch") or {}
            try:
                branches[b["name"]] = parent.branch(b["name"], b["fork_step"], b.get("edit"),
                                                    fix=sw.get("fix"), hypervisor=sw.get("hypervisor"),
                                                    overlay=sw.get("overlay"))
            except ValueError as e:
                raise TraceError(path, b.get("offset", 0), f"branch {b['name']!r} does not re-simulate: {e}") from None
    return Loaded(tr, scn, cfg, tl, div, branches)


def outcome_of(loaded: Loaded) -> str:
    """The recorded outcome (footer), else the replayed one."""
    f = loaded.trace.footer
    return (f or {}).get("outcome") or (loaded.timeline.result.outcome if loaded.timeline.result else "unknown")


def save_session(session, path) -> int:
    """Save the session's main recording and its what-if branches as one trace, replacing
    `path` atomically. Branches are stored as records (parent, fork step, edit or switch)
    and re-simulated on load. Returns the number of branches saved."""
    main = session.branches["main"]
    e = main.e
    scn = getattr(session, "scenario", None) or e.scn
    tmp = partial_path(path)
    w = TraceWriter(tmp, header_for(scn, e.cfg))
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
        w.close(main.result.outcome if main.result else "unknown", main.length)
        os.replace(tmp, path)
    except BaseException:
        w.abandon()
        raise
    return n


def _depth(tl) -> int:
    d = 0
    while tl.parent is not None:
        d += 1
        tl = tl.parent
    return d
