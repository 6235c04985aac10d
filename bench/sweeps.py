"""Outcome histograms over seeds for every built-in scenario x fix x hypervisor model.

Usage: python bench/sweeps.py [--seeds N] [--scenario NAME ...]
Prints one line per combination: hang/ok/timeout counts, the first seed of each outcome,
how many runs completed an EOI through EOI assist before the overlay was disabled, and how
many runs skipped an EOI on a stale apic_assist bit.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

from hvdbg.core import hypervisors
from hvdbg.core.engine import Engine
from hvdbg.core.scenario import load_scenario


def combos() -> list[tuple[str, str]]:
    """Every registered hypervisor model with each of its overlay policies (or the default)."""
    out = []
    for name, spec in hypervisors.HYPERVISORS.items():
        for policy in spec.options.get("overlay", {hypervisors.default_option("overlay"): ""}):
            out.append((name, policy))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--scenario", nargs="*", default=["cpu-offline", "cpu-offline-online", "smp"],
                    help="built-in scenarios or pack names (their default scenario)")
    a = ap.parse_args()
    for name in a.scenario:
        scn = load_scenario(name)
        for hv, ov in combos():
            for fix in ("none", *sorted(scn.program.variants)):
                t = time.perf_counter()
                hist, first, assisted, stale = Counter(), {}, 0, 0
                for seed in range(a.seeds):
                    eng = Engine(scn, scn.config(hypervisor=hv, overlay=ov, fix=fix, seed=seed), journal=False)
                    res = eng.run()
                    hist[res.outcome] += 1
                    first.setdefault(res.outcome, seed)
                    assisted += bool(res.stats.get("eoi_assisted_before_offline"))
                    stale += bool(res.stats.get("eoi_skipped"))
                label = f"{name} {hv}" + (f"/{ov}" if hv == "hyperv" else "") + f" fix={fix}"
                print(f"{label:50s} {dict(sorted(hist.items()))!s:32s} first={first} assisted-before-offline={assisted} "
                      f"stale-skip={stale} ({time.perf_counter() - t:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
