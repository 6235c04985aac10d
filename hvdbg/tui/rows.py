"""Rows and searches of the event log, as pure functions (no Textual here).

Everything reads only the journal's columns: ``j.act(i)`` / ``j.where(i)`` for a row, the
packed ``codes`` and ``rtpc`` arrays (plus the open head's events and the edit descriptors)
for a search. Nothing here ever rebuilds a segment (``journal.builds`` does not move) and
nothing moves a timeline.

A query (``parse_query``) is a few terms, all of which must hold (AND):

* a vector: a Linux name (``RESCHEDULE``, any case) or a number 0..255 (``0xfd``, ``253``):
  deliveries, timer ticks, landings and traffic of that vector (and what-if edits that
  inject or drop it);
* ``cpuN``: events of vCPU N (for a landing or traffic: either end; two ``cpu`` terms pick a
  pair);
* an action kind: ``op``, ``deliver``, ``land``, ``timer``, ``traffic``, ``edit``;
* a routine name (``hv_apic_eoi_write``) or a function name as rows show it
  (``_cpu_down`` or ``_cpu_down()``): ops that ran in it.

``find(tl, query, start, forward)`` is the next (or previous) matching event index and
``matches(tl, query)`` every matching index (an ``array('I')``). Both scan the columns at C
speed: the query becomes the set of packed codes (and routine << 16 | pc values) present in
the journal that it accepts (empty: no scan at all), sought with ``bytes.find`` when there
are a few of them, else with one ``map``/``compress`` pass over array slices; ``find`` goes
in growing chunks from `start` and stops at the first hit. A whole pass over a million
events takes 25-130 ms (bytes.find / map) on a loaded 2-core machine.
"""
from __future__ import annotations

import difflib
import heapq
import re
import sys
import weakref
from array import array
from dataclasses import dataclass, field
from itertools import compress, count, repeat, tee
from operator import sub

from ..core.defs import VECTOR_NAMES, VECTORS
from ..core.events import EDIT_ACT, act_code, act_text, unpack_act
from ..core.explain import where as _where_text

KINDS = ("op", "deliver", "land", "timer", "traffic", "edit")


class QueryError(ValueError):
    """A query that does not parse; str() is a one-line message for a status line."""


# ---------------------------------------------------------------- rows
_WHERE_CACHES: dict[int, tuple[object, dict]] = {}


def _where_cache(eng) -> dict:
    """(rt, pc) -> "func() file:line" for engine `eng` (cached; a few engines at a time)."""
    ent = _WHERE_CACHES.get(id(eng))
    if ent is None or ent[0] is not eng:
        if len(_WHERE_CACHES) >= 8:
            _WHERE_CACHES.pop(next(iter(_WHERE_CACHES)))
        ent = _WHERE_CACHES[id(eng)] = (eng, {})
    return ent[1]


def where_text(eng, rt: int, pc: int) -> str:
    cache = _where_cache(eng)
    key = rt << 16 | pc
    s = cache.get(key)
    if s is None:
        try:
            s = _where_text(eng, rt, pc, c_text=False)
        except (IndexError, TypeError):
            s = f"routine {rt}+{pc}"
        cache[key] = s
    return s


def vector_text(v: int) -> str:
    n = VECTOR_NAMES.get(v)
    return f"{n}(0x{v:02x})" if n else f"0x{v:02x}"


def engine_for(tl, i: int):
    """The engine whose routine table event i of timeline `tl` refers to (a branch's prefix
    is its parent's events, recorded by the parent's engine)."""
    while i < getattr(tl, "fork", 0) and getattr(tl, "parent", None) is not None:
        tl = tl.parent
    return tl.e


def describe_act(eng, act: tuple, where: tuple) -> str:
    """One-line text of an event from its choice and (routine, pc) only."""
    k = act[0]
    if k == "op":
        return f"cpu{act[1]} {where_text(eng, where[0], where[1])}"
    if k == "deliver" or k == "timer":
        return f"{k} cpu{act[1]} {vector_text(act[2])}"
    if k == "land" or k == "traffic":
        return f"{k} cpu{act[1]}->cpu{act[2]} {vector_text(act[3])}"
    return act_text(act)


def event_row(tl, i: int) -> str:
    """"   1039 cpu1 hv_apic_eoi_write() arch/x86/hyperv/hv_apic.c:91": the index and the
    event, from j.act(i) and j.where(i) (never a segment rebuild)."""
    j = tl.journal
    return f"{i + 1:7d} {describe_act(engine_for(tl, i), j.act(i), j.where(i))}"


