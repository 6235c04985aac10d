"""Running hvdbg on hostile files and measuring what it costs (shared by the fuzz suites).

`run_cli` starts the real CLI in a subprocess and returns its exit status, output, CPU time
and peak RSS (the ``os.wait4`` rusage of that child alone), with a hard kill at a wall-clock
deadline so that a hang fails the test instead of stalling it. The time bound of the
contract is on CPU seconds, which other processes on a loaded machine do not inflate."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

MB = 1 << 20


@dataclass
class Ran:
    code: int
    out: str
    err: str
    seconds: float      # CPU seconds (user + system) of the child
    rss: int            # peak resident set size of the child, bytes


# The measured process is started by a small launcher, not forked from the test worker: Linux
# keeps ru_maxrss across fork+exec, so a child forked from a 250 MB pytest worker would report
# the worker's size. The launcher (a fresh interpreter) spawns hvdbg and writes the child's
# own peak RSS to a file.
_LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "hvdbg", *sys.argv[2:]], os.environ)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{ru.ru_maxrss * 1024} {ru.ru_utime + ru.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def run_cli(args, timeout: float = 30.0, stdin=subprocess.DEVNULL) -> Ran:
    import tempfile
    env = dict(os.environ, XDG_STATE_HOME=os.environ.get("XDG_STATE_HOME", "/tmp/hvdbg-fuzz-state"),
               HVDBG_HEADLESS="1")
    fd, rss_file = tempfile.mkstemp(prefix="hvdbg-rss-")
    os.close(fd)
    p = subprocess.Popen([sys.executable, "-c", _LAUNCHER, rss_file, *map(str, args)], stdin=stdin,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.communicate()
        raise AssertionError(f"hvdbg {' '.join(map(str, args))} ran longer than {timeout} s") from None
    try:
        with open(rss_file) as f:
            fields = (f.read() or "0 0").split()
        rss, secs = int(fields[0]), float(fields[1])
    finally:
        os.unlink(rss_file)
    return Ran(p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), secs, rss)


def check_contract(r: Ran, allowed: set, size: int, what: str) -> None:
    """Issue 8's bar for any input: an allowed exit status, at most one line on stderr, no
    traceback, peak memory <= 64 MB + 8 x the input size, at most 10 CPU seconds."""
    assert r.code in allowed, (what, r.code, r.err[-400:], r.out[-300:])
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) <= 1, (what, r.err)
    assert "Traceback" not in r.err and "Traceback" not in r.out, (what, r.err)
    assert r.rss, "peak RSS not measured"
    assert r.rss <= 64 * MB + 8 * size, (what, r.rss // MB, size)
    assert r.seconds <= 10, (what, r.seconds)
