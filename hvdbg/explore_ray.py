"""The Ray backend of `hvdbg explore --cluster ADDRESS` (issue 12; docs/explore.md, "Running
on a Ray cluster"). Ray is an optional extra: `pip install 'hvdbg[cluster]'`.

Two ways to use a cluster:

* ``run_cells``: every cell is one Ray task running ``explore_cli.explore_cell`` (the same
  function the local process pool runs), results in job order. A counterexample's trace
  (``--out``) is written by the driver, not on the worker's node.
* ``sharded_explore``: ONE cell as a hash-partitioned search in the style of parallel Murphi
  and PReach. N shard actors; shard i owns the visited states whose key (the explorer's own
  key: 64-bit Zobrist hash of the machine XOR the bound counters, ``Explorer._key``) is
  = i mod N, and a frontier of them. A shard expands a state by restoring its compact
  snapshot (``core.explore._snap``) into its own engine, applying each enabled action the
  bounds allow, computing the successor's key exactly as ``Explorer`` does
  (``update_hash`` of the journaled writes, ``_bump`` of the counters) and sending the
  successor (key, hash, counters, snapshot, goal flag, parent key, action, depth) to its
  owner in batches (actor-to-actor calls). The driver is the coordinator: it runs rounds
  (each shard drains its inbox, expands up to ``step`` states and flushes its outboxes) and
  stops when every shard is idle with the same sent/received counts in two consecutive
  rounds and the totals agree (nothing in flight).

What is distributed and what is not: the state-space search (expansion, hashing,
deduplication, the invariant check of every transition) is. The liveness analysis is not:
after an exhaustive search the driver gathers the state graph (one record and the
successor keys per state), renumbers it in the order the in-process explorer would have
(DFS preorder or BFS order over the successors in ``enabled()`` order) and runs the
in-process explorer's own ``_liveness`` on it, including the unbounded confirmation of hang
candidates on the driver. So the verdict, the state, transition and bound-cut counts and
the depth are those of the in-process explorer on an exhaustive cell. A corruption stops
the search at once (its path is rebuilt from the owners' parent pointers); the
counterexample's minimisation and trace are done on the driver as ``explore_cell`` does.

The key uses Python's ``hash`` of tuples holding strings, which is salted per process, so
the shard actors run with ``PYTHONHASHSEED=0`` (a runtime_env variable) and the driver
checks that they agree before searching; the driver itself never compares keys.
"""
from __future__ import annotations

import gc
import os
import time
from collections import deque

RAY_MISSING = "hvdbg: --cluster needs Ray: pip install 'hvdbg[cluster]'"
HASH_SEED = "0"          # PYTHONHASHSEED of the shard actors (they must agree on Explorer._key)
STEP = 400               # states a shard expands per coordinator round
BATCH = 256              # successors per actor-to-actor message


def require_ray():
    """The ray module, or a one-line UsageError (exit 2) naming the extra."""
    try:
        import ray
    except ImportError:
        from .cli import UsageError
        raise UsageError(RAY_MISSING) from None
    return ray


