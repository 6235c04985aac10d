"""Recording runs to msgpack traces and loading them back (docs/trace-format.md).

A trace stores the header (tool, scenario text, resolved config, program digest, segment
size K) and, per event, its *choice*, where its op ran and a 16-bit check of its writes; the
writes themselves are recomputed by re-executing the engine with the recorded choices (rr's
approach). At every segment boundary (every K events) and at the end, a checkpoint record
holds the exact state digest, the machine snapshot there (compressed), the summary of the
segment that ends there and the run's statistics. So:

* ``load`` re-executes the whole recording and checks every event, digest, snapshot, summary
  and statistic (``replay --verify``, ``run TRACE``);
* ``open_at`` opens it at any step by re-executing only that step's segment from the
  snapshot before it (the TUI, the REPL, scripts, ``show``); other segments are rebuilt when
  someone looks at them, each checked against its recorded checks and end digest.
"""
from __future__ import annotations

import hashlib
import os
import sys
from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import msgpack

from .core import hypervisors
from .core import snapshot as snapshots
from .core.engine import E_ACT, Config, Engine, Result, RunError, act_text, edit_problem
from .core.events import event_check  # noqa: F401  (re-exported: the check a trace stores per event)
from .core.journal import NO_RTPC, SEGMENT_EVENTS, JournalError, Segment, Summary, summarize
from .core.program import Program, ProgramError
from .core.scenario import ScenarioError, check_config_values, parse_scenario
from .core.timeline import Timeline
from .safe import open_partial, output_target, printable
from .trace.columns import ColumnError
from .trace.format import MAGIC, TraceError
from .trace.reader import Trace, load_trace
from .trace.writer import TraceWriter, publish

TOOL = "hvdbg 0.2.0"


def program_digest(scn) -> str:
    return hashlib.blake2b(msgpack.packb(scn.program.to_data(), use_bin_type=True), digest_size=12).hexdigest()


def header_for(scn, cfg: Config, segment: int = SEGMENT_EVENTS) -> dict:
    return {"tool": TOOL, "scenario": scn.name, "scenario_file": scn.source, "scenario_text": scn.text,
            "config": cfg.as_dict(), "program_digest": program_digest(scn), "program": scn.program.to_data(),
            "segment": segment}


def _where(ev) -> int:
    return NO_RTPC if ev[1][0] == "edit" else ev[3] << 16 | ev[4]


class _Recorder:
    """Writes each event (choice, where, check) and, at every segment boundary of the
    engine's journal and at the end, a checkpoint: digest, snapshot, the segment's summary,
    the statistics and pack state there."""

    def __init__(self, w: TraceWriter, eng: Engine):
        self.w, self.e, self.j = w, eng, eng.events
        self.last = 0                      # step of the last checkpoint written

    def event(self, ev: tuple) -> None:
        self.w.event(ev[1], _where(ev), event_check(ev[5]))

    def boundary(self, step: int, snap: tuple, summary: Summary, stats: tuple, digest: str | None = None) -> None:
        if digest is None:
            from .core.machine import Machine
            m = Machine(self.e.L)
            m.restore(snap)
            digest = m.digest()
        self.w.checkpoint(step, digest, snapshots.encode(snap), summary, stats)
        self.last = step

    def hook(self, ev: tuple) -> None:
        """Live recording: called after each event (the live machine is at the next step);
        the journal has just closed a segment when that step is a boundary."""
        self.event(ev)
        step = ev[0] + 1
        j = self.j
        if step % j.K == 0 and step in j.snaps:
            self.boundary(step, j.snaps[step], j.summaries[j.seg_start(step - 1)], j.stats_at[step],
                          self.e.m.digest())

    def finish(self, steps: int, snap: tuple, stats: tuple, digest: str | None = None) -> None:
        """The last checkpoint, at the end of the recording (unless a boundary just wrote it)."""
        if steps != self.last or steps == 0:
            j = self.j
            lo = j.seg_start(steps - 1) if steps else 0
            summ = summarize(j.iter_range(lo, steps))
            self.boundary(steps, snap, summ, stats, digest)


def partial_path(path) -> str:
    return f"{path}.partial"


