"""The seed scenario's acceptance: the hang, its explanation, and the fixes."""
import json
import subprocess
import sys

import pytest

from hvdbg.core.engine import E_NOTES, E_WRITES, Engine
from hvdbg.core.explain import explain_hang
from hvdbg.core.scenario import load_scenario


def run(**over):
    s = load_scenario(over.pop("scenario", "cpu-offline"))
    eng = Engine(s, s.config(**over))
    return eng, eng.run()


def test_seed_hangs_with_v52_code():
    eng, res = run()
    assert res.outcome == "hang"
    links = explain_hang(eng)
    kinds = {lk.kind for lk in links}
    assert {"wait", "pending", "isr", "skip", "source", "disable"} <= kinds
    text = "\n".join(lk.text for lk in links)
    assert "EOI skipped" in text and "hv_apic_eoi_write" in text            # the skipped EOI ...
    skip = next(lk for lk in links if lk.kind == "skip")
    skip_ev = eng.events[skip.step]                                          # ... at the event that read the bit
    assert skip_ev.act == ("op", 1) and any(n[0] == "eoi_skipped" for n in skip_ev.notes)
    assert "while RESCHEDULE 0xfd is in service" in text                     # the stuck vector
    assert "RESCHEDULE 0xfd became pending" in text                          # the blocked vector
    assert "wrote HV_X64_MSR_VP_ASSIST_PAGE = 0x0" in text                   # the disabling WRMSR
    assert "no __GFP_ZERO" in text and "hv_init.c:115" in text               # the allocation without zeroing
    # the chain is ordered cause -> effect: allocation, disable, ISR entry, skip
    order = [next(lk.step for lk in links if lk.kind == k) for k in ("source", "disable", "isr", "skip")]
    assert order == sorted(order)


def test_explanation_links_point_at_their_writes():
    eng, res = run()
    for lk in explain_hang(eng):
        if lk.loc is not None:
            assert any(w[0] == lk.loc for w in eng.events[lk.step][E_WRITES]), lk


@pytest.mark.parametrize("over", [
    dict(fix="gfp-zero"), dict(fix="clear-bit"), dict(hypervisor="kvm"), dict(garbage="0xa4"), dict(garbage="0x00"),
])
def test_fixes_and_controls_reach_the_goal(over):
    eng, res = run(**over)
    assert res.outcome == "ok", (over, res)
    # not trivially: EOI assist really completed EOIs before the offline in both models
    assert res.stats["eoi_assisted_before_offline"] > 0
    assert res.stats["eoi_msr_writes"] > 0


def test_kvm_uses_assist_and_never_reads_stale_bit_after_disable():
    # KVM zeroes apic_assist on enable and clears bit0 at the disabling WRMSR's exit, so after
    # hv_cpu_die the guest page holds 0 (domain-facts 3.4). (Before the first enable, in the
    # hv_cpu_init window between the pointer store and the WRMSR, garbage can still be read.)
    for seed in range(10):
        eng, res = run(hypervisor="kvm", seed=seed)
        assert res.outcome == "ok" and res.stats["eoi_assisted"] > 0
        late = [ev for ev in eng.events if ev[0] > eng.pack_state["first_disable_step"] and any(n[0] == "eoi_skipped" for n in ev[E_NOTES])]
        assert not late


def test_copy_back_overlay_policy_leaves_overlay_content_in_ram():
    # openvmm-style copy-back: the disabled page holds the last overlay content (bit0 0), not garbage.
    from hvdbg.core.machine import RAM
    from hvdbg.core.timeline import Timeline
    s = load_scenario("cpu-offline")
    tl = Timeline.record(s, s.config(overlay="copy-back"))
    assert tl.result.outcome == "ok"
    dis = tl.e.pack_state["first_disable_step"]
    page = tl.view().cpu(1).percpu("hv_vp_assist_page")
    alloc = next(ev.step for ev in tl.events if ev.cpu == 1 and any(n[0] == "alloc" for n in ev.notes))
    assert tl.state_at(alloc + 1).read(RAM, page, 4) == 0xA5A5A5A5    # allocated: the never-zeroed guest page
    after = tl.state_at(dis + 1)
    assert after.page(RAM, page) == after.page(1)                       # after the disable: the overlay's content
    assert after.page(RAM, page) != bytes([0xA5]) * 4096 and after.read(RAM, page, 4) & 1 == 0
    assert tl.e.stats.get("eoi_skipped", 0) == 0


def test_restore_policy_uncovers_the_original_garbage():
    eng, res = run(overlay="restore")
    assert res.outcome == "hang"


def test_stale_skip_counts_only_when_no_assist_armed():
    eng, res = run()
    stale = [ev for ev in eng.events if any(n[0] == "eoi_skipped" for n in ev[E_NOTES])]
    assert stale, "the bug mechanism must appear in the seed run"
    for ev in stale:
        assert any(n[0] == "read" and n[4] & 1 for n in ev[E_NOTES])