def connect(address: str | None, num_cpus: int | None = None):
    """(ray, started): join `address` ("ray://HOST:PORT", "auto", a GCS "HOST:PORT") or, for
    "local"/None, start a local instance with `num_cpus` CPUs (default: this machine's).
    An already initialised Ray is reused (started = False: the caller must not shut it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    import logging
    import warnings
    kw = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if address in (None, "", "local"):
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **kw)
        else:
            # ship this hvdbg (its dependencies must be installed on the cluster's nodes)
            renv = {"py_modules": [os.path.dirname(os.path.abspath(__file__))]}
            if os.environ.get("HVDBG_RAY_SHIP", "1") == "0":
                renv = None
            try:
                ray.init(address=address, runtime_env=renv, **kw)
            except Exception as e:      # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ...
                from .cli import UsageError
                msg = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
                raise UsageError(f"hvdbg: --cluster {address}: cannot connect to Ray: {msg}") from None
    return ray, True


# ---------------------------------------------------------------- cells as tasks
def _cell_task(job: dict) -> dict:
    from .explore_cli import explore_cell
    return explore_cell(job)


def _write_trace(job: dict, d: dict) -> dict:
    """The --out trace of a counterexample found remotely, written here (the driver)."""
    if not job.get("out") or d.get("verdict") != "counterexample" or "choices" not in d or "trace" in d:
        return d
    from .core.scenario import parse_scenario
    from .explore_cli import write_counterexample
    scn = parse_scenario(job["text"], job["source"])
    cfg = scn.config(**job["cell"])
    target = os.path.join(job["out"], d["cell"] + ".hvt")
    try:
        d.update(write_counterexample(scn, cfg, [tuple(a) for a in d["path"]], d["outcome"], target))
    except OSError as e:
        d["trace_note"] = f"not written: {target}: {getattr(e, 'why', None) or e.strerror or e}"
    return d


def run_cells(jobs: list, address: str | None = "local", progress=None, num_cpus: int | None = None) -> list:
    """Every job (an explore_cli job dict) as one Ray task running explore_cell; the result
    dicts in job order. progress(i, result) is called as each cell finishes."""
    ray, started = connect(address, num_cpus)
    try:
        task = ray.remote(_cell_task)
        refs = [task.remote(dict(j, out=None)) for j in jobs]
        where = {r: i for i, r in enumerate(refs)}
        results: list = [None] * len(jobs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                i = where[r]
                d = _write_trace(jobs[i], ray.get(r))
                d["backend"] = "ray"
                results[i] = d
                if progress is not None:
                    progress(i, d)
        return results
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------- one cell, sharded
def _engine_factory(job: dict):
    from .core.engine import Engine
    from .core.scenario import parse_scenario
    scn = parse_scenario(job["text"], job["source"])
    cfg = scn.config(**job["cell"])
    return scn, cfg, (lambda: Engine(scn, cfg, journal=False))


class Shard:
    """One shard of the visited set and its frontier (a Ray actor; plain class for tests)."""

    def __init__(self, job: dict, index: int, n: int):
        from .core.explore import Explorer
        gc.disable()                          # as Explorer.run: millions of small acyclic tuples
        _, _, make = _engine_factory(job)
        self.ex = Explorer(make, bounds=job.get("bounds"), max_states=job["max_states"], strategy="dfs")
        eng = make()
        for a in list(eng.schedule[eng.sched_i:]):        # the scenario's forced choices
            eng.apply(a)
        self.eng = eng
        self.index, self.n = index, n
        self.visited: dict = {}     # key -> [parent key, action, goal, cut, [(action, key)...], depth]
        self.frontier: deque = deque()
        self.inbox: list = []
        self.out: list = [[] for _ in range(n)]
        self.known: set = set()     # keys of other shards this one has already sent
        self.peers: list = []
        self.sent = self.received = self.transitions = self.cut_states = 0
        self.violation = None
        self.cut_budget = False
        self.cap = job["max_states"]

    def probe(self) -> tuple:
        """What must agree between shards: the key of a counter tuple and the root's key."""
        from .core.explore import BOUND_KINDS, full_hash
        h0 = full_hash(self.eng.m)
        return hash(("bound", (1,) * len(BOUND_KINDS))), self.ex._key(h0, (0,) * len(BOUND_KINDS)), \
            os.environ.get("PYTHONHASHSEED")

    def set_peers(self, peers: list) -> None:
        self.peers = peers

    def seed(self) -> int:
        """Insert the root if this shard owns it; returns the root's key."""
        from .core.explore import BOUND_KINDS, _snap, full_hash
        h0 = full_hash(self.eng.m)
        cnt0 = (0,) * len(BOUND_KINDS)
        key = self.ex._key(h0, cnt0)
        if key % self.n == self.index:
            self._insert((key, h0, cnt0, _snap(self.eng.m), self.eng.goal_reached(), None, None, 0))
        return key

    def receive(self, batch: list) -> None:
        self.inbox.append(batch)
        self.received += len(batch)

    def _insert(self, msg: tuple) -> None:
        key, h, cnt, snap, goal, pkey, act, depth = msg
        if key in self.visited:
            return
        if len(self.visited) >= self.cap:
            self.cut_budget = True
            return
        self.visited[key] = [pkey, act, goal, False, [], depth]
        if not goal:
            self.frontier.append((key, h, cnt, snap, depth))

    def _flush(self, j: int) -> None:
        batch = self.out[j]
        if batch:
            self.out[j] = []
            self.sent += len(batch)
            peer = self.peers[j]
            if isinstance(peer, Shard):               # sharded_inprocess: a direct call
                peer.receive(batch)
            else:
                peer.receive.remote(batch)

    def step(self, budget: int, cap: int) -> dict:
        """Drain the inbox, expand up to `budget` states, flush the outboxes; a status."""
        from .core.explore import _restore, _snap, update_hash
        self.cap = cap
        for batch in self.inbox:
            for msg in batch:
                self._insert(msg)
        self.inbox = []
        ex, eng = self.ex, self.eng
        m = eng.m
        apply, undo, enabled, goal_reached = eng.apply, m.undo, eng.enabled, eng.goal_reached
        kinds, n, me, visited, known, out = ex._kinds, self.n, self.index, self.visited, self.known, self.out
        done = 0
        while self.frontier and done < budget and self.violation is None:
            key, h, cnt, snap, depth = self.frontier.popleft()
            _restore(m, snap)
            acts, cut = ex._allowed(enabled(), cnt)
            rec = visited[key]
            rec[3] = cut
            self.cut_states += cut
            succ = rec[4]
            for a in acts:
                w = apply(a)
                self.transitions += 1
                if eng._violation is not None:
                    ex._note_violation(eng)
                    self.violation = (key, a, ex._violation_text)
                    undo(w)
                    break
                h2 = update_hash(h, w)
                cnt2 = ex._bump(cnt, a) if a[0] in kinds else cnt
                k2 = ex._key(h2, cnt2)
                succ.append((a, k2))
                owner = k2 % n
                if owner == me:
                    if k2 not in visited:
                        g = goal_reached()
                        self._insert((k2, h2, cnt2, None if g else _snap(m), g, key, a, depth + 1))
                elif k2 not in known:
                    known.add(k2)
                    g = goal_reached()
                    out[owner].append((k2, h2, cnt2, None if g else _snap(m), g, key, a, depth + 1))
                    if len(out[owner]) >= BATCH:
                        self._flush(owner)
                undo(w)
            done += 1
        for j in range(n):
            self._flush(j)
        return {"idle": not self.frontier and not self.inbox, "sent": self.sent, "received": self.received,
                "states": len(self.visited), "transitions": self.transitions, "frontier": len(self.frontier),
                "violation": self.violation, "cut": self.cut_budget, "cut_states": self.cut_states,
                "depth": max((r[5] for r in visited.values()), default=0) if self.cut_budget or self.violation
                else 0}

    def parent_of(self, key: int) -> tuple:
        r = self.visited[key]
        return r[0], r[1]

    def graph(self) -> list:
        """(key, goal, cut, [(action, successor key)...]) of every state this shard owns."""
        return [(k, r[2], r[3], r[4]) for k, r in self.visited.items()]


