"""The journal: every event of one branch, kept compact and rebuilt on demand (issue 10).

What stays in memory for the whole history, per event: the choice (a packed u32, events.py)
and where the op ran (routine << 16 | pc, u32) - 8 bytes. Everything else (the writes, the
notes) lives in **segments** of ``K`` events (a segment starts at a multiple of K, or at a
branch's fork): a full machine snapshot is kept at every segment start, and a segment's
events are re-executed from that snapshot with the recorded choices when someone asks for
one of them (rr's checkpoints). Built segments sit in an LRU cache under a byte budget; the
segment being recorded (the head) is always kept.

Each closed segment also keeps a **summary**: the set of locations its events wrote (slots,
pages, overlays, page owners) and the notes they made (kind and first two fields). "Who last
wrote this byte before step N?" walks the summaries backwards and builds only the segment
that has the answer; breakpoint searches skip segments whose summary cannot match.

A branch's journal shares its parent's events before the fork (``base``/``fork``): nothing
is copied, and the parent's journal is only read (its segment cache has a lock, so a branch
can be computed in a worker thread while the UI moves the parent).

Index keys (``last``): a state slot (int); ("b", space, addr) for one byte of RAM or an
overlay page; ("pg", pfn) / ("ov", cpu) for a page coming into existence; ("own", pfn).
Summary keys: a slot; ("pg", pfn) for any write into RAM page pfn; ("ov", cpu) for any write
into an overlay page; ("own", pfn).
"""
from __future__ import annotations

import bisect
import threading
from array import array
from collections import OrderedDict
from itertools import chain
from operator import itemgetter
from typing import Callable, NamedTuple

from .defs import PAGE_SHIFT
from .events import EDIT_ACT, Event, act_code, unpack_act
from .machine import RAM

SEGMENT_EVENTS = 16384         # K: events per segment (bench/timeline.py measures the choice)
BYTES_PER_BUILT_EVENT = 520    # a built event in memory: its Event tuple, writes and notes (measured)
DEFAULT_CACHE_BYTES = 512 << 20
NO_RTPC = 0xFFFFFFFF


class JournalError(Exception):
    """A segment rebuilt from its snapshot does not match what was recorded (a trace whose
    data disagrees with the model, or an engine bug). ``step`` is the first differing event."""

    def __init__(self, step: int, why: str):
        self.step = step
        super().__init__(why)


class Summary(NamedTuple):
    writes: frozenset      # summary keys of every location written in the segment
    notes: frozenset       # (kind, field1, field2) of every note (fields None when absent)


def summary_key(loc):
    if loc.__class__ is int:
        return loc
    k = loc[0]
    if k == "m":
        return ("pg", loc[2] >> PAGE_SHIFT) if loc[1] == RAM else ("ov", loc[1])
    return loc                    # ("pg", pfn), ("ov", cpu), ("own", pfn)


def _field(x):
    if x.__class__ is int or (x.__class__ is str and len(x) <= 32):
        return x
    return None


def note_key(n: tuple) -> tuple:
    """(kind, first field, second field) of a note, each field kept only when it is an int or a
    short name (a vector, an MSR, a transition kind), else None."""
    return (n[0], _field(n[1]) if len(n) > 1 else None, _field(n[2]) if len(n) > 2 else None)


_FIRST, _ACT, _WRITES = itemgetter(0), itemgetter(1), itemgetter(5)     # of an event / a write / an act


def summarize(events) -> Summary:
    # distinct locations first (a segment writes a few hundred locations thousands of times),
    # then their keys; notes only from the events that have any (two passes: `events` may be
    # an iterator)
    if not isinstance(events, list):
        events = list(events)
    locs = set(map(_FIRST, chain.from_iterable(map(_WRITES, events))))
    w = {loc if loc.__class__ is int else summary_key(loc) for loc in locs}
    nt = {note_key(n) for ev in events if ev[6] for n in ev[6]}
    return Summary(frozenset(w), frozenset(nt))


def index_keys(loc, new) -> list:
    if loc.__class__ is int:
        return [loc]
    if loc[0] == "m":
        return [("b", loc[1], loc[2] + j) for j in range(len(new))]
    return [loc]


