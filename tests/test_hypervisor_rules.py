"""The EOI-assist and overlay rules of each hypervisor model, one by one (docs/model.md)."""
from pathlib import Path

import pytest

from hvdbg.core.defs import VECTORS
from hvdbg.core.hypervisors.hyperv import MSR_EOI, MSR_VP_ASSIST_PAGE
from hvdbg.core.engine import Engine
from hvdbg.core.machine import F_HV, F_IF, F_ISR, RAM
from hvdbg.core.scenario import load_scenario

RES, TIMER, CFS = VECTORS["RESCHEDULE"], VECTORS["LOCAL_TIMER"], VECTORS["CALL_FUNCTION_SINGLE"]
GPA = 0x20000000


def machine(hypervisor="hyperv", overlay="uncover-stale", fill=0xA5):
    s = load_scenario("cpu-offline")
    eng = Engine(s, s.config(hypervisor=hypervisor, overlay=overlay))
    eng.m.w = []
    eng.m.new_page(GPA >> 12, bytes([fill]) * 4096)
    return eng


def cpu(eng, c=1):
    return eng.L.base(c)


def enable(eng, c=1):
    eng._wrmsr(c, cpu(eng, c), MSR_VP_ASSIST_PAGE, GPA | 1)


def assist_bit(eng, c=1):
    space = eng.hv.resolve(c, GPA)
    return eng.m.read_mem(space, GPA, 4) & 1


def deliver(eng, c, v):
    eng.set_irr(c, v)
    eng.m.set(cpu(eng, c) + F_IF, 1)
    assert eng.deliverable(c) == v
    eng._deliver(c)


def guest_xchg(eng, c=1):
    """hv_apic_eoi_write's xchg(&hvp->apic_assist, 0) through the engine's memory path."""
    space = eng.hv.resolve(c, GPA)
    old = eng.m.read_mem(space, GPA, 4)
    eng.m.write_mem(space, GPA, 4, 0)
    eng.hv.on_mem_write(c, space, GPA, 4, old, 0)
    return old


def isr(eng, c=1):
    return eng.m.S[cpu(eng, c) + F_ISR]


# ---------------------------------------------------------------- Hyper-V
def test_hyperv_overlay_hides_ram_and_sets_bit_on_injection():
    eng = machine()
    enable(eng)
    assert eng.hv.resolve(1, GPA) == 1 and eng.hv.resolve(0, GPA) == RAM
    assert assist_bit(eng) == 0                     # first enable: a zero-filled overlay page
    deliver(eng, 1, RES)
    assert assist_bit(eng) == 1 and eng.m.S[cpu(eng) + F_HV] == RES
    assert eng.m.read_mem(RAM, GPA, 4) == 0xA5A5A5A5  # RAM untouched while covered


def test_hyperv_implied_eoi_when_guest_clears_bit():
    eng = machine()
    enable(eng)
    deliver(eng, 1, RES)
    assert guest_xchg(eng) & 1
    assert isr(eng) == 0 and eng.m.S[cpu(eng) + F_HV] == 0


def test_hyperv_no_bit_when_lower_priority_pending_at_injection():
    eng = machine()
    enable(eng)
    eng.set_irr(1, TIMER)
    deliver(eng, 1, RES)
    assert assist_bit(eng) == 0


def test_hyperv_bit_cleared_when_lower_priority_requested_later():
    eng = machine()
    enable(eng)
    deliver(eng, 1, RES)
    assert assist_bit(eng) == 1
    eng.set_irr(1, TIMER)
    assert assist_bit(eng) == 0 and eng.m.S[cpu(eng) + F_HV] == 0
    assert guest_xchg(eng) == 0 and isr(eng) == 1 << RES   # the guest must now write the EOI MSR
    eng._wrmsr(1, cpu(eng), MSR_EOI, 0)
    assert isr(eng) == 0


def test_hyperv_higher_priority_request_keeps_bit():
    eng = machine()
    enable(eng)
    deliver(eng, 1, TIMER)
    eng.set_irr(1, RES)
    assert assist_bit(eng) == 1


def test_hyperv_only_innermost_eoi_avoided():
    eng = machine()
    enable(eng)
    deliver(eng, 1, TIMER)            # outer, bit armed for 0xec
    deliver(eng, 1, RES)              # nested, bit now stands for the innermost 0xfd
    assert assist_bit(eng) == 1 and eng.m.S[cpu(eng) + F_HV] == RES
    guest_xchg(eng)                   # implied EOI: clears the highest ISR bit only
    assert isr(eng) == 1 << TIMER
    assert guest_xchg(eng) == 0       # the next EOI cannot be avoided
    eng._wrmsr(1, cpu(eng), MSR_EOI, 0)
    assert isr(eng) == 0


@pytest.mark.parametrize("policy,ram_after", [("uncover-stale", 0xA5A5A5A5), ("restore", 0xA5A5A5A5), ("copy-back", 0x1)])
def test_overlay_policies_on_disable(policy, ram_after):
    eng = machine(overlay=policy)
    enable(eng)
    deliver(eng, 1, RES)                 # overlay apic_assist = 1
    eng._wrmsr(1, cpu(eng), MSR_VP_ASSIST_PAGE, 0)
    assert eng.hv.resolve(1, GPA) == RAM
    assert eng.m.read_mem(RAM, GPA, 4) == ram_after