def _order(root: int, recs: dict, strategy: str) -> list:
    """The keys in the order the in-process explorer numbers its states: DFS preorder (a new
    state is numbered when first reached and explored at once) or BFS order, successors in
    enabled() order."""
    ids = {root: 0}
    order = [root]
    if strategy == "bfs":
        q = deque([root])
        while q:
            for _, t in recs[q.popleft()][2]:
                if t not in ids:
                    ids[t] = len(order)
                    order.append(t)
                    q.append(t)
        return order
    stack = [[root, 0]]
    while stack:
        fr = stack[-1]
        succ = recs[fr[0]][2]
        if fr[1] >= len(succ):
            stack.pop()
            continue
        t = succ[fr[1]][1]
        fr[1] += 1
        if t not in ids:
            ids[t] = len(order)
            order.append(t)
            if not recs[t][0]:
                stack.append([t, 0])
    return order


def _graph_explorer(make, job: dict, prefix: list, root: int, recs: dict):
    """An Explorer whose state graph is the gathered one (ids as the in-process explorer's):
    its _liveness, _shortest and _finish then run unchanged."""
    from .core.explore import Explorer

    class GraphExplorer(Explorer):
        def _graph_path(self, par, sid):        # edges' actions are stored: no re-hashing here
            chain = []
            while sid > 0:
                chain.append(sid)
                sid = par[sid]
            chain.reverse()
            out, p = [], 0
            for t in chain:
                for a, s in zip(self.succ_acts[p], self.succ[p]):
                    if s == t:
                        out.append(a)
                        break
                else:
                    raise AssertionError(f"no edge to state {t}")
                p = t
            return out

    ex = GraphExplorer(make, bounds=job.get("bounds"), max_states=job["max_states"],
                       strategy=job.get("strategy", "dfs"))
    ex._reset()
    ex.prefix = list(prefix)
    order = _order(root, recs, ex.strategy)
    if len(order) != len(recs):
        raise RuntimeError(f"sharded search: {len(recs) - len(order)} of {len(recs)} gathered states are not "
                           "reachable from the root (the shards disagree on state keys)")
    ids = {k: i for i, k in enumerate(order)}
    ex.keys = ids
    ex.succ_acts = []
    for i, k in enumerate(order):
        goal, cut, succ = recs[k]
        ex.parent.append(-1)
        ex.pact.append(-1)
        ex.goal.append(goal)
        ex.cut.append(cut)
        ex.succ.append([ids[t] for _, t in succ])
        ex.succ_acts.append([a for a, _ in succ])
        ex.transitions += len(succ)
    for i, k in enumerate(order):           # parents of the first visits, in this numbering
        for a, t in recs[k][2]:
            j = ids[t]
            if j > 0 and ex.parent[j] < 0:
                ex.parent[j] = i
                ex.pact[j] = ex._aid(a)
    return ex


