"""Exhaustive exploration of a run's choices (no UI; docs/explore.md).

`run` picks one enabled action per step with a PRNG; the explorer takes every one. From the
scenario's initial state (after its own forced schedule, if any) it enumerates every
interleaving of the enabled actions - the same descriptors `run` picks among - with
visited-state deduplication, and gives one verdict per configuration ("cell"):

* ``counterexample`` - a reachable state where the run fails as `run` defines it: a
  transition that violates a scenario invariant (outcome ``corruption``), or a reachable
  state from which the goal is unreachable (outcome ``hang``: no enabled action, a
  quiescent state, or a closed set of states without the goal). Each is confirmed on an
  unbounded engine before it is reported;
* ``proved within bounds`` - the whole bounded state graph was built and holds none;
* ``incomplete`` - the ``max_states`` budget (or a confirmation budget) cut the search;
  never reported as proved.

Bounds: periodic timers and background traffic make the space infinite in general, so a
path may take at most ``bounds[kind]`` actions of each bounded kind (``traffic``,
``timer``). The count taken so far is part of the state key, so deduplication never merges
two states with different remaining budgets.

State hash: 64-bit Zobrist-style, updated incrementally from each action's journaled writes
(``(location, old, new)``): the hash is the XOR of one 64-bit term per slot value, per
non-zero memory byte, per page's presence and per page owner, so a step costs O(writes),
not O(state). ``full_hash`` computes the same value from scratch (a test checks they agree).
The terms are Python's 64-bit hash of ``(location, value)`` tuples of ints.
"""
from __future__ import annotations

import gc
import time
from collections import deque
from dataclasses import dataclass, field

from .defs import PAGE_SHIFT, PAGE_SIZE
from .machine import RAM

MASK64 = (1 << 64) - 1
HASH_BITS = 64
BOUND_KINDS = ("traffic", "timer")
DEFAULT_BOUNDS = {"traffic": 1, "timer": 0}
DEFAULT_MAX_STATES = 1_000_000
CONFIRM_BUDGET = 50_000        # states the unbounded hang confirmation may explore per candidate
MAX_CONFIRM = 32               # hang candidates confirmed per cell before giving up (-> incomplete)
MAX_BOUND = (1 << 32) - 1     # the largest bound a scenario, a pack or --bound may set


def bounds_problem(d) -> tuple[str, str] | None:
    """(key, problem) of the first bad entry of a bounds table (a scenario's or pack's
    `[explore] bounds`), or None: keys are the bounded kinds, values integers 0..2^32-1."""
    if not isinstance(d, dict):
        return "", f"expected a table like {{traffic = 1, timer = 0}}, got {type(d).__name__}"
    for k, v in d.items():
        if k not in BOUND_KINDS:
            return str(k), f"unknown bounded kind (the bounded kinds are {', '.join(BOUND_KINDS)})"
        if isinstance(v, bool) or not isinstance(v, int):
            return k, f"expected an integer, got {type(v).__name__}"
        if not 0 <= v <= MAX_BOUND:
            return k, f"expected 0..{MAX_BOUND}"
    return None


def resolve_bounds(scn, cli: dict | None = None) -> tuple[dict, dict]:
    """The bounds of a cell and where each came from: the explorer's defaults, then the
    scenario's pack (`[explore] bounds` in pack.toml), then the scenario (`[explore] bounds`),
    then `--bound`. Returns (bounds, {kind: "default" | "pack NAME" | "scenario NAME" | "--bound"})."""
    bounds = dict(DEFAULT_BOUNDS)
    source = {k: "default" for k in bounds}
    pack = getattr(scn, "pack", None)
    for layer, where in ((getattr(pack, "explore_bounds", None), f"pack {getattr(pack, 'name', '')}"),
                         (getattr(scn, "explore_bounds", None), f"scenario {scn.name}"),
                         (cli, "--bound")):
        for k, v in (layer or {}).items():
            bounds[k] = v
            source[k] = where
    return bounds, source


# ---------------------------------------------------------------- hashing
_page_memo: dict = {}


def _byte_term(space: int, addr: int, b: int) -> int:
    return hash((space, addr, b)) & MASK64 if b else 0


CHUNK = 64
_chunk_memo: dict = {}


def _chunk_term(space: int, addr: int, chunk: bytes) -> int:
    k = (space, addr, chunk)
    h = _chunk_memo.get(k)
    if h is None:
        h = 0
        for i, b in enumerate(chunk):
            if b:
                h ^= hash((space, addr + i, b))
        h &= MASK64
        if len(_chunk_memo) > 65536:
            _chunk_memo.clear()
        _chunk_memo[k] = h
    return h


def _page_term(space: int, key: int, content) -> int:
    """Presence of a page plus each non-zero byte of it (the XOR of the byte terms is taken
    per 64-byte chunk and memoised: pages differ from each other in a few chunks)."""
    if content is None:
        return 0
    content = bytes(content)
    mk = (space, key, content)
    h = _page_memo.get(mk)
    if h is None:
        h = hash(("page", space, key)) & MASK64
        base = key << PAGE_SHIFT if space == RAM else 0
        for off in range(0, len(content), CHUNK):
            h ^= _chunk_term(space, base + off, content[off:off + CHUNK])
        if len(_page_memo) > 4096:
            _page_memo.clear()
        _page_memo[mk] = h
    return h


