"""The engine's fused run loop (Engine._run_free, the hot path of every long run) against its
reference (Engine._run with FUSED off): the same events, outcome, statistics and state, for
random scenarios, models, fixes, seeds and budgets, with and without a journal, a schedule
that runs out part-way, a hook and a stop request."""
from __future__ import annotations

import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvdbg.core import hypervisors
from hvdbg.core.engine import Engine
from hvdbg.core.journal import summarize
from hvdbg.core.scenario import builtin_names, load_scenario

PROPS = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@functools.lru_cache(maxsize=None)
def scenario(name: str):
    return load_scenario(name)


@st.composite
def configs(draw):
    name = draw(st.sampled_from(builtin_names()))
    s = scenario(name)
    over = dict(seed=draw(st.integers(0, 2 ** 32)), max_steps=draw(st.integers(1, 4000)),
                fix=draw(st.sampled_from(("none", *s.pack.fixes))),
                hypervisor=draw(st.sampled_from(hypervisors.names())),
                garbage=draw(st.sampled_from(["0xa5", "0x00", "random:3"])))
    if name in ("smp", "soak"):
        over["vcpus"] = draw(st.integers(2, 7))
    return name, over


def run(name: str, over: dict, fused: bool, journal: bool = True, schedule=(), stop_at=None):
    s = scenario(name)
    eng = Engine(s, s.config(**over), journal=journal)
    eng.FUSED = fused
    eng.schedule = list(schedule)
    seen = []
    stop = (lambda: eng.step >= stop_at) if stop_at is not None else None
    res = eng.run(stop=stop, hook=seen.append)
    return eng, res, seen


def same(a, b) -> None:
    (ea, ra, sa), (eb, rb, sb) = a, b
    assert (ra.outcome, ra.steps, ra.reason) == (rb.outcome, rb.steps, rb.reason)
    assert sa == sb                                   # every event, in order, through the hook
    assert ra.stats == rb.stats and ea.m.digest() == eb.m.digest() and ea.pack_state == eb.pack_state
    if ea.journal:
        assert list(ea.events) == list(eb.events) == sa
        assert ea.events.summaries == eb.events.summaries and ea.events.snaps == eb.events.snaps


@PROPS
@given(configs(), st.booleans())
def test_the_fused_loop_runs_exactly_the_reference_loop(cfg, journal):
    name, over = cfg
    fused = run(name, over, True, journal)
    assert fused[1].steps == len(fused[2])
    same(fused, run(name, over, False, journal))


@PROPS
@given(configs(), st.data())
def test_a_schedule_that_runs_out_then_the_prng_and_a_stop_request(cfg, data):
    """A schedule (the first choices of another seed's run) hands over to the fused loop
    part-way; a stop request ends both loops at the same event."""
    name, over = cfg
    _, _, other = run(name, dict(over, seed=over["seed"] + 1), False, False)
    k = data.draw(st.integers(0, len(other)))
    stop_at = data.draw(st.one_of(st.none(), st.integers(0, over["max_steps"])))
    schedule = [ev.act for ev in other[:k]]
    try:
        ref = run(name, over, False, True, schedule, stop_at)
    except Exception as e:                              # the schedule is not enabled here
        ref = e
    try:
        fused = run(name, over, True, True, schedule, stop_at)
    except Exception as e:
        fused = e
    if isinstance(ref, Exception):
        assert type(fused) is type(ref) and str(fused) == str(ref)
    else:
        same(fused, ref)


def test_a_segment_summary_is_the_same_from_a_list_and_from_an_iterator():
    s = scenario("cpu-offline")
    eng = Engine(s, s.config(max_steps=3000))
    eng.run()
    evs = list(eng.events)
    assert summarize(iter(evs)) == summarize(evs)
    assert summarize(evs).notes and summarize(evs).writes
