"""Trace reader: recovers every complete record, reports where and why it stopped.

Two kinds of trouble, told apart by the frame checksum:

* **Damage** (the bytes are not what the writer wrote): a cut, a CRC mismatch, an absurd
  length, a missing footer, trailing bytes, an unknown record kind. The scan stops and
  ``Trace.salvage`` says where and why; every complete record before it is kept.
* **Invalid content** (a frame whose CRC holds but whose content is wrong: an undecodable
  payload, wrong types, a checkpoint at a step the events do not reach, a check count that
  is not the event count, a gap between event frames, a branch named ``main``, a duplicate
  branch, a branch whose parent is unknown, a second header): ``TraceError``, one line
  naming the byte offset. Such a file claims something false and is refused whole.

Also refused (``TraceError``): a file that is not a regular file (FIFO, device, directory),
larger than ``MAX_TRACE_BYTES``, empty, with a bad magic, an unsupported version or a
missing/damaged header. The recorded choices are kept compactly (``format.Choices``,
4 bytes per event), so memory is a small multiple of the file size.
"""

from __future__ import annotations

import os
import re
from array import array
from dataclasses import dataclass, field
from typing import Any

from ..safe import UnsafeFile, read_regular
from . import format as F



#: A trace file is read whole (it holds choices only: a few bytes per event); larger files are
#: refused before they are read. Override per call with ``max_bytes``.
MAX_TRACE_BYTES = 1 << 30
_DIGEST = re.compile(r"^[0-9a-f]{16,128}$")
_BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


@dataclass
class Trace:
    header: dict
    events: F.Choices = field(default_factory=F.Choices)  # the recorded choices (descriptor tuples on access)
    where: array = field(default_factory=lambda: array("I"))  # per event: routine << 16 | pc of its op
    checks: bytearray = field(default_factory=bytearray)      # per event: 16-bit check of its writes (LE)
    checkpoints: list = field(default_factory=list)  # (step, digest, snapshot bytes | None, offset)
    branches: list = field(default_factory=list)  # dicts: name, parent, fork_step, edit, event, offset
    footer: dict | None = None
    footer_offset: int = 0
    salvage: dict | None = None  # None = complete and intact; else {offset, reason, events_recovered, message}
    size: int = 0  # bytes in the file when read
    #: event index at which each checkpoint was taken (parallel to ``checkpoints``)
    checkpoint_events: list = field(default_factory=list)
    #: the summary of the segment ending at each checkpoint: (writes, notes) tuples, or None (parallel)
    checkpoint_summaries: list = field(default_factory=list)
    #: the run's (statistics, pack state) at each checkpoint, or None (parallel)
    checkpoint_stats: list = field(default_factory=list)
    #: read lazily (load_trace(lazy=True)): inflates the columns above frame by frame
    columns: Any = None

    @property
    def complete(self) -> bool:
        return self.salvage is None


class _Stop(Exception):
    def __init__(self, offset: int, reason: str):
        self.offset = offset
        self.reason = reason


def _read_bytes(path: Any, max_bytes: int | None) -> bytes:
    limit = MAX_TRACE_BYTES if max_bytes is None else max_bytes
    if hasattr(path, "read"):
        data = path.read(limit + 1)
    else:
        try:
            data = read_regular(path, limit, "trace")
        except UnsafeFile as e:
            raise F.TraceError(path, 0, e.why) from None
    if len(data) > limit:
        raise F.TraceError(path, 0, f"file is over the {limit}-byte limit for a trace")
    return data


def _kind_name(kind: int) -> str:
    return F.KIND_NAMES.get(kind) or f"unknown-kind-{kind}"