def update_hash(h: int, writes) -> int:
    """The state hash after `writes` (a journaled write list) from a state hashing to `h`."""
    for loc, old, new in writes:
        if loc.__class__ is int:
            h ^= hash((loc, old)) ^ hash((loc, new))
        else:
            k = loc[0]
            if k == "m":
                space, addr = loc[1], loc[2]
                if space != RAM:
                    addr &= PAGE_SIZE - 1
                for i in range(len(new)):
                    o, n = old[i], new[i]
                    if o != n:
                        h ^= _byte_term(space, addr + i, o) ^ _byte_term(space, addr + i, n)
            elif k == "pg":
                h ^= _page_term(RAM, loc[1], old) ^ _page_term(RAM, loc[1], new)
            elif k == "ov":
                h ^= _page_term(loc[1], loc[1], old) ^ _page_term(loc[1], loc[1], new)
            elif k == "own":
                if old is not None:
                    h ^= hash((loc, old))
                if new is not None:
                    h ^= hash((loc, new))
    return h & MASK64


def full_hash(m) -> int:
    """The Zobrist hash of machine `m` computed from scratch (what update_hash maintains)."""
    h = 0
    for i, v in enumerate(m.S):
        h ^= hash((i, v))
    for pfn, pg in m.ram.items():
        h ^= _page_term(RAM, pfn, pg)
    for c, pg in m.ovl.items():
        h ^= _page_term(c, c, pg)
    for pfn, o in m.own.items():
        h ^= hash((("own", pfn), o))
    return h & MASK64


def collision_probability(n: int, bits: int = HASH_BITS) -> float:
    """Expected probability that two of n visited states share a hash: n^2 / 2^(bits+1)."""
    return min(1.0, n * n / float(1 << (bits + 1)))


# ---------------------------------------------------------------- results
@dataclass
class CellResult:
    verdict: str                      # "counterexample" | "proved within bounds" | "incomplete"
    outcome: str = ""                 # counterexample: "hang" | "corruption"
    reason: str = ""
    states: int = 0
    transitions: int = 0
    depth: int = 0                    # largest depth (shortest-path distance from the start) seen
    seconds: float = 0.0
    bounds: dict = field(default_factory=dict)
    max_states: int = 0
    strategy: str = "dfs"
    path: list = field(default_factory=list)      # the counterexample's choices, from the initial state
    collision_probability: float = 0.0
    hash_bits: int = HASH_BITS
    bound_cut_states: int = 0         # states where a bound removed at least one enabled action
    refuted_candidates: int = 0       # goal-unreachable within bounds, goal reachable without them
    por: bool = False                 # partial-order reduction (sleep sets) was on
    pruned: int = 0                   # transitions sleep sets kept from ever being executed (por)

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["path"] = [list(a) for a in self.path]
        d["states_per_second"] = round(self.states_per_second)
        d["seconds"] = round(self.seconds, 3)
        return d


