"""`hvdbg export FILE --perfetto OUT.pftrace [--chrome-json OUT.json]`: an imported text trace
or an hvdbg trace (.hvt) as a Perfetto TrackEvent trace (and/or Chrome trace-event JSON).

What is written (docs/import.md "Export"):

* one track per vCPU with handler slices (interrupt injection/delivery to its EOI) and, for
  hvdbg's own traces, a child track of routine slices (the routine each op ran in);
  imported host traces also get a "guest mode" child track (kvm_entry to kvm_exit) and
  imported guest traces a "guest handlers" track (irq_vectors *_entry to *_exit);
* counter tracks per vCPU: IRR popcount, ISR popcount, TPR;
* instant events: MSR writes, skipped EOIs, hotplug steps, transitions;
* flows from an IPI send to its acceptance (imported) / landing (simulated).

The Perfetto file is built with the ``perfetto`` package's protos (``pip install
'hvdbg[perfetto]'``); Chrome JSON needs nothing extra. Timestamps: imported traces keep
theirs (ns); a simulated trace's event N is placed at N µs.
"""
from __future__ import annotations

import json
import os

PROCESS_UUID = 1
MAX_DEPTH = 64            # open slices kept per track
SEQ = 7001


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write an imported text trace or an hvdbg trace (.hvt) for Perfetto "
                                      "(TrackEvent protobuf) or as Chrome trace-event JSON")
    p.add_argument("files", nargs="+", metavar="FILE", help="FILE.hvt (recorded, or written by `hvdbg import -o`), "
                                                           "or text trace(s) as for `hvdbg import`")
    p.add_argument("--perfetto", metavar="OUT.pftrace", help="Perfetto protobuf trace (needs the perfetto extra)")
    p.add_argument("--chrome-json", metavar="OUT.json", dest="chrome_json", help="Chrome trace-event JSON")
    p.add_argument("--format", choices=("auto", "trace", "trace-pipe", "trace-cmd", "perf-script"), default="auto")
    p.add_argument("--offset", action="append", default=[], metavar="ROLE=±SECONDS")


# -- sinks -------------------------------------------------------------------------------
class Sink:
    """Collects tracks and events; subclasses write them."""

    def __init__(self):
        self.tracks: dict[int, tuple] = {}

    def track(self, uuid: int, name: str, parent: int | None = PROCESS_UUID, counter: bool = False) -> int:
        if uuid not in self.tracks:
            self.tracks[uuid] = (name, parent, counter)
            self._track(uuid, name, parent, counter)
        return uuid

    def _track(self, uuid, name, parent, counter):
        pass


class PerfettoSink(Sink):
    MAGIC = None

    def __init__(self, f, title: str):
        super().__init__()
        from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TracePacket, TrackEvent
        from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder
        self.TP, self.TE = TracePacket, TrackEvent
        self.b = StreamingTraceProtoBuilder(f)
        self.f = f
        p = TracePacket()
        p.trusted_packet_sequence_id = SEQ
        p.sequence_flags = TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
        p.track_descriptor.uuid = PROCESS_UUID
        p.track_descriptor.name = "hvdbg"
        self.b.write_packet(p)
        self.tracks[PROCESS_UUID] = ("hvdbg", None, False)
        self.track(PROCESS_UUID + 1, title[:200], PROCESS_UUID)

    @staticmethod
    def magic() -> bytes:
        import io
        buf = io.BytesIO()
        try:
            PerfettoSink(buf, "")
        except ImportError:
            return b"\n"
        return buf.getvalue()[:12]

    def _packet(self, ts: int | None = None):
        p = self.TP()
        p.trusted_packet_sequence_id = SEQ
        if ts is not None:
            p.timestamp = ts
        return p

    def _track(self, uuid, name, parent, counter):
        p = self._packet()
        d = p.track_descriptor
        d.uuid = uuid
        d.name = name
        if parent is not None:
            d.parent_uuid = parent
        if counter:
            d.counter.SetInParent()
        self.b.write_packet(p)

    def _event(self, ts, track, typ, name=None, flows=(), ends=(), args=None):
        p = self._packet(ts)
        e = p.track_event
        e.type = typ
        e.track_uuid = track
        if name is not None:
            e.name = name
        if flows:
            e.flow_ids.extend(flows)
        if ends:
            e.terminating_flow_ids.extend(ends)
        if args:
            for k, v in args.items():
                a = e.debug_annotations.add()
                a.name = k
                if isinstance(v, int) and -(1 << 63) <= v < (1 << 63):
                    a.int_value = v
                else:
                    a.string_value = str(v)
        self.b.write_packet(p)

    def begin(self, ts, track, name, flows=(), ends=(), args=None):
        self._event(ts, track, self.TE.TYPE_SLICE_BEGIN, name, flows, ends, args)

    def end(self, ts, track):
        self._event(ts, track, self.TE.TYPE_SLICE_END)

    def instant(self, ts, track, name, flows=(), ends=(), args=None):
        self._event(ts, track, self.TE.TYPE_INSTANT, name, flows, ends, args)

    def counter(self, ts, track, value):
        p = self._packet(ts)
        e = p.track_event
        e.type = self.TE.TYPE_COUNTER
        e.track_uuid = track
        e.counter_value = value
        self.b.write_packet(p)

    def close(self):
        pass


