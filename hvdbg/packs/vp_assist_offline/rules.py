"""What the seed bug adds to the generic core (core/packs.py explains the hooks).

* Statistics: EOIs completed through EOI assist before the VP assist page was first
  disabled (evidence that the assist path was really in use before the offline).
* The explanation after "EOI skipped ... bit0 came from ...": why the bit was stale - the
  overlay had been disabled (hv_cpu_die wrote VP_ASSIST_PAGE = 0, the guest then read the
  uncovered, never-zeroed RAM page), or the hypervisor did not point at the page yet
  (hv_cpu_init publishes hv_vp_assist_page[cpu] before the enabling WRMSR, with IRQs on).
"""
from __future__ import annotations

from hvdbg.core.explain import Link
from hvdbg.core.hypervisors.hyperv import MSR_VP_ASSIST_PAGE
from hvdbg.core.machine import RAM

POINTER = "hv_vp_assist_page"       # the guest's per-CPU pointer to its VP assist page (hv_init.c)


def _on_page_disable(eng, note, ev) -> None:
    if note[1] == "vp_assist":
        eng.pack_state.setdefault("first_disable_step", ev.step)


def _on_eoi(eng, note, ev) -> None:
    if note[2] and "first_disable_step" not in eng.pack_state:
        eng.stats["eoi_assisted_before_offline"] += 1


NOTE_HOOKS = {"page_disable": [_on_page_disable], "eoi": [_on_eoi]}

STATS = {
    "eoi_assisted_before_offline": "EOIs done by EOI assist before the VP assist page was disabled",
    "eoi_skipped": "EOIs skipped on a stale apic_assist bit",
}
SWEEP_STATS = {
    "eoi_assisted_before_offline": "runs where EOI assist completed an EOI before the overlay was disabled",
    "eoi_skipped": "runs where an EOI was skipped on a stale apic_assist bit",
}


def _why_stale(ctx, c: int, skip, space: int, addr: int) -> list:
    """Why apic_assist bit0 was stale when hv_apic_eoi_write read it."""
    L = ctx.L
    if space != RAM:
        return []
    b = L.base(c)
    mi = b + L.msr_off[MSR_VP_ASSIST_PAGE]
    oev, ow = ctx.slot_write(mi, skip.step, lambda o, n: (o & 1) and not (n & 1))
    if oev is not None:
        return [Link(oev.step, f"the VP assist page had been disabled: {ctx.describe(oev)} wrote "
                     f"HV_X64_MSR_VP_ASSIST_PAGE = 0x{ow[2]:x}; from then on cpu{c}'s apic_assist accesses reach the "
                     "never-zeroed guest page", ow[0], "disable")]
    # never enabled yet: the pointer was published before the enabling WRMSR
    if POINTER not in L.pvar:
        return []
    page = addr & ~0xFFF
    slot = b + L.pvar[POINTER]
    pev, pw = ctx.slot_write(slot, skip.step, lambda o, n: n == page)
    if pev is None:
        return []
    return [Link(pev.step, f"the hypervisor did not point at the page yet: {ctx.describe(pev)} published the page "
                 f"pointer ({L.describe(pw[0])} = 0x{page:x}) before the enabling WRMSR of HV_X64_MSR_VP_ASSIST_PAGE, "
                 "with IRQs on", pw[0], "window")]


EXPLAIN = {"eoi_skipped": [_why_stale]}