# ---------------------------------------------------------------- the search
class Explorer:
    """Explores one cell. `make_engine()` returns a fresh Engine (journal=False) at the
    scenario's initial state; the explorer moves its machine with apply/undo only."""

    def __init__(self, make_engine, bounds: dict | None = None, max_states: int = DEFAULT_MAX_STATES,
                 strategy: str = "dfs", progress=None, por: bool = False, por_check: bool = False):
        if strategy not in ("dfs", "bfs"):
            raise ValueError(f"strategy {strategy!r}: expected dfs or bfs")
        self.make_engine = make_engine
        self.bounds = dict(DEFAULT_BOUNDS)
        self.bounds.update(bounds or {})
        for k in self.bounds:
            if k not in BOUND_KINDS:
                raise ValueError(f"bound {k!r}: the bounded kinds are {', '.join(BOUND_KINDS)}")
        self.max_states = max_states
        self.strategy = strategy
        self.progress = progress
        # partial-order reduction (sleep sets) in the DFS only; por_check (tests): apply each
        # pruned transition anyway and check its target and every action's write footprint
        self.por = bool(por) and strategy == "dfs"
        self.por_check = por_check
        self._sleep_at_root: tuple = ()      # tests only: root transitions to start asleep
        self._kinds = {k: i for i, k in enumerate(BOUND_KINDS)}
        self._limits = tuple(self.bounds.get(k, -1) for k in BOUND_KINDS)
        self._blocked: dict = {}
        self._bterms: dict = {}

    # -- per-state bookkeeping (parallel lists indexed by state id)
    def _reset(self):
        self.keys: dict[int, int] = {}
        self.parent: list[int] = []
        self.pact: list[int] = []        # action id taken from the parent
        self.succ: list = []             # per state: list of target ids (None for terminal goal states)
        self.goal: list[bool] = []
        self.cut: list[bool] = []
        self.acts: list[tuple] = []      # action id -> descriptor
        self.aid: dict[tuple, int] = {}
        self.transitions = 0
        self.pruned = 0                  # transitions sleep sets kept from ever being executed
        self.unresolved = 0              # pruned transitions whose target was never visited
        self.repairs = 0                 # searches started from a pruned transition's unvisited target

    def _aid(self, a: tuple) -> int:
        i = self.aid.get(a)
        if i is None:
            i = self.aid[a] = len(self.acts)
            self.acts.append(a)
        return i

    def _key(self, h: int, cnt: tuple) -> int:
        return (h ^ hash(("bound", cnt))) & MASK64 if any(cnt) else h

    def _bterm(self, cnt: tuple) -> int:
        """The hash term of the bound counters (0 when none is used)."""
        t = self._bterms.get(cnt)
        if t is None:
            t = self._bterms[cnt] = hash(("bound", cnt)) if any(cnt) else 0
        return t

    def _allowed(self, acts: list, cnt: tuple) -> tuple[list, bool]:
        blocked = self._blocked.get(cnt)
        if blocked is None:
            lim = self._limits
            blocked = self._blocked[cnt] = frozenset(k for k, i in self._kinds.items() if 0 <= lim[i] <= cnt[i])
        if not blocked:
            return acts, False
        out = [a for a in acts if a[0] not in blocked]
        return out, len(out) != len(acts)

    def _bump(self, cnt: tuple, a: tuple) -> tuple:
        i = self._kinds.get(a[0])
        if i is None:
            return cnt
        c = list(cnt)
        c[i] += 1
        return tuple(c)

    def _new_state(self, key: int, parent: int, aid: int, goal: bool) -> int:
        sid = len(self.parent)
        self.keys[key] = sid
        self.parent.append(parent)
        self.pact.append(aid)
        self.succ.append([])
        self.goal.append(goal)
        self.cut.append(False)
        return sid

    def run(self) -> CellResult:
        was = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if was:
                gc.enable()

    def _run(self) -> CellResult:
        t0 = time.perf_counter()
        self._reset()
        eng = self.make_engine()
        self.eng = eng
        prefix = list(eng.schedule[eng.sched_i:])      # the scenario's forced choices come first
        for a in prefix:
            if a not in eng.enabled():
                raise ValueError(f"the scenario's schedule entry {a} is not enabled")
            eng.apply(a)
            if eng._violation is not None:
                return self._finish(t0, "counterexample", "corruption", "the scenario's own schedule violates an "
                                    "invariant", prefix)
        self.prefix = prefix
        h0 = full_hash(eng.m)
        cnt0 = (0,) * len(BOUND_KINDS)
        root = self._new_state(self._key(h0, cnt0), -1, -1, eng.goal_reached())
        if self.goal[root]:
            return self._finish(t0, "proved within bounds", "", "the goal holds in the initial state", [])
        search = self._dfs_por if self.por else self._dfs if self.strategy == "dfs" else self._bfs
        hit = search(eng, h0, cnt0)
        if hit is not None:          # a corruption: (state id before, action)
            sid, a = hit
            return self._finish(t0, "counterexample", "corruption", self._violation_text,
                                prefix + self._path_to(sid) + [a])
        cut = len(self.parent) >= self.max_states
        if self.por:
            self._resolve_pruned(cut)
            if self.unresolved and not cut:
                return self._finish(t0, "incomplete", "", f"partial-order reduction: {self.unresolved} pruned "
                                    "transitions lead to states the search never visited (a fault in the "
                                    "independence relation); run with --por off", [])
        return self._liveness(t0, cut=cut)

    # -- DFS with undo from the journal
    def _dfs(self, eng, h0: int, cnt0: tuple):
        m = eng.m
        apply, undo, enabled, goal_reached = eng.apply, m.undo, eng.enabled, eng.goal_reached
        keys, succ = self.keys, self.succ
        kinds, bterm = self._kinds, self._bterm
        acts0, cut0 = self._allowed(enabled(), cnt0)
        self.cut[0] = cut0
        # frame: [actions, next index, state id, hash, counts, writes that led here]
        stack = [[acts0, 0, 0, h0, cnt0, None]]
        limit = self.max_states
        progress, tick = self.progress, 0
        while stack:
            fr = stack[-1]
            acts = fr[0]
            i = fr[1]
            if i >= len(acts):
                stack.pop()
                if fr[5] is not None:
                    undo(fr[5])
                continue
            fr[1] = i + 1
            a = acts[i]
            sid = fr[2]
            w = apply(a)
            self.transitions += 1
            if eng._violation is not None:
                self._note_violation(eng)
                self._undo_stack(eng, w, stack)
                return sid, a
            h = update_hash(fr[3], w)
            cnt = self._bump(fr[4], a) if a[0] in kinds else fr[4]
            key = (h ^ bterm(cnt)) & MASK64
            t = keys.get(key)
            if t is None:
                if len(self.parent) >= limit:
                    self.open_states = {f[2] for f in stack}     # not fully expanded
                    self._undo_stack(eng, w, stack)
                    return None
                g = goal_reached()
                t = self._new_state(key, sid, self._aid(a), g)
                if g:
                    undo(w)
                else:
                    nacts, c = self._allowed(enabled(), cnt)
                    self.cut[t] = c
                    stack.append([nacts, 0, t, h, cnt, w])
                if progress is not None:
                    tick += 1
                    if tick >= 4096:
                        tick = 0
                        progress(len(self.parent), self.transitions, len(stack))
            else:
                undo(w)
            succ[sid].append(t)
        return None

    # -- DFS with sleep sets (partial-order reduction; docs/explore.md "Reductions")
    def _dfs_por(self, eng, h0: int, cnt0: tuple):
        """The DFS above with Godefroid's sleep sets over the static independence relation of
        core/independence.py. A transition asleep in a state is not executed; its target is
        the state reached by executing it where it was explored (it commutes with every
        transition taken since), so its key is this state's hash XOR that transition's hash
        delta there (its journaled writes are the same), with the counters bumped. These
        pruned edges are resolved after the search and added to the graph, so the liveness
        analysis sees every edge of the unreduced graph.

        With a visited-state store, sleep sets alone can miss states (a state first reached
        with a sleep set that a later path would not have). Instead of Godefroid's revisit
        rule (re-explore on every revisit with a smaller sleep set, which here re-executed
        most of what was pruned), the search certifies itself: a reachable state that was
        not visited has, on any path to it, a first unvisited state, the target of a pruned
        edge from a visited one - an unresolved pruned key. The search is resumed from each
        such target (replaying the path to its source) until none is left, so every
        reachable state is visited."""
        from .independence import Footprints
        fps = Footprints(eng, BOUND_KINDS)
        fp_of = fps.fast_of()
        apply, enabled = eng.apply, eng.enabled
        keys, kinds, bump, allowed = self.keys, self._kinds, self._bump, self._allowed
        empty: tuple = ()
        slept = self.slept = [empty]          # per state: the transitions asleep at its first visit
        pending = self.pending = []           # (state, key of a pruned transition's target, the transition)
        check = self.por_check
        acts0, cut0 = allowed(enabled(), cnt0)
        self.cut[0] = cut0
        # frame: [to explore, next index, state id, hash, counts, writes that led here,
        #         footprints of the allowed actions, sleep set {action: hash delta}, done [(action, delta)]]
        sleep0 = {}
        for b in self._sleep_at_root:     # tests: start with these asleep, to exercise the resumption
            w = apply(b)
            sleep0[b] = update_hash(h0, w) ^ h0
            eng.m.undo(w)
            pending.append((0, (h0 ^ sleep0[b] ^ self._bterm(bump(cnt0, b) if b[0] in kinds else cnt0)) & MASK64, b))
        slept[0] = tuple(sleep0)
        stack = [[[a for a in acts0 if a not in sleep0], 0, 0, h0, cnt0, None, {a: fp_of(a) for a in acts0}, sleep0,
                  []]]
        limit = self.max_states
        done_upto = 0
        while True:
            hit = self._por_loop(eng, stack, fps, check)
            if hit is not None or len(self.parent) >= limit:
                return hit
            # Every reachable state was visited unless a pruned transition's target was not:
            # a missed state's first missed ancestor on a path is the target of a pruned edge
            # from a visited state. Explore from each such target (reached by replaying the
            # path to its source) until none is left.
            while done_upto < len(pending) and pending[done_upto][1] in keys:
                done_upto += 1
            if done_upto >= len(pending):
                return None
            s, k, b = pending[done_upto]
            done_upto += 1        # once: if b's real target were not k (a wrong independence claim),
            stack = []            # k stays unresolved and the cell is reported incomplete
            h, cnt = h0, cnt0
            for a in self._path_to(s):
                w = apply(a)
                h = update_hash(h, w)
                cnt = bump(cnt, a) if a[0] in kinds else cnt
                stack.append([empty, 0, -1, h, cnt, w, {}, {}, []])     # exhausted: only undone
            nacts, _ = allowed(enabled(), cnt)
            if b not in nacts:
                raise AssertionError(f"pruned transition {b} is not enabled at state {s}")
            stack.append([[b], 0, s, h, cnt, None, {b: fp_of(b)}, {}, []])
            slept[s] = tuple(x for x in slept[s] if x != b)     # executed now: no longer pruned
            self.repairs += 1

    def _por_loop(self, eng, stack: list, fps, check: bool):
        """_dfs_por's search loop over `stack` (until it is empty, a violation or the budget)."""
        m = eng.m
        apply, undo, enabled, goal_reached = eng.apply, m.undo, eng.enabled, eng.goal_reached
        keys, succ = self.keys, self.succ
        kinds, bterm, bump, allowed = self._kinds, self._bterm, self._bump, self._allowed
        fp_of = fps.fast_of()
        empty: tuple = ()
        slept, pending = self.slept, self.pending
        limit = self.max_states
        progress, tick = self.progress, 0
        while stack:
            fr = stack[-1]
            todo = fr[0]
            i = fr[1]
            if i >= len(todo):
                stack.pop()
                if fr[5] is not None:
                    undo(fr[5])
                continue
            fr[1] = i + 1
            a = todo[i]
            sid = fr[2]
            w = apply(a)
            self.transitions += 1
            if eng._violation is not None:
                self._note_violation(eng)
                self._undo_stack(eng, w, stack)
                return sid, a
            h = update_hash(fr[3], w)
            cnt = bump(fr[4], a) if a[0] in kinds else fr[4]
            key = (h ^ bterm(cnt)) & MASK64
            fpd = fr[6]
            fa = fpd[a]
            if check:
                wm = fps.write_mask(w, a)
                assert wm & ~fa[1] == 0, f"{a} wrote outside its footprint: {wm & ~fa[1]:#x}"
            sleep, done = fr[7], fr[8]
            t = keys.get(key)
            # the child's sleep set: what sleeps here or was explored here before a, and is
            # independent of a (only needed for a new state)
            if t is None and (sleep or done):
                ra, wa = fa
                z = {}
                for b, d in sleep.items():
                    rb, wb = fpd[b]
                    if not (wa & (rb | wb)) and not (wb & ra):      # independent (core/independence.py)
                        z[b] = d
                for b, d in done:
                    rb, wb = fpd[b]
                    if not (wa & (rb | wb)) and not (wb & ra):
                        z[b] = d
            else:
                z = {}
            done.append((a, h ^ fr[3]))
            if t is None:
                if len(self.parent) >= limit:
                    self.open_states = {f[2] for f in stack}     # not fully expanded
                    self._undo_stack(eng, w, stack)
                    return None
                g = goal_reached()
                t = self._new_state(key, sid, self._aid(a), g)
                slept.append(empty)
                succ[sid].append(t)
                if g:
                    undo(w)
                    continue
                nacts, c = allowed(enabled(), cnt)
                self.cut[t] = c
                nfp = {x: fp_of(x) for x in nacts}
                if z:
                    if check:
                        assert all(b in nfp for b in z), f"{a} disabled an action it is independent of"
                    z = {b: d for b, d in z.items() if b in nfp}
                if z:
                    slept[t] = tuple(z)
                    bt = bterm(cnt)
                    for b, d in z.items():
                        k2 = ((h ^ d) ^ (bterm(bump(cnt, b)) if b[0] in kinds else bt)) & MASK64
                        pending.append((t, k2, b))
                        if check:
                            w2 = apply(b)
                            h2 = update_hash(h, w2)
                            undo(w2)
                            assert h2 == h ^ d, f"{b} after {a} does not write what it wrote where it was explored"
                    nacts = [x for x in nacts if x not in z]
                stack.append([nacts, 0, t, h, cnt, w, nfp, z, []])
                if progress is not None:
                    tick += 1
                    if tick >= 4096:
                        tick = 0
                        progress(len(self.parent), self.transitions, len(stack))
                continue
            succ[sid].append(t)
            undo(w)
        return None

    def _resolve_pruned(self, cut: bool) -> None:
        """Add the pruned transitions' edges to the graph (their targets were visited, or -
        in a cut search - their source counts as not fully expanded)."""
        keys, succ = self.keys, self.succ
        opened = getattr(self, "open_states", None)
        for s, k, _ in self.pending:
            t = keys.get(k)
            if t is None:
                self.unresolved += 1
                if opened is not None:
                    opened.add(s)
            else:
                succ[s].append(t)
        # transitions never executed: what each state's sleep set held at its first visit,
        # less those a resumed search executed (executed + pruned = the unreduced count)
        self.pruned = sum(len(z) for z in self.slept)
        self.pending = []

    # -- BFS from compact snapshots of the frontier (shortest paths first)
    def _bfs(self, eng, h0: int, cnt0: tuple):
        m = eng.m
        apply, undo, enabled, goal_reached = eng.apply, m.undo, eng.enabled, eng.goal_reached
        keys, succ = self.keys, self.succ
        limit = self.max_states
        progress, tick = self.progress, 0
        frontier = deque([(0, h0, cnt0, _snap(m))])
        while frontier:
            sid, h, cnt, snap = frontier.popleft()
            _restore(m, snap)
            acts, c = self._allowed(enabled(), cnt)
            self.cut[sid] = c
            for a in acts:
                w = apply(a)
                self.transitions += 1
                if eng._violation is not None:
                    self._note_violation(eng)
                    undo(w)
                    return sid, a
                h2 = update_hash(h, w)
                cnt2 = self._bump(cnt, a) if a[0] in self._kinds else cnt
                key = (h2 ^ hash(("bound", cnt2))) & MASK64 if any(cnt2) else h2
                t = keys.get(key)
                if t is None:
                    if len(self.parent) >= limit:
                        self.open_states = {sid} | {x[0] for x in frontier}
                        undo(w)
                        return None
                    g = goal_reached()
                    t = self._new_state(key, sid, self._aid(a), g)
                    if not g:
                        frontier.append((t, h2, cnt2, _snap(m)))
                    if progress is not None:
                        tick += 1
                        if tick >= 4096:
                            tick = 0
                            progress(len(self.parent), self.transitions, len(frontier))
                undo(w)
                succ[sid].append(t)
        return None

    @staticmethod
    def _undo_stack(eng, w, stack: list) -> None:
        """Undo the last transition and every frame's writes: the engine is back at the
        initial state (a violation or the state budget ended the search)."""
        undo = eng.m.undo
        undo(w)
        for f in reversed(stack):
            if f[5] is not None:
                undo(f[5])

    def _note_violation(self, eng) -> None:
        cpu, structure, gpa, own, gen, want = eng._violation
        self._violation_text = (f"the hypervisor wrote cpu{cpu}'s {structure} at GPA 0x{gpa:x}, a page kernel "
                                f"generation {gen} does not own as {want} of cpu{cpu}")

    # -- paths
    def _path_to(self, sid: int) -> list:
        out = []
        while sid > 0:
            out.append(self.acts[self.pact[sid]])
            sid = self.parent[sid]
        out.reverse()
        return out

    def _shortest(self) -> tuple[list, list]:
        """Shortest-path parent and distance of every state in the stored graph (BFS)."""
        n = len(self.parent)
        dist = [-1] * n
        par = [-1] * n
        dist[0] = 0
        q = deque([0])
        succ = self.succ
        while q:
            s = q.popleft()
            d = dist[s] + 1
            for t in succ[s]:
                if dist[t] < 0:
                    dist[t] = d
                    par[t] = s
                    q.append(t)
        return par, dist

    def _graph_path(self, par: list, sid: int) -> list:
        """Actions along the shortest path to sid (re-derived by matching successors)."""
        chain = []
        while sid > 0:
            chain.append(sid)
            sid = par[sid]
        chain.reverse()
        # the action of edge (p -> t): re-execute from the start and pick the enabled action
        # that leads to t's key
        eng = self.make_engine()
        for a in self.prefix:
            eng.apply(a)
        h = full_hash(eng.m)
        cnt = (0,) * len(BOUND_KINDS)
        out = []
        for t in chain:
            acts, _ = self._allowed(eng.enabled(), cnt)
            for a in acts:
                w = eng.apply(a)
                h2 = update_hash(h, w)
                cnt2 = self._bump(cnt, a)
                if self.keys.get(self._key(h2, cnt2)) == t:
                    out.append(a)
                    h, cnt = h2, cnt2
                    break
                eng.m.undo(w)
            else:
                raise AssertionError(f"no edge to state {t}")
        return out

    # -- liveness: states from which the goal is unreachable
    def _liveness(self, t0: float, cut: bool = False) -> CellResult:
        """Hang candidates: states that cannot reach a goal state in the stored graph. When
        the budget cut the search, states not fully expanded count as able to reach it (their
        unexplored edges might), so the candidates lie in completely explored regions; a
        confirmed one is still a counterexample, but a cut search is never proved."""
        n = len(self.parent)
        rev: list = [[] for _ in range(n)]
        for s, ts in enumerate(self.succ):
            for t in ts:
                rev[t].append(s)
        good = [False] * n
        opened = getattr(self, "open_states", set()) if cut else set()
        q = deque(i for i in range(n) if self.goal[i] or i in opened)
        for i in q:
            good[i] = True
        while q:
            s = q.popleft()
            for p in rev[s]:
                if not good[p]:
                    good[p] = True
                    q.append(p)
        bad = [i for i in range(n) if not good[i]]
        self.bad = set(bad)
        budget = f"state budget {self.max_states} reached before the bounded space was exhausted"
        if not bad:
            if cut:
                return self._finish(t0, "incomplete", "", budget, [])
            return self._finish(t0, "proved within bounds", "", "every reachable state can reach the goal", [])
        par, dist = self._shortest()
        # Confirm candidates on an unbounded engine: the nearest one first (a short path when
        # it is a real hang), then the deepest first. A refuted candidate (goal reachable
        # without the bounds) refutes every candidate that reaches it in the graph.
        bad.sort(key=lambda i: dist[i])
        order = [bad[0]] + sorted(bad[1:], key=lambda i: -dist[i])
        refuted_set: set = set()
        bad_set = self.bad
        checked = unknown = 0
        for sid in order:
            if sid in refuted_set:
                continue
            if checked >= MAX_CONFIRM:
                unknown += 1
                break
            checked += 1
            path = self._graph_path(par, sid)
            verdict, why = self._confirm_hang(path)
            if verdict is True:
                self.refuted = len(refuted_set)
                return self._finish(t0, "counterexample", "hang", why, self.prefix + path)
            if verdict is False:
                q = [sid]
                refuted_set.add(sid)
                while q:
                    x = q.pop()
                    for p in rev[x]:
                        if p in bad_set and p not in refuted_set:
                            refuted_set.add(p)
                            q.append(p)
            else:
                unknown += 1
        self.refuted = len(refuted_set)
        if cut:
            return self._finish(t0, "incomplete", "", f"{budget}; no hang among the {len(bad)} states of its "
                                "completely explored regions that cannot reach the goal", [])
        if unknown:
            return self._finish(t0, "incomplete", "", f"{len(bad)} states cannot reach the goal within the bounds; "
                                f"{len(refuted_set)} reach it without them, the rest are undecided after {checked} "
                                "unbounded confirmations", [])
        return self._finish(t0, "proved within bounds", "", f"{len(bad)} states cannot reach the goal only because "
                            f"of the bounds (each reaches it without them; {checked} unbounded confirmations)", [])

    def _confirm_hang(self, path: list):
        """Is the state after `path` a hang as `run` defines it, with no bound? (True, why),
        (False, '') or (None, why) when the confirmation budget ran out."""
        eng = self.make_engine()
        for a in self.prefix + path:
            eng.apply(a)
        acts = eng.enabled()
        if not acts:
            return True, "no action is enabled"
        if eng.quiescent(acts):
            return True, "quiescent: no enabled action changes the state"
        r = eng.unreachable(CONFIRM_BUDGET)
        if r is True:
            return True, "cycle: every reachable state was explored and none reaches the goal"
        return (False, "") if r is False else (None, "confirmation budget exhausted")

    def _finish(self, t0, verdict, outcome, reason, path) -> CellResult:
        n = len(self.parent)
        depth = 0
        if n:
            _, dist = self._shortest()
            depth = max(dist)
        return CellResult(verdict=verdict, outcome=outcome, reason=reason, states=n, transitions=self.transitions,
                          depth=depth, seconds=time.perf_counter() - t0, bounds=dict(self.bounds),
                          max_states=self.max_states, strategy=self.strategy, path=list(path),
                          collision_probability=collision_probability(n),
                          bound_cut_states=sum(self.cut), refuted_candidates=getattr(self, "refuted", 0),
                          por=self.por, pruned=self.pruned)


