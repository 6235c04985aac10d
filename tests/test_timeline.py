"""Time travel over the journal: reverse-step, goto, breakpoints, last_write, branches."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvdbg.core.defs import VECTORS
from hvdbg.core.msr import MSRS
from hvdbg.core.engine import E_ACT, E_WRITES, Engine
from hvdbg.core.explain import explain, explain_hang
from hvdbg.core.machine import F_ISR
from hvdbg.core.scenario import load_scenario
from hvdbg.core.timeline import Timeline

SETTINGS = settings(max_examples=15, deadline=None, database=None)
_SCN = {}


def scn(name):
    if name not in _SCN:
        _SCN[name] = load_scenario(name)
    return _SCN[name]


def record(name="cpu-offline", K=100, **over):
    s = scn(name)
    return Timeline.record(s, s.config(**over), checkpoint_every=K)


def fresh_digest(name, k, **over):
    s = scn(name)
    e = Engine(s, s.config(max_steps=k, **over))
    e.run()
    assert e.step == k
    return e.m.digest()


configs = st.fixed_dictionaries(dict(
    name=st.sampled_from(["cpu-offline", "smp", "cpu-offline-online"]),
    seed=st.integers(0, 10_000),
    hypervisor=st.sampled_from(["hyperv", "kvm"]),
    fix=st.sampled_from(["none", "gfp-zero", "clear-bit"]),
))


@SETTINGS
@given(configs, st.data())
def test_step_n_then_reverse_n_restores_digest(cfg, data):
    name = cfg.pop("name")
    tl = record(name, max_steps=2500, **cfg)
    start = data.draw(st.integers(0, tl.length))
    n = data.draw(st.integers(0, tl.length - start))
    tl.goto(start)
    d0 = tl.e.m.digest()
    tl.event(n)
    tl.event(-n)
    assert tl.pos == start and tl.e.m.digest() == d0


@SETTINGS
@given(configs, st.data())
def test_goto_equals_fresh_run(cfg, data):
    name = cfg.pop("name")
    tl = record(name, max_steps=2500, **cfg)
    for _ in range(3):
        tl.goto(data.draw(st.integers(0, tl.length)))            # from any position ...
        k = data.draw(st.integers(0, tl.length))
        tl.goto(k)                                                # ... goto(k)
        assert tl.e.m.digest() == fresh_digest(name, k, **cfg)    # == a fresh run to k


def test_per_cpu_step_next_finish_and_reverse_twins():
    tl = record()
    tl.goto(0)
    tl.focus = 1
    tl.step()
    assert tl.e.events[tl.pos - 1][E_ACT] == ("op", 1)
    # finish out of hv_cpu_init (entered by the first op of ap_main... after the wait)
    b = tl.break_pc("hv_cpu_init", 0, cpu=1)
    tl.continue_()
    assert tl.frames(1)[0]["routine"] == "hv_cpu_init" and tl.frames(1)[0]["pc"] == 0
    d = tl.depth(1)
    here = tl.pos
    tl.finish(1)
    assert tl.depth(1) == d - 1 and tl.frames(1)[0]["routine"] == "ap_main" and tl.pos > here
    tl.goto(here)
    tl.rfinish(1)
    assert tl.depth(1) == d - 1 and tl.pos < here      # back before hv_cpu_init was called
    assert tl.frames(1)[0]["routine"] == "ap_main"
    tl.delete_break(b.number)
    # next steps over an interrupt handler
    tl.goto(0)
    tl.add_break("vector", "deliver", VECTORS["RESCHEDULE"], cpu=1)
    tl.continue_()
    assert tl.frames(1)[0]["routine"] == "smp_reschedule_interrupt"
    tl.breaks.clear()
    tl.rstep(1)                          # just before the handler's first op... the delivery is an event, not an op
    d0 = tl.depth(1)
    tl.next(1)
    assert tl.depth(1) <= d0
    tl.rnext(1)
    assert tl.depth(1) <= d0


def test_reverse_continue_to_watchpoint_answers_who_wrote_it():
    tl = record()
    tl.goto(tl.length)
    page = 0x10001000
    tl.add_break("mem", -1, page, 1)
    st_ = tl.reverse_continue()
    writer = tl.e.events[tl.pos - 1]
    assert st_.brk is not None and writer[E_ACT] == ("op", 1)
    assert any(isinstance(w[0], tuple) and w[0][0] == "m" and w[0][2] == page for w in writer[E_WRITES])
    # the direct query agrees without moving
    tl.goto(tl.length)
    assert tl.last_write(("mem", -1, page)) == writer[0]
    before = tl.pos
    assert tl.last_write(("mem", -1, page), before=writer[0]) < writer[0]   # the allocation
    assert tl.pos == before


def test_msr_breakpoint_finds_the_disabling_wrmsr():
    tl = record()
    tl.goto(0)
    tl.add_break("msr", MSRS["HV_X64_MSR_VP_ASSIST_PAGE"], "wr", 0, cpu=1)
    s = tl.continue_()
    assert s.brk is not None
    assert tl.view().cpu(1).msr(MSRS["HV_X64_MSR_VP_ASSIST_PAGE"]) == 0
    assert tl.e.pack_state["first_disable_step"] == tl.pos - 1


def test_isr_watchpoint_and_stop_callback():
    tl = record()
    tl.goto(0)
    tl.watch_irr(1, VECTORS["RESCHEDULE"], isr=True)
    s = tl.continue_()
    assert (tl.e.m.S[tl.e.bases[1] + F_ISR] >> VECTORS["RESCHEDULE"]) & 1
    tl.breaks.clear()
    tl.goto(0)
    tl.stop_poll = 100
    s = tl.continue_(stop=lambda: True)
    assert s.reason == "interrupted" and tl.pos < tl.length
    tl.watch_irr(1, VECTORS["RESCHEDULE"], isr=True)
    polls = []
    s = tl.continue_(stop=lambda: polls.append(tl.pos) or len(polls) > 3)   # polled while it scans
    assert len(polls) >= 1 and (s.reason == "interrupted" or s.brk is not None)


def test_branch_flip_fixes_the_hang_and_parent_is_untouched():
    tl = record()
    assert tl.result.outcome == "hang"
    before = [(ev[0], ev[1], ev[5]) for ev in tl.events]
    page = 0x10001000
    dis = tl.e.pack_state["first_disable_step"]
    child = tl.branch("flip-bit0", dis, ("edit", "flip", -1, page, 0))
    assert child.result.outcome == "ok"
    assert [(ev[0], ev[1], ev[5]) for ev in tl.events] == before          # the parent is unchanged
    assert child.events[:dis] == tl.events[:dis]                          # shared prefix
    assert all(a is b for a, b in zip(child.events[:dis], tl.events[:dis]))
    assert child.events[dis][E_ACT][0] == "edit"
    cmp = tl.compare(child)
    assert cmp["first_difference"] == dis and cmp["outcomes"] == {"main": "hang", "flip-bit0": "ok"}
    assert any("RAM[0x10001000]" in d for d in tl.state_diff(child, dis + 1))


def test_branch_explanation_names_the_edit():
    tl = record(fix="gfp-zero")
    assert tl.result.outcome == "ok"
    page = tl.view().cpu(1).percpu("hv_vp_assist_page")
    at = tl.e.pack_state["first_disable_step"] + 1
    child = tl.branch("set-bit0", at, ("edit", "flip", -1, page, 0))
    assert child.result.outcome == "hang"
    src = [lk for lk in explain_hang(child.e) if lk.kind == "source"]
    assert src and src[0].step == at and "what-if edit: flip bit 0 of RAM[0x10001000]" in src[0].text


def test_branch_switch_fix_from_here():
    tl = record()
    child = tl.branch("to-clear-bit", 0, fix="clear-bit")
    assert child.result.outcome == "ok" and child.e.cfg.fix == "clear-bit"
    with pytest.raises(ValueError):
        tl.goto(tl.length + 1)


def test_up_down_frames():
    tl = record()
    tl.goto(1040)
    fr = tl.frames(1)
    # cpu1 is in hv_apic_eoi_write, called from ack_APIC_irq in the RESCHEDULE handler that
    # interrupted its cpuhp thread: the frames say so, innermost first
    assert [f["routine"] for f in fr[:4]] == ["hv_apic_eoi_write", "ack_APIC_irq", "smp_reschedule_interrupt",
                                               "cpuhp_thread_fun"]
    assert [f["kind"] for f in fr[:4]] == ["current", "call", "call", "interrupt"] and fr[3]["vector"] == 0xfd
    outer = [tl.up(1) for _ in range(len(fr) + 2)]
    assert outer[-1] == fr[-1] and tl.frame_sel == len(fr) - 1
    assert tl.down(1) == fr[max(0, len(fr) - 2)]
    tl.event(1)
    assert tl.frame_sel == 0


@settings(max_examples=10, deadline=None, database=None)
@given(st.integers(0, 1400), st.sampled_from(["flip", "inject", "reg", "if"]), st.integers(0, 1000))
def test_a_branch_never_changes_its_parent(at, kind, seed):
    tl = record(seed=seed, max_steps=1500)
    at = min(at, tl.length)
    before = [(e[0], e[1], list(e[5])) for e in tl.events]
    digest_end = (tl.goto(tl.length), tl.e.m.digest())[1]
    edit = {"flip": ("edit", "flip", -1, 0x10000000, 0), "inject": ("edit", "inject", 1, 0xfd),
            "reg": ("edit", "reg", 0, 3, 7), "if": ("edit", "if", 1, 0)}[kind]
    try:
        child = tl.branch("b", at, edit)
    except ValueError:
        return                       # e.g. no page yet at that step
    assert [(e[0], e[1], list(e[5])) for e in tl.events] == before
    tl.goto(tl.length)
    assert tl.e.m.digest() == digest_end
    assert child.events[at][E_ACT] == edit


# ---------------------------------------------------------------- issue 9 defects
@settings(max_examples=12, deadline=None, database=None)
@given(st.integers(0, 10_000), st.integers(1, 1400), st.sampled_from(["irr", "isr"]), st.integers(0, 1))
def test_why_bit_names_the_event_that_last_toggled_it(seed, at, reg, cpu):
    """`why irr|isr cpuN V`: the step it names toggled exactly that bit of that vCPU, and no
    later event before the cursor did (e.g. a landing IPI on cpu0 is not blamed on cpu1's ops)."""
    from hvdbg.core.why import cell_slot, why_bit
    tl = record(seed=seed, max_steps=1500)
    tl.goto(min(at, tl.length))
    slot = cell_slot(tl, (reg, cpu))
    bits = tl.e.m.S[slot]
    vecs = [v for v in range(256) if bits >> v & 1] or [VECTORS["RESCHEDULE"]]
    for v in vecs:
        lines, data = why_bit(tl, cpu, reg, v)
        i = data["step"]
        toggles = [j for j in range(tl.pos) for loc, old, new in tl.events[j][E_WRITES]
                   if loc == slot and (old ^ new) >> v & 1]
        assert i == (toggles[-1] if toggles else None), lines
        if i is not None:
            ev = tl.events[i]
            assert ev.act[0] != "op" or ev.cpu == cpu or reg == "irr", lines   # ISR changes only on its own vCPU


@pytest.mark.parametrize("at", [0, 700, 1300])
def test_a_branch_without_edit_reproduces_its_parent_with_prefix_statistics(at):
    """A branch with no edit replays the parent's choices: same events, and the statistics and
    pack state of the shared prefix are accounted (not restarted at zero)."""
    tl = record()
    tl.add_break("msr", MSRS["HV_X64_MSR_VP_ASSIST_PAGE"], "wr", 0, cpu=1)
    child = tl.branch("same", at)
    assert child.result.outcome == tl.result.outcome and child.length == tl.length
    assert child.e.events == tl.e.events
    assert child.e.stats == tl.e.stats and child.e.pack_state == tl.e.pack_state
    assert [(b.number, b.kind, b.args, b.cpu) for b in child.breaks] == \
        [(b.number, b.kind, b.args, b.cpu) for b in tl.breaks]          # breakpoints follow onto the branch
    child.goto(0)
    assert child.continue_().brk is not None and child.pos - 1 == tl.e.pack_state["first_disable_step"]


def test_a_cpu_coming_back_online_runs_hv_cpu_init_with_irqs_on():
    """IRQs are on when the re-onlined CPU's hv_cpu_init runs (start_secondary's
    local_irq_enable, then the idle loop's sti; hlt before the cpuhp thread is woken), so it can
    be interrupted - the window in which a stale apic_assist bit is consumed."""
    tl = record("cpu-offline-online", fix="gfp-zero")
    assert tl.result.outcome == "ok"
    entries = [i for i, ev in enumerate(tl.e.events) if ev.act[0] == "op" and ev.cpu == 1
               and tl.e.routines[tl.machine_at(i).S[tl.e.bases[1]]].name.startswith("hv_cpu_init")]
    disable = tl.e.pack_state["first_disable_step"]
    later = [i for i in entries if i > disable]
    assert later, "cpu1 never ran hv_cpu_init after going offline"
    from hvdbg.core.machine import F_IF
    assert tl.machine_at(later[0]).S[tl.e.bases[1] + F_IF] == 1


def test_branches_built_in_threads_while_the_parent_moves_equal_serial_ones():
    """Readers never move what they read: 20 branches built in worker threads while the UI
    thread moves the parent give exactly the events of the same branches built serially."""
    import random
    import threading
    tl = record(seed=3, max_steps=1500)
    ats = [random.Random(i).randrange(0, tl.length) for i in range(20)]
    edit = ("edit", "inject", 1, VECTORS["CALL_FUNCTION"])
    serial = [list(tl.branch(f"s{i}", at, edit).e.events) for i, at in enumerate(ats)]
    out: dict = {}

    def work(i, at):
        out[i] = list(tl.branch(f"t{i}", at, edit).e.events)

    threads = [threading.Thread(target=work, args=(i, at)) for i, at in enumerate(ats)]
    rng = random.Random(0)
    for t in threads:
        t.start()
        tl.goto(rng.randrange(0, tl.length + 1))
    while any(t.is_alive() for t in threads):
        tl.goto(rng.randrange(0, tl.length + 1))
        tl.rstep()
    for t in threads:
        t.join()
    assert [out[i] for i in range(20)] == serial


def test_kvm_chains_never_speak_of_an_overlay():
    """KVM has no overlay page: neither a KVM hang (a what-if bit0 in the never-zeroed page)
    nor the KVM pack's corruption chain may say 'overlay'."""
    tl = record(hypervisor="kvm")
    page = tl.view().cpu(1).percpu("hv_vp_assist_page")
    child = tl.branch("set-bit0", tl.e.pack_state["first_disable_step"] + 1, ("edit", "flip", -1, page, 0))
    assert child.result.outcome == "hang"
    s = scn("kvm-hibernation-resume")
    eng = Engine(s, s.config())
    assert eng.run().outcome == "corruption"
    for e, outcome in ((child.e, "hang"), (eng, "corruption")):
        links = explain(e, outcome)
        assert links and not [lk.text for lk in links if "overlay" in lk.text.lower()]