def _frames(buf: memoryview, pos: int):
    """Yield (offset, kind, payload view) for each intact frame; raise _Stop at the first bad one."""
    n = len(buf)
    unpack_head = F.FRAME_HEAD.unpack_from
    crc = F.frame_crc
    while pos < n:
        remain = n - pos
        if remain < F.FRAME_HEAD_SIZE:
            raise _Stop(pos, f"truncated frame header ({remain} of {F.FRAME_HEAD_SIZE} bytes)")
        length, want, kind = unpack_head(buf, pos)
        if length > F.MAX_FRAME:
            raise _Stop(pos, f"frame declares {length} payload bytes, over the {F.MAX_FRAME}-byte limit")
        body = pos + F.FRAME_HEAD_SIZE
        if length > n - body:
            raise _Stop(pos, f"truncated {_kind_name(kind)} frame ({n - body} of {length} payload bytes)")
        payload = buf[body : body + length]
        if crc(length, kind, payload) != want:
            raise _Stop(pos, f"CRC mismatch in {_kind_name(kind)} frame")
        yield pos, kind, payload
        pos = body + length


def _decode_header(path, buf: memoryview) -> tuple[dict, int]:
    n = len(buf)
    if n == 0:
        raise F.TraceError(path, 0, "empty file (not an hvdbg trace)")
    if n < len(F.MAGIC) or bytes(buf[: len(F.MAGIC)]) != F.MAGIC:
        if F.MAGIC.startswith(bytes(buf[: len(F.MAGIC)])):
            raise F.TraceError(path, n, "truncated inside the magic (not a complete hvdbg trace)")
        raise F.TraceError(path, 0, "not an hvdbg trace (bad magic)")
    if n < F.FILE_HEAD_SIZE:
        raise F.TraceError(path, n, "truncated inside the format version")
    _, version = F.FILE_HEAD.unpack_from(buf, 0)
    if version > F.FORMAT_VERSION:
        raise F.TraceError(path, 8, f"format version {version} is newer than this hvdbg ({F.FORMAT_VERSION})")
    if version < 1:
        raise F.TraceError(path, 8, f"invalid format version {version}")
    if version in F.OLD_VERSIONS:
        raise F.TraceError(path, 8, F.OLD_VERSIONS[version])
    pos = F.FILE_HEAD_SIZE
    try:
        off, kind, payload = next(_frames(buf, pos))
    except StopIteration:
        raise F.TraceError(path, pos, "missing header record") from None
    except _Stop as s:
        raise F.TraceError(path, s.offset, f"damaged header record: {s.reason}") from None
    return header_record(path, off, kind, payload), off + F.FRAME_HEAD_SIZE + len(payload)