def row_width_bound(tl) -> int:
    """An upper bound of len(event_row(tl, i)) over the timeline (for a horizontal scroll
    extent that does not depend on which rows were rendered)."""
    w = 0
    t = tl
    seen = set()
    while t is not None:
        eng = t.e
        if id(eng) not in seen:
            seen.add(id(eng))
            for rt, r in enumerate(eng.routines):
                for pc in range(len(r.ops)):
                    w = max(w, len(where_text(eng, rt, pc)))
            w = max(w, len(f"routine {len(eng.routines)}+65535"))
        t = getattr(t, "parent", None)
    w += len("cpu255 ")
    w = max(w, len("traffic cpu255->cpu255 ") + max(len(vector_text(v)) for v in range(256)))
    j = tl.journal
    while j is not None:
        for d in j.edits.values():
            w = max(w, len(act_text(d)))
        j = j.base
    for ev in tl.journal.head.events:
        if ev[1][0] == "edit":
            w = max(w, len(act_text(ev[1])))
    return max(7, len(str(max(0, len(tl.journal) - 1)))) + 1 + w


# ---------------------------------------------------------------- queries
class _CodeMemo(dict):
    """code -> does an event with this packed choice match (computed once per code)."""

    def __init__(self, q: "Query"):
        super().__init__()
        self.q = q

    def __missing__(self, code: int) -> bool:
        ok = False
        if code != EDIT_ACT:
            try:
                ok = self.q._act_ok(unpack_act(code))
            except ValueError:
                ok = False
        self[code] = ok
        return ok


@dataclass(frozen=True, eq=False)
class Query:
    """A parsed query (parse_query). `matches(act, where, eng)` is the predicate over one
    event; `find`/`matches` in this module scan the columns with it."""
    text: str
    kind: str | None = None
    cpus: frozenset = frozenset()
    vector: int | None = None
    routine: str | None = None          # a routine or function name (ops only)
    engine: object = None               # the engine the query was parsed for
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def may_edit(self) -> bool:
        return self.kind in (None, "edit") and self.routine is None

    def code_memo(self) -> _CodeMemo:
        m = self._memo.get("codes")
        if m is None:
            m = self._memo["codes"] = _CodeMemo(self)
        return m

    def rtpcs(self, eng) -> frozenset | None:
        """routine << 16 | pc of the ops the routine term names, in engine `eng` (None: no
        routine term)."""
        if self.routine is None:
            return None
        eng = eng if eng is not None else self.engine
        key = ("rtpc", id(eng))
        ent = self._memo.get(key)
        if ent is None or ent[0] is not eng:
            ent = self._memo[key] = (eng, frozenset(_rtpc_set(eng, self.routine)))
        return ent[1]

    def _act_ok(self, a: tuple) -> bool:
        """The conditions on the choice alone (kind, cpus, vector); the routine term is
        checked against `where` by matches()."""
        k = a[0]
        if self.kind is not None and k != self.kind:
            return False
        if self.routine is not None and k != "op":
            return False
        if k == "edit":
            cpus, vec = _edit_fields(a)
        elif k == "op":
            cpus, vec = (a[1],), None
        elif k == "deliver" or k == "timer":
            cpus, vec = (a[1],), a[2]
        else:
            cpus, vec = (a[1], a[2]), a[3]
        if self.vector is not None and vec != self.vector:
            return False
        for c in self.cpus:
            if c not in cpus:
                return False
        return True

    def matches(self, act: tuple, where: tuple, eng=None) -> bool:
        """Does the event with choice `act` that ran at `where` = (routine, pc) match?"""
        if not self._act_ok(act):
            return False
        if self.routine is None:
            return True
        r = self.rtpcs(eng)
        return where[0] >= 0 and (where[0] << 16 | where[1]) in r

    def __str__(self) -> str:
        return self.text


def _edit_fields(a: tuple) -> tuple[tuple, int | None]:
    """(cpus, vector) an edit descriptor concerns."""
    k, x = a[1] if len(a) > 1 else None, a[2:]
    try:
        if k in ("msr", "reg", "if"):
            return (x[0],), None
        if k in ("inject", "drop_irr"):
            return (x[0],), x[1]
        if k == "drop_ipi":
            return (x[0], x[1]), x[2]
        if k in ("mem", "flip"):
            return ((x[0],) if x[0] >= 0 else ()), None
    except (IndexError, TypeError):
        pass
    return (), None


