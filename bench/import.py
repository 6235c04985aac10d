"""Importing text traces (issue 13): lines/s and peak memory for a generated trace, beside a plain
`for line in f: line.split()` loop over the same file in the same run.

A host trace of N lines (trace-cmd report format, 4 vCPUs: exits/entries at 20000 distinct
guest rips, MSR writes, IPIs accepted/injected/EOI'd, a few unknown events) is written to a temporary file; each phase runs
in its own process so that its peak RSS (ru_maxrss) is its own:

  split      for line in f: line.split()                    (the calibration loop)
  import     ImportedTrace(file): parse + reconstruction + checkpoints + findings
  state_at   50 random state_at(i) queries on the imported trace (p50 / max ms)
  .hvt       the import written as an imported .hvt (hvdbg import -o), then opened in a
             process of its own (hvdbg tui/info/export OUT.hvt: no text re-read)

Usage: python bench/import.py [--lines 1000000] [--keep FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(path: str, n: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    t = 5000.0
    pid = {v: 3000 + v for v in range(4)}
    rips = [0xffffffff81000000 + rnd.randrange(1 << 24) for _ in range(20000)]   # 20k distinct guest rips
    out = []
    w = 0
    with open(path, "w") as f:
        f.write("cpus=4\nversion = 6\n")
        while w < n:
            v = rnd.randrange(4)
            t += 0.000003
            p = pid[v]
            head = f"        qemu-kvm-{p:<5} [{v:03d}] {t:.6f}: "
            r = rnd.random()
            out.append(head + f"kvm_exit:             vcpu {v} reason EXTERNAL_INTERRUPT rip 0x{rnd.choice(rips):x} "
                       "info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x800000ec error_code 0x00000000")
            if r < 0.3:
                d = rnd.randrange(4)
                out.append(head + f"kvm_msr:              msr_write 830 = 0x{d:x}000000fd")
                out.append(head + f"kvm_apic_ipi:         dst {d:x} vec 253 (Fixed|physical|assert|edge|dst)")
                out.append(head + f"kvm_apic_accept_irq:  apicid {d:x} vec 253 (Fixed|edge)")
            elif r < 0.6:
                out.append(head + f"kvm_apic_accept_irq:  apicid {v:x} vec 236 (Fixed|edge)")
                out.append(head + "kvm_inj_virq:         irq 236")
                out.append(head + f"kvm_eoi:              apicid {v:x} vector 236")
            elif r < 0.7:
                out.append(head + f"kvm_msr:              msr_write 40000073 = 0x{rnd.randrange(1 << 20):x}001")
            elif r < 0.8:
                out.append(head + "kvm_fpu:              load")
            out.append(head + f"kvm_entry:            vcpu {v}, rip 0x{rnd.choice(rips):x}")
            if len(out) >= 4096:
                f.write("\n".join(out) + "\n")
                w += len(out)
                out = []
        if out:
            f.write("\n".join(out) + "\n")


CHILD = {
    "split": """
import resource, sys, time, json
t = time.perf_counter(); n = 0
with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
    for line in f:
        line.split(); n += 1
dt = time.perf_counter() - t
print(json.dumps({"lines": n, "s": dt, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
""",
    "import": """
import resource, sys, time, json, random
from hvdbg.trace_import import import_trace
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
tr = import_trace(sys.argv[1])
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rnd = random.Random(2); q = []
for _ in range(50):
    i = rnd.randrange(len(tr.events)); t1 = time.perf_counter(); tr.state_at(i); q.append(time.perf_counter() - t1)
q.sort()
from hvdbg.trace_import import hvt
t = time.perf_counter(); hvt.write(tr, sys.argv[1] + ".hvt"); w = time.perf_counter() - t
print(json.dumps({"lines": tr.files[0].lines, "events": len(tr.events), "s": dt, "rss": rss, "rss0": r0,
                  "findings": len(tr.findings), "q50": q[len(q) // 2], "qmax": q[-1], "write": w}))
""",
    "hvt": """
import resource, sys, time, json, os
from hvdbg.trace_import import hvt
t = time.perf_counter()
tr = hvt.read(sys.argv[1] + ".hvt")
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "bytes": os.path.getsize(sys.argv[1] + ".hvt"), "events": len(tr.events),
                  "findings": len(tr.findings), "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
""",
}


def child(kind: str, path: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", CHILD[kind], path], capture_output=True, text=True, env=env, check=True)
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--keep", metavar="FILE", help="write the generated trace here and keep it")
    a = ap.parse_args()
    path = a.keep or tempfile.mktemp(suffix=".txt", prefix="hvdbg-import-bench-")
    try:
        generate(path, a.lines)
        size = os.path.getsize(path)
        s = child("split", path)
        i = child("import", path)
        h = child("hvt", path)
    finally:
        for p in (path, path + ".hvt"):
            if (not a.keep or p != path) and os.path.exists(p):
                os.unlink(p)
    mb = 1 << 20
    print(f"trace: {s['lines']} lines, {size / mb:.1f} MiB (trace-cmd report, 4 vCPUs)")
    print(f"split loop : {s['lines'] / s['s']:>10,.0f} lines/s  {s['s']:6.2f} s  peak RSS {s['rss'] / mb:7.1f} MiB")
    print(f"import     : {i['lines'] / i['s']:>10,.0f} lines/s  {i['s']:6.2f} s  peak RSS {i['rss'] / mb:7.1f} MiB "
          f"({(i['rss'] - i['rss0']) / max(1, i['events']):.0f} B/event above the interpreter)")
    print(f"ratio      : {s['s'] / i['s']:.2f} of the split loop's speed (issue 13 aims at >= 0.3)")
    print(f"state_at   : p50 {i['q50'] * 1e3:.2f} ms, max {i['qmax'] * 1e3:.2f} ms (50 random events); "
          f"findings {i['findings']}")
    print(f".hvt       : {h['bytes'] / mb:.1f} MiB ({h['bytes'] / max(1, h['events']):.1f} B/event), written in "
          f"{i['write']:.2f} s; opened (decoded, checked, state rebuilt) in {h['s']:.2f} s, "
          f"{i['s'] / h['s']:.1f}x faster than the text import; peak RSS {h['rss'] / mb:.1f} MiB; "
          f"findings {h['findings']}")


if __name__ == "__main__":
    main()
