"""Choosing the next event (mixed into Engine): the enabled actions, cached per vCPU and
updated from each event's writes; the one weighted pick of the (seed, step) PRNG; the
scenario's schedule or a trace's recorded choices read through a cursor; a branch's replay
of its parent's choices.

Enabled actions are descriptors (tuples, never indices), in canonical order: per vCPU
(op, deliver, timer), then IPI landings, then traffic sources.
"""
from __future__ import annotations

from dataclasses import dataclass

from .events import act_text
from .machine import F_FRAMES, F_HALT, F_IF, F_PC, F_R0, F_R1, F_R2, F_R3, F_RT
from .ops import operand_reads

DEFAULT_WEIGHTS = {"op": 64, "deliver": 64, "land": 32, "timer": 1, "traffic": 4}
MASK64 = (1 << 64) - 1


class RunError(Exception):
    """Bad run input discovered while running (e.g. a schedule entry that is not enabled)."""


@dataclass
class Traffic:
    src: int
    dst: int            # -1 = round robin over the other online CPUs
    vector: int
    count: int          # -1 = periodic
    when: tuple | None = None   # compiled condition (evaluated on the sender)
    slot_rr: int = 0
    slot_budget: int = 0


class Scheduler:
    def _cpu_acts(self, c: int) -> list[tuple]:
        """Enabled actions of vCPU c, in canonical order: op, deliver, timer. Also keeps
        `_waiting` (the vCPUs at a wait op) and `_cw[c]` (the weight of the list) current."""
        S = self.m.S
        b = self.bases[c]
        acts = []
        wt = self.weights
        x = 0
        ops = self.code[S[b + F_RT]]
        pc = S[b + F_PC]
        at_wait = pc < len(ops) and ops[pc][0] == "wait"
        if at_wait:
            self._waiting.add(c)
        else:
            self._waiting.discard(c)
        if not S[b + F_HALT]:
            if not at_wait or self.holds(c, b, ops[pc][1]):
                acts.append(("op", c))
                x += wt["op"]
        v = self.deliverable(c)
        if v:
            acts.append(("deliver", c, v))
            x += wt["deliver"]
        if S[b + self.L.P_TIMER]:
            acts.append(("timer", c, self.timer_vec))
            x += wt["timer"]
        cw = self._cw
        if cw is not None:
            self._cwsum += x - cw[c]
            cw[c] = x
        return acts

    def _landing_acts(self) -> list[tuple]:
        acts = []
        seen = set()
        for ipi in self.m.S[0]:
            if ipi not in seen:
                seen.add(ipi)
                acts.append(("land", *ipi))
        return acts

    def _traffic_act(self, t: Traffic) -> tuple | None:
        d = self._traffic_dst(t)
        return ("traffic", t.src, d, t.vector) if d >= 0 else None

    def _other_acts(self) -> list[tuple]:
        return self._landing_acts() + [a for a in map(self._traffic_act, self.traffic) if a is not None]

    def enabled(self) -> list[tuple]:
        """All enabled actions, in canonical order (per vCPU, then IPI landings, then traffic)."""
        acts = []
        for c in range(self.n):
            acts += self._cpu_acts(c)
        return acts + self._other_acts()

    def _slot_info(self) -> list[tuple[int, int, tuple]]:
        """Per state slot: (vCPU or -1, what a write to it can change, the other actions that
        read it). What it can change, as bits: 2 = a variable (wait conditions, the goal;
        every global counts as one), 1 = an IPI landing or a traffic source (which ones: the
        third field, -1 for the landings, else traffic indexes), 0 = that vCPU's own
        actions, 4 = only where that vCPU is in its program and its registers: its actions
        change only if it was or now is at a wait op (the op-enabling condition)."""
        L = self.L
        bits = [2] * L.nglobal
        cpus = [-1] * L.nglobal
        pv0 = min(L.pvar.values())
        light = {F_RT, F_PC, F_R0, F_R1, F_R2, F_R3, F_FRAMES}
        for c in range(self.n):
            for off in range(L.block):
                bits.append(2 if off >= pv0 else 4 if off in light else 0)
                cpus.append(c)
        readers: dict[int, list[int]] = {L.gindex["inflight"]: [-1]}
        for i, t in enumerate(self.traffic):
            for slot in self._traffic_reads(t):
                readers.setdefault(slot, []).append(i)
        deps = [()] * len(bits)
        for slot, who in readers.items():
            bits[slot] = (bits[slot] & 2) | 1       # never "light": the others must be looked at
            deps[slot] = tuple(who)
        return list(zip(cpus, bits, deps))

    def _traffic_reads(self, t: Traffic) -> set[int]:
        """Every slot _traffic_dst(t) reads (also the explorer's footprint of a send)."""
        L = self.L
        bs = self.bases[t.src]
        reads = {L.gindex["inflight"], bs + F_HALT, bs + F_IF, bs + L.P_ONLINE, t.slot_budget, t.slot_rr}
        reads |= {b + L.P_ONLINE for b in self.bases}
        for _, x, y in t.when or ():
            reads |= operand_reads(x, bs, self.bases) | operand_reads(y, bs, self.bases)
        return reads

    def _set_others(self) -> None:
        others = self._landings + [a for a in self._tacts if a is not None]
        self._others = others
        wt = self.weights
        ow = 0
        for a in others:
            ow += wt[a[0]]
        self._ow = ow

    def _enabled_incremental(self, writes, flat: bool = True) -> list[tuple] | None:
        """enabled(), recomputing only what the last event's writes can have changed.
        Same result and order as enabled() (a property test checks it)."""
        cache = self._cache
        if cache is None or writes is None:
            self._vars_changed = True
            self._cw = [0] * self.n
            self._cwsum = 0
            self._waiting = set()
            cache = self._cache = [self._cpu_acts(c) for c in range(self.n)]
            self._landings = self._landing_acts()
            self._tacts = [self._traffic_act(t) for t in self.traffic]
            self._set_others()
        else:
            info = self._info
            flags = 0
            dirty = set()
            readers = set()                 # the other actions to look at again
            moved = -1                      # a vCPU whose program position/registers changed
            for w in writes:
                loc = w[0]
                if loc.__class__ is int:
                    c, fl, deps = info[loc]
                    if loc == 0:
                        # the in-flight IPIs: a traffic source reads them only as "(src, d,
                        # vector) in flight", so only sources whose (src, vector) an IPI was
                        # added or removed with are looked at again (and the landings)
                        flags |= fl
                        readers.add(-1)
                        by_sv = self._traffic_by_sv
                        for ipi in set(w[1]).symmetric_difference(w[2]):
                            readers.update(by_sv.get((ipi[0], ipi[2]), ()))
                        continue
                    if fl == 4:
                        if c != moved:
                            if moved >= 0:
                                dirty.add(moved)    # two vCPUs moved (INIT/SIPI...): plainly
                            moved = c
                        continue
                    flags |= fl
                    if deps:
                        readers.update(deps)
                    if c >= 0:
                        dirty.add(c)
            if moved >= 0 and moved not in dirty:
                S, b = self.m.S, self.bases[moved]
                if moved in self._waiting or S[b + F_PC] in self._wait_pcs[S[b + F_RT]]:
                    dirty.add(moved)
            self._vars_changed = flags & 2
            if flags & 2:
                dirty |= self._waiting
            cpu_acts = self._cpu_acts
            for c in dirty:
                cache[c] = cpu_acts(c)
            if readers:
                tacts, traffic, act = self._tacts, self.traffic, self._traffic_act
                for i in readers:
                    if i < 0:
                        self._landings = self._landing_acts()
                    else:
                        tacts[i] = act(traffic[i])
                self._set_others()
        if flat:
            acts = []
            for lst in cache:
                acts += lst
            return acts + self._others
        return None

    def _pick_cached(self):
        """pick() over the cached per-vCPU lists without building the flat list (same result:
        the walk over per-vCPU weight sums is the flat weighted walk, grouped)."""
        cw = self._cw
        total = self._cwsum + self._ow
        if not total:
            return None
        z = (self._seedmix + (self.step + 1) * 0xD1B54A32D192ED03) & MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        r = (z ^ (z >> 31)) % total
        w = self.weights
        for c, x in enumerate(cw):
            if r < x:
                for a in self._cache[c]:
                    r -= w[a[0]]
                    if r < 0:
                        return a
            r -= x
        for a in self._others:
            r -= w[a[0]]
            if r < 0:
                return a
        return None

    def _traffic_dst(self, t: Traffic) -> int:
        S = self.m.S
        bs = self.bases[t.src]
        if S[bs + F_HALT] or not S[bs + F_IF] or not S[bs + self.L.P_ONLINE] or S[t.slot_budget] == 0:
            return -1
        if t.when is not None and not self.holds(t.src, bs, t.when):
            return -1
        inflight, online, src, vec, n = S[0], self._online_slots, t.src, t.vector, self.n
        if t.dst >= 0:
            d = t.dst
            return d if d != src and S[online[d]] and (src, d, vec) not in inflight else -1
        start = S[t.slot_rr]
        for i in range(start, start + n):       # round robin from the slot's cpu
            d = i % n
            if d != src and S[online[d]] and (src, d, vec) not in inflight:
                return d
        return -1

    def pick(self, acts: list[tuple]) -> tuple:
        if self.sched_i < len(self.schedule):
            want = self.schedule[self.sched_i]
            self.sched_i += 1
            if want not in acts:
                raise RunError(f"schedule entry '{act_text(want)}' is not enabled at step {self.step} "
                               f"(enabled: {', '.join(act_text(a) for a in acts)})")
            return want
        if self.replay:
            # a branch replays its parent's recorded choices while they are still enabled,
            # then falls back to the (seed, step) PRNG (design §4)
            want = self.replay[0]
            if want in acts:
                self.replay.popleft()
                return want
            self.replay.clear()
            self.replay_diverged = self.step
        w = self.weights
        total = 0
        for a in acts:
            total += w[a[0]]
        z = (self._seedmix + (self.step + 1) * 0xD1B54A32D192ED03) & MASK64   # splitmix64 of (seed, step), inlined
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        r = (z ^ (z >> 31)) % total
        for a in acts:
            r -= w[a[0]]
            if r < 0:
                return a
        return acts[-1]