def record(scn, cfg: Config, path, stop=None, segment: int = SEGMENT_EVENTS) -> Timeline:
    """Run and record. The trace is written as the run goes to PATH.partial (append-only,
    flushed at least every 1,000 events or 100 ms, a checkpoint with a snapshot every
    `segment` events), closed with a footer at the outcome - a hang included - and then
    renamed over PATH atomically, so an existing PATH is replaced only by a complete trace.
    A killed recording leaves PATH.partial, loadable up to the last flush. PATH must be new,
    or a regular file that is an hvdbg trace (a symlink to one is written through); anything
    else is refused before the run starts (safe.output_target)."""
    target = output_target(path, MAGIC)
    eng = Engine(scn, cfg, segment=segment)
    tl = Timeline(eng)
    tmp = partial_path(target)
    w = TraceWriter(open_partial(tmp), header_for(scn, cfg, segment), owns=True)
    rec = _Recorder(w, eng)
    try:
        tl.result = eng.run(stop=stop, hook=rec.hook)
        tl.pos = eng.step
        rec.finish(eng.step, eng.m.snapshot(), (Counter(eng.stats), dict(eng.pack_state)), eng.m.digest())
        w.close(tl.result.outcome, eng.step)
        publish(tmp, target)
    except BaseException:
        w.abandon()
        raise
    return tl


# Outcomes a recording can end with (the footer's "outcome").
OUTCOMES = ("ok", "hang", "timeout", "corruption", "stopped")
HEADER_FIELDS = {"tool": str, "scenario": str, "scenario_file": str, "scenario_text": str, "config": dict,
                 "program_digest": str, "program": dict, "segment": int}
MAX_SEGMENT = 1 << 24


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
    if not 1 <= h["segment"] <= MAX_SEGMENT:
        raise TraceError(path, 12, f"header segment size {h['segment']} is outside 1..{MAX_SEGMENT}")
    return scn, cfg


def _choice_problem(d: tuple, n: int) -> str | None:
    cpus, vecs = d[1:-1] if d[0] != "op" else d[1:], d[-1:] if d[0] != "op" else ()
    if not all(0 <= c < n for c in cpus) or not all(16 <= v <= 255 for v in vecs):
        return f"recorded choice '{act_text(d)}' is not an action of this {n}-vCPU machine"
    return None


def _where_bounds(scn, cfg: Config) -> tuple[int, int]:
    routines = scn.program.select(cfg.fix)
    nops = [len(routines[r].ops) for r in sorted(routines)]
    return len(nops), max(nops, default=0)


def _check_content(tr: Trace, scn, cfg: Config, path) -> None:
    """Every number in the records, against the model: recorded choices name existing vCPUs
    and vectors 16..255, where each op ran names an existing routine and a pc no listing
    routine exceeds (each op exactly when its segment is re-executed), branch edits are
    in range (bit < 8, 64-bit values, ...), branch switches name known fixes / hypervisors /
    policies, the footer's outcome is one the engine produces, and there is a checkpoint -
    with its snapshot, summary and statistics - at every segment boundary and at the end."""
    n = cfg.vcpus
    if tr.columns is not None:      # read lazily: each frame is checked the same way when inflated
        bounds = _where_bounds(scn, cfg)
        tr.columns.check_code = lambda d: _choice_problem(d, n)
        tr.columns.check_where = lambda w: _where_out_of_range(w, *bounds)
    else:
        for d in tr.events.distinct():
            why = _choice_problem(d, n)
            if why:
                raise TraceError(path, 12, why)
        bad = _where_out_of_range(tr.where, *_where_bounds(scn, cfg))
        if bad is not None:
            raise TraceError(path, 12, f"a recorded event ran routine {bad >> 16} op {bad & 0xFFFF}, which this "
                                       "listing does not have")
    K = tr.header["segment"]
    total = len(tr.events)
    for i, (step, _d, snap, off) in enumerate(tr.checkpoints):
        if step % K and step != total:
            raise TraceError(path, off, f"checkpoint at step {step} is neither a segment boundary (every {K} "
                                        f"events) nor the end")
        if snap is None or tr.checkpoint_summaries[i] is None or tr.checkpoint_stats[i] is None:
            raise TraceError(path, off, f"checkpoint at step {step} lacks its snapshot, summary or statistics")
    want = list(range(K, total + 1, K))
    have = [c[0] for c in tr.checkpoints if c[0] % K == 0 and c[0] > 0]
    if have != want[:len(have)] or (tr.footer is not None and have != want):
        missing = next((x for x in want if x not in have), None)
        raise TraceError(path, tr.footer_offset or 12, f"no checkpoint at segment boundary {missing}")
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
    if tr.footer is not None and len(tr.events) and (not tr.checkpoints or tr.checkpoints[-1][0] != len(tr.events)):
        raise TraceError(path, tr.footer_offset, "the last checkpoint does not cover the last event: "
                                                 "not every event can be verified")