def _snap(m) -> tuple:
    return (tuple(m.S), {k: bytes(v) for k, v in m.ram.items()}, {k: bytes(v) for k, v in m.ovl.items()},
            dict(m.own))


def _restore(m, snap) -> None:
    S, ram, ovl, own = snap
    m.S[:] = S
    m.ram.clear()
    m.ram.update((k, bytearray(v)) for k, v in ram.items())
    m.ovl.clear()
    m.ovl.update((k, bytearray(v)) for k, v in ovl.items())
    m.own.clear()
    m.own.update(own)
    m._crc.clear()


def explore(make_engine, **kw) -> CellResult:
    return Explorer(make_engine, **kw).run()


def with_vars(scn, values: dict):
    """The scenario with [vars] entries set to new values (`--set warmup=2`). The scenario's
    TEXT is edited (one line per variable) and parsed again, so a trace recorded from it
    carries the values and replays. ValueError when the scenario has no such variable."""
    import re

    from .scenario import parse_scenario
    if not values:
        return scn
    lines = scn.text.splitlines(keepends=True)
    section = None
    done = set()
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("["):
            section = s
            continue
        if section != "[vars]":
            continue
        mt = re.match(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*=\s*)([^#\n]*?)(\s*(#.*)?)$", line.rstrip("\n"))
        if mt and mt.group(2) in values:
            name = mt.group(2)
            lines[i] = f"{mt.group(1)}{name}{mt.group(3)}{int(values[name])}{mt.group(5) or ''}\n"
            done.add(name)
    missing = sorted(set(values) - done)
    if missing:
        have = sorted(scn.init_vars)
        raise ValueError(f"--set {missing[0]}: scenario {scn.name} has no variable {missing[0]} in [vars] "
                         f"(it has: {', '.join(have) or 'none'})")
    return parse_scenario("".join(lines), scn.source, base=None)


# ---------------------------------------------------------------- counterexamples
TAIL_STEPS = 20_000     # steps a counterexample's run may take after its choices to report the failure


def run_choices(scn, cfg, choices, tail: int = TAIL_STEPS):
    """`run` with `choices` forced first (the scenario's schedule replaced by them), then the
    run's own PRNG policy for at most `tail` more steps: the Result, or None when a choice is
    not enabled where it is taken."""
    import dataclasses

    from .engine import Engine, RunError
    eng = Engine(dataclasses.replace(scn, schedule=list(choices)), cfg, journal=False)
    try:
        return eng.run(max_steps=len(choices) + tail)
    except RunError:
        return None


def minimise(scn, cfg, choices, outcome: str, tail: int = TAIL_STEPS, max_tests: int = 400,
             max_seconds: float = 30.0) -> tuple[list, int]:
    """Delta debugging (ddmin over complements): drop chunks of choices while the run still
    ends with `outcome`. Returns (choices, tests run). Stops early at the test or time
    budget with the smallest failing list found so far."""
    def fails(c):
        r = run_choices(scn, cfg, c, tail)
        return r is not None and r.outcome == outcome
    c = list(choices)
    tests = 0
    t0 = time.perf_counter()
    n = 2
    while len(c) >= 2 and tests < max_tests and time.perf_counter() - t0 < max_seconds:
        size = -(-len(c) // n)
        reduced = False
        for i in range(0, len(c), size):
            cand = c[:i] + c[i + size:]
            tests += 1
            if fails(cand):
                c = cand
                n = max(n - 1, 2)
                reduced = True
                break
            if tests >= max_tests:
                break
        if not reduced:
            if n >= len(c):
                break
            n = min(len(c), 2 * n)
    if len(c) == 1 and tests < max_tests:
        tests += 1
        if fails([]):
            c = []
    return c, tests


# ---------------------------------------------------------------- PCT
def _agent(a: tuple) -> tuple:
    """The 'thread' an action belongs to for PCT: one per vCPU and kind (op, deliver, timer),
    one per IPI in flight, one per traffic source."""
    k = a[0]
    if k in ("op", "deliver", "timer"):
        return (k, a[1])
    if k == "traffic":
        return (k, a[1], a[3])
    return a


def pct(make_engine, runs: int = 100, depth: int = 3, horizon: int = 2_000, seed: int = 1) -> CellResult:
    """Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010), for cells too
    large to exhaust. Each run gives every agent (see _agent) a random distinct priority
    when it first appears and picks `depth - 1` change points among the first `horizon`
    steps; each step runs the enabled action of the highest-priority agent, and at the i-th
    change point that agent's priority drops below every initial one. An action that changes
    nothing (a timer into a pending vector, a spin) yields: its agent drops to the bottom,
    otherwise a periodic source with a high priority would starve everyone. After the run (goal,
    violation or horizon) the final state is checked for a hang with `run`'s definitions,
    without bounds, as the explorer confirms candidates. A bug of depth d is found by one
    run with probability at least 1/(n k^(d-1)) (n agents, k steps); the result's `reason`
    reports that bound and the chance that `runs` runs all miss such a bug."""
    import random
    t0 = time.perf_counter()
    rnd = random.Random(seed)
    agents_seen: set = set()
    steps_max = 0
    transitions = 0
    for run_i in range(runs):
        eng = make_engine()
        prio: dict = {}
        change = sorted(rnd.sample(range(1, horizon + 1), max(0, min(depth - 1, horizon))))
        low = 0
        yields = 0
        path: list = []
        outcome = why = ""
        for step in range(horizon):
            if eng.goal_reached():
                outcome = "ok"
                break
            acts = eng.enabled()
            if not acts:
                break
            best = None
            for a in acts:
                ag = _agent(a)
                p = prio.get(ag)
                if p is None:
                    p = prio[ag] = rnd.random() + depth      # initial priorities above every change
                if best is None or p > best[0]:
                    best = (p, a, ag)
            _, a, ag = best
            if change and step + 1 == change[0]:
                change.pop(0)
                low += 1
                prio[ag] = (depth - low) * 1e-3               # below every initial priority
            if not eng.apply(a):
                yields += 1                                   # changed nothing (a spin): yield, as
                prio[ag] = -yields                            # PCT does for spinning threads
            path.append(a)
            transitions += 1
            if eng._violation is not None:
                outcome = "corruption"
                cpu, structure, gpa, own, gen, want = eng._violation
                why = (f"the hypervisor wrote cpu{cpu}'s {structure} at GPA 0x{gpa:x}, a page kernel generation "
                       f"{gen} does not own as {want} of cpu{cpu}")
                break
        agents_seen |= set(prio)
        steps_max = max(steps_max, len(path))
        if outcome == "" and not eng.goal_reached():
            acts = eng.enabled()
            if not acts:
                outcome, why = "hang", "no action is enabled"
            elif eng.quiescent(acts):
                outcome, why = "hang", "quiescent: no enabled action changes the state"
            elif eng.unreachable(CONFIRM_BUDGET) is True:
                outcome, why = "hang", "cycle: every reachable state was explored and none reaches the goal"
        if outcome in ("hang", "corruption"):
            return CellResult(verdict="counterexample", outcome=outcome, reason=f"{why} (PCT run {run_i + 1})",
                              states=run_i + 1, transitions=transitions, depth=len(path),
                              seconds=time.perf_counter() - t0, strategy="pct", path=path)
    n, k = max(1, len(agents_seen)), max(1, steps_max)
    p = 1.0 / (n * k ** (depth - 1))
    miss = (1 - p) ** runs
    return CellResult(verdict="incomplete", reason=f"PCT: {runs} runs found no failure; a bug of depth {depth} is "
                      f"found by one run with probability >= 1/(n k^(d-1)) = {p:.2e} (n = {n} agents, k = {k} steps), "
                      f"so all {runs} runs miss one with probability <= {miss:.3f}",
                      states=runs, transitions=transitions, depth=steps_max, seconds=time.perf_counter() - t0,
                      strategy="pct")
