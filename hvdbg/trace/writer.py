"""Append-only, crash-tolerant trace writer.

Flush policy (see docs/trace-format.md): ``event()`` appends to an in-memory
batch; the batch is written as one events frame when it holds FLUSH_EVENTS
(1000) events or when, at an ``event()`` call, the oldest pending event is
FLUSH_SECONDS (100 ms) old by ``time.monotonic()``; also before every
checkpoint/branch record and on ``flush()``/``close()``. Every frame write is
followed by ``file.flush()`` (the bytes reach the OS, so they survive a killed
process). ``os.fsync`` runs in ``close()``, and after every frame when
``durable=True`` (survives power loss, costs ~0.1 ms per frame).
"""

from __future__ import annotations

import os
import time
from typing import Any, BinaryIO

from array import array

from ..core.events import pack_act
from ..safe import open_partial
from . import format as F

monotonic = time.monotonic  # module attribute so tests can drive the flush clock


class TraceWriter:
    """Write one trace. ``path`` is a filesystem path (created/truncated) or a writable binary file."""

    def __init__(self, path: Any, header: dict, *, durable: bool = False, overwrite: bool = True, owns: bool = False):
        self._packer = F.make_packer()
        header_payload = F.check_header_dict(header)  # validate before touching the disk
        self.durable = durable
        self.events_written = 0  # events passed to event()
        self.flushed_events = 0  # events handed to the OS (file.flush() done)
        self._codes = array("I")
        self._where = array("I")
        self._checks = array("H")
        self._batch_t0 = 0.0
        self._checkpoint_offsets: list[int] = []
        self._branch_offsets: list[int] = []
        self._closed = False
        if hasattr(path, "write"):
            self._f: BinaryIO = path
            self._owns = owns                   # close it at the end (a file opened for us)
            self.name = F.display_name(getattr(path, "name", None))
        else:
            if overwrite:
                self._f = open_partial(os.fspath(path))   # regular files only, never through a symlink
            else:
                self._f = open(path, "xb")
            self._owns = True
            self.name = F.display_name(path)
        try:
            self._pos = 0
            self._write(F.FILE_HEAD.pack(F.MAGIC, F.FORMAT_VERSION))
            self._write_frame(F.K_HEADER, header_payload)
        except BaseException:
            if self._owns:
                self._f.close()
            raise

    # ------------------------------------------------------------ low level
    def _write(self, data: bytes) -> int:
        off = self._pos
        self._f.write(data)
        self._pos += len(data)
        return off

    def _write_frame(self, kind: int, payload: bytes) -> int:
        off = self._write(F.frame(kind, payload))
        self._f.flush()
        if self.durable:
            os.fsync(self._f.fileno())
        return off

    def _check_open(self):
        if self._closed:
            raise ValueError(f"{self.name}: trace writer is closed")

    # ------------------------------------------------------------ records
    def event(self, descriptor: tuple, where: int = 0, check: int = 0) -> None:
        """Record one event: its choice (a model action; ValueError for anything that does not
        pack, e.g. an edit), where its op ran (routine << 16 | pc) and its 16-bit check."""
        if self._closed:
            raise ValueError(f"{self.name}: trace writer is closed")
        codes = self._codes
        codes.append(pack_act(descriptor))
        self._where.append(where)
        self._checks.append(check)
        self.events_written += 1
        now = monotonic()
        if len(codes) == 1:
            self._batch_t0 = now
        if len(codes) >= F.FLUSH_EVENTS or now - self._batch_t0 >= F.FLUSH_SECONDS:
            self._flush_batch()

    def _flush_batch(self) -> None:
        # only complete events: an event() cut off between its three appends (a signal
        # handler raising in this thread - SIGTERM, Ctrl-C - on the way to abandon()) left
        # the first columns one longer, and a frame of unequal columns is refused on load
        n = min(len(self._codes), len(self._where), len(self._checks))
        if not n:
            return
        start = self.flushed_events
        blob = F.pack_columns(self._codes[:n], self._where[:n], self._checks[:n])
        self._write_frame(F.K_EVENTS, self._packer.pack((start, n, blob)))
        self.flushed_events = start + n
        self._codes, self._where, self._checks = array("I"), array("I"), array("H")

    def flush(self) -> None:
        """Write pending events now (file.flush(); fsync too if durable)."""
        self._check_open()
        self._flush_batch()

    def checkpoint(self, step: int, digest: str, snapshot: bytes | None = None, summary=None,
                   stats: tuple | None = None) -> int:
        """Record the state digest (hex str) at ``step``, and optionally the encoded machine
        snapshot there (core/snapshot.py), the summary of the segment that ends there
        (journal.Summary: written locations, notes) and the run's statistics and pack state
        there. Returns its offset."""
        self._check_open()
        if type(step) is not int or step < 0:
            raise ValueError(f"checkpoint step must be an int >= 0, got {step!r}")
        if not isinstance(digest, str):
            raise TypeError(f"checkpoint digest must be a str, got {type(digest).__name__}")
        if snapshot is not None and not isinstance(snapshot, (bytes, bytearray, memoryview)):
            raise TypeError(f"checkpoint snapshot must be bytes or None, got {type(snapshot).__name__}")
        self._flush_batch()
        rec = {"step": step, "digest": digest, "event": self.flushed_events,
               "snapshot": None if snapshot is None else bytes(snapshot)}
        if summary is not None:
            rec["summary"] = [[w if w.__class__ is int else list(w) for w in summary.writes],
                              [list(n) for n in summary.notes]]
        if stats is not None:
            rec["stats"] = [dict(stats[0]), dict(stats[1])]
        payload = self._packer.pack(rec)
        off = self._write_frame(F.K_CHECKPOINT, payload)
        self._checkpoint_offsets.append(off)
        return off

    def branch(self, name: str, parent: str | None, fork_step: int, edit_descriptor: tuple | None,
               switch: dict | None = None) -> int:
        """Record a what-if branch: forked from ``parent`` at ``fork_step`` with an edit. Returns its offset."""
        self._check_open()
        if not isinstance(name, str) or not (parent is None or isinstance(parent, str)):
            raise TypeError("branch name must be a str and parent a str or None")
        if type(fork_step) is not int or fork_step < 0:
            raise ValueError(f"branch fork_step must be an int >= 0, got {fork_step!r}")
        edit = None if edit_descriptor is None else F.encode_descriptor(edit_descriptor)
        self._flush_batch()
        payload = self._packer.pack(
            {"name": name, "parent": parent, "fork_step": fork_step, "edit": edit, "event": self.flushed_events,
             **({} if not switch else {"switch": {str(k): str(v) for k, v in switch.items()}})}
        )
        off = self._write_frame(F.K_BRANCH, payload)
        self._branch_offsets.append(off)
        return off

    def close(self, outcome: str, steps: int) -> None:
        """Flush, write the footer (index) and the tail, fsync, close."""
        self._check_open()
        self._flush_batch()
        payload = self._packer.pack(
            {"outcome": str(outcome), "steps": int(steps), "events": self.flushed_events,
             "checkpoints": self._checkpoint_offsets, "branches": self._branch_offsets}
        )
        off = self._write_frame(F.K_FOOTER, payload)
        self._write(F.TAIL.pack(off, F.TAIL_MAGIC))
        self._finish()

    def abandon(self) -> None:
        """Flush what is pending and close WITHOUT a footer (the reader will report a salvage)."""
        if not self._closed:
            self._flush_batch()
            self._finish()

    def _finish(self) -> None:
        self._closed = True
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        finally:
            if self._owns:
                self._f.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Leaving the block without close() (e.g. on an exception) keeps every event
        # but writes no footer: the trace then loads as salvaged ("no footer").
        self.abandon()
        return False


def publish(tmp: str, path: str) -> None:
    """Put a finished file in place: ``os.replace(tmp, path)`` (atomic: readers see the old
    file or the new one, never a mix), then fsync the directory so the rename itself survives
    a power loss. The writer fsynced the data in ``close()``."""
    os.replace(tmp, path)
    try:
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
