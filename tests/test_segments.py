"""The segmented journal and segmented traces (issue 10): every time-travel property holds
across segment boundaries, with segments evicted and rebuilt, and on a trace opened at any
step without re-executing its history."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvdbg.core.defs import VECTORS
from hvdbg.core.engine import Engine
from hvdbg.core.explain import explain
from hvdbg.core.journal import BYTES_PER_BUILT_EVENT, JournalError
from hvdbg.core.machine import F_ISR
from hvdbg.core.msr import MSRS
from hvdbg.core.scenario import load_scenario
from hvdbg.core.timeline import Timeline
from hvdbg.recording import load, open_at, record

SETTINGS = settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
_SCN: dict = {}
_FRESH: dict = {}


def scn(name):
    if name not in _SCN:
        _SCN[name] = load_scenario(name)
    return _SCN[name]


def fresh(name, k, **over):
    """Digest and the event list of a fresh journaled run to step k (cached per run)."""
    key = (name, tuple(sorted(over.items())))
    if key not in _FRESH:
        s = scn(name)
        e = Engine(s, s.config(**over))
        e.run()
        _FRESH[key] = e
    e = _FRESH[key]
    tl = Timeline(e)
    tl.pos = e.step
    tl.goto(k)
    return e.m.digest()


def tiny(name="cpu-offline", K=37, segments=2, **over) -> Timeline:
    """A recording in segments of K events with room for only `segments` built segments."""
    s = scn(name)
    return Timeline.record(s, s.config(**over), checkpoint_every=K,
                           cache_bytes=segments * K * BYTES_PER_BUILT_EVENT)


configs = st.fixed_dictionaries(dict(
    name=st.sampled_from(["cpu-offline", "smp", "cpu-offline-online", "kexec", "hibernation-resume"]),
    seed=st.integers(0, 10_000),
    K=st.integers(5, 300),
))


@SETTINGS
@given(configs, st.data())
def test_goto_equals_a_fresh_run_with_segments_evicted(cfg, data):
    tl = tiny(cfg["name"], cfg["K"], seed=cfg["seed"], max_steps=2000)
    j = tl.journal
    for _ in range(6):
        k = data.draw(st.integers(0, tl.length))
        tl.goto(k)
        assert tl.e.m.digest() == fresh(cfg["name"], k, seed=cfg["seed"], max_steps=2000)
        assert len(j.cache) <= 2                       # the budget holds: at most 2 built segments


def test_segments_are_evicted_and_rebuilt_under_the_budget():
    tl = tiny("cpu-offline", 50)
    j = tl.journal
    assert len(j.cache) == 2 and j.builds == 0         # recording: all but the last two evicted
    tl.goto(25)
    assert j.builds == 1 and j.is_built(0)
    tl.goto(725)
    tl.goto(1025)
    assert j.builds == 3 and not j.is_built(0)         # the least recently used went
    tl.goto(1)
    assert j.builds == 4
    assert tl.e.m.digest() == fresh("cpu-offline", 1)


@SETTINGS
@given(configs, st.data())
def test_reverse_steps_across_boundaries_restore_every_state(cfg, data):
    tl = tiny(cfg["name"], cfg["K"], seed=cfg["seed"], max_steps=1200)
    start = data.draw(st.integers(0, tl.length))
    n = data.draw(st.integers(0, min(3 * cfg["K"] + 5, tl.length - start)))
    tl.goto(start)
    seen = [tl.e.m.digest()]
    for _ in range(n):
        tl.event(1)
        seen.append(tl.e.m.digest())
    for i in range(n, 0, -1):
        tl.event(-1)
        assert tl.e.m.digest() == seen[i - 1]


@SETTINGS
@given(configs)
def test_rebuilt_events_are_the_recorded_events(cfg):
    s = scn(cfg["name"])
    ref = Engine(s, s.config(seed=cfg["seed"], max_steps=1500))
    ref.run()
    want = list(ref.events)
    tl = tiny(cfg["name"], cfg["K"], seed=cfg["seed"], max_steps=1500)
    assert list(tl.journal) == want                    # every segment rebuilt on the way: same events
    assert list(reversed(tl.journal)) == want[::-1]
    assert tl.journal.builds >= (len(want) - 1) // cfg["K"] - 2


@SETTINGS
@given(configs, st.data())
def test_last_write_equals_a_scan_of_the_events(cfg, data):
    tl = tiny(cfg["name"], cfg["K"], seed=cfg["seed"], max_steps=1500)
    evs = list(tl.journal)
    e = tl.e
    slots = [e.bases[c] + off for c in range(e.n) for off in (F_ISR, e.L.msr_off[MSRS["HV_X64_MSR_VP_ASSIST_PAGE"]])]
    slots += [0, e.L.gindex["alloc_next"]]
    for _ in range(8):
        before = data.draw(st.integers(0, tl.length))
        loc = data.draw(st.sampled_from(slots + [("mem", -1, 0x10001000), ("mem", -1, 0x10000004),
                                                 ("own", 0x10001)]))
        got = tl.last_write(loc, before)
        want = None
        for ev in evs[:before]:
            for w in ev.writes:
                key = w[0]
                if isinstance(loc, tuple) and loc[0] == "mem":
                    space, addr = loc[1], loc[2]
                    hit = isinstance(key, tuple) and ((key[0] == "m" and key[1] == space and key[2] <= addr <
                                                       key[2] + len(w[2])) or (key[0] == "pg" and key[1] == addr >> 12))
                else:
                    hit = key == loc
                if hit:
                    want = ev.step
        assert got == want, (loc, before)


@SETTINGS
@given(configs, st.data())
def test_breakpoint_searches_skip_only_segments_that_cannot_match(cfg, data):
    """continue / reverse-continue with pc, msr, vector and watch breakpoints stop where a
    plain scan of every event says they should, whether or not segments were skipped."""
    tl = tiny(cfg["name"], cfg["K"], seed=cfg["seed"], max_steps=1500)
    evs = list(tl.journal)
    kind = data.draw(st.sampled_from(["pc", "msr", "vector", "slot", "note"]))
    if kind == "pc":
        rt = data.draw(st.sampled_from(sorted({ev.rt for ev in evs if ev.act[0] == "op"})))
        b = tl.add_break("pc", rt, 0)
    elif kind == "msr":
        b = tl.add_break("msr", MSRS["HV_X64_MSR_VP_ASSIST_PAGE"], "wr", None)
    elif kind == "vector":
        b = tl.add_break("vector", "deliver", VECTORS["RESCHEDULE"])
    elif kind == "slot":
        b = tl.watch_irr(1, VECTORS["RESCHEDULE"], isr=True)
    else:
        b = tl.add_break("note", "transition", None)
    forward = data.draw(st.booleans())
    pos = data.draw(st.integers(0, tl.length))
    tl.goto(pos)
    targets = [(ev.step if b.before else ev.step + 1) for ev in evs if b.matches(tl, ev)]
    want = next((t for t in targets if t > pos), None) if forward else next((t for t in reversed(targets) if t < pos), None)
    stop = tl.continue_() if forward else tl.reverse_continue()
    if want is None:
        assert stop.brk is None and tl.pos == (tl.length if forward else 0)
    else:
        assert stop.brk is b and tl.pos == want


@SETTINGS
@given(configs, st.data())
def test_a_branch_over_an_evicting_parent_never_changes_it(cfg, data):
    tl = tiny(cfg["name"], cfg["K"], seed=cfg["seed"], max_steps=1500)
    before = list(tl.journal)
    at = data.draw(st.integers(0, tl.length))
    child = tl.branch("b", at, ("edit", "inject", 1, VECTORS["CALL_FUNCTION"]))
    assert list(tl.journal) == before
    assert list(child.journal)[:at] == before[:at]
    k = data.draw(st.integers(at, child.length))
    child.goto(k)
    # the branch's state at k equals a fresh branch-free replay of its own events
    m = tl.machine_at(at)
    for ev in list(child.journal)[at:k]:
        m.redo(ev.writes)
    assert child.e.m.digest() == m.digest()


def test_branches_stats_come_from_the_segment_floor():
    tl = tiny("cpu-offline", 50)
    for at in (0, 49, 50, 51, 777, 1400):     # (near the end a branch re-detects the hang later)
        child = tl.branch(f"s{at}", at)
        assert child.e.stats == tl.e.stats and child.e.pack_state == tl.e.pack_state


def test_explanations_agree_between_a_live_and_an_evicting_recording():
    full = Timeline.record(scn("cpu-offline"), scn("cpu-offline").config())
    small = tiny("cpu-offline", 40)
    assert [(lk.step, lk.text) for lk in explain(full.e, "hang")] == \
        [(lk.step, lk.text) for lk in explain(small.e, "hang")]


# ---------------------------------------------------------------- traces opened at any step
@pytest.fixture(scope="module")
def seg_trace(tmp_path_factory):
    f = tmp_path_factory.mktemp("seg") / "seed.hvt"
    record(scn("cpu-offline"), scn("cpu-offline").config(), f, segment=64)
    return f


def test_a_segmented_trace_verifies_and_opens_at_every_boundary_and_between(seg_trace):
    assert load(seg_trace, journal=False).status == "identical"
    n = 1475
    for at in (0, 1, 63, 64, 65, 640, 1407, 1408, 1474, n):
        o = open_at(seg_trace, at=at)
        assert o.status == "opened" and o.divergence is None
        assert o.timeline.e.m.digest() == fresh("cpu-offline", at), at
        assert o.timeline.journal.builds <= 1          # one segment re-executed, at most


def test_an_opened_trace_travels_and_explains_like_the_live_run(seg_trace):
    o = open_at(seg_trace, cache_bytes=2 * 64 * BYTES_PER_BUILT_EVENT)
    tl = o.timeline
    live = Timeline.record(scn("cpu-offline"), scn("cpu-offline").config())
    assert o.result.outcome == "hang"
    assert [(lk.step, lk.text) for lk in explain(tl.e, "hang")] == [(lk.step, lk.text) for lk in explain(live.e, "hang")]
    rng = random.Random(1)
    for _ in range(20):
        k = rng.randrange(0, tl.length + 1)
        tl.goto(k)
        assert tl.e.m.digest() == fresh("cpu-offline", k)
    tl.goto(0)
    tl.add_break("vector", "skip", None)
    assert tl.continue_().brk is not None and tl.pos == 1040


def test_a_segment_that_does_not_re_execute_is_named_and_leaves_the_timeline_alone(seg_trace, tmp_path):
    """A check of one event in the middle is corrupted (CRC kept valid by rewriting): opening
    at the end is fine, travelling into that segment stops with its step, the position and
    the machine are unchanged."""
    import tracecraft as TC
    from hvdbg.trace import load_trace
    tr = load_trace(seg_trace)
    bad = bytearray(tr.checks)
    bad[2 * 700] ^= 0xFF
    tr.checks = bad
    f = tmp_path / "bad.hvt"
    TC.rewrite(tr, f)
    o = open_at(f)
    assert o.divergence is None
    tl = o.timeline
    d0, p0 = tl.e.m.digest(), tl.pos
    with pytest.raises(JournalError) as ei:
        tl.goto(650)
    assert ei.value.step == 700
    assert tl.pos == p0 and tl.e.m.digest() == d0
    assert load(f, journal=False).divergence[0] == 700


def test_an_opened_trace_saves_back_to_an_identical_trace(seg_trace, tmp_path):
    from hvdbg.commands import Session
    from hvdbg.recording import save_session
    s = Session.open(str(seg_trace))
    s.execute("goto 1000")
    s.execute("flip 0x10001000 0")
    f = tmp_path / "again.hvt"
    save_session(s, f)
    a, b = load(seg_trace, journal=False), load(f, journal=False)
    assert a.status == b.status == "identical"
    assert list(a.trace.events) == list(b.trace.events) and a.trace.checks == b.trace.checks
    assert [c[:2] for c in a.trace.checkpoints] == [c[:2] for c in b.trace.checkpoints]
    assert len(b.trace.branches) == 1


# ---------------------------------------------------------------- snapshots from files
hostile = st.one_of(st.sampled_from([0, 1, 2, 3, 16, 48, 255, 256, 2 ** 63, 2 ** 64 - 1, 2 ** 64, -1, 2 ** 255, 2 ** 256,
                                     (), ((0, 1, 2),), ((0, 1, 0x30),), (1, 2, 3, 0, 0, 0, 0, 0, 5),
                                     ((1, 2, 3, 0, 0, 0, 0, 0, 5),), ((0, 1, 2), (0, 3, 4)), b"\0" * 33]),
                    st.integers(-2 ** 70, 2 ** 70),
                    st.none(), st.booleans(), st.text(max_size=3), st.binary(max_size=40),
                    st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 40)),
                    st.lists(st.tuples(st.integers(-1, 4), st.integers(-1, 4), st.integers(0, 300)), max_size=3)
                    .map(tuple))


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["cpu-offline", "kexec", "hibernation-resume", "kvm-hibernation-resume"]),
       st.integers(0, 1500), st.lists(st.tuples(st.integers(0, 10 ** 6), hostile), min_size=1, max_size=4),
       st.integers(0, 3))
def test_a_snapshot_the_checker_accepts_runs_without_failing(name, at, edits, pages):
    """Whatever a file puts in a snapshot, decode() either refuses it with a reason or gives
    a state the engine runs from (300 events) without an exception."""
    import msgpack
    import zlib

    from hvdbg.core import snapshot as snapshots
    from hvdbg.core.machine import Machine
    s = scn(name)
    e = Engine(s, s.config(max_steps=at))
    e.run()
    data = list(msgpack.unpackb(zlib.decompress(snapshots.encode(e.m.snapshot())), raw=False, use_list=True))
    slots = data[0]
    for idx, v in edits:
        slots[idx % len(slots)] = list(v) if isinstance(v, tuple) else v
    if pages == 1 and data[1]:
        data[1][0][1] = data[1][0][1][:100]            # a short page
    elif pages == 2:
        data[2].append([e.n + 5, b"\0" * 4096])       # an overlay of a vCPU that does not exist
    elif pages == 3:
        data[3].append([1, "x" * 100, "purpose", 0])  # an owner with a wrong generation
    try:
        blob = zlib.compress(msgpack.packb(data, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return
    try:
        snap = snapshots.decode(blob, e)
    except snapshots.SnapshotError as err:
        assert str(err) and "\n" not in str(err)
        return
    m = Machine(e.L)
    m.restore(snap)
    run = e.scratch(m, at)
    run.cfg.max_steps = at + 300
    run.run(max_steps=at + 300)                       # must not raise
    m.digest()


def test_snapshots_round_trip_and_are_small():
    from hvdbg.core import snapshot as snapshots
    for name in ("soak", "kexec", "hibernation-resume", "kvm-hibernation-resume"):
        s = scn(name)
        e = Engine(s, s.config(max_steps=3000))
        e.run()
        e.set_irr(1, 255)                              # a 256-bit IRR with the top vector
        snap = e.m.snapshot()
        blob = snapshots.encode(snap)
        assert snapshots.decode(blob, e, e.m.digest()) == snap
        assert len(blob) < 8192, (name, len(blob))


# ---------------------------------------------------------------- columns read lazily
@SETTINGS
@given(K=st.integers(5, 200), at=st.integers(0, 1475), reads=st.lists(st.integers(0, 1474), max_size=30))
def test_lazily_read_columns_are_the_eagerly_read_ones(tmp_path_factory, K, at, reads):
    """open_at inflates only the frames around the step it opens; whatever is read later,
    one event or all of them, is what a whole read of the file gives."""
    from hvdbg.trace import load_trace
    f = tmp_path_factory.mktemp("lazy") / "t.hvt"
    record(scn("cpu-offline"), scn("cpu-offline").config(), f, segment=K)
    eager = load_trace(f)
    o = open_at(f, at=at)
    j = o.timeline.journal
    cols = o.trace.columns
    assert cols is not None and sum(cols.loaded) <= len(cols.frames)
    if len(cols.frames) > 8:
        assert not cols.full                        # the rest of the history is still compressed
    assert o.timeline.e.m.digest() == fresh("cpu-offline", min(at, len(eager.events)))
    for i in reads:
        assert j.act(i) == eager.events[i] and j.where(i) == divmod(eager.where[i], 1 << 16)
    assert j.codes == eager.events.codes and j.rtpc == eager.where and j.checks == eager.checks
    assert cols.full and j.lazy is None


def test_an_invalid_frame_is_refused_where_it_is_read(seg_trace, tmp_path):
    """A where value no listing has, written into one events frame with valid CRCs: `info`
    and `replay` (which read every frame) refuse the file naming the frame's byte offset; a
    trace opened elsewhere works until a segment needs that frame, and then names it."""
    import tracecraft as TC
    from hvdbg.trace import load_trace
    tr = load_trace(seg_trace)
    tr.where[700] = 0xFFF0 << 16
    f = tmp_path / "bad.hvt"
    TC.rewrite(tr, f)
    err = one_line(hv("info", f))
    assert "byte" in err and "routine 65520" in err, err
    assert "routine 65520" in one_line(hv("replay", "--verify", f))
    assert hv("show", f, "--step", "100").returncode == 0
    assert "routine 65520" in one_line(hv("show", f, "--step", "700"))
    o = open_at(f, at=100)
    assert o.divergence is None
    tl = o.timeline
    d0 = tl.e.m.digest()
    with pytest.raises(JournalError) as ei:
        tl.goto(702)                               # re-executes 640..702 from the snapshot at 640
    assert "byte" in str(ei.value) and "routine 65520" in str(ei.value) and ei.value.step <= 700
    assert tl.pos == 100 and tl.e.m.digest() == d0


def hv(*args):
    import os
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "hvdbg", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, XDG_STATE_HOME="/tmp/hvdbg-test-state"))


def one_line(p, code=2):
    assert p.returncode == code, (p.returncode, p.stdout[-300:], p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_every_lazily_read_frame_checks_its_choices_against_the_model(seg_trace, tmp_path):
    """The same choice of a vCPU this machine does not have, in two frames: both are refused
    when read (the first refusal must not leave the choice accepted for the second)."""
    import tracecraft as TC
    from hvdbg.trace import load_trace
    tr = load_trace(seg_trace)
    acts = list(tr.events)
    acts[200] = acts[900] = ("op", 9)
    f = tmp_path / "bad.hvt"
    TC.rewrite(tr, f, acts=acts)
    cols = open_at(f, at=1400).trace.columns
    first, second = cols.damage(200, 201), cols.damage(900, 901)
    assert first is not None and "cpu9" in first.why and "2-vCPU" in first.why
    assert second is not None and "cpu9" in second.why
