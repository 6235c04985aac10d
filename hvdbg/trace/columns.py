"""The per-event columns of a trace opened at one step, inflated a frame at a time.

Reading a trace scans every frame (its CRC, its record) but, when opened lazily, leaves each
events frame's compressed columns where they are: ``LazyColumns`` owns full-length arrays
(choices, where each op ran, checks; zero until filled) and inflates, validates and copies in
the frames a reader asks for (``ensure``). Opening a 10M-event trace at one step then inflates
the ~17 frames of one segment instead of ~10,000 (docs/format.md, "opening at a step").

Validation is the same as an eager read's, frame by frame: the columns decompress to exactly
``count`` events, every choice unpacks to a model action and passes the caller's check (vCPUs
and vectors of this machine), every where value passes the caller's bound. A frame that fails
is recorded in ``bad`` (offset, reason) and left zero; ``damage(a, b)`` tells a rebuild that
its events are not the recorded ones (it reports a JournalError; ``strict`` callers raise).
"""
from __future__ import annotations

from array import array
from bisect import bisect_right
from typing import Callable

from . import format as F


class ColumnError(ValueError):
    def __init__(self, offset: int, event: int, why: str):
        super().__init__(why)
        self.offset, self.event, self.why = offset, event, why


class LazyColumns:
    def __init__(self, frames: list, codes: array, where: array, checks: bytearray, choices: F.Choices):
        self.frames = frames                      # (start, count, compressed blob, byte offset)
        self.starts = [f[0] for f in frames]
        self.codes, self.where, self.checks = codes, where, checks
        self.choices = choices                    # interns each distinct code once
        self.loaded = bytearray(len(frames))
        self.left = len(frames)
        self.bad: dict[int, tuple[int, str]] = {}  # frame index -> (offset, reason)
        self.check_code: Callable[[tuple], str | None] = lambda a: None
        self.check_where: Callable[[array], int | None] = lambda w: None

    @property
    def full(self) -> bool:
        return self.left == 0

    def _frames_of(self, a: int, b: int) -> range:
        if b <= a or not self.frames:
            return range(0)
        lo = max(0, bisect_right(self.starts, a) - 1)
        hi = bisect_right(self.starts, b - 1)
        return range(lo, hi)

    def ensure(self, a: int, b: int, strict: bool = False) -> None:
        """Fill the columns of events [a, b) (0-based within these columns). strict: raise
        ColumnError for the first frame there that fails instead of only recording it."""
        for k in self._frames_of(a, b):
            if not self.loaded[k]:
                self._load(k)
            if strict and k in self.bad:
                off, why = self.bad[k]
                raise ColumnError(off, self.frames[k][0], why)

    def ensure_all(self) -> None:
        if self.left:
            self.ensure(0, len(self.codes))

    def damage(self, a: int, b: int) -> ColumnError | None:
        """The first failed frame among events [a, b) (filling them first), or None."""
        self.ensure(a, b)
        for k in self._frames_of(a, b):
            if k in self.bad:
                off, why = self.bad[k]
                return ColumnError(off, self.frames[k][0], why)
        return None

    def _load(self, k: int) -> None:
        start, count, blob, off = self.frames[k]
        self.loaded[k] = 1
        self.left -= 1
        try:
            codes, where, checks = F.unpack_columns(blob, count)
            for code, a in self.choices.intern(codes).items():    # ValueError: not a model action
                why = self.check_code(a)
                if why:
                    self.choices.forget(code)          # a later frame with it is checked again
                    raise ValueError(why)
            bad = self.check_where(where)
            if bad is not None:
                raise ValueError(f"a recorded event ran routine {bad >> 16} op {bad & 0xFFFF}, which this "
                                 "listing does not have")
        except ValueError as e:
            self.bad[k] = (off, f"invalid events record: {F.one_line(str(e))[:160]}")
            return
        finally:
            self.frames[k] = (start, count, None, off)   # the compressed bytes are not needed again
        self.codes[start:start + count] = codes
        self.where[start:start + count] = where
        self.checks[2 * start:2 * (start + count)] = checks