def query_keys(loc) -> list[tuple]:
    """(index key, summary key) pairs that a write of `loc` can show up under."""
    if isinstance(loc, tuple) and loc[0] == "mem":
        space, addr = loc[1], loc[2]
        page = ("pg", addr >> PAGE_SHIFT) if space == RAM else ("ov", space)
        return [(("b", space, addr), page), (page, page)]
    return [(loc, loc)]


class Segment:
    """Events [start, start + len(events)) with a lazily built index (key -> steps)."""
    __slots__ = ("start", "events", "_index", "_indexed")

    def __init__(self, start: int, events: list):
        self.start = start
        self.events = events
        self._index: dict = {}
        self._indexed = 0

    def index(self) -> dict:
        evs = self.events
        n = len(evs)
        if self._indexed < n:
            idx = self._index
            for i in range(self._indexed, n):
                ev = evs[i]
                step = ev[0]
                for loc, _old, new in ev[5]:
                    if loc.__class__ is int:
                        lst = idx.get(loc)
                        if lst is None:
                            idx[loc] = [step]
                        elif lst[-1] != step:
                            lst.append(step)
                    else:
                        for key in index_keys(loc, new):
                            lst = idx.setdefault(key, [])
                            if not lst or lst[-1] != step:
                                lst.append(step)
            self._indexed = n
        return self._index


class _Column:
    """A Journal column of its closed own events (codes, rtpc, checks), kept in `_<name>`:
    reading it through the attribute fills a lazily read trace's columns first (Journal.lazy);
    the per-event readers use `_<name>` after need()."""

    def __set_name__(self, owner, name: str) -> None:
        self.attr = "_" + name

    def __get__(self, j, owner=None):
        if j is None:
            return self
        if j.lazy is not None:
            j._fill()
        return getattr(j, self.attr)

    def __set__(self, j, value) -> None:
        setattr(j, self.attr, value)