def _where_out_of_range(where: array, routines: int, max_pc: int) -> int | None:
    """A value of the where column (routine << 16 | pc) naming no routine or a pc past every
    routine's end, or None. Checked a byte lane at a time (bytes.translate runs in C: 10M
    events in ~0.1 s where a Python set of them took 0.6-1 s); the exact per-routine bound is
    checked when a segment is re-executed (Journal._check_rebuilt compares every op)."""
    if not where:
        return None
    raw = where.tobytes()
    if sys.byteorder != "little":
        a = array("I", where)
        a.byteswap()
        raw = a.tobytes()
    ok = _lane_le(raw, 2, routines - 1) and _lane_le(raw, 0, max_pc)
    if ok:
        return None
    return next(v for v in where if v >> 16 >= routines or v & 0xFFFF > max_pc)


def _lane_le(raw: bytes, at: int, bound: int) -> bool:
    """May every 16-bit little-endian field at byte `at` of each 4-byte element be <= bound?
    False only when some field is certainly larger (the high byte above bound's high byte, or
    for bounds < 256 a nonzero high byte or a low byte above it)."""
    if bound < 0:
        return not raw
    hi = raw[at + 1::4].translate(None, bytes(range(min(bound >> 8, 255) + 1)))
    if hi:
        return False
    return bound >= 255 or not raw[at::4].translate(None, bytes(range(bound + 1)))


def open_trace(path, max_bytes: int | None = None, lazy: bool = False) -> tuple:
    """Read and validate a trace without executing it: (trace, scenario, config). lazy: the
    events frames' columns are inflated and checked when read (Trace.columns)."""
    tr = load_trace(path, max_bytes, lazy=lazy)
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


def load(path, verify: bool = True, stop=None, journal: bool = True, upto: int | None = None,
         branches: bool = True) -> Loaded:
    """Load a trace and re-execute all of it with its recorded choices (docs/security.md
    says what this proves). Divergence - a recorded choice that is not enabled, an op that
    ran elsewhere, a differing per-event check, checkpoint digest, snapshot, segment summary
    or statistics, an outcome reached before the last event, or a final state that is not the
    recorded outcome - is reported as (first differing step, why) and the re-execution stops
    there. journal=False keeps no journal (verify: memory flat in the number of events);
    upto=N stops after N events."""
    tr, scn, cfg = open_trace(path)
    K = tr.header["segment"]
    eng = Engine(scn, cfg, journal=journal, segment=K)
    eng.schedule = tr.events
    eng.schedule_ends_run = True
    tl = Timeline(eng) if journal else None
    checks = tr.checks
    n_checked = len(checks) // 2
    unpack = memoryview(checks).cast("H") if checks and sys.byteorder == "little" else None
    where = tr.where
    ckpts = {c[0]: i for i, c in enumerate(tr.checkpoints)}
    divergence: list = []
    seg_writes: set = set()
    seg_notes: set = set()
    from .core.journal import note_key, summary_key

    def hook(ev):
        if divergence:
            return
        i = ev[0]
        if i < n_checked:
            want = unpack[i] if unpack is not None else int.from_bytes(checks[2 * i:2 * i + 2], "little")
            if want != event_check(ev[5]):
                divergence.append((i, f"event {i} ({act_text(ev[E_ACT])}) wrote different values than when it was recorded"))
                return
            if where[i] != _where(ev):
                divergence.append((i, f"event {i} ({act_text(ev[E_ACT])}) ran a different op than was recorded"))
                return
        for loc, _o, _n in ev[5]:
            seg_writes.add(loc if loc.__class__ is int else summary_key(loc))
        for nt in ev[6]:
            seg_notes.add(note_key(nt))
        k = ckpts.get(i + 1)
        if k is not None:
            why = _check_checkpoint(tr, k, eng, seg_writes, seg_notes)
            if why:
                divergence.append((i, why))
            seg_writes.clear()
            seg_notes.clear()
    if 0 in ckpts:                                  # a checkpoint at step 0 (an empty recording)
        why = _check_checkpoint(tr, ckpts[0], eng, seg_writes, seg_notes)
        if why:
            divergence.append((0, why))
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
    _as_recorded(tr, res, div)
    loaded = Loaded(tr, scn, cfg, tl, div, {}, engine=eng,
                    status="diverged" if div else ("salvaged" if tr.salvage else "identical"),
                    verified=min(div[0] if div else eng.step, n_checked),
                    program_note=builtin_program_note(tr, scn))
    if div is None and tl is not None and branches:
        loaded.branches = _load_branches(tr, tl, path)
    return loaded