class ChromeSink(Sink):
    """Chrome trace-event JSON: one pid, one tid per track, counters as "C" events."""

    def __init__(self, title: str):
        super().__init__()
        self.ev: list = [{"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "hvdbg " + title}}]

    def _track(self, uuid, name, parent, counter):
        if not counter:
            self.ev.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": uuid, "args": {"name": name}})
            self.ev.append({"ph": "M", "name": "thread_sort_index", "pid": 1, "tid": uuid, "args": {"sort_index": uuid}})

    @staticmethod
    def _us(ts):
        return ts / 1000.0

    def begin(self, ts, track, name, flows=(), ends=(), args=None):
        e = {"ph": "B", "ts": self._us(ts), "pid": 1, "tid": track, "name": name}
        if args:
            e["args"] = {k: v for k, v in args.items()}
        self.ev.append(e)
        self._flows(ts, track, name, flows, ends)

    def end(self, ts, track):
        self.ev.append({"ph": "E", "ts": self._us(ts), "pid": 1, "tid": track})

    def instant(self, ts, track, name, flows=(), ends=(), args=None):
        e = {"ph": "i", "s": "t", "ts": self._us(ts), "pid": 1, "tid": track, "name": name}
        if args:
            e["args"] = {k: v for k, v in args.items()}
        self.ev.append(e)
        self._flows(ts, track, name, flows, ends)

    def _flows(self, ts, track, name, flows, ends):
        for fid in flows:
            self.ev.append({"ph": "s", "id": fid, "ts": self._us(ts), "pid": 1, "tid": track, "name": "IPI",
                            "cat": "ipi"})
        for fid in ends:
            self.ev.append({"ph": "f", "bp": "e", "id": fid, "ts": self._us(ts), "pid": 1, "tid": track,
                            "name": "IPI", "cat": "ipi"})

    def counter(self, ts, track, value):
        self.ev.append({"ph": "C", "ts": self._us(ts), "pid": 1, "name": self.tracks[track][0],
                        "args": {"value": value}})

    def dump(self, f):
        json.dump({"traceEvents": self.ev, "displayTimeUnit": "ns", "otherData": {"tool": "hvdbg"}}, f)


# -- track numbering ---------------------------------------------------------------------
def vcpu_track(n):
    return 100 + n


def handler_track(n):      # kept equal to the vCPU track: handler slices live there
    return 100 + n


def child_track(n, k):
    return 100000 * k + n


IRR_K, ISR_K, TPR_K, RUN_K, GUEST_K, ROUTINE_K = 1, 2, 3, 4, 5, 6


class _Slices:
    """Per-track stacks so that an EOI of a vector closes its own slice (and any opened above it)."""

    def __init__(self, sink):
        self.sink = sink
        self.open: dict[int, list] = {}

    def begin(self, ts, track, key, name, **kw) -> bool:
        st = self.open.setdefault(track, [])
        if len(st) >= MAX_DEPTH:          # a hostile trace of entries without exits
            return False
        st.append(key)
        self.sink.begin(ts, track, name, **kw)
        return True

    def end(self, ts, track, key) -> bool:
        st = self.open.get(track)
        if not st or key not in st:
            return False
        while st:
            k = st.pop()
            self.sink.end(ts, track)
            if k == key:
                return True
        return True

    def end_all(self, ts, track):
        st = self.open.get(track) or []
        while st:
            st.pop()
            self.sink.end(ts, track)

    def close(self, ts):
        for t in list(self.open):
            self.end_all(ts, t)


def _setup_vcpu(sink, n, label="vCPU"):
    sink.track(vcpu_track(n), f"{label} {n}")
    sink.track(child_track(n, IRR_K), f"vCPU {n} IRR popcount", vcpu_track(n), counter=True)
    sink.track(child_track(n, ISR_K), f"vCPU {n} ISR popcount", vcpu_track(n), counter=True)


# -- imported text traces ----------------------------------------------------------------
def export_imported(tr, sink) -> dict:
    from .trace_import.decode import msr_name
    from .trace_import.model import ARGS, NAME, TS, VCPU, State
    raw = tr.events.raw
    n_ev = len(tr.events)
    flow_of_send: dict[int, list] = {}
    flow_of_accept: dict[int, int] = {}
    for k, (s, a, vec) in enumerate(tr.flows):
        flow_of_send.setdefault(s, []).append(k + 1)
        flow_of_accept[a] = k + 1
    sl = _Slices(sink)
    st = State()
    recon = tr._recon
    # seconds -> ns; counter clocks (x86-tsc, counter: integers far beyond 1e9 s) are taken as they
    # are; negative (offset) timestamps are shifted to start at 0; Perfetto wants a uint64
    all_ts = tr._raw.ts
    t_min, t_max = (min(all_ts), max(all_ts)) if n_ev else (0.0, 0.0)
    scale = 1e9 if t_max < 1e9 else 1.0
    base = t_min if t_min < 0 else 0.0
    top = (1 << 63) - 1
    seen = set()
    last = {}
    stats = {"slices": 0, "instants": 0, "flows": len(tr.flows), "counters": 0}
    ts = 0
    for i in range(n_ev):
        e = raw(i)
        ts = min(top, int(round((e[TS] - base) * scale)))
        name, vn, a = e[NAME], e[VCPU], e[ARGS]
        if vn is not None and vn not in seen:
            seen.add(vn)
            _setup_vcpu(sink, vn)
        v_before = st.vcpus.get(vn) if vn is not None else None
        isr_before = set(v_before.isr) if v_before is not None else set()
        recon.apply(st, i, e)
        if vn is None or a is None:
            continue
        v = st.vcpus[vn]
        vt = vcpu_track(vn)
        if name == "kvm_inj_virq" and not a[1] and a[0] not in isr_before and a[0] in v.isr:
            sl.begin(ts, vt, a[0], f"vector 0x{a[0]:02x}", args={"event": i})
            stats["slices"] += 1
        elif name in ("kvm_eoi", "kvm_pv_eoi"):
            sl.end(ts, vt, a[1])
        elif name == "kvm_entry":
            t = sink.track(child_track(vn, RUN_K), f"vCPU {vn} guest mode", vt)
            if not sl.open.get(t):
                sl.begin(ts, t, "run", "in guest")
                stats["slices"] += 1
        elif name == "kvm_exit":
            t = sink.track(child_track(vn, RUN_K), f"vCPU {vn} guest mode", vt)
            if sl.open.get(t):
                sl.end_all(ts, t)
        elif (name == "kvm_msr" and a[0]) or name == "write_msr":
            msr, val = (a[1], a[2]) if name == "kvm_msr" else (a[0], a[1])
            sink.instant(ts, vt, f"wrmsr {msr_name(msr)} = 0x{val:x}", args={"event": i})
            stats["instants"] += 1
        elif name in ("cpuhp_enter", "cpuhp_multi_enter", "cpuhp_exit"):
            cpu = a[0]
            if cpu not in seen:
                seen.add(cpu)
                _setup_vcpu(sink, cpu)
            what = (f"hotplug step {a[2]} ({a[3]}) -> {a[1]}" if name != "cpuhp_exit"
                    else f"hotplug step {a[2]} done: state {a[1]} ret {a[3]}")
            sink.instant(ts, vcpu_track(cpu), what, args={"event": i})
            stats["instants"] += 1
        elif name.endswith("_entry") and len(a) == 1:
            t = sink.track(child_track(vn, GUEST_K), f"CPU {vn} guest handlers", vt)
            sl.begin(ts, t, a[0], f"{name[:-6]} 0x{a[0]:02x}", args={"event": i})
            stats["slices"] += 1
        elif name.endswith("_exit") and len(a) == 1:
            sl.end(ts, child_track(vn, GUEST_K), a[0])
        if i in flow_of_send:
            sink.instant(ts, vt, f"IPI send 0x{a[1]:02x}" if name == "kvm_apic_ipi" else "IPI send",
                         flows=flow_of_send[i], args={"event": i})
            stats["instants"] += 1
        if i in flow_of_accept:
            sink.instant(ts, vt, f"IPI accepted 0x{a[1]:02x}", ends=(flow_of_accept[i],), args={"event": i})
            stats["instants"] += 1
        cur = (len(v.irr), len(v.isr), v.tpr[0] if v.tpr else None)
        prev = last.get(vn)
        if cur != prev:
            if prev is None or cur[0] != prev[0]:
                sink.counter(ts, child_track(vn, IRR_K), cur[0])
                stats["counters"] += 1
            if prev is None or cur[1] != prev[1]:
                sink.counter(ts, child_track(vn, ISR_K), cur[1])
                stats["counters"] += 1
            if cur[2] is not None and (prev is None or cur[2] != prev[2]):
                sink.counter(ts, sink.track(child_track(vn, TPR_K), f"vCPU {vn} TPR", vt, counter=True), cur[2])
                stats["counters"] += 1
            last[vn] = cur
    sl.close(ts + 1)
    return stats


# -- hvdbg's own traces ------------------------------------------------------------------
def export_hvt(loaded, sink) -> dict:
    from .core.msr import MSR_NAMES
    eng = loaded.engine
    events = loaded.timeline.events
    routines = eng.routines
    n = loaded.config.vcpus
    for c in range(n):
        _setup_vcpu(sink, c)
        sink.track(child_track(c, ROUTINE_K), f"vCPU {c} routines", vcpu_track(c))
    sl = _Slices(sink)
    irr = [set() for _ in range(n)]
    isr = [set() for _ in range(n)]
    cur_rt = [None] * n
    pending: dict[tuple, list] = {}
    fid = 0
    stats = {"slices": 0, "instants": 0, "flows": 0, "counters": 0, "events": len(events)}
    last = [None] * n
    ts = 0
    for ev in events:
        ts = ev.step * 1000
        act, cpu = ev.act, ev.cpu
        k = act[0]
        touched = set()
        if k == "op" and 0 <= cpu < n:
            if ev.rt != cur_rt[cpu]:
                t = child_track(cpu, ROUTINE_K)
                sl.end_all(ts, t)
                name = routines[ev.rt].name if 0 <= ev.rt < len(routines) else f"routine {ev.rt}"
                sl.begin(ts, t, ev.rt, name)
                stats["slices"] += 1
                cur_rt[cpu] = ev.rt
        elif k == "timer":
            irr[act[1]].add(act[2])
            touched.add(act[1])
        elif k == "traffic":
            fid += 1
            pending.setdefault((act[1], act[2], act[3]), []).append(fid)
            sink.instant(ts, vcpu_track(act[1]), f"IPI send 0x{act[3]:02x} -> vCPU {act[2]}", flows=(fid,),
                         args={"step": ev.step})
            stats["instants"] += 1
        elif k == "land":
            src, dst, vec = act[1], act[2], act[3]
            irr[dst].add(vec)
            touched.add(dst)
            q = pending.get((src, dst, vec))
            ends = (q.pop(0),) if q else ()
            if ends:
                stats["flows"] += 1
            sink.instant(ts, vcpu_track(dst), f"IPI lands 0x{vec:02x} from vCPU {src}", ends=ends,
                         args={"step": ev.step})
            stats["instants"] += 1
        for note in ev.notes:
            nk = note[0]
            if nk == "deliver" and 0 <= cpu < n:
                v = note[1]
                irr[cpu].discard(v)
                if v not in isr[cpu]:
                    isr[cpu].add(v)
                    sl.begin(ts, vcpu_track(cpu), v, f"vector 0x{v:02x}", args={"step": ev.step})
                    stats["slices"] += 1
                touched.add(cpu)
            elif nk == "eoi" and 0 <= cpu < n:
                v = note[1]
                if v >= 0:
                    isr[cpu].discard(v)
                    sl.end(ts, vcpu_track(cpu), v)
                    touched.add(cpu)
            elif nk == "ipi" and 0 <= cpu < n:
                fid += 1
                pending.setdefault((cpu, note[1], note[2]), []).append(fid)
                sink.instant(ts, vcpu_track(cpu), f"IPI send 0x{note[2]:02x} -> vCPU {note[1]}", flows=(fid,),
                             args={"step": ev.step})
                stats["instants"] += 1
            elif nk == "init_sipi":
                t = note[1]
                if 0 <= t < n:
                    irr[t].clear()
                    isr[t].clear()
                    sl.end_all(ts, vcpu_track(t))
                    touched.add(t)
            elif nk == "msr" and note[1] == "wr" and 0 <= cpu < n:
                sink.instant(ts, vcpu_track(cpu), f"wrmsr {MSR_NAMES.get(note[2], hex(note[2]))} = 0x{note[3]:x}",
                             args={"step": ev.step})
                stats["instants"] += 1
            elif nk in ("eoi_skipped", "transition", "page_disable", "violation", "fault", "edit", "gp"):
                t = vcpu_track(cpu) if 0 <= cpu < n else PROCESS_UUID + 1
                text = nk.replace("_", " ") + (": " + " ".join(str(x) for x in note[1:])[:120] if note[1:] else "")
                sink.instant(ts, t, text, args={"step": ev.step})
                stats["instants"] += 1
        for c in touched:
            cur = (len(irr[c]), len(isr[c]))
            if cur != last[c]:
                if last[c] is None or cur[0] != last[c][0]:
                    sink.counter(ts, child_track(c, IRR_K), cur[0])
                    stats["counters"] += 1
                if last[c] is None or cur[1] != last[c][1]:
                    sink.counter(ts, child_track(c, ISR_K), cur[1])
                    stats["counters"] += 1
                last[c] = cur
    sl.close(ts + 1000)
    return stats


def cmd_export(args, out) -> int:
    from .cli import UsageError, _is_trace, _load_trace
    from .safe import UnsafeFile, output_target, printable
    if not args.perfetto and not args.chrome_json:
        raise UsageError("hvdbg export: give --perfetto OUT.pftrace and/or --chrome-json OUT.json")
    sinks = []
    targets = []
    pf_file = None
    title = os.path.basename(args.files[0])
    if args.perfetto:
        try:
            import perfetto.trace_builder.proto_builder  # noqa: F401
        except ImportError:
            raise UsageError("hvdbg export: --perfetto needs the perfetto package: pip install 'hvdbg[perfetto]'") \
                from None
        try:
            targets.append(("pf", output_target(args.perfetto, PerfettoSink.magic(), "Perfetto trace")))
        except UnsafeFile as e:
            raise UsageError(f"hvdbg export: --perfetto {e}") from None
    if args.chrome_json:
        try:
            targets.append(("cj", output_target(args.chrome_json, b'{"traceEvents"', "Chrome JSON trace")))
        except UnsafeFile as e:
            raise UsageError(f"hvdbg export: --chrome-json {e}") from None
    hvt = len(args.files) == 1 and _is_trace(args.files[0])
    from .import_cli import is_imported_hvt, read_imported
    if hvt and is_imported_hvt(args.files[0]):
        if args.offset or args.format != "auto":
            raise UsageError("hvdbg export: --format and --offset apply to text traces; an imported .hvt has its "
                             "offsets in it")
        src = read_imported(args.files[0], UsageError, "hvdbg export")
        hvt = False
    elif hvt:
        loaded = _load_trace(args.files[0])
        src = loaded
    else:
        from .import_cli import load
        src = load(args, UsageError)
    cj = None
    try:
        for kind, real in targets:
            if kind == "pf":
                pf_file = open(real + ".partial", "wb")
                sinks.append(PerfettoSink(pf_file, title))
            else:
                cj = ChromeSink(title)
                sinks.append(cj)
        stats = export_hvt(src, _TrackProxy(sinks)) if hvt else export_imported(src, _TrackProxy(sinks))
        if pf_file is not None:
            pf_file.close()
            os.replace(pf_file.name, dict(targets)["pf"])
            pf_file = None
        if cj is not None:
            real = dict(targets)["cj"]
            with open(real + ".partial", "w", encoding="utf-8") as f:
                cj.dump(f)
            os.replace(real + ".partial", real)
    except OSError as e:
        raise UsageError(f"hvdbg export: cannot write: {printable(e.strerror or str(e))}") from None
    finally:
        if pf_file is not None:
            pf_file.close()
    out.write(f"exported {printable(args.files[0], 100)}{' ...' if len(args.files) > 1 else ''}: "
              f"{stats['slices']} slices, {stats['instants']} instants, {stats['flows']} flows, "
              f"{stats['counters']} counter updates"
              + "".join(f" -> {printable(p, 100)}" for p in (args.perfetto, args.chrome_json) if p) + "\n")
    return 0


class _TrackProxy:
    """Several sinks behind one: `track` registers on all, events go to all."""

    def __init__(self, sinks):
        self.sinks = sinks

    def track(self, uuid, name, parent=PROCESS_UUID, counter=False):
        for s in self.sinks:
            s.track(uuid, name, parent, counter)
        return uuid

    def begin(self, *a, **kw):
        for s in self.sinks:
            s.begin(*a, **kw)

    def end(self, *a, **kw):
        for s in self.sinks:
            s.end(*a, **kw)

    def instant(self, *a, **kw):
        for s in self.sinks:
            s.instant(*a, **kw)

    def counter(self, *a, **kw):
        for s in self.sinks:
            s.counter(*a, **kw)