def test_restore_policy_restores_a_covered_ram_write():
    eng = machine(overlay="restore")
    enable(eng)
    eng.m.write_mem(RAM, GPA, 4, 0x12345678)   # e.g. a what-if edit of the covered RAM
    eng._wrmsr(1, cpu(eng), MSR_VP_ASSIST_PAGE, 0)
    assert eng.m.read_mem(RAM, GPA, 4) == 0xA5A5A5A5


def test_overlay_content_persists_across_reenable():
    eng = machine()
    enable(eng)
    eng.m.write_mem(1, GPA, 4, 0x40)          # guest writes a reserved field of the overlay
    eng._wrmsr(1, cpu(eng), MSR_VP_ASSIST_PAGE, 0)
    enable(eng)
    assert eng.m.read_mem(1, GPA, 4) == 0x40


# ---------------------------------------------------------------- KVM
def test_kvm_enable_zeroes_apic_assist_in_ram():
    eng = machine("kvm")
    enable(eng)
    assert eng.hv.resolve(1, GPA) == RAM
    assert eng.m.read_mem(RAM, GPA, 4) == 0 and eng.m.read_mem(RAM, GPA + 4, 4) == 0xA5A5A5A5


def test_kvm_sets_bit_only_with_irr_empty_and_a_cached_isr():
    eng = machine("kvm")
    enable(eng)
    eng.set_irr(1, TIMER)
    deliver(eng, 1, RES)                   # IRR not empty after injection -> no bit
    assert assist_bit(eng) == 0
    eng2 = machine("kvm")
    enable(eng2)
    deliver(eng2, 1, TIMER)
    assert assist_bit(eng2) == 1           # IRR empty, one in service
    eng2.hv.on_exit(1)                     # exit with bit still set: cleared, no EOI
    assert assist_bit(eng2) == 0 and isr(eng2) == 1 << TIMER
    eng2.m.set(cpu(eng2) + F_IF, 1)
    deliver(eng2, 1, RES)                  # nested: apic_set_isr made RES the highest_isr_cache
    assert assist_bit(eng2) == 1 and isr(eng2) == (1 << TIMER) | (1 << RES)
    guest_xchg(eng2)
    eng2.hv.on_exit(1)                     # the guest took the hint: KVM EOIs the highest (RES) ...
    assert isr(eng2) == 1 << TIMER
    eng2.hv.on_entry(1)                    # ... and apic_clear_isr left highest_isr_cache = -1:
    assert assist_bit(eng2) == 0           # TIMER still in service, but no hint for it (lapic.c:2716)


def test_kvm_exit_performs_eoi_the_guest_skipped():
    eng = machine("kvm")
    enable(eng)
    deliver(eng, 1, RES)
    assert guest_xchg(eng) & 1             # the guest consumed the bit: skips the EOI MSR write
    assert isr(eng) == 1 << RES            # nothing happened yet ...
    eng.hv.on_exit(1)                      # ... until the next exit
    assert isr(eng) == 0


def test_kvm_disabling_wrmsr_exit_clears_bit_first():
    eng = machine("kvm")
    enable(eng)
    deliver(eng, 1, RES)
    assert assist_bit(eng) == 1
    # the engine runs on_exit before every exiting op (program.EXITING_OPS), then the MSR handler
    eng.hv.on_exit(1)
    eng._wrmsr(1, cpu(eng), MSR_VP_ASSIST_PAGE, 0)
    assert eng.m.read_mem(RAM, GPA, 4) == 0
    assert guest_xchg(eng) == 0            # hv_apic_eoi_write will write the EOI MSR


def test_kvm_remote_irr_update_kicks_running_vcpu():
    eng = machine("kvm")
    enable(eng)
    deliver(eng, 1, RES)
    assert assist_bit(eng) == 1
    eng.set_irr(1, CFS)                    # IPI lands while vCPU 1 runs: exit + entry
    assert assist_bit(eng) == 0 and isr(eng) == 1 << RES


def test_exiting_ops_list():
    from hvdbg.core.ops import exiting_ops
    EXITING_OPS = exiting_ops()
    assert {"wrmsr", "rdmsr", "hlt", "safe_halt", "ipi"} <= EXITING_OPS
    assert not {"xchg", "load", "store", "mov", "cli", "sti"} & EXITING_OPS


# ---------------------------------------------------------------- schedules and garbage
def test_scenario_schedule_is_followed(tmp_path):
    from hvdbg.core.engine import RunError, act_text
    text = 'schedule = ["op 0", "timer 1 0xec", "op 0", "timer 0 0xec"]\n' + (Path(__file__).parent.parent / "hvdbg/packs/vp_assist_offline/scenarios/cpu-offline.toml").read_text()
    f = tmp_path / "sched.toml"
    f.write_text(text)
    from hvdbg.core.scenario import load_scenario as ls
    s = ls(str(f))
    eng = Engine(s, s.config(max_steps=4))
    eng.run()
    assert [act_text(e[1]) for e in eng.events] == ["op cpu0", "timer cpu1 0xec", "op cpu0", "timer cpu0 0xec"]
    s = ls(str(f))
    s.schedule = [("deliver", 1, 0xFD)]
    with pytest.raises(RunError, match="not enabled at step 0"):
        Engine(s, s.config(max_steps=4)).run()


def test_random_garbage_is_seeded():
    from hvdbg.core.engine import garbage_bytes, parse_garbage
    g = parse_garbage("random:7")
    assert garbage_bytes(g, 5) == garbage_bytes(g, 5) != garbage_bytes(g, 6)
    assert garbage_bytes(parse_garbage("0xfe"), 1) == b"\xfe" * 4096