def header_record(path, off: int, kind: int, payload) -> dict:
    """The header map of a trace's first frame (recorded or imported), or TraceError."""
    if kind != F.K_HEADER:
        raise F.TraceError(path, off, f"first record is {_kind_name(kind)}, expected header")
    try:
        header = F.unpack_payload(payload, use_list=True)
    except Exception as e:  # untrusted bytes: any decoder failure is damage
        raise F.TraceError(path, off, f"undecodable header record ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise F.TraceError(path, off, f"header record is a {type(header).__name__}, expected a map")
    return header


def load_trace(path: Any, max_bytes: int | None = None, lazy: bool = False) -> Trace:
    """Load a trace file (path or binary file object). See module docstring for error vs salvage.
    lazy: every frame is scanned and checked as usual except the events frames' compressed
    columns, which ``Trace.columns`` (trace/columns.py) inflates and validates when asked;
    until then the columns read zero."""
    data = _read_bytes(path, max_bytes)
    buf = memoryview(data)
    header, pos = _decode_header(path, buf)
    if header.get("trace_kind") == F.IMPORTED_KIND:
        raise F.ImportedTraceRefused(path)
    tr = Trace(header=header, size=len(buf))
    events = tr.events
    nev = 0                     # events in the frames accepted so far
    frames: list | None = [] if lazy else None
    unpack = F.unpack_payload
    stop: _Stop | None = None
    end = pos
    try:
        for off, kind, payload in _frames(buf, pos):
            try:
                if kind == F.K_EVENTS:
                    rec = unpack(payload, use_list=False)
                    if type(rec) is not tuple or len(rec) != 3:
                        raise ValueError("events record is not [start, count, columns]")
                    start, count, blob = rec
                    if start != nev:
                        raise ValueError(f"events frame starts at event {F.one_line(str(start))[:30]}, expected "
                                         f"{nev} (frame lost?)")
                    if frames is not None:       # lazy: checked and inflated when read (trace/columns.py)
                        if type(count) is not int or not 0 < count <= F.MAX_FRAME:
                            raise ValueError(f"events frame claims {str(count)[:20]} events")
                        if not isinstance(blob, bytes):
                            raise ValueError("events frame columns are not bytes")
                        frames.append((start, count, blob, off))
                        nev += count
                    else:
                        codes, where, checks = F.unpack_columns(blob, count)
                        events.extend_codes(codes)
                        tr.where.extend(where)
                        tr.checks += checks
                        nev = len(events)
                elif kind == F.K_CHECKPOINT:
                    rec = unpack(payload, use_list=True)
                    if not isinstance(rec, dict):
                        raise ValueError("checkpoint record is not a map")
                    step, digest, snap, ev = rec["step"], rec["digest"], rec["snapshot"], rec["event"]
                    if type(step) is not int or not isinstance(digest, str) or not (snap is None or isinstance(snap, bytes)):
                        raise ValueError("checkpoint fields have wrong types")
                    if ev != nev or step != nev:
                        raise ValueError(f"checkpoint claims step {F.one_line(str(step))[:30]} (event "
                                         f"{F.one_line(str(ev))[:30]}), but {nev} events precede it")
                    if not _DIGEST.match(digest):
                        raise ValueError("checkpoint digest is not 16..128 hex digits")
                    prev = tr.checkpoints[-1][0] if tr.checkpoints else 0
                    if tr.checkpoints and step <= prev:
                        raise ValueError(f"checkpoint at step {step} does not follow the one at step {prev}")
                    tr.checkpoints.append((step, digest, snap, off))
                    tr.checkpoint_events.append(ev)
                    tr.checkpoint_summaries.append(_summary(rec.get("summary")))
                    tr.checkpoint_stats.append(_stats(rec.get("stats")))
                elif kind == F.K_BRANCH:
                    rec = unpack(payload, use_list=False)
                    if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
                        raise ValueError("branch record is not a map with a name")
                    if not (rec.get("parent") is None or isinstance(rec["parent"], str)) or type(rec.get("fork_step")) is not int:
                        raise ValueError("branch fields have wrong types")
                    for key in ("name", "parent"):
                        if rec.get(key) is not None and not _BRANCH_NAME.match(rec[key]):
                            raise ValueError(f"branch {key} {F.one_line(repr(rec[key]))[:40]} is not a name of letters, "
                                             "digits and _ . + - (at most 64)")
                    if not 0 <= rec["fork_step"] <= nev:
                        raise ValueError(f"branch fork step {F.one_line(str(rec['fork_step']))[:30]} is outside "
                                         f"0..{nev}")
                    edit = rec.get("edit")
                    b = {
                        "name": rec["name"],
                        "parent": rec.get("parent"),
                        "fork_step": rec.get("fork_step"),
                        "edit": None if edit is None else F.decode_descriptor(edit),
                        "event": rec.get("event"),
                        "offset": off,
                        "switch": None,
                    }
                    if b["name"] == "main":
                        raise ValueError("a branch may not be named main (main is the recorded run)")
                    if any(x["name"] == b["name"] for x in tr.branches):
                        raise ValueError(f"a second branch named {b['name']}")
                    if b["parent"] not in (None, "main") and not any(x["name"] == b["parent"] for x in tr.branches):
                        raise ValueError(f"branch {b['name']}: its parent {b['parent']} is neither main nor an earlier branch")
                    sw = rec.get("switch")
                    if sw is not None:
                        if not isinstance(sw, dict) or not all(k in ("fix", "hypervisor", "overlay") and isinstance(v, str)
                                                               and len(v) <= 64 for k, v in sw.items()):
                            raise ValueError("branch switch is not a map of fix / hypervisor / overlay names")
                        b["switch"] = dict(sw)
                    tr.branches.append(b)
                elif kind == F.K_FOOTER:
                    rec = unpack(payload, use_list=True)
                    if not isinstance(rec, dict):
                        raise ValueError("footer record is not a map")
                    if not isinstance(rec.get("outcome"), str) or not _BRANCH_NAME.match(rec["outcome"]) \
                            or rec.get("steps") != nev:
                        raise ValueError("footer outcome is not a name or its step count is not the number of events")
                    _check_footer(tr, rec, nev)
                    tr.footer = rec
                    tr.footer_offset = off
                elif kind == F.K_HEADER:
                    raise ValueError("second header record")
                else:
                    raise _Stop(off, f"unknown record kind {kind} (written by a newer hvdbg?)")
            except _Stop:
                raise
            except Exception as e:  # a payload whose CRC holds but whose content is wrong: refused
                why = f"missing field {e}" if isinstance(e, KeyError) else F.one_line(str(e))[:160] or type(e).__name__
                raise F.TraceError(path, off, f"invalid {_kind_name(kind)} record: {why}") from None
            end = off + F.FRAME_HEAD_SIZE + len(payload)
            if kind == F.K_FOOTER:
                end = _check_tail(buf, end, off)
                break
    except _Stop as s:
        stop = s
    if frames is not None:
        from .columns import LazyColumns
        codes, where = array("I", (0,)) * nev, array("I", (0,)) * nev
        tr.events, tr.where, tr.checks = F.Choices(codes), where, bytearray(2 * nev)
        tr.columns = LazyColumns(frames, codes, where, tr.checks, tr.events)
        events = tr.events
    if stop is None and tr.footer is None:
        stop = _Stop(end, "no footer (the writer did not close: killed, crashed or still running)")
    if stop is not None:
        tr.salvage = {
            "offset": stop.offset,
            "reason": F.one_line(stop.reason),
            "events_recovered": len(events),
            "message": f"{F.display_name(path)}: byte {stop.offset}: {F.one_line(stop.reason)}; "
            f"recovered {len(events)} events, {len(tr.checkpoints)} checkpoints",
        }
    return tr


def _summary(rec):
    """A checkpoint's segment summary: ((written locations), (notes)), checked for shape."""
    if rec is None:
        return None
    if type(rec) is not list or len(rec) != 2 or type(rec[0]) is not list or type(rec[1]) is not list \
            or len(rec[0]) + len(rec[1]) > F.MAX_SUMMARY_ENTRIES:
        raise ValueError("checkpoint summary is not [written locations, notes]")
    writes = set()
    for w in rec[0]:
        if type(w) is int and 0 <= w < 1 << 32:
            writes.add(w)
        elif type(w) is list and len(w) == 2 and w[0] in ("pg", "ov", "own") and type(w[1]) is int \
                and -(1 << 52) < w[1] < 1 << 52:
            writes.add((w[0], w[1]))
        else:
            raise ValueError("checkpoint summary names a location that is not a slot, page, overlay or owner")
    notes = set()
    for nt in rec[1]:
        if type(nt) is not list or len(nt) != 3 or type(nt[0]) is not str or len(nt[0]) > 32 or not all(
                x is None or (type(x) is int and -(1 << 64) < x < 1 << 64) or (type(x) is str and len(x) <= 256)
                for x in nt[1:]):
            raise ValueError("checkpoint summary has a malformed note")
        notes.add(tuple(nt))
    return (frozenset(writes), frozenset(notes))


def _stats(rec):
    """A checkpoint's (statistics, pack state): two maps of names to integers."""
    if rec is None:
        return None
    if type(rec) is not list or len(rec) != 2:
        raise ValueError("checkpoint statistics are not [statistics, pack state]")
    out = []
    for d in rec:
        if not isinstance(d, dict) or len(d) > F.MAX_STATS_ENTRIES or not all(
                type(k) is str and len(k) <= 64 and type(v) is int and -(1 << 64) < v < 1 << 64 for k, v in d.items()):
            raise ValueError("checkpoint statistics are not maps of names to integers")
        out.append(dict(d))
    return tuple(out)


def _check_footer(tr: Trace, f: dict, nev: int) -> None:
    if f.get("events") != nev:
        raise ValueError(f"footer says {f.get('events')} events, found {nev}")
    if list(f.get("checkpoints") or ()) != [c[3] for c in tr.checkpoints]:
        raise ValueError("footer checkpoint index does not match the checkpoint records")
    if list(f.get("branches") or ()) != [b["offset"] for b in tr.branches]:
        raise ValueError("footer branch index does not match the branch records")


def _check_tail(buf: memoryview, pos: int, footer_off: int) -> int:
    n = len(buf)
    if n - pos < F.TAIL_SIZE:
        raise _Stop(pos, f"truncated tail after the footer ({n - pos} of {F.TAIL_SIZE} bytes)")
    off, magic = F.TAIL.unpack_from(buf, pos)
    if magic != F.TAIL_MAGIC or off != footer_off:
        raise _Stop(pos, "damaged tail after the footer")
    pos += F.TAIL_SIZE
    if pos != n:
        raise _Stop(pos, f"{n - pos} trailing bytes after the end of the trace")
    return pos


def read_footer(path: Any) -> dict | None:
    """The footer index (outcome, steps, events, checkpoint/branch offsets) via the tail,
    without scanning the events; None if the trace has no intact footer."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < F.FILE_HEAD_SIZE + F.TAIL_SIZE:
            return None
        f.seek(size - F.TAIL_SIZE)
        off, magic = F.TAIL.unpack(f.read(F.TAIL_SIZE))
        if magic != F.TAIL_MAGIC or not (F.FILE_HEAD_SIZE <= off <= size - F.TAIL_SIZE - F.FRAME_HEAD_SIZE):
            return None
        f.seek(off)
        chunk = f.read(size - F.TAIL_SIZE - off)
    try:
        (_, kind, payload), = list(_frames(memoryview(chunk), 0))
        rec = F.unpack_payload(payload, use_list=True)
    except Exception:
        return None
    return rec if kind == F.K_FOOTER and isinstance(rec, dict) else None


def read_checkpoint(path: Any, offset: int) -> tuple:
    """Read the single checkpoint record at ``offset`` (from the footer index): (step, digest, snapshot, offset)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(offset)
        head = f.read(F.FRAME_HEAD_SIZE)
        if len(head) < F.FRAME_HEAD_SIZE:
            raise F.TraceError(path, offset, "no checkpoint frame here (past end of file)")
        length = F.FRAME_HEAD.unpack(head)[0]
        if length > F.MAX_FRAME or length > size - offset - F.FRAME_HEAD_SIZE:
            raise F.TraceError(path, offset, f"checkpoint frame declares {length} bytes, more than the file holds")
        chunk = head + f.read(length)
    try:
        (_, kind, payload), = list(_frames(memoryview(chunk), 0))
    except _Stop as s:
        raise F.TraceError(path, offset + s.offset, s.reason) from None
    if kind != F.K_CHECKPOINT:
        raise F.TraceError(path, offset, f"{_kind_name(kind)} record where a checkpoint was expected")
    try:
        rec = F.unpack_payload(payload, use_list=True)
        return (rec["step"], rec["digest"], rec["snapshot"], offset)
    except Exception as e:
        raise F.TraceError(path, offset, f"undecodable checkpoint record ({type(e).__name__})") from None
