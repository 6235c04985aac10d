"""Property tests over random runs: APIC rules, exact reverse/forward replay, hang explanations."""
from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from apic_checker import check_apic, check_events
from hvdbg.core.engine import E_STEP, E_WRITES, Engine
from hvdbg.core.packs import get as get_pack

FIXES = ("none", *get_pack("vp-assist-offline").fixes)
from hvdbg.core.explain import explain_hang
from hvdbg.core.machine import F_IF, F_IRR, F_ISR, F_TPR
from hvdbg.core.scenario import load_scenario

MAX_STEPS = 3000
PROPS = settings(max_examples=30, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


@functools.lru_cache(maxsize=None)
def scenario(name: str):
    return load_scenario(name)


@st.composite
def run_configs(draw, overlays=("uncover-stale", "copy-back", "restore"), hypervisors=("hyperv", "kvm")):
    name = draw(st.sampled_from(["cpu-offline", "cpu-offline-online", "smp"]))
    vcpus = draw(st.integers(2, 6)) if name == "smp" else None
    hv = draw(st.sampled_from(hypervisors))
    overlay = draw(st.sampled_from(overlays)) if hv == "hyperv" else None
    garbage = draw(st.one_of(st.sampled_from(["0xa5", "0x00", "0xff", "0xfe"]),
                             st.integers(0, 2 ** 16).map(lambda n: f"random:{n}")))
    return dict(name=name, vcpus=vcpus, hypervisor=hv, overlay=overlay, garbage=garbage,
                fix=draw(st.sampled_from(FIXES)), seed=draw(st.integers(0, 2 ** 32)))


def make_engine(p: dict, max_steps: int = MAX_STEPS) -> Engine:
    s = scenario(p["name"])
    cfg = s.config(fix=p["fix"], seed=p["seed"], hypervisor=p["hypervisor"], overlay=p.get("overlay"),
                   vcpus=p.get("vcpus"), garbage=p["garbage"], max_steps=max_steps)
    return Engine(s, cfg)


def bad_links(eng: Engine, links) -> list[str]:
    out = []
    for ln in links:
        if ln.loc is None:
            continue
        if not 0 <= ln.step < len(eng.events):
            out.append(f"link {ln.kind!r} at step {ln.step} is outside the journal ({len(eng.events)} events)")
            continue
        ev = eng.events[ln.step]
        if ev[E_STEP] != ln.step:
            out.append(f"event index {ln.step} holds step {ev[E_STEP]}")
        if not any(w[0] == ln.loc for w in ev[E_WRITES]):
            out.append(f"link {ln.kind!r} claims step {ln.step} wrote {eng.L.describe(ln.loc)}, but its writes are "
                       f"{[eng.L.describe(w[0]) for w in ev[E_WRITES]]}: {ln.text}")
    return out


# ---------------------------------------------------------------- APIC rules + explanations

@PROPS
@given(run_configs())
def test_apic_rules_and_explanation_links(p):
    eng = make_engine(p)
    res = eng.run()
    event(f"outcome: {res.outcome}")
    assert res.outcome in ("ok", "hang", "timeout")
    assert res.steps == len(eng.events) == eng.step
    violations = check_apic(eng)
    assert not violations, "\n".join(violations[:20])
    if res.outcome == "hang":
        assert not bad_links(eng, explain_hang(eng))


hang_configs = st.fixed_dictionaries(dict(
    name=st.sampled_from(["cpu-offline", "cpu-offline-online", "smp"]),
    vcpus=st.none(), hypervisor=st.just("hyperv"),
    overlay=st.sampled_from(["uncover-stale", "restore"]),
    garbage=st.just("0xa5"), fix=st.just("none"), seed=st.integers(0, 2 ** 32)))


@PROPS
@given(hang_configs)
def test_explanation_links_point_at_their_writes(p):
    """Configurations where the seed hang is frequent: every located link is backed by the journal."""
    eng = make_engine(p, max_steps=20_000)
    res = eng.run()
    event(f"outcome: {res.outcome}")
    if res.outcome == "hang":
        links = explain_hang(eng)
        assert links
        assert not bad_links(eng, links)
        assert [ln.step for ln in links] == sorted(ln.step for ln in links)


def test_seed_hang_explanation_kinds():
    s = scenario("cpu-offline")
    eng = Engine(s, s.config(fix="none", hypervisor="hyperv"))   # the default seed
    res = eng.run()
    assert res.outcome == "hang", res
    links = explain_hang(eng)
    kinds = {ln.kind for ln in links}
    assert {"skip", "isr", "pending", "source", "disable", "wait"} <= kinds, kinds
    assert not bad_links(eng, links)
    assert not check_apic(eng)
    # causal order of the story: the page is allocated, the overlay disabled, the vector
    # enters ISR, its EOI is skipped
    first = {k: min(ln.step for ln in links if ln.kind == k) for k in kinds}
    assert first["source"] < first["disable"] < first["isr"] < first["skip"]


# ---------------------------------------------------------------- reverse / forward replay

def exact_state(m) -> tuple:
    """Test-local exact copy of the machine state (independent of Machine.digest)."""
    return (tuple(m.S), tuple(sorted((k, bytes(v)) for k, v in m.ram.items())),
            tuple(sorted((k, bytes(v)) for k, v in m.ovl.items())))


def forward(eng: Engine, sample: set[int], key) -> dict[int, object]:
    """Manual forward loop (what run() does, without its hang detection); state keys at sampled
    steps. Also checks at every step that the engine's incremental enabled-action set (used by
    run()) equals the full recomputation."""
    rec = {0: key(eng.m)}
    max_steps = eng.cfg.max_steps
    incremental = getattr(eng, "_enabled_incremental", None)
    last = None
    while eng.step < max_steps and not eng.goal_reached():
        acts = eng.enabled()
        if incremental is not None:
            inc = incremental(last)
            assert inc == acts, f"step {eng.step}: incremental enabled set {inc} != enabled() {acts}"
        if not acts:
            break
        last = eng.execute(eng.pick(acts))[E_WRITES]
        if eng.step in sample:
            rec[eng.step] = key(eng.m)
    rec[eng.step] = key(eng.m)
    return rec


def check_undo_redo(p: dict, extra: set[int], every: int, key) -> None:
    eng = make_engine(p)
    sample = set(range(every, MAX_STEPS + 1, every)) | extra
    rec = forward(eng, sample, key)
    n = len(eng.events)
    assert n == eng.step
    final = rec[n]
    assert all(ev[E_STEP] == i for i, ev in enumerate(eng.events))

    # undo one event at a time back to the initial state
    checked = 0
    for i in range(n - 1, -1, -1):
        eng.m.undo(eng.events[i][E_WRITES])
        if i in rec:
            assert key(eng.m) == rec[i], f"state after undoing back to step {i} differs from the forward run"
            checked += 1
    assert key(eng.m) == rec[0]
    assert checked >= 1
    # the fully undone state is exactly the state of a fresh engine
    assert key(eng.m) == key(make_engine(p).m)

    # redo forwards to the final state
    for i, ev in enumerate(eng.events):
        eng.m.redo(ev[E_WRITES])
        if i + 1 in rec:
            assert key(eng.m) == rec[i + 1], f"state after redoing to step {i + 1} differs from the forward run"
    assert key(eng.m) == final

    # run() (incremental enabled set, quiescence probing by apply+undo) takes the same path
    ref = make_engine(p)
    res = ref.run()
    assert res.steps <= n
    assert ref.events == eng.events[:res.steps]
    if res.steps in rec:
        assert key(ref.m) == rec[res.steps]
    # the manual loop's journal (it goes on past a quiescent hang) obeys the APIC rules too
    violations = check_apic(eng)
    assert not violations, "\n".join(violations[:20])


def digest_key(m):
    z = m.zob
    cached, m._crc = m._crc, {}
    assert m.zob == z, "the page-CRC cache of Machine.zob is stale"
    m._crc = cached
    return (m.digest(), z)


@PROPS
@given(run_configs(overlays=("uncover-stale", "copy-back")), st.sets(st.integers(1, MAX_STEPS), max_size=12),
       st.integers(50, 400))
def test_undo_redo_restore_exact_digests(p, extra, every):
    check_undo_redo(p, extra, every, digest_key)


@settings(PROPS, max_examples=15)
@given(run_configs(overlays=("restore",), hypervisors=("hyperv",)), st.sets(st.integers(1, MAX_STEPS), max_size=12),
       st.integers(50, 400))
def test_undo_redo_restore_overlay_policy(p, extra, every):
    """Same property for overlay=restore (it keeps the saved RAM page as a pseudo overlay under
    a negative key), compared on the digest and on a test-local exact copy of the state."""
    check_undo_redo(p, extra, every, lambda m: (digest_key(m), exact_state(m)))


def test_digest_with_restore_overlay():
    """Regression: Machine.digest() raised OverflowError for overlay=restore, because the saved
    original page lives in Machine.ovl under the key -2-cpu and the key was encoded with
    c.to_bytes(4, 'little') (unsigned)."""
    s = scenario("cpu-offline")
    eng = Engine(s, s.config(overlay="restore", hypervisor="hyperv", seed=0, max_steps=100))
    eng.run()
    assert any(k < 0 for k in eng.m.ovl)      # the saved original page exists
    d = eng.m.digest()
    assert isinstance(d, str)
    # the saved page is part of the digest
    k = min(eng.m.ovl)
    eng.m.ovl[k][0] ^= 1
    assert eng.m.digest() != d


# ---------------------------------------------------------------- the checker itself

class _Tiny:
    """Synthetic one-vCPU layout for checker self-tests: 1 global, block of 16 slots."""
    NG, BLOCK = 1, 16

    def __init__(self, irr=0, isr=0, tpr=0, if_=1):
        self.S = [()] + [0] * self.BLOCK
        self.set(F_IRR, irr), self.set(F_ISR, isr), self.set(F_TPR, tpr), self.set(F_IF, if_)

    def loc(self, f):
        return self.NG + f

    def set(self, f, v):
        self.S[self.loc(f)] = v

    def check(self, events):
        return check_events(events, self.S, self.NG, self.BLOCK, 1)


def _ev(step, act, writes, notes=()):
    return (step, act, act[1], 0, 0, list(writes), tuple(notes))


def test_checker_accepts_a_legal_sequence():
    t = _Tiny()
    irr, isr = t.loc(F_IRR), t.loc(F_ISR)
    evs = [
        _ev(0, ("timer", 0, 0xEC), [(irr, 0, 1 << 0xEC)]),
        _ev(1, ("land", 1, 0, 0xFD), [(0, ((1, 0, 0xFD),), ()), (irr, 1 << 0xEC, 1 << 0xEC | 1 << 0xFD)]),
        _ev(2, ("land", 1, 0, 0xFD), [], [("collapse", 0xFD)]),
        _ev(3, ("deliver", 0, 0xFD), [(irr, 1 << 0xEC | 1 << 0xFD, 1 << 0xEC), (isr, 0, 1 << 0xFD),
                                      (t.loc(F_IF), 1, 0)], [("deliver", 0xFD)]),
        _ev(4, ("op", 0), [(isr, 1 << 0xFD, 0)], [("eoi", 0xFD, False)]),
        _ev(5, ("op", 0), [(t.loc(F_IF), 0, 1)]),
        _ev(6, ("op", 0), [], [("eoi", -1, False)]),
    ]
    assert t.check(evs) == []


@pytest.mark.parametrize("case", ["if0", "not_highest", "ppr_isr", "ppr_tpr", "eoi_not_highest", "eoi_missing",
                                  "no_collapse", "irr_from_op", "low_vector", "bad_old"])
def test_checker_catches_violations(case):
    irr_v = 1 << 0xEC | 1 << 0xFD
    t = _Tiny(irr=irr_v, if_=0 if case == "if0" else 1,
              isr=(1 << 0xF0 if case == "ppr_isr" else 1 << 0x31 | 1 << 0x41 if case.startswith("eoi") else 0),
              tpr=0xF0 if case == "ppr_tpr" else 0)
    irr, isr = t.loc(F_IRR), t.loc(F_ISR)
    pre_isr = t.S[isr]
    if case == "not_highest":
        evs = [_ev(0, ("deliver", 0, 0xEC), [(irr, irr_v, 1 << 0xFD), (isr, 0, 1 << 0xEC)], [("deliver", 0xEC)])]
    elif case == "eoi_not_highest":
        evs = [_ev(0, ("op", 0), [(isr, pre_isr, 1 << 0x41)], [("eoi", 0x31, False)])]
    elif case == "eoi_missing":
        evs = [_ev(0, ("op", 0), [(isr, pre_isr, 1 << 0x31)])]
    elif case == "no_collapse":
        evs = [_ev(0, ("timer", 0, 0xEC), [])]
    elif case == "irr_from_op":
        evs = [_ev(0, ("op", 0), [(irr, irr_v, irr_v | 1 << 0x30)])]
    elif case == "low_vector":
        evs = [_ev(0, ("land", 1, 0, 0x05), [(irr, irr_v, irr_v | 1 << 5)])]
    elif case == "bad_old":
        evs = [_ev(0, ("timer", 0, 0x30), [(irr, 0, irr_v | 1 << 0x30)])]
    else:
        evs = [_ev(0, ("deliver", 0, 0xFD), [(irr, irr_v, 1 << 0xEC), (isr, pre_isr, pre_isr | 1 << 0xFD)],
                   [("deliver", 0xFD)])]
    assert t.check(evs), case


def test_checker_catches_a_mutated_engine(monkeypatch):
    """Sanity check of the checker on real journals: an EOI that clears the lowest ISR bit."""
    from hvdbg.core import engine as engine_mod

    def eoi_lowest(self, c, implied=False):
        b = self.L.base(c)
        isr = self.m.S[b + F_ISR]
        if not isr:
            self.note("eoi", -1, implied)
            return
        v = (isr & -isr).bit_length() - 1
        self.m.set(b + F_ISR, isr & ~(1 << v))
        self.note("eoi", v, implied)

    monkeypatch.setattr(engine_mod.Engine, "apic_eoi", eoi_lowest)
    s = scenario("smp")
    found = []
    for seed in range(5):
        eng = Engine(s, s.config(seed=seed, max_steps=3000))
        eng.run()
        found += check_apic(eng)
    assert any("(b)" in v for v in found)