class Journal:
    """The events of one branch (module doc). Indexable like a list of Event tuples."""

    def __init__(self, K: int = SEGMENT_EVENTS, base: "Journal | None" = None, fork: int = 0,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.K = max(1, K)
        self.base = base
        self.fork = fork
        # Columns read from a trace opened at one step are filled a frame at a time: `lazy` is
        # the filler until every frame is in (then None), `columns` keeps it for its damage
        # report. Readers of one event or one range call need(); the plain attributes below
        # (codes, rtpc, checks) fill everything first.
        self.lazy = None
        self.columns = None
        self.codes = array("I")
        self.rtpc = array("I")
        self.edits: dict[int, tuple] = {}  # step -> edit descriptor
        self.head = Segment(fork, [])     # the open segment the engine appends to
        self.snaps: dict[int, tuple] = {}  # own segment starts -> machine snapshot
        self.summaries: dict[int, Summary] = {}
        self.cache: OrderedDict[int, Segment] = OrderedDict()
        self.cache_bytes = cache_bytes
        self.checks: bytearray | None = None
        self.digests: dict[int, str] = {}      # segment start -> state digest, when known (traces)
        self.stats_at: dict[int, tuple] = {}   # segment start -> (statistics, pack state) there
        # rebuild(start, end) -> list[Event]: re-executes [start, end) from snaps[start]
        self.rebuild: Callable | None = None
        self.lock = threading.RLock()
        self.builds = 0                   # segments rebuilt so far (statistics, tests)

    # ---------------------------------------------------------------- columns
    codes = _Column()      # closed own events: packed choices (EDIT_ACT for an edit)
    rtpc = _Column()       # closed own events: routine << 16 | pc (NO_RTPC for edits)
    checks = _Column()     # per own event u16 checks, when known (traces)

    def fill_lazily(self, columns) -> None:
        """Read the closed own events' columns through `columns` (trace/columns.LazyColumns,
        sharing its arrays): a frame is inflated when something reads an event in it."""
        self.lazy = self.columns = columns
        self._codes, self._rtpc, self._checks = columns.codes, columns.where, columns.checks

    def _fill(self) -> None:
        self.lazy.ensure_all()
        self.lazy = None

    def need(self, a: int, b: int) -> None:
        """Make the columns of own events [a, b) readable (lazily opened traces)."""
        lz = self.lazy
        if lz is not None:
            lz.ensure(max(0, a - self.fork), b - self.fork)
            if lz.full:
                self.lazy = None

    def recorded_checks(self, start: int, end: int) -> bytearray | None:
        """The per-event checks column, for re-executing own events [start, end): raises
        JournalError when the recorded columns there could not be read (an invalid frame)."""
        src = self.columns
        if src is not None:
            err = src.damage(max(0, start - self.fork), end - self.fork)
            if self.lazy is not None and src.full:
                self.lazy = None
            if err is not None:
                raise JournalError(err.event + self.fork, f"the recording is invalid at byte {err.offset}: {err.why}")
        return self._checks

    # ---------------------------------------------------------------- shape
    def __len__(self) -> int:
        return self.head.start + len(self.head.events)

    @property
    def closed(self) -> int:
        """Events before the head segment (their columns are in codes/rtpc)."""
        return self.head.start

    def next_boundary(self) -> int:
        s = self.head.start
        return s - s % self.K + self.K

    def seg_start(self, i: int) -> int:
        if i < self.fork:
            return self.base.seg_start(i)
        return max(self.fork, i - i % self.K)

    def seg_end(self, start: int) -> int:
        if start < self.fork:
            return min(self.base.seg_end(start), self.fork)
        return min(start - start % self.K + self.K, self.head.start) if start < self.head.start else len(self)

    def starts(self) -> list[int]:
        """Own segment starts, oldest first (the head's included)."""
        out, s = [], self.fork
        while s <= self.head.start:
            out.append(s)
            if s == self.head.start:
                break
            s = s - s % self.K + self.K
        return out

    # ---------------------------------------------------------------- appending
    def append(self, ev: Event) -> None:
        """Slow path for callers outside the engine loop (the engine appends to head.events
        directly and calls close_head at next_boundary())."""
        self.head.events.append(ev)

    def close_head(self, snapshot: tuple, stats: tuple | None = None) -> int:
        """The head is complete (its last event reached a boundary): move its columns into the
        arrays, summarize it, cache it built, keep `snapshot` (the state after it) and `stats`
        (the run's statistics and pack state there) for the next segment. Returns the next
        boundary."""
        with self.lock:
            head = self.head
            evs = head.events
            start = head.start
            codes, rtpc = self.codes, self.rtpc
            acts = list(map(_ACT, evs))
            if "edit" in map(_FIRST, acts):
                for ev in evs:
                    a = ev[1]
                    if a[0] == "edit":
                        codes.append(EDIT_ACT)
                        rtpc.append(NO_RTPC)
                        self.edits[ev[0]] = a
                    else:
                        codes.append(act_code(a))
                        rtpc.append(ev[3] << 16 | ev[4])
            else:                   # the usual segment: no edits, one pass per column
                codes.extend(map(act_code, acts))
                rtpc.extend([ev[3] << 16 | ev[4] for ev in evs])
            self.summaries[start] = summarize(evs)
            end = start + len(evs)
            self.snaps[end] = snapshot
            if stats is not None:
                self.stats_at[end] = stats
            self.head = Segment(end, [])
            if evs:
                self.cache[start] = head
                self._evict()
            return self.next_boundary()

    def truncate(self, n: int) -> None:
        """Drop own events from n on (the head segment only: used when a run is cut back)."""
        if n < self.head.start:
            raise ValueError("only the open segment can be truncated")
        del self.head.events[n - self.head.start:]
        self.head._index, self.head._indexed = {}, 0

    # ---------------------------------------------------------------- reading
    def act(self, i: int) -> tuple:
        """The choice of event i, without building its segment."""
        if i < self.fork:
            return self.base.act(i)
        if i >= self.head.start:
            return self.head.events[i - self.head.start][1]
        if self.lazy is not None:
            self.need(i, i + 1)
        c = self._codes[i - self.fork]
        return self.edits[i] if c == EDIT_ACT else unpack_act(c)

    def code(self, i: int) -> int:
        if i < self.fork:
            return self.base.code(i)
        if i >= self.head.start:
            a = self.head.events[i - self.head.start][1]
            return EDIT_ACT if a[0] == "edit" else act_code(a)
        if self.lazy is not None:
            self.need(i, i + 1)
        return self._codes[i - self.fork]

    def where(self, i: int) -> tuple[int, int]:
        """(routine, pc) of event i's op (-1, -1 for an edit), without building its segment."""
        if i < self.fork:
            return self.base.where(i)
        if i >= self.head.start:
            ev = self.head.events[i - self.head.start]
            return ev[3], ev[4]
        if self.lazy is not None:
            self.need(i, i + 1)
        v = self._rtpc[i - self.fork]
        return (-1, -1) if v == NO_RTPC else (v >> 16, v & 0xFFFF)

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1:
                return list(self.iter_range(start, stop))
            return [self[j] for j in range(start, stop, step)]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"event {i} is outside 0..{n - 1}")
        if i < self.fork:
            return self.base[i]
        head = self.head
        if i >= head.start:
            return head.events[i - head.start]
        s = max(self.fork, i - i % self.K)
        return self.segment(s).events[i - s]

    def __iter__(self):
        return self.iter_range(0, len(self))

    def __reversed__(self):
        return self.iter_back(len(self), 0)

    def __eq__(self, other) -> bool:
        if other is self:
            return True
        try:
            if len(other) != len(self):
                return False
        except TypeError:
            return NotImplemented
        return all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"Journal({len(self)} events, {len(self.cache)} segments built)"

    def iter_range(self, a: int, b: int):
        """Events a..b-1 in order, one segment built at a time."""
        b = min(b, len(self))
        i = max(0, a)
        while i < b:
            if i < self.fork:
                stop = min(b, self.fork)
                yield from self.base.iter_range(i, stop)
                i = stop
                continue
            head = self.head
            if i >= head.start:
                yield from head.events[i - head.start:b - head.start]
                return
            s = max(self.fork, i - i % self.K)
            seg = self.segment(s)
            stop = min(b, s + len(seg.events))
            yield from seg.events[i - s:stop - s]
            i = stop

    def iter_back(self, b: int, a: int = 0):
        """Events b-1 down to a."""
        i = min(b, len(self)) - 1
        while i >= max(0, a):
            if i < self.fork:
                yield from self.base.iter_back(i + 1, a)
                return
            head = self.head
            if i >= head.start:
                lo = max(a, head.start)
                for j in range(i, lo - 1, -1):
                    yield head.events[j - head.start]
                i = lo - 1
                continue
            s = max(self.fork, i - i % self.K)
            seg = self.segment(s)
            lo = max(a, s)
            evs = seg.events
            for j in range(i, lo - 1, -1):
                yield evs[j - s]
            i = lo - 1

    # ---------------------------------------------------------------- segments
    def segment(self, start: int) -> Segment:
        """The built segment that starts at `start` (own segments only)."""
        head = self.head
        if start == head.start:
            return head
        with self.lock:
            seg = self.cache.get(start)
            if seg is not None:
                self.cache.move_to_end(start)
                return seg
            if self.rebuild is None or start not in self.snaps:
                raise JournalError(start, f"segment at step {start} is not in memory and cannot be rebuilt")
            end = self.seg_end(start)
            import gc
            was = gc.isenabled()
            gc.disable()                  # millions of acyclic tuples: nothing for the cyclic GC
            try:
                events = self.rebuild(start, end)
            finally:
                if was:
                    gc.enable()
            self._check_rebuilt(start, end, events)
            gc.freeze()                   # keep later collections from scanning the segment
            seg = Segment(start, events)
            self.builds += 1
            self.cache[start] = seg
            self._evict()
            return seg

    def verify(self, stop=None, progress=None) -> int:
        """Re-execute every closed own segment from its snapshot and check it (recorded ops,
        per-event checks, the digest at its end, its summary) without caching it: for a
        journal read from a trace, segment by segment, this checks the whole recording (each
        snapshot was checked against the digest the previous segment ends with). progress(done,
        total) is called after each segment; stop() ends it early. Returns the segments checked;
        raises JournalError at the first difference."""
        starts = [s for s in self.starts() if s < self.head.start]
        for k, s in enumerate(starts):
            if stop is not None and stop():
                return k
            end = self.seg_end(s)
            events = self.rebuild(s, end)
            self._check_rebuilt(s, end, events)
            summ = self.summaries.get(s)
            if summ is not None and summ != summarize(events):
                raise JournalError(s, f"the summary of the segment at step {s} differs from its re-executed events")
            if progress is not None:
                progress(k + 1, len(starts))
        return len(starts)

    def ensure(self, a: int, b: int) -> None:
        """Build every segment that events [a, b) live in (so a caller can check everything
        will be readable - a JournalError raised here - before it changes any state)."""
        for _lo, _hi, s in self.segments_between(a, b):
            if s < self.fork:
                self.base.ensure(_lo, _hi)
            elif s != self.head.start:
                self.segment(s)

    def built_segment(self, a: int, b: int) -> Segment | None:
        """The one built segment that holds events [a, b) (own or inherited), or None."""
        if a >= b:
            b = a + 1
        if a < self.fork:
            return self.base.built_segment(a, b) if b <= self.fork else None
        head = self.head
        if a >= head.start:
            return head if b <= head.start + len(head.events) else None
        s = max(self.fork, a - a % self.K)
        if b > s - s % self.K + self.K or b > head.start:
            return None
        seg = self.cache.get(s)
        return seg

    def is_built(self, start: int) -> bool:
        return start == self.head.start or start in self.cache or (start < self.fork and self.base.is_built(start))

    def _check_rebuilt(self, start: int, end: int, events: list) -> None:
        if len(events) != end - start:
            raise JournalError(start + len(events), f"re-executing steps {start}..{end - 1} ended after "
                                                    f"{len(events)} events")
        off = self.fork
        self.need(start, end)
        rtpc = self._rtpc
        for ev in events:
            i = ev[0]
            want = rtpc[i - off]
            got = NO_RTPC if ev[1][0] == "edit" else ev[3] << 16 | ev[4]
            if want != got:
                raise JournalError(i, f"event {i} ran a different op than was recorded")
        if start not in self.summaries:
            self.summaries[start] = summarize(events)

    def _evict(self) -> None:
        limit = max(2, self.cache_bytes // (BYTES_PER_BUILT_EVENT * self.K))
        while len(self.cache) > limit:
            self.cache.popitem(last=False)

    def built_events(self) -> int:
        return len(self.head.events) + sum(len(s.events) for s in self.cache.values())

    # ---------------------------------------------------------------- snapshots
    def snapshot_floor(self, k: int) -> tuple[int, tuple]:
        """(step, snapshot) of the newest segment-start snapshot at or before step k (every own
        segment start has one: the fork's is set by whoever makes the journal)."""
        if k < self.fork:
            return self.base.snapshot_floor(k)
        s = self.seg_start(min(k, len(self)))
        snap = self.snaps.get(s)
        if snap is None:
            raise JournalError(s, f"no snapshot at step {s}")
        return s, snap

    def stats_floor(self, k: int) -> tuple[int, tuple]:
        """(step, (statistics, pack state)) kept at the newest segment start at or before k."""
        if k < self.fork:
            return self.base.stats_floor(k)
        s = self.seg_start(min(k, len(self)))
        while s not in self.stats_at:
            s = self.seg_start(s - 1) if s > self.fork else None
            if s is None:
                return self.base.stats_floor(self.fork) if self.base is not None else (0, None)
        return s, self.stats_at[s]

    # ---------------------------------------------------------------- queries
    def last(self, loc, before: int) -> int | None:
        """Step of the newest event before `before` that wrote `loc`: a slot, ("own", pfn), or
        ("mem", space, addr) for one byte (a page appearing counts as a write of its bytes).
        Walks the segment summaries backwards; builds only a segment that wrote it."""
        qk = query_keys(loc)
        before = min(before, len(self))
        i = before - 1
        while i >= self.fork and i >= 0:
            s = max(self.fork, i - i % self.K)
            summ = self.summaries.get(s)
            if summ is None or any(sk in summ.writes for _ik, sk in qk):
                idx = self.segment(s).index()
                best = None
                for ik, _sk in qk:
                    lst = idx.get(ik)
                    if lst:
                        j = bisect.bisect_left(lst, before) - 1
                        if j >= 0 and (best is None or lst[j] > best):
                            best = lst[j]
                if best is not None:
                    return best
            i = s - 1
        if self.base is not None and i >= 0:
            return self.base.last(loc, min(before, self.fork))
        return None

    def last_where(self, loc, before: int, cond=None):
        """(event, write) of the newest write of slot / owner `loc` before `before` whose
        (old, new) satisfy cond; (None, None) if none."""
        b = min(before, len(self))
        while True:
            i = self.last(loc, b)
            if i is None:
                return None, None
            ev = self[i]
            for w in ev[5]:
                if w[0] == loc and (cond is None or cond(w[1], w[2])):
                    return ev, w
            b = i

    def byte_write(self, space: int, addr: int, before: int):
        """(event, write) that last put the byte (space, addr) in place before `before`."""
        i = self.last(("mem", space, addr), before)
        if i is None:
            return None, None
        ev = self[i]
        pfn = addr >> PAGE_SHIFT
        for loc, old, new in ev[5]:
            if loc.__class__ is tuple:
                if loc[0] == "m" and loc[1] == space and loc[2] <= addr < loc[2] + len(new):
                    return ev, (loc, old, new)
                if (loc[0] == "pg" and space == RAM and loc[1] == pfn) or (loc[0] == "ov" and loc[1] == space):
                    return ev, (loc, old, new)
        return None, None

    def summary_of(self, start: int) -> Summary | None:
        """The summary of the segment starting at `start` (None: the open head, or unknown)."""
        if start < self.fork:
            return self.base.summary_of(start)
        return self.summaries.get(start)

    def has_where(self, value: int, a: int, b: int) -> bool:
        """May an event in [a, b) have run the op routine << 16 | pc == value? Exact for closed
        own events (the column), True for the open head."""
        if a < self.fork:
            if self.base.has_where(value, a, min(b, self.fork)):
                return True
            a = self.fork
        if b > self.head.start:
            return True
        if a >= b:
            return False
        self.need(a, b)
        try:
            self._rtpc.index(value, a - self.fork, b - self.fork)
            return True
        except ValueError:
            return False

    def segments_between(self, a: int, b: int, reverse: bool = False):
        """(lo, hi, segment start) ranges covering [a, b), one per segment, in order."""
        b = min(b, len(self))
        if reverse:
            i = b - 1
            while i >= max(0, a):
                s = self.seg_start(i)
                lo = max(a, s)
                yield lo, i + 1, s
                i = lo - 1
        else:
            i = max(0, a)
            while i < b:
                s = self.seg_start(i)
                hi = min(b, self.seg_end(s))
                yield i, hi, s
                i = hi

    def scan(self, a: int, b: int, may=None, reverse: bool = False):
        """Events in [a, b) (newest first if reverse), skipping every segment for which
        may(summary, lo, hi) is False - summary None (the open head, or unknown) is passed too,
        so `may` decides; segments skipped are not rebuilt."""
        for lo, hi, s in self.segments_between(a, b, reverse):
            if may is not None and not may(self.summary_of(s), lo, hi):
                continue
            yield from (self.iter_back(hi, lo) if reverse else self.iter_range(lo, hi))

    @staticmethod
    def with_note(kind: str, field1=None, field2=None):
        """A `may` for scan(): the segment made a note of `kind` (with these fields if given)."""
        def may(summ, lo, hi):
            if summ is None:
                return True
            return any(n[0] == kind and (field1 is None or n[1] == field1) and (field2 is None or n[2] == field2)
                       for n in summ.notes)
        return may

    def find_code(self, code: int, start: int, stop: int) -> int | None:
        """First i in [start, stop) whose packed choice is `code`, without building segments."""
        i = max(0, start)
        stop = min(stop, len(self))
        while i < stop:
            if i < self.fork:
                r = self.base.find_code(code, i, min(stop, self.fork))
                if r is not None:
                    return r
                i = self.fork
                continue
            if i >= self.head.start:
                evs, h = self.head.events, self.head.start
                for j in range(i, stop):
                    a = evs[j - h][1]
                    if a[0] != "edit" and act_code(a) == code:
                        return j
                return None
            hi = min(stop, self.head.start)
            self.need(i, hi)
            try:
                return self._codes.index(code, i - self.fork, hi - self.fork) + self.fork
            except ValueError:
                i = hi
        return None

    def rfind_code(self, code: int, start: int, stop: int) -> int | None:
        """Last i in [stop, start) (searching backwards from start-1) with choice `code`."""
        i = min(start, len(self)) - 1
        while i >= max(0, stop):
            if i < self.fork:
                return self.base.rfind_code(code, i + 1, stop)
            if i >= self.head.start:
                evs, h = self.head.events, self.head.start
                lo = max(stop, h)
                for j in range(i, lo - 1, -1):
                    a = evs[j - h][1]
                    if a[0] != "edit" and act_code(a) == code:
                        return j
                i = lo - 1
                continue
            off = self.fork
            lo = max(stop, self.fork, i - 4095)
            self.need(lo, i + 1)
            codes = self._codes
            j = i
            while j >= lo:
                if codes[j - off] == code:
                    return j
                j -= 1
            i = lo - 1
        return None
