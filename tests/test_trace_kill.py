"""A writer SIGKILLed mid-recording leaves a trace that loads with a salvage report."""

import os
import signal
import subprocess
import sys
import time

import pytest

from hvdbg.trace import load_trace

CHILD = r"""
import sys, time
from hvdbg.trace import TraceWriter
w = TraceWriter(sys.argv[1], {"tool": "hvdbg-test", "scenario": "kill"})
i = 0
while True:
    for _ in range(97):
        w.event(("deliver", i % 4, 0xfb) if i % 10 == 0 else ("op", i % 4))
        i += 1
    if i % 970 == 0:
        w.checkpoint(i, "%064x" % i, b"snap" * 8)
    print(w.flushed_events, flush=True)
    time.sleep(0.002)
"""

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_recording(tmp_path):
    path = tmp_path / "killed.hvt"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    flushed = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "child exited early"
            flushed = int(line)
            if flushed >= 3000 and path.stat().st_size > 4000:
                break
        else:
            pytest.fail("child did not produce enough events")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # the child may have flushed more after its last line; drain what it printed
        for line in proc.stdout.read().split():
            flushed = max(flushed, int(line))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    tr = load_trace(path)
    assert tr.footer is None
    assert tr.salvage is not None and tr.salvage["events_recovered"] == len(tr.events)
    assert "byte " in tr.salvage["message"]
    assert len(tr.events) >= flushed
    assert tr.events[0] == ("deliver", 0, 0xFB) and tr.events[1] == ("op", 1)
    assert all(tr.events[i] == (("deliver", i % 4, 0xFB) if i % 10 == 0 else ("op", i % 4)) for i in range(len(tr.events)))
    assert tr.checkpoints and all(c[0] % 970 == 0 for c in tr.checkpoints)
