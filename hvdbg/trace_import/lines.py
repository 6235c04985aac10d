"""Reading text traces: files (plain, gzip, xz), line formats and their auto-detection.

Formats (docs/import.md):

* ``trace`` / ``trace-pipe`` - ftrace's ``/sys/kernel/tracing/trace`` and ``trace_pipe``:
  ``COMM-PID [CPU] FLAGS TIMESTAMP: EVENT: FIELDS``; the comm/pid column, the ``(TGID)``
  column and the flags column are each optional, comms may be ``<...>`` or hold spaces
  and dashes.
* ``trace-cmd`` - ``trace-cmd report``: the same lines after a header (``cpus=N``,
  ``version = 6``, ``CPU 0 is empty``, ``CPU:1 [LOST 12 EVENTS]``).
* ``perf-script`` - ``perf script``: ``COMM PID[/TID] [CPU] TIMESTAMP: SYS:EVENT: FIELDS``
  (right-aligned comm, system-prefixed event names such as ``kvm:kvm_exit``).

Every reader is streaming: a line longer than :data:`MAX_LINE` characters is cut there
(and reported), bytes that are not UTF-8 become U+FFFD, CRLF and CR line ends are read as
LF.
"""
from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import zlib

from ..safe import UnsafeFile, kind_of

FORMATS = ("trace", "trace-pipe", "trace-cmd", "perf-script")
MAX_LINE = 4096           # characters kept of one line; the rest is skipped and reported
DETECT_LINES = 400        # lines looked at to pick a format

# ftrace / trace-cmd: [comm-pid] [(tgid)] [cpu] [flags] ts: event: rest
FTRACE_RE = re.compile(
    r"\s*(?:(?P<comm>\S.*?)-(?P<pid>\d{1,10})\s+)?(?:\(\s*[\d-]{1,10}\)\s+)?"
    r"\[(?P<cpu>\d{1,6})\]\s+(?:[^\s\d]\S{0,9}\s+)?"
    r"(?P<ts>\d{1,20}(?:\.\d{1,12})?):\s+(?P<ev>[\w:.-]{1,128}):\s*(?P<rest>.*)")
# perf script: comm pid[/tid] [cpu] ts: [period] sys:event: rest
PERF_RE = re.compile(
    r"\s*(?P<comm>\S.*?)\s+(?P<pid>\d{1,10})(?:/\d{1,10})?\s+\[(?P<cpu>\d{1,6})\]\s+"
    r"(?P<ts>\d{1,20}(?:\.\d{1,12})?):\s+(?:\d{1,20}\s+)?(?P<ev>\w{1,64}:[\w.-]{1,128}):\s*(?P<rest>.*)")
# trace-cmd report header / bookkeeping lines (not events, not garbage)
TRACE_CMD_HEADER_RE = re.compile(r"\s*(?:cpus=\d+|version\s*=\s*\S+|CPU \d+ is empty|CPU:\s*\d+ \[LOST"
                                 r"|trace-cmd|\[LOST \d+ EVENTS\])")
FTRACE_HEADER_RE = re.compile(r"\s*#|\s*CPU:\s*\d+ \[LOST|\s*##### CPU \d+ buffer started ####|\s*CPU \d+ is empty")


def open_text(path):
    """A text stream over `path` (plain, gzip or xz by magic bytes). Refuses non-regular files.
    Raises UnsafeFile / OSError."""
    p = os.fspath(path)
    st = os.stat(p)
    import stat as _stat
    if not _stat.S_ISREG(st.st_mode):
        raise UnsafeFile(p, f"is {kind_of(st.st_mode)}, not a regular file")
    raw = open(p, "rb")
    head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
    if head[:2] == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=raw)
    elif head[:6] == b"\xfd7zXZ\x00":
        raw = lzma.LZMAFile(raw)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None)


def blocks(f, size: int = 1 << 20, errors: list | None = None):
    """Lists of lines (without newlines) of text stream `f`, read `size` characters at a time.
    A line longer than MAX_LINE comes out as its first MAX_LINE + 1 characters (the caller
    sees len > MAX_LINE and reports it cut); memory stays bounded by `size` whatever the
    file holds."""
    carry = ""
    in_cut = False
    lim = MAX_LINE + 1
    while True:
        try:
            chunk = f.read(size)
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            # a cut or damaged .gz/.xz: what was read stays, the rest is reported
            if errors is not None:
                errors.append(f"{type(e).__name__}: {e}"[:200] or type(e).__name__)
            chunk = ""
        if not chunk:
            if carry:
                yield [carry]
            return
        parts = chunk.split("\n")
        if in_cut:
            parts[0] = carry
        elif carry:
            first = carry + parts[0]
            parts[0] = first if len(first) <= MAX_LINE else first[:lim]
        if len(parts) == 1:
            carry = parts[0]
            if len(carry) > MAX_LINE:
                carry = carry[:lim]
                in_cut = True
            continue
        last = parts.pop()
        yield parts
        in_cut = len(last) > MAX_LINE
        carry = last[:lim] if in_cut else last


def detect(lines: list[str]) -> str | None:
    """The format of a file from its first lines, or None when none of them is an event."""
    ft = pf = hdr = 0
    for s in lines:
        if TRACE_CMD_HEADER_RE.match(s):
            hdr += 1
        elif s.lstrip().startswith("# tracer"):
            hdr -= 5
        m = FTRACE_RE.match(s)
        if m:
            ft += 1
            continue
        if PERF_RE.match(s):
            pf += 1
    if not ft and not pf:
        return None
    if pf > ft:
        return "perf-script"
    return "trace-cmd" if hdr > 0 else "trace"



SNIFF_BYTES = 1 << 16     # read (decompressed) to decide whether a file is a text trace


def is_text_trace(path) -> bool:
    """True when `path` is a regular file holding a text trace this package reads (ftrace,
    trace-cmd report, perf script; plain, gzip or xz) - decided from its first
    :data:`SNIFF_BYTES` bytes - and not an hvdbg ``.hvt`` recording. Never raises: a missing,
    unreadable or non-regular file, a scenario name or a TOML file is False."""
    try:
        p = os.fspath(path)
        import stat as _stat
        if not _stat.S_ISREG(os.stat(p).st_mode):
            return False
        with open(p, "rb") as raw:
            head = raw.read(8)
            if head.startswith(b"HVDBGTR"):          # hvdbg.trace.format.MAGIC: a recording
                return False
            raw.seek(0)
            if head[:2] == b"\x1f\x8b":
                f = gzip.GzipFile(fileobj=raw)
            elif head[:6] == b"\xfd7zXZ\x00":
                f = lzma.LZMAFile(raw)
            else:
                f = raw
            try:
                data = f.read(SNIFF_BYTES)
            except (OSError, EOFError, lzma.LZMAError, zlib.error):
                return False
    except (OSError, ValueError):
        return False
    if b"\x00" in data[:4096]:
        return False                                  # binary
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    ls = text.split("\n")
    if len(data) == SNIFF_BYTES and len(ls) > 1:
        ls.pop()                                      # the last line may be cut
    return detect([s[:MAX_LINE] for s in ls[:20 * DETECT_LINES]]) is not None