def _finish_cell(job: dict, scn, cfg, r, extra: dict) -> dict:
    """A CellResult as explore_cell returns it (minimised counterexample, --out trace)."""
    from .explore_cli import cell_report
    return cell_report(job, scn, cfg, r, extra)


def _prepare(job: dict):
    """(scn, cfg, make, prefix, decided): `decided` when the scenario's own schedule violates
    an invariant or reaches the goal (the in-process explorer answers without a search)."""
    scn, cfg, make = _engine_factory(job)
    eng = make()
    prefix = list(eng.schedule[eng.sched_i:])
    for a in prefix:
        if a not in eng.enabled():
            raise ValueError(f"the scenario's schedule entry {a} is not enabled")
        eng.apply(a)
        if eng._violation is not None:
            break
    return scn, cfg, make, prefix, eng._violation is not None or eng.goal_reached()


def _search(job: dict, actors: list, call, step: int, progress, scn, cfg, make, prefix, extra: dict) -> dict:
    """The coordinator. call([(actor, method, args)...]) -> their results, in order (Ray: the
    remote calls then ray.get; in-process: direct calls)."""
    from .core.explore import DEFAULT_BOUNDS, CellResult, collision_probability
    n = len(actors)
    probes = call([(a, "probe", ()) for a in actors])
    if len({p[:2] for p in probes}) != 1:
        raise RuntimeError(f"sharded search: the shards disagree on the state hash ({probes}); their "
                           "PYTHONHASHSEED must be the same")
    call([(a, "set_peers", (actors,)) for a in actors])
    root = call([(a, "seed", ()) for a in actors])[0]
    t0 = time.perf_counter()
    limit = job["max_states"]
    have = [0] * n
    prev = None
    rounds = 0
    while True:
        rounds += 1
        remaining = max(0, limit - sum(have))
        caps = [have[i] + remaining // n + (1 if i < remaining % n else 0) for i in range(n)]
        stats = call([(a, "step", (step, caps[i])) for i, a in enumerate(actors)])
        have = [s["states"] for s in stats]
        if progress is not None:
            progress(sum(have), sum(s["transitions"] for s in stats), sum(s["frontier"] for s in stats))
        if any(s["violation"] for s in stats) or any(s["cut"] for s in stats):
            break
        counts = tuple((s["sent"], s["received"]) for s in stats)
        quiet = all(s["idle"] for s in stats) and sum(c[0] for c in counts) == sum(c[1] for c in counts)
        if quiet and counts == prev:
            break                       # idle twice in a row with the same counts: nothing in flight
        prev = counts if quiet else None
    states = sum(have)
    transitions = sum(s["transitions"] for s in stats)
    bounds = dict(DEFAULT_BOUNDS)
    bounds.update(job.get("bounds") or {})
    extra.update(shards=n, rounds=rounds, shard_states=have)
    base = dict(states=states, transitions=transitions, bounds=bounds, max_states=limit,
                strategy=job.get("strategy", "dfs"), collision_probability=collision_probability(states),
                bound_cut_states=sum(s["cut_states"] for s in stats))
    viol = next((s["violation"] for s in stats if s["violation"]), None)
    if viol is not None:            # a corruption: the path from the owners' parent pointers
        key, a, why = viol
        path = [a]
        while True:
            pkey, pa = call([(actors[key % n], "parent_of", (key,))])[0]
            if pkey is None:
                break
            path.append(pa)
            key = pkey
        path.reverse()
        r = CellResult(verdict="counterexample", outcome="corruption", reason=why, depth=len(path),
                       seconds=time.perf_counter() - t0, path=prefix + path, **base)
        return _finish_cell(job, scn, cfg, r, extra)
    if any(s["cut"] for s in stats) or states >= limit:
        r = CellResult(verdict="incomplete", reason=f"state budget {limit} reached before the bounded space was "
                       "exhausted", depth=max(s["depth"] for s in stats), seconds=time.perf_counter() - t0, **base)
        return _finish_cell(job, scn, cfg, r, extra)
    recs: dict = {}
    for part in call([(a, "graph", ()) for a in actors]):
        for k, goal, cut, succ in part:
            recs[k] = (goal, cut, succ)
    extra["search_seconds"] = round(time.perf_counter() - t0, 3)
    ex = _graph_explorer(make, job, prefix, root, recs)
    r = ex._liveness(t0)         # the in-process explorer's analysis and hang confirmation
    return _finish_cell(job, scn, cfg, r, extra)


def sharded_explore(job: dict, shards: int, address: str | None = "local", progress=None,
                    num_cpus: int | None = None, step: int = STEP) -> dict:
    """One cell (an explore_cli job dict, strategy dfs or bfs) explored by `shards` Ray actors,
    each owning the states whose key is = its index mod `shards`. Returns the dict
    explore_cell returns, plus backend/shards/rounds/setup_seconds/search_seconds.
    progress(states, transitions, frontier) is called after every coordinator round."""
    if job.get("strategy", "dfs") not in ("dfs", "bfs"):
        raise ValueError(f"sharded_explore: strategy {job.get('strategy')!r}: expected dfs or bfs")
    if shards < 1:
        raise ValueError("sharded_explore: shards must be >= 1")
    scn, cfg, make, prefix, decided = _prepare(job)
    if decided:
        from .explore_cli import explore_cell
        return dict(explore_cell(job), backend="ray-sharded", shards=shards)
    ray, started = connect(address, num_cpus)
    actors: list = []
    try:
        t_setup = time.perf_counter()
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        actor = ray.remote(Shard).options(
            num_cpus=min(1.0, cpus / shards), scheduling_strategy="SPREAD",
            runtime_env={"env_vars": {"PYTHONHASHSEED": HASH_SEED}})
        actors = [actor.remote(job, i, shards) for i in range(shards)]
        ray.get([a.probe.remote() for a in actors])          # the actors are up
        extra = {"backend": "ray-sharded", "setup_seconds": round(time.perf_counter() - t_setup, 3)}

        def call(items):
            return ray.get([getattr(a, m).remote(*args) for a, m, args in items])
        return _search(job, actors, call, step, progress, scn, cfg, make, prefix, extra)
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:       # noqa: BLE001 - already gone
                pass
        if started:
            ray.shutdown()


def sharded_inprocess(job: dict, shards: int, progress=None, step: int = STEP) -> dict:
    """The same partitioned search with the shards as plain objects in this process (no Ray;
    messages are direct calls): for tests of the partitioning and termination logic."""
    scn, cfg, make, prefix, decided = _prepare(job)
    if decided:
        from .explore_cli import explore_cell
        return dict(explore_cell(job), backend="sharded-inprocess", shards=shards)
    actors = [Shard(job, i, shards) for i in range(shards)]

    def call(items):
        return [getattr(a, m)(*args) for a, m, args in items]
    try:
        return _search(job, actors, call, step, progress, scn, cfg, make, prefix, {"backend": "sharded-inprocess"})
    finally:
        gc.enable()         # Shard.__init__ disabled it (a dedicated process in Ray)


def cluster_run(jobs: list, address: str | None, shards: int | None = None, progress=None,
                state_progress=None, num_cpus: int | None = None) -> list:
    """What `hvdbg explore --cluster ADDRESS` runs: one dfs/bfs cell with shards > 1 as a
    sharded search, otherwise every cell as a Ray task. shards=None: the cluster's CPU count
    when it has more than one node, else 1 (on one machine the sharded search is slower
    than one task: bench/explore_ray.py).
    progress(i, result) per finished cell; state_progress(states, transitions, frontier) per
    round of a sharded search. Result dicts in job order."""
    ray, started = connect(address, num_cpus)
    try:
        if len(jobs) == 1 and jobs[0].get("strategy", "dfs") in ("dfs", "bfs"):
            n = shards
            if n is None:
                nodes = [x for x in ray.nodes() if x.get("Alive")]
                n = int(ray.cluster_resources().get("CPU", 1)) if len(nodes) > 1 else 1
            if n > 1:
                d = sharded_explore(jobs[0], n, address, progress=state_progress)
                if progress is not None:
                    progress(0, d)
                return [d]
        return run_cells(jobs, address, progress)
    finally:
        if started:
            ray.shutdown()


__all__ = ["RAY_MISSING", "Shard", "cluster_run", "connect", "require_ray", "run_cells", "sharded_explore",
           "sharded_inprocess"]
