"""What the KVM hibernation bug adds to the generic core: the link naming the teardown that never ran."""
from __future__ import annotations

from hvdbg.core.explain import Link


def _missing_teardown(ctx, violation, vev, zev) -> list:
    if zev is None:
        return []
    cpu = violation[2]
    offs = ctx.entries("kvm_guest_cpu_offline", after=zev.step, before=vev.step)
    offlined = sorted({e.cpu for e in offs})
    sus = ctx.entries("syscore_suspend", after=zev.step, before=vev.step)
    if not sus:
        return []
    ev = sus[-1]
    ran = f"kvm_cpu_down_prepare() tore down {', '.join(f'cpu{c}' for c in offlined)} (taken offline by " \
          "freeze_secondary_cpus); " if offlined else ""
    return [Link(ev.step, f"{ran}cpu{cpu} is never offlined, and syscore_suspend() ran here with no KVM hook: "
                 f"the boot kernel jumped into the image with cpu{cpu}'s steal time, PV EOI and async PF still "
                 "registered (8b79feffeca2 adds kvm_suspend()/kvm_resume(): --fix syscore-teardown)",
                 ctx.first_write(ev), "teardown")]


EXPLAIN = {"corruption": [_missing_teardown]}