def test_cli_json_has_resolved_config_and_statistics():
    p = subprocess.run([sys.executable, "-m", "hvdbg", "run", "--json"], capture_output=True, text=True)
    assert p.returncode == 3, p.stderr
    d = json.loads(p.stdout)
    for k in ("outcome", "steps", "explanation", "vcpus", "hypervisor", "overlay", "fix", "garbage", "seed"):
        assert k in d
    assert d["outcome"] == "hang" and d["fix"] == "none" and d["hypervisor"] == "hyperv"
    assert all(set(x) == {"step", "event", "text", "kind"} and x["step"] == x["event"] + 1 for x in d["explanation"])
    assert d["statistics"]["eoi_assisted_before_offline"] > 0
    p = subprocess.run([sys.executable, "-m", "hvdbg", "run", "--json", "--fix", "gfp-zero"], capture_output=True, text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["outcome"] == "ok"


@pytest.mark.parametrize("scn", ["cpu-offline-online", "smp"])
def test_other_builtins_fixes_ok(scn):
    for fix in ("gfp-zero", "clear-bit"):
        _, res = run(scenario=scn, fix=fix)
        assert res.outcome == "ok", (scn, fix, res)


def test_offline_online_really_replugs():
    eng, res = run(scenario="cpu-offline-online", fix="gfp-zero")
    assert res.outcome == "ok"
    assert sum(1 for ev in eng.events if any(n[0] == "init_sipi" for n in ev[E_NOTES])) == 1
    assert sum(1 for ev in eng.events if any(n[0] == "page_disable" for n in ev[E_NOTES])) == 2
    assert sum(1 for ev in eng.events if any(n[0] == "alloc" for n in ev[E_NOTES])) == 2  # one page per CPU, never again


def test_smp_any_vcpu_count():
    for n in (2, 3, 8):
        s = load_scenario("smp")
        eng = Engine(s, s.config(vcpus=n, fix="gfp-zero"))
        res = eng.run()
        assert res.outcome == "ok" and eng.n == n


def test_timeout_outcome():
    eng, res = run(max_steps=50)
    assert res.outcome == "timeout" and res.steps == 50


ENGINE_CASES = [("cpu-offline", {}), ("smp", {"vcpus": 5}), ("cpu-offline-online", {"hypervisor": "kvm"}),
                ("soak", {}), ("kexec", {"seed": 3}), ("hibernation-resume", {"seed": 2}),
                ("kvm-hibernation-resume", {}), ("smp", {"vcpus": 32, "seed": 4})]


@pytest.mark.parametrize("scn,over", ENGINE_CASES)
def test_run_picks_what_a_loop_over_the_full_enabled_set_picks(scn, over):
    """run() keeps the enabled actions incrementally (only what an event's writes can change;
    a vCPU that only moved on in its program keeps its actions unless a wait op is involved)
    and picks from per-vCPU weight sums; a loop that recomputes enabled() from the state
    before every pick must make the same events, one for one."""
    s = load_scenario(scn)
    fast, slow = Engine(s, s.config(max_steps=4000, **over)), Engine(s, s.config(**over))
    events = []
    fast.run(hook=events.append)
    for ev in events:
        acts = slow.enabled()
        assert acts, ev.step
        assert slow.execute(slow.pick(acts)) == ev, ev.step
    assert slow.m.digest() == fast.m.digest()


@pytest.mark.parametrize("scn,over", ENGINE_CASES[:3])
def test_incremental_enabled_set_equals_full_recompute(scn, over):
    s = load_scenario(scn)
    eng = Engine(s, s.config(**over))
    last = None
    for _ in range(3000):
        fast = eng._enabled_incremental(last)
        assert fast == eng.enabled()
        if not fast:
            break
        last = eng.execute(eng.pick(fast))[E_WRITES]


def test_cycle_hang_is_proven_by_exploration_not_by_stopping_traffic():
    # cpu-offline-early-ipis + clear-bit, seed 7: CPU0 keeps taking timer interrupts while it
    # waits for CPU1's hotplug thread (kernel/cpu.c:491), so the state cycles instead of
    # going quiet; the hang is a cycle whose every reachable state was explored.
    s = load_scenario("cpu-offline-early-ipis")
    eng = Engine(s, s.config(fix="clear-bit", seed=7))
    res = eng.run()
    assert res.outcome == "hang" and res.reason.startswith("cycle")
    before = eng.m.digest()
    assert eng.unreachable() is True          # the reachable set is closed and has no goal state
    assert eng.m.digest() == before           # exploration undid everything it did
    assert eng.enabled(), "traffic and timers are still enabled: the hang is not quiescence"
    kinds = {lk.kind for lk in explain_hang(eng)}
    assert {"window", "skip", "source", "pending", "wait"} <= kinds
    # the same configuration early in the run: the goal is still reachable
    eng2 = Engine(s, s.config(fix="gfp-zero", seed=7, max_steps=200))
    eng2.run()
    assert eng2.unreachable(budget=200_000) is not True


@pytest.mark.parametrize("scn", ["cpu-offline", "smp", "kexec"])
def test_a_waiting_vcpu_moved_by_a_bare_pc_write_gets_its_actions_recomputed(scn):
    """The incremental set keeps a vCPU's actions when only its pc/registers changed and no
    wait op is involved. A vCPU blocked at a wait (its op not enabled) that something moves
    off the wait without touching HALT/IF - no op does that today - must get its op back."""
    from hvdbg.core.machine import F_PC, F_RT
    s = load_scenario(scn)
    eng = Engine(s, s.config(max_steps=5000))
    last, found = None, False
    for _ in range(5000):
        acts = eng._enabled_incremental(last)
        blocked = [c for c in sorted(eng._waiting) if ("op", c) not in acts]
        if blocked:
            found = True
            break
        if not acts:
            break
        last = eng.execute(eng.pick(acts))[E_WRITES]
    assert found, "no vCPU was ever blocked at a wait"
    c = blocked[0]
    b = eng.bases[c]
    rt = eng.m.S[b + F_RT]
    free = [pc for pc in range(len(eng.code[rt])) if pc not in eng._wait_pcs[rt]]
    eng.m.w = []
    eng.m.set(b + F_PC, free[0])
    inc = eng._enabled_incremental(eng.m.w)
    assert ("op", c) in inc and inc == eng.enabled()
