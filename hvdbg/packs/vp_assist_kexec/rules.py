"""What the kexec bug adds to the generic core: the link naming the teardown that never ran."""
from __future__ import annotations

from hvdbg.core.explain import Link


def _missing_teardown(ctx, violation, vev, zev) -> list:
    if zev is None:
        return []
    cpu = violation[2]
    shut = ctx.entries("hv_machine_shutdown", after=zev.step, before=vev.step)
    if not shut:
        return []
    ev = shut[-1]
    return [Link(ev.step, f"hv_machine_shutdown() ran here without cpuhp_remove_state(hyperv_init_cpuhp): hv_cpu_die() "
                 f"never ran for cpu{cpu} (the other CPUs are stopped with IRQs off, CPU0 jumps into the new kernel), so "
                 f"its VP assist page stayed registered across the kexec (dfe94d4086e4 removes the state there: "
                 "--fix remove-cpuhp)", ctx.first_write(ev), "teardown")]


EXPLAIN = {"corruption": [_missing_teardown]}
