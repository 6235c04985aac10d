"""Trace reader: recovers every complete record, reports where and why it stopped.

Errors (``TraceError``, one line naming the byte offset) only when nothing can be
trusted: empty file, bad magic, unsupported version, missing/damaged header
record. Anything wrong after a valid header (cut, CRC mismatch, absurd length,
undecodable payload, unknown record kind, missing footer, ...) stops the scan and
is returned as ``Trace.salvage``, with every complete record before it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from . import format as F



@dataclass
class Trace:
    header: dict
    events: list = field(default_factory=list)  # descriptor tuples, in order
    checkpoints: list = field(default_factory=list)  # (step, digest, snapshot | None, offset)
    branches: list = field(default_factory=list)  # dicts: name, parent, fork_step, edit, event, offset
    footer: dict | None = None
    salvage: dict | None = None  # None = complete and intact; else {offset, reason, events_recovered, message}
    size: int = 0  # bytes in the file when read
    #: event index at which each checkpoint was taken (parallel to ``checkpoints``)
    checkpoint_events: list = field(default_factory=list)
    #: per-event check values (bytes, 2 per event) stored with each checkpoint, or None (parallel)
    checkpoint_checks: list = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.salvage is None


class _Stop(Exception):
    def __init__(self, offset: int, reason: str):
        self.offset = offset
        self.reason = reason


def _read_bytes(path: Any, max_bytes: int | None) -> bytes:
    if hasattr(path, "read"):
        data = path.read() if max_bytes is None else path.read(max_bytes + 1)
    else:
        with open(path, "rb") as f:
            if max_bytes is not None:
                size = os.fstat(f.fileno()).st_size
                if size > max_bytes:
                    raise F.TraceError(path, 0, f"file is {size} bytes, over the max_bytes limit {max_bytes}")
                data = f.read(max_bytes + 1)
            else:
                data = f.read()
    if max_bytes is not None and len(data) > max_bytes:
        raise F.TraceError(path, 0, f"file is over the max_bytes limit {max_bytes}")
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
    pos = F.FILE_HEAD_SIZE
    try:
        off, kind, payload = next(_frames(buf, pos))
    except StopIteration:
        raise F.TraceError(path, pos, "missing header record") from None
    except _Stop as s:
        raise F.TraceError(path, s.offset, f"damaged header record: {s.reason}") from None
    if kind != F.K_HEADER:
        raise F.TraceError(path, off, f"first record is {_kind_name(kind)}, expected header")
    try:
        header = F.unpack_payload(payload, use_list=True)
    except Exception as e:  # untrusted bytes: any decoder failure is damage
        raise F.TraceError(path, off, f"undecodable header record ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise F.TraceError(path, off, f"header record is a {type(header).__name__}, expected a map")
    return header, off + F.FRAME_HEAD_SIZE + len(payload)


def load_trace(path: Any, max_bytes: int | None = None) -> Trace:
    """Load a trace file (path or binary file object). See module docstring for error vs salvage."""
    data = _read_bytes(path, max_bytes)
    buf = memoryview(data)
    header, pos = _decode_header(path, buf)
    tr = Trace(header=header, size=len(buf))
    events = tr.events
    extend = events.extend
    decode_batch = F.DescriptorDecoder().decode_batch
    unpack = F.unpack_payload
    stop: _Stop | None = None
    end = pos
    try:
        for off, kind, payload in _frames(buf, pos):
            try:
                if kind == F.K_EVENTS:
                    start, batch = unpack(payload, use_list=False)
                    if start != len(events):
                        raise _Stop(off, f"events frame starts at event {start}, expected {len(events)} (frame lost?)")
                    if type(batch) is not tuple:
                        raise ValueError("events batch is not an array")
                    extend(decode_batch(batch))
                elif kind == F.K_CHECKPOINT:
                    rec = unpack(payload, use_list=True)
                    step, digest, snap, ev = rec["step"], rec["digest"], rec["snapshot"], rec["event"]
                    if type(step) is not int or not isinstance(digest, str) or not (snap is None or isinstance(snap, bytes)):
                        raise ValueError("checkpoint fields have wrong types")
                    if ev != len(events):
                        raise _Stop(off, f"checkpoint taken at event {ev}, but {len(events)} events precede it")
                    checks = rec.get("checks")
                    if not (checks is None or isinstance(checks, bytes)):
                        raise ValueError("checkpoint checks are not bytes")
                    tr.checkpoints.append((step, digest, snap, off))
                    tr.checkpoint_events.append(ev)
                    tr.checkpoint_checks.append(checks)
                elif kind == F.K_BRANCH:
                    rec = unpack(payload, use_list=False)
                    if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
                        raise ValueError("branch record is not a map with a name")
                    if not (rec.get("parent") is None or isinstance(rec["parent"], str)) or type(rec.get("fork_step")) is not int:
                        raise ValueError("branch fields have wrong types")
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
                    sw = rec.get("switch")
                    if sw is not None:
                        if not isinstance(sw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in sw.items()):
                            raise ValueError("branch switch is not a map of strings")
                        b["switch"] = dict(sw)
                    tr.branches.append(b)
                elif kind == F.K_FOOTER:
                    rec = unpack(payload, use_list=True)
                    if not isinstance(rec, dict):
                        raise ValueError("footer record is not a map")
                    _check_footer(tr, rec, off)
                    tr.footer = rec
                elif kind == F.K_HEADER:
                    raise _Stop(off, "second header record")
                else:
                    raise _Stop(off, f"unknown record kind {kind} (written by a newer hvdbg?)")
            except _Stop:
                raise
            except Exception as e:  # untrusted payload that passed the CRC: stop, keep what came before
                raise _Stop(off, f"undecodable {_kind_name(kind)} record ({type(e).__name__}: {F.one_line(str(e))[:120]})") from None
            end = off + F.FRAME_HEAD_SIZE + len(payload)
            if kind == F.K_FOOTER:
                end = _check_tail(buf, end, off)
                break
    except _Stop as s:
        stop = s
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


def _check_footer(tr: Trace, f: dict, off: int) -> None:
    if f.get("events") != len(tr.events):
        raise _Stop(off, f"footer says {f.get('events')} events, found {len(tr.events)}")
    if list(f.get("checkpoints") or ()) != [c[3] for c in tr.checkpoints]:
        raise _Stop(off, "footer checkpoint index does not match the checkpoint records")
    if list(f.get("branches") or ()) != [b["offset"] for b in tr.branches]:
        raise _Stop(off, "footer branch index does not match the branch records")


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