class _FileSnapshots(Mapping):
    """Segment-start snapshots read from a trace, decoded and checked (core/snapshot.py, and
    against the digest recorded beside each) the first time a segment needs one."""

    def __init__(self, eng: Engine, blobs: dict, first: tuple):
        self.e, self.blobs = eng, blobs
        self.done = {0: first}

    def __getitem__(self, step: int) -> tuple:
        snap = self.done.get(step)
        if snap is None:
            blob, digest = self.blobs[step]
            try:
                snap = snapshots.decode(blob, self.e, digest)
            except snapshots.SnapshotError as e:
                raise JournalError(step, f"the snapshot at step {step}: {e}") from None
            self.done[step] = snap
        return snap

    def __contains__(self, step) -> bool:
        return step in self.done or step in self.blobs

    def __iter__(self):
        return iter(sorted(set(self.done) | set(self.blobs)))

    def __len__(self) -> int:
        return len(set(self.done) | set(self.blobs))

    def __setitem__(self, step: int, snap: tuple) -> None:
        self.done[step] = snap


def open_at(path, at: int | None = None, cache_bytes: int | None = None) -> Loaded:
    """Open a trace without re-executing all of it: the header and records are read and
    checked against the model (open_trace), the recorded columns become the timeline's
    journal, and only the segment holding step `at` (default: the last step) is re-executed
    from the snapshot before it - checked event by event against the recorded checks and
    ops, and against the digest at its end. Other segments are rebuilt (and checked) when
    someone looks at them; a check that fails raises JournalError naming the step.
    Loaded.status is "opened" (or "salvaged"); `hvdbg replay --verify` re-executes everything."""
    tr, scn, cfg = open_trace(path, lazy=True)
    K = tr.header["segment"]
    n = len(tr.events)
    target = n if at is None else max(0, min(at, n))
    try:                            # the columns of the segment opened are checked now (exit 2)
        tr.columns.ensure(max(0, target - K), min(n, target + K), strict=True)
    except ColumnError as e:
        raise TraceError(path, e.offset, e.why) from None
    opts = {"segment": K}
    if cache_bytes:
        opts["cache_bytes"] = cache_bytes
    eng = Engine(scn, cfg, **opts)
    j = eng.events
    j.fill_lazily(tr.columns)
    j.head = Segment(n, [])
    blobs = {}
    for i, (step, digest, blob, _off) in enumerate(tr.checkpoints):
        j.digests[step] = digest
        if step % K == 0 and blob is not None:
            blobs[step] = (blob, digest)
            j.stats_at[step] = (Counter(tr.checkpoint_stats[i][0]), dict(tr.checkpoint_stats[i][1]))
        summ = tr.checkpoint_summaries[i]
        if summ is not None and step > 0:
            j.summaries[j.seg_start(step - 1)] = Summary(*summ)
    j.snaps = _FileSnapshots(eng, blobs, j.snaps[0])
    eng._app = j.head.events.append
    eng._jb = j.next_boundary()
    tl = Timeline(eng)
    divergence = None
    try:
        tl.goto(target)
        if target == n:
            divergence = _claim_problem(tr, eng, cfg)
    except JournalError as e:
        divergence = (e.step, str(e))
    last = next((i for i in range(len(tr.checkpoints) - 1, -1, -1) if tr.checkpoint_stats[i] is not None), None)
    if last is not None:
        eng.stats, eng.pack_state = Counter(tr.checkpoint_stats[last][0]), dict(tr.checkpoint_stats[last][1])
    if tr.footer is not None:
        res = Result(tr.footer["outcome"], n, f"as recorded ({tr.footer['outcome']})", dict(eng.stats))
    else:
        res = Result("stopped", n, "the recording ends here (salvaged)", dict(eng.stats))
    eng._last_result = res
    tl.result = res
    loaded = Loaded(tr, scn, cfg, tl, divergence, {}, engine=eng,
                    status="diverged" if divergence else "salvaged" if tr.salvage else "opened",
                    verified=0 if divergence else j.built_events(), program_note=builtin_program_note(tr, scn))
    if divergence is None:
        try:
            loaded.branches = _load_branches(tr, tl, path)
        except JournalError as e:
            loaded.divergence, loaded.status = (e.step, str(e)), "diverged"
    return loaded


