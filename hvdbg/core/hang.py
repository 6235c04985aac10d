"""Hang detection (mixed into Engine), design §3: a hang is a state where no enabled action
changes anything (quiescence), or - with periodic sources that never stop - a repeated
state whose whole reachable set is explored (depth-first, undone by the journal) without
meeting the goal. Sources are never switched off to fake one.
"""
from __future__ import annotations

NOT_CHECKED = object()


class CycleCheck:
    """When to look for a cycle: the state hash is sampled every 1,024 events; a sample seen
    before (since the last clear) triggers a full exploration (HangSearch.unreachable). An
    exploration cut by its budget says the reachable set is large: retrying soon would cost
    as much for the same answer, so the next one backs off exponentially."""

    def __init__(self, eng):
        self.e = eng
        self.samples: dict[int, int] = {}
        self.next_sample = 1024
        self.backoff = 1

    def sample(self, allowed: bool):
        """At a sample step: NOT_CHECKED, or the exploration's verdict (True = hang)."""
        e = self.e
        self.next_sample += 1024
        z = e.m.zob
        verdict = NOT_CHECKED
        if z in self.samples and allowed:
            verdict = e.unreachable()
            if not verdict:
                self.samples.clear()
                self.backoff = self.backoff * 2 if verdict is None else 1
                self.next_sample += 4096 * min(self.backoff, 1024)
        if verdict is not True:
            if len(self.samples) > 4096:
                self.samples.clear()
            self.samples[z] = e.step
        return verdict


class HangSearch:
    def cycle_check(self) -> CycleCheck:
        return CycleCheck(self)

    def quiescent(self, acts: list[tuple]) -> bool:
        """True when no enabled action changes anything (design §3 hang definition 1)."""
        for a in acts:
            w = self.apply(a)
            if w:
                self.m.undo(w)
                return False
        return True

    def unreachable(self, budget: int = 20_000) -> bool | None:
        """Explore every interleaving from the current state (depth-first, undo by journal).
        True: the reachable set is closed and never meets the goal (a cycle without the goal,
        design §3 hang definition 2); False: goal reachable; None: budget exhausted."""
        m = self.m
        seen = {m.zob}
        stack = [iter(self.enabled())]
        path: list[list] = []
        count = 0
        result: bool | None = True
        while stack:
            a = next(stack[-1], None)
            if a is None:
                stack.pop()
                if path:
                    m.undo(path.pop())
                continue
            w = self.apply(a)
            z = m.zob
            if self.goal_reached():
                result = False
            elif z in seen:
                m.undo(w)
                continue
            else:
                count += 1
                if count > budget:
                    result = None
            if result is not True:
                m.undo(w)
                while path:
                    m.undo(path.pop())
                break
            seen.add(z)
            path.append(w)
            stack.append(iter(self.enabled()))
        self._notes = []
        return result

