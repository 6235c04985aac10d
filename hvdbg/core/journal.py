"""Who wrote what, when: an index over an engine's journal (its events' writes), built
incrementally. The one answer to "the last write of this location before step N" - used by
time travel (``Timeline.last_write``), `why` and every explanation - so no query scans the
journal event by event.

Keys: a state slot (int); ("b", space, addr) for one byte of RAM or an overlay page;
("pg", pfn) / ("ov", cpu) for a page coming into existence; ("own", pfn) for a page owner.
"""
from __future__ import annotations

import bisect

from .defs import PAGE_SHIFT
from .machine import RAM


class JournalIndex:
    def __init__(self, eng):
        self.e = eng
        self._idx: dict = {}
        self._n = 0
        self._events = None

    def _update(self) -> None:
        evs = self.e.events
        if evs is not self._events:            # a new journal (another engine or a restarted list)
            self._idx, self._n, self._events = {}, 0, evs
        n = len(evs)
        if self._n >= n:
            return
        idx = self._idx
        for i in range(self._n, n):
            for loc, old, new in evs[i][5]:
                if loc.__class__ is tuple and loc[0] == "m":
                    for j in range(len(new)):
                        idx.setdefault(("b", loc[1], loc[2] + j), []).append(i)
                else:
                    idx.setdefault(loc, []).append(i)
        self._n = n

    def steps(self, key) -> list[int]:
        self._update()
        return self._idx.get(key, [])

    def _keys(self, loc) -> list:
        if isinstance(loc, tuple) and loc[0] == "mem":
            space, addr = loc[1], loc[2]
            return [("b", space, addr), ("pg", addr >> PAGE_SHIFT) if space == RAM else ("ov", space)]
        return [loc]

    def last(self, loc, before: int) -> int | None:
        """Step of the newest event before `before` that wrote `loc`: a slot, ("own", pfn), or
        ("mem", space, addr) for one byte (a page appearing counts as a write of its bytes)."""
        best = None
        for key in self._keys(loc):
            lst = self.steps(key)
            j = bisect.bisect_left(lst, before) - 1
            if j >= 0 and (best is None or lst[j] > best):
                best = lst[j]
        return best

    def last_where(self, loc, before: int, cond=None):
        """(event, write) of the newest write of slot / owner `loc` before `before` whose
        (old, new) satisfy cond; (None, None) if none."""
        evs = self.e.events
        lst = self.steps(loc)
        j = bisect.bisect_left(lst, min(before, len(evs))) - 1
        while j >= 0:
            ev = evs[lst[j]]
            for w in ev[5]:
                if w[0] == loc and (cond is None or cond(w[1], w[2])):
                    return ev, w
            j -= 1
        return None, None

    def byte_write(self, space: int, addr: int, before: int):
        """(event, write) that last put the byte (space, addr) in place before `before`."""
        i = self.last(("mem", space, addr), before)
        if i is None:
            return None, None
        ev = self.e.events[i]
        pfn = addr >> PAGE_SHIFT
        for loc, old, new in ev[5]:
            if loc.__class__ is tuple:
                if loc[0] == "m" and loc[1] == space and loc[2] <= addr < loc[2] + len(new):
                    return ev, (loc, old, new)
                if (loc[0] == "pg" and space == RAM and loc[1] == pfn) or (loc[0] == "ov" and loc[1] == space):
                    return ev, (loc, old, new)
        return None, None