def _claim_problem(tr: Trace, eng: Engine, cfg: Config) -> tuple | None:
    """Does the final state (the engine is at the last step) bear out the footer's outcome?
    The checks a lazily opened trace can make without re-executing the history: ok - the goal
    holds; corruption - the last event violated an invariant; timeout - the step budget is
    used up; hang - the hang definition holds on the final state."""
    if tr.footer is None:
        return None
    n = len(tr.events)
    want = tr.footer["outcome"]
    if want == "ok" and not eng.goal_reached():
        return (n, "the recording claims the goal was reached, but it does not hold in the final state")
    if want == "corruption" and (n == 0 or not any(nt[0] == "violation" for nt in eng.events[n - 1].notes)):
        return (n, "the recording claims a corruption, but its last event violated no invariant")
    if want == "timeout" and n != cfg.max_steps:
        return (n, f"the recording claims a timeout after {n} events, but the step budget is {cfg.max_steps}")
    if want == "hang":
        eng.invalidate()
        if not (eng.quiescent(eng.enabled()) or eng.unreachable() is True):
            return (n, "the recording ends with a hang, but in the final state the goal is still reachable")
    return None


def _as_recorded(tr: Trace, res, div) -> None:
    if res.outcome == "end":
        if div is None and tr.footer is not None:
            res.outcome, res.reason = tr.footer["outcome"], f"as recorded ({tr.footer['outcome']}), confirmed on the " \
                                                            "re-executed final state"
        else:
            res.outcome, res.reason = "stopped", "the recording ends here"


def _check_checkpoint(tr: Trace, k: int, eng: Engine, writes: set, notes: set) -> str | None:
    """Why checkpoint k disagrees with the re-executed state after its step, or None: its digest,
    its snapshot (decoded and checked like any file data), the summary of the segment that
    ends there and the statistics."""
    step, digest, blob, _off = tr.checkpoints[k]
    if digest != eng.m.digest():
        return f"state digest after event {step - 1} differs from the recorded checkpoint"
    if blob is not None:
        try:
            snapshots.decode(blob, eng, digest)
        except snapshots.SnapshotError as e:
            return f"the snapshot at step {step} does not hold the re-executed state: {e}"
    summ = tr.checkpoint_summaries[k]
    if summ is not None and (summ[0] != writes or summ[1] != notes):
        return f"the summary of the segment ending at step {step} differs from the re-executed events"
    st = tr.checkpoint_stats[k]
    if st is not None and (st[0] != dict(eng.stats) or st[1] != eng.pack_state):
        return f"the statistics recorded at step {step} differ from the re-executed run's"
    return None


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
    `path` atomically. The main branch's events are written from its journal (segments not in
    memory are rebuilt on the way), with a checkpoint at every segment boundary; branches are
    stored as records (parent, fork step, edit or switch) and re-simulated on load. Returns
    the number of branches saved."""
    main = session.branches["main"]
    e = main.e
    j = e.events
    scn = getattr(session, "scenario", None) or e.scn
    target = output_target(path, MAGIC)
    tmp = partial_path(target)
    w = TraceWriter(open_partial(tmp), header_for(scn, e.cfg, j.K), owns=True)
    rec = _Recorder(w, e)
    n = main.length
    try:
        for lo, hi, start in j.segments_between(0, n):
            for ev in j.iter_range(lo, hi):
                rec.event(ev)
            if hi % j.K == 0 and hi in j.snaps and hi != n:
                rec.boundary(hi, j.snaps[hi], j.summary_of(start) or summarize(j.iter_range(start, hi)),
                             j.stats_at[hi])
        snap = main.snapshot_at(n)
        s0, (stats, pstate) = j.stats_floor(n)
        if s0 < n:                                   # statistics at the end: the last segment's events on top
            from .core.engine import _copy_state
            scratch = e.scratch(main.machine_at(s0), s0)
            scratch.stats, scratch.pack_state = Counter(stats), _copy_state(pstate)
            for ev in j.iter_range(s0, n):
                scratch._account(ev)
            stats, pstate = scratch.stats, scratch.pack_state
        rec.finish(n, snap, (Counter(stats), dict(pstate)))
        count = 0
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
            count += 1
        out = main.result.outcome if main.result and main.result.outcome in OUTCOMES else "stopped"
        w.close(out, n)
        publish(tmp, target)
    except BaseException:
        w.abandon()
        try:                        # an unfinished save is of no use: the partial file is ours, remove it
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return count


def _depth(tl) -> int:
    d = 0
    while tl.parent is not None:
        d += 1
        tl = tl.parent
    return d