def _rtpc_set(eng, name: str) -> set:
    out = set()
    for rt, r in enumerate(eng.routines):
        if r.name == name:
            out.update(rt << 16 | pc for pc in range(len(r.ops) + 1))
            continue
        for pc, op in enumerate(r.ops):
            if op.func == name:
                out.add(rt << 16 | pc)
    return out


def _routine_names(eng) -> set:
    names = set(eng.rnames)
    for r in eng.routines:
        names.update(op.func for op in r.ops if op.func)
    return names


_CPU = re.compile(r"cpu(\d+)$", re.IGNORECASE)
_NUM = re.compile(r"(0x[0-9a-f]+|\d+)$", re.IGNORECASE)


def parse_query(text: str, engine=None) -> Query:
    """Parse a search query (module doc). Raises QueryError with a one-line message."""
    terms = text.replace(",", " ").split()
    if not terms:
        raise QueryError("empty query: give a vector (RESCHEDULE, 0xfd), cpuN, an event kind "
                         f"({', '.join(KINDS)}) or a routine name")
    kind = vector = routine = None
    cpus = set()
    ncpu = getattr(engine, "n", None)
    names = _routine_names(engine) if engine is not None else None
    for t in terms:
        low = t.lower()
        if low in KINDS:
            if kind is not None and kind != low:
                raise QueryError(f"'{kind}' and '{low}': an event has one kind")
            kind = low
            continue
        m = _CPU.match(t)
        if m:
            c = int(m.group(1))
            if ncpu is not None and not 0 <= c < ncpu:
                raise QueryError(f"{t}: the machine has {ncpu} vCPUs (cpu0..cpu{ncpu - 1})")
            cpus.add(c)
            continue
        v = VECTORS.get(t.upper())
        if v is None and _NUM.match(t):
            v = int(t, 0)
            if not 0 <= v <= 255:
                raise QueryError(f"vector {t} is out of range 0..255")
        if v is not None:
            if vector is not None and vector != v:
                raise QueryError(f"two vectors ({vector_text(vector)}, {vector_text(v)}): an event has one")
            vector = v
            continue
        name = t[:-2] if t.endswith("()") else t
        if names is not None and name not in names:
            pool = sorted(set(VECTORS) | set(KINDS) | names)
            close = difflib.get_close_matches(name, pool, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise QueryError(f"unknown term '{t}': not a vector, cpuN, event kind or routine{hint}")
        if routine is not None and routine != name:
            raise QueryError(f"two routines ({routine}, {name}): an op runs in one")
        routine = name
    if routine is not None and kind not in (None, "op"):
        raise QueryError(f"a routine term matches ops, not '{kind}' events")
    if vector is not None and (kind == "op" or routine is not None):
        raise QueryError("an op has no vector: drop the vector or the op/routine term")
    if len(cpus) > 2:
        raise QueryError("more than two cpus: an event concerns at most two")
    if len(cpus) == 2 and kind in ("op", "deliver", "timer"):
        raise QueryError(f"two cpus: a '{kind}' event concerns one")
    return Query(" ".join(terms), kind, frozenset(cpus), vector, routine, engine)


# ---------------------------------------------------------------- scanning
def _parts(tl):
    """(journal, engine, lo, hi) covering [0, len) of tl's journal, newest part first: each
    journal's own events [fork, len), then its base's [.., fork) (a branch reads its parent's
    events; the parent timeline's engine names the routines when it is known)."""
    j, t, hi = tl.journal, tl, None
    eng = tl.e
    while j is not None:
        top = len(j) if hi is None else min(hi, len(j))
        if top > j.fork:
            yield j, eng, j.fork, top
        hi = j.fork
        base = j.base
        if base is None or hi <= 0:
            return
        parent = getattr(t, "parent", None) if t is not None else None
        if parent is not None and parent.journal is base:
            t, eng = parent, parent.e
        else:
            t = None
        j = base


def _edit_hits(j, q: Query, a: int, b: int, eng) -> list[int]:
    if not q.may_edit or not j.edits:
        return []
    return sorted(s for s, d in j.edits.items() if a <= s < b and q.matches(d, (-1, -1), eng))


_DISTINCT: dict[tuple, list] = {}
_BYTES_CODES = 4            # up to this many values sought: bytes.find per value, else one map pass


def _distinct(j, column: str = "codes") -> set:
    """The distinct values of a journal's closed column ("codes" or "rtpc"), cached and
    extended as the journal grows."""
    col = getattr(j, column)
    n = len(col)
    key = (id(j), column)
    ent = _DISTINCT.get(key)
    if ent is None or ent[0]() is not j or ent[1] > n:
        if len(_DISTINCT) >= 32:
            _DISTINCT.pop(next(iter(_DISTINCT)))
        ent = _DISTINCT[key] = [weakref.ref(j), 0, set()]
    if ent[1] < n:
        ent[2].update(col[ent[1]:n])
        ent[1] = n
    return ent[2]


def _present(j, q: Query, column: str, wanted, tag=None) -> frozenset:
    """The values of `column` present in j's closed events that the query accepts (cached
    per journal and `tag` until the column gains a new distinct value)."""
    d = _distinct(j, column)
    key = (column, id(j), tag)
    ent = q._memo.get(key)
    if ent is None or ent[0]() is not j or ent[1] != len(d):
        ent = q._memo[key] = (weakref.ref(j), len(d), frozenset(v for v in d if wanted(v)))
    return ent[2]


def _occurrences(buf: bytes, pat: bytes, forward: bool):
    """Indexes of the u32 elements of `buf` equal to `pat`, in order (a match that does not
    start on an element boundary is skipped to the next boundary)."""
    if forward:
        pos = buf.find(pat)
        while pos != -1:
            if pos & 3:
                pos = buf.find(pat, (pos | 3) + 1)
            else:
                yield pos >> 2
                pos = buf.find(pat, pos + 4)
    else:
        pos = buf.rfind(pat)
        while pos != -1:
            if pos & 3:
                pos = buf.rfind(pat, 0, (pos & ~3) + 4)
            else:
                yield pos >> 2
                pos = buf.rfind(pat, 0, pos)


def _chunks(a: int, b: int, forward: bool):
    step = 4096
    if forward:
        while a < b:
            yield a, min(b, a + step)
            a += step
            step = min(step * 2, 1 << 18)
    else:
        while b > a:
            yield max(a, b - step), b
            b -= step
            step = min(step * 2, 1 << 18)


def _column_hits(col: array, off: int, values: frozenset, a: int, b: int, forward: bool):
    """Absolute indexes i in [a, b) with col[i - off] in values, in order, lazily: bytes.find
    per value for a few values (memchr speed; not for a value whose first byte in memory is
    0, which matches across element boundaries too often), else one map pass."""
    pats = [v.to_bytes(4, sys.byteorder) for v in values] if len(values) <= _BYTES_CODES else None
    if pats and all(p[0] for p in pats):
        buf = col[a - off:b - off].tobytes()
        gens = [_occurrences(buf, p, forward) for p in pats]
        hits = gens[0] if len(gens) == 1 else heapq.merge(*gens, reverse=not forward)
        return map(a.__add__, hits)
    sl = col[a - off:b - off]
    if forward:
        return compress(count(a), map(values.__contains__, sl))
    sl.reverse()
    return compress(count(b - 1, -1), map(values.__contains__, sl))


def _verify(j, M: frozenset, cands):
    """The candidates (found by routine) whose packed choice is in M."""
    off = j.fork
    cands, mine = tee(cands)
    rel = map(sub, mine, repeat(off)) if off else mine
    return compress(cands, map(M.__contains__, map(j.codes.__getitem__, rel)))


def _closed_sets(j, q: Query, eng):
    """(codes accepted, rtpc values accepted or None) present in j's closed columns."""
    M = _present(j, q, "codes", q.code_memo().__getitem__)
    R = q.rtpcs(eng)
    V = None if R is None else _present(j, q, "rtpc", R.__contains__, id(eng))
    return M, V


def _closed_hits(j, q: Query, eng, a: int, b: int, forward: bool):
    """Matching own closed events in [a, b) (edits aside), in order, chunk by chunk: a nearby
    match is found without scanning the rest."""
    M, V = _closed_sets(j, q, eng)
    if not M or V is not None and not V:
        return
    off = j.fork
    for ca, cb in _chunks(a, b, forward):
        if V is None:
            yield from _column_hits(j.codes, off, M, ca, cb, forward)
        else:
            yield from _verify(j, M, _column_hits(j.rtpc, off, V, ca, cb, forward))


def _closed_all(j, q: Query, eng, a: int, b: int) -> array:
    """Every matching own closed event in [a, b) (edits aside), in one pass."""
    M, V = _closed_sets(j, q, eng)
    if not M or V is not None and not V:
        return array("I")
    off = j.fork
    if V is None:
        return array("I", compress(range(a, b), map(M.__contains__, j.codes[a - off:b - off])))
    cands = list(compress(range(a, b), map(V.__contains__, j.rtpc[a - off:b - off])))
    return array("I", _verify(j, M, cands))


def _head_hits(j, q: Query, a: int, b: int, eng, reverse: bool):
    h = j.head.start
    evs = j.head.events
    memo = q.code_memo()
    r = q.rtpcs(eng)
    rng = range(b - 1, a - 1, -1) if reverse else range(a, b)
    for i in rng:
        ev = evs[i - h]
        act = ev[1]
        if act[0] == "edit":
            if q.may_edit and q.matches(act, (-1, -1), eng):
                yield i
            continue
        if memo[act_code(act)] and (r is None or (ev[3] << 16 | ev[4]) in r):
            yield i


def _find_part(j, q: Query, eng, lo: int, hi: int, start: int, forward: bool) -> int | None:
    closed = min(hi, j.head.start)
    if forward:
        a = max(lo, start)
        if a < closed:
            hit = next(_closed_hits(j, q, eng, a, closed, True), None)
            e = next(iter(_edit_hits(j, q, a, closed if hit is None else hit, eng)), None)
            if hit is not None or e is not None:
                return min(x for x in (hit, e) if x is not None)
        a = max(lo, start, j.head.start)
        if a < hi:
            return next(_head_hits(j, q, a, hi, eng, False), None)
        return None
    b = min(hi, start + 1)
    if b > j.head.start:
        a = max(lo, j.head.start)
        if a < b:
            r = next(_head_hits(j, q, a, b, eng, True), None)
            if r is not None:
                return r
    b = min(b, closed)
    if b > lo:
        hit = next(_closed_hits(j, q, eng, lo, b, False), None)
        edits = _edit_hits(j, q, lo if hit is None else hit + 1, b, eng)
        e = edits[-1] if edits else None
        if hit is not None or e is not None:
            return max(x for x in (hit, e) if x is not None)
    return None


def find(tl, query: Query, start: int, forward: bool = True) -> int | None:
    """The first matching event index >= start (forward), or the last one <= start
    (backward); None if there is none. Reads only the journal columns."""
    n = len(tl.journal)
    if forward:
        start = max(0, start)
        if start >= n:
            return None
    else:
        start = min(start, n - 1)
        if start < 0:
            return None
    parts = list(_parts(tl))
    if forward:
        parts.reverse()
    for j, eng, lo, hi in parts:
        if forward and hi <= start or not forward and lo > start:
            continue
        r = _find_part(j, q=query, eng=eng, lo=lo, hi=hi, start=start, forward=forward)
        if r is not None:
            return r
    return None


def matches(tl, query: Query, lo: int = 0, hi: int | None = None) -> array:
    """Every matching event index in [lo, hi), ascending, as an array('I')."""
    n = len(tl.journal)
    hi = n if hi is None else min(hi, n)
    out = array("I")
    for j, eng, plo, phi in reversed(list(_parts(tl))):
        a, b = max(lo, plo), min(hi, phi)
        if a >= b:
            continue
        closed = min(b, j.head.start)
        if a < closed:
            part = _closed_all(j, query, eng, a, closed)
            edits = _edit_hits(j, query, a, closed, eng)
            if edits:
                merged = sorted([*part, *edits])
                part = array("I", merged)
            out.extend(part)
        h = max(a, j.head.start)
        if h < b:
            out.extend(_head_hits(j, query, h, b, eng, False))
    return out


def brute_matches(tl, query: Query, lo: int = 0, hi: int | None = None) -> list[int]:
    """The same as matches(), one event at a time through j.act / j.where (tests)."""
    j = tl.journal
    hi = len(j) if hi is None else min(hi, len(j))
    return [i for i in range(max(0, lo), hi) if query.matches(j.act(i), j.where(i), engine_for(tl, i))]


__all__ = ["Query", "QueryError", "parse_query", "find", "matches", "brute_matches", "event_row",
           "describe_act", "vector_text", "where_text", "engine_for", "row_width_bound", "KINDS"]
