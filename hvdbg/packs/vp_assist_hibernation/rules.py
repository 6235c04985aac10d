"""What the hibernation bug adds to the generic core: the link naming the teardown that never
ran. The generic corruption chain (explain.py) already names the hypervisor's write, the page's
owner, the VP_ASSIST_PAGE write that pointed the hypervisor there and the jump into the image."""
from __future__ import annotations

from hvdbg.core.explain import Link


def _missing_teardown(ctx, violation, vev, zev) -> list:
    if zev is None:
        return []
    cpu = violation[2]
    out = []
    dies = ctx.entries("hv_cpu_die", after=zev.step, before=vev.step)
    offlined = sorted({e.cpu for e in dies})
    suspends = ctx.entries("hv_suspend", after=zev.step, before=vev.step)
    if suspends:
        ev = suspends[-1]
        ran = f"hv_cpu_die() ran for {', '.join(f'cpu{c}' for c in offlined)} (taken offline by " \
              f"freeze_secondary_cpus), " if offlined else ""
        out.append(Link(ev.step, f"{ran}never for cpu{cpu}: CPU0 is never offlined during hibernation, and the "
                        f"syscore suspend op hv_suspend() ran here without hv_cpu_die({cpu}), so the boot kernel "
                        f"jumped into the image with cpu{cpu}'s VP assist page still registered "
                        "(421f090c819d adds hv_cpu_die(0) here and hv_cpu_init(0) to hv_resume: --fix syscore-cpu0)",
                        ctx.first_write(ev), "teardown"))
    return out


EXPLAIN = {"corruption": [_missing_teardown]}
