"""ImportedTrace: text traces read into one timeline of events, with reconstruction.

Read-only API for front ends (TUI, REPL, export):

* ``events`` - a sequence of :class:`Event` (index, ts, cpu, pid, name, vcpu, args, text,
  line, file); ``text`` is kept only for events left opaque (``args`` None),
* ``state_at(i)`` - the reconstructed :class:`~.model.State` after event ``i`` (a copy),
* ``index_at(ts)`` - the last event at or before a timestamp,
* ``find(start, forward, name=, vcpu=, vector=, msr=)`` - breakpoints on event kind / vector /
  MSR; ``watch(start, vcpu, "irr"|"isr"|"msr"|"tpr"|"hotplug", key, forward)`` - the next (or
  last) event that changes a watched value; ``why`` of an IRR/ISR bit is its ``set_by`` event
  in ``state_at(i).vcpus[v].irr/isr``,
* ``progress`` (constructor) - called as progress(file index, line) after each block of lines
  read (1 MiB of text; 64 KiB compressed), then
  as progress(number of files, event index) every ~65536 events while the state is rebuilt;
  an exception it raises (a front end's cancel) ends the import,
* ``findings`` - :class:`~.model.Finding` list, each naming the events that prove it,
* ``describe(i)`` - one line for event ``i``,
* ``flows`` - (send index, acceptance index, vector) of every IPI that was accepted,
* ``files``, ``kinds`` (events per name), ``apicv`` (APICv suspected: injections unknown),
* ``skipped`` - (file, line number, why) of lines that were not events, cut, garbled or lost
  markers (first ``MAX_REPORTED`` kept; ``counts`` counts all).
"""
from __future__ import annotations

import bisect
import gc
import gzip
import itertools
import lzma
import sys
from array import array
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from . import decode, lines
from .model import CHECKPOINT, TS, Recon, State

MAX_REPORTED = 200
MAX_TEXT = 300
DECODE_CACHE = 8192       # decoded field texts kept per event name
MAX_VCPU = 4096           # KVM_MAX_VCPU_IDS on x86


class ImportError_(ValueError):
    """Nothing in the input is a trace (one line)."""


class Event(NamedTuple):
    index: int
    ts: float
    cpu: int
    pid: int
    name: str
    vcpu: int | None
    args: tuple | None
    text: str | None
    line: int
    file: int


class Columns:
    """Events stored column-wise (arrays of numbers, lists of shared names and argument tuples,
    texts only for opaque events): ~1/2 the memory of a list of tuples. ``cols[i]`` is the
    event tuple (ts, cpu, pid, name, vcpu, args, text, line, file)."""
    __slots__ = ("ts", "cpu", "pid", "name", "vcpu", "args", "text", "line", "file")

    def __init__(self):
        self.ts = array("d")
        self.cpu = array("l")
        self.pid = array("q")
        self.name: list = []
        self.vcpu = array("l")       # -1: not tied to a vCPU
        self.args: list = []
        self.text: dict = {}         # index -> text, for events kept opaque
        self.line = array("q")
        self.file = array("H")

    def __len__(self) -> int:
        return len(self.ts)

    def __getitem__(self, i: int) -> tuple:
        v = self.vcpu[i]
        return (self.ts[i], self.cpu[i], self.pid[i], self.name[i], None if v < 0 else v, self.args[i],
                self.text.get(i), self.line[i], self.file[i])

    def reorder(self, order: list) -> None:
        for k in ("ts", "cpu", "pid", "vcpu", "line", "file"):
            a = getattr(self, k)
            setattr(self, k, array(a.typecode, (a[j] for j in order)))
        self.name = [self.name[j] for j in order]
        self.args = [self.args[j] for j in order]
        pos = {j: k for k, j in enumerate(order)} if self.text else {}
        self.text = {pos[j]: t for j, t in self.text.items()}


class EventList(Sequence):
    def __init__(self, raw: list):
        self._raw = raw

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self._raw)))]
        if i < 0:
            i += len(self._raw)
        return Event(i, *self._raw[i])

    def raw(self, i: int) -> tuple:
        return self._raw[i]


class SourceFile(NamedTuple):
    path: str
    format: str
    role: str            # "host" | "guest"
    offset: float
    lines: int
    events: int


def _garbled(counts: Counter, skipped: list, fi: int, n: int, ev: str) -> None:
    """A known event whose fields do not decode: counted, reported (bounded), kept as text."""
    counts["garbled"] += 1
    if len(skipped) < MAX_REPORTED:
        skipped.append((fi, n, f"{ev}: fields do not match the kernel's format (kept as text)"))


def _parse_file(path, fmt: str, fi: int, offset: float, out: list, skipped: list, counts: Counter,
                progress=None) -> tuple:
    """Append the events of one file to `out`. Returns (format, lines, events, has_kvm)."""
    f = lines.open_text(path)
    with f:
        read_errors: list = []
        # compressed input is read in smaller blocks: a cut or damaged stream loses at most one block
        compressed = isinstance(getattr(f, "buffer", None), (gzip.GzipFile, lzma.LZMAFile))
        it = lines.blocks(f, 1 << 16 if compressed else 1 << 20, errors=read_errors)
        head: list = []
        nhead = 0
        for blk in it:
            head.append(blk)
            nhead += len(blk)
            if nhead >= (lines.DETECT_LINES if fmt == "auto" else 0):
                break
        if fmt == "auto":
            sample = [x for blk in head for x in blk[:lines.DETECT_LINES]][:lines.DETECT_LINES]
            fmt = lines.detect(sample) or ""
            if not fmt:
                # the first lines may all be junk: look at every line of the first blocks
                sample = [x for blk in head for x in blk]
                fmt = lines.detect(sample[:20 * lines.DETECT_LINES]) or ""
            if not fmt:
                it = iter(())           # not a trace: do not read the rest of a (maybe huge) file
        rx = lines.PERF_RE if fmt == "perf-script" else lines.FTRACE_RE
        hdr = lines.TRACE_CMD_HEADER_RE if fmt == "trace-cmd" else lines.FTRACE_HEADER_RE
        vcpu_of: dict = {}
        n0 = len(out)
        match = rx.match
        texts = out.text
        # Hot path (docs/import.md, "Numbers"): most lines are `PREFIX TS: EVENT: FIELDS` where
        # PREFIX (comm-pid, cpu, flags) repeats. The regex parses a line the first time its
        # PREFIX and EVENT are seen; when str.partition finds the same PREFIX, TS, EVENT and
        # FIELDS the regex did, PREFIX -> (pid, cpu) and EVENT -> name are kept, and later lines
        # with a known PREFIX and EVENT are split with str.partition alone (their TS checked
        # as the regex would: 1..20 digits, optionally a dot and 1..12 digits). Anything else
        # goes through the regex, so every line parses exactly as the regex parses it.
        prefixes: dict = {}
        names: dict = {}
        per_name: dict = {}      # name -> (mode, decoder, decode cache)
        hits: Counter = Counter()   # decode cache hits per name since its cache was last cleared
        MAXL = lines.MAX_LINE
        n = 0

        def slow(s: str, n: int):
            """(pid, cpu, ts, name, rest) of line `s` by the regex, or None (reported)."""
            m = match(s) if fmt else None
            if m is None:
                if not s or s.isspace():
                    return None
                if hdr.match(s):
                    if "LOST" in s:
                        counts["lost"] += 1
                        if len(skipped) < MAX_REPORTED:
                            from ..safe import printable
                            skipped.append((fi, n, "events lost here (ring buffer overrun): the state after "
                                                   "it is inferred from an incomplete trace: "
                                            + printable(s.strip(), 60)))
                    return None
                counts["skipped"] += 1
                if len(skipped) < MAX_REPORTED:
                    from ..safe import printable
                    skipped.append((fi, n, "not an event line: " + printable(s.strip(), 60)))
                return None
            comm, pid, cpu, ts, ev, rest = m.groups()
            name = names.get(ev)
            if name is None:
                name = sys.intern(ev.rpartition(":")[2])
                if len(names) < 10000:
                    names[ev] = name
            cpu = int(cpu)
            pid = int(pid) if pid is not None else -1
            h, _, tail = s.partition(": ")
            pre, _, ts2 = h.rpartition(" ")
            ev2, _, rest2 = tail.partition(": ")
            if ts2 == ts and ev2 == ev and rest2.lstrip() == rest and len(prefixes) < 10000:
                prefixes[pre] = (pid, cpu)
            return pid, cpu, ts, name, rest

        for blk in itertools.chain(head, it):
            rows: list = []
            row = rows.append
            base = len(out.ts)
            for s in blk:
                n += 1
                if len(s) > MAXL:
                    s = s[:MAXL]
                    counts["cut"] += 1
                    if len(skipped) < MAX_REPORTED:
                        skipped.append((fi, n, f"line longer than {lines.MAX_LINE} characters: cut"))
                h, sep, tail = s.partition(": ")
                pc = None
                if sep:
                    pre, _, ts = h.rpartition(" ")
                    pc = prefixes.get(pre)
                    if pc is not None:
                        ev, sep, rest = tail.partition(": ")
                        name = names.get(ev) if sep else None
                        a, dot, b = ts.partition(".")
                        if name is None or not (a.isdecimal() and len(a) <= 20
                                                and (not dot or (b.isdecimal() and len(b) <= 12))):
                            pc = None
                        else:
                            pid, cpu = pc
                            rest = rest.lstrip()
                if pc is None:
                    r = slow(s, n)
                    if r is None:
                        continue
                    pid, cpu, ts, name, rest = r
                info = per_name.get(name)
                if info is None:
                    if name in decode.HOST:
                        mode = 1 if name not in ("kvm_entry", "kvm_exit", "kvm_apic_accept_irq", "kvm_eoi",
                                                 "kvm_pv_eoi") else (2 if name == "kvm_entry" else 3 if
                                                                     name == "kvm_exit" else 4)
                        info = (mode, decode.HOST[name], {})
                    elif name in decode.GUEST:
                        info = (5, decode.GUEST[name], {})
                    elif name.endswith("_entry") or name.endswith("_exit"):
                        info = (6, None, {})
                    elif name.startswith("kvm_hv_"):
                        info = (7, decode.kvm_hv, None)
                    else:
                        info = (0, None, None)
                    per_name[name] = info
                mode, d, c = info
                args = None
                vcpu = None
                if mode:
                    if mode == 6:       # irq_vectors *_entry/_exit: "vector=N"; else maybe kvm_hv_*
                        if rest.startswith("vector="):
                            d = decode.guest_vector
                        elif name.startswith("kvm_hv_"):
                            d = decode.kvm_hv
                        else:
                            d = None
                        c = None
                    if d is not None:
                        # identical field texts recur (same rip, reason, vector): decode each once
                        # and share the tuple (bounded cache per event name)
                        args = c.get(rest) if c is not None else None
                        if args is None:
                            try:
                                args = d(rest)
                            except ValueError:
                                _garbled(counts, skipped, fi, n, name)
                            else:
                                if c is not None:
                                    if len(c) >= DECODE_CACHE:
                                        # fewer than 1 in 8 lookups hit (every field text differs,
                                        # e.g. by its rip): stop caching this event's texts
                                        if hits[name] < DECODE_CACHE // 8:
                                            per_name[name] = (mode, d, None)
                                        hits[name] = 0
                                        c.clear()
                                    c[rest] = args
                        elif c is not None:
                            hits[name] += 1
                        if args is not None:
                            if mode == 1:
                                vcpu = vcpu_of.get(pid if pid > 0 else -1 - cpu)
                            elif mode == 2:
                                vcpu = vcpu_of[pid if pid > 0 else -1 - cpu] = args[0]
                            elif mode == 3:
                                if args[0] is not None:
                                    vcpu = vcpu_of[pid if pid > 0 else -1 - cpu] = args[0]
                                else:
                                    vcpu = vcpu_of.get(pid if pid > 0 else -1 - cpu)
                            elif mode == 4:
                                vcpu = args[0]
                            elif d is decode.kvm_hv:
                                vcpu = dict(args).get("vcpu_id", vcpu_of.get(pid if pid > 0 else -1 - cpu))
                            else:
                                vcpu = cpu
                        if vcpu is not None and not 0 <= vcpu < MAX_VCPU:
                            vcpu = None
                            counts["garbled"] += 1
                            if len(skipped) < MAX_REPORTED:
                                skipped.append((fi, n, f"{name}: vCPU/CPU number out of range 0..{MAX_VCPU - 1} "
                                                       "(kept as text)"))
                if args is None:
                    texts[base + len(rows)] = rest if len(rest) <= MAX_TEXT else rest[:MAX_TEXT]
                row((float(ts), cpu, pid, name, -1 if vcpu is None else vcpu, args, n))
            if rows:
                ts_, cpu_, pid_, name_, vcpu_, args_, line_ = zip(*rows)
                out.ts.extend(ts_)
                out.cpu.extend(cpu_)
                out.pid.extend(pid_)
                out.name.extend(name_)
                out.vcpu.extend(vcpu_)
                out.args.extend(args_)
                out.line.extend(line_)
                out.file.extend(array("H", (fi,)) * len(rows))
            if progress is not None:
                progress(fi, n)
        if read_errors:
            counts["skipped"] += 1
            skipped.append((fi, n + 1, "the rest of the file cannot be read: " + read_errors[0]))
        nm = out.name
        has_kvm = any(nm[k].startswith("kvm_") for k in range(n0, len(out)))
        return fmt, n, len(out) - n0, has_kvm


class ImportedTrace:
    def __init__(self, paths, fmt: str = "auto", offsets: dict | None = None, checkpoint: int = CHECKPOINT,
                 progress=None):
        # millions of small tuples and no reference cycles: the cyclic GC would only re-scan them
        was = gc.isenabled()
        gc.disable()
        try:
            self._build(paths, fmt, offsets, checkpoint, progress)
        finally:
            if was:
                gc.enable()

    def _build(self, paths, fmt, offsets, checkpoint, progress) -> None:
        offsets = offsets or {}
        raw = Columns()
        self.skipped: list = []
        self.counts: Counter = Counter()
        self.files: list[SourceFile] = []
        for fi, p in enumerate(paths):
            n0 = len(raw)
            f, nl, ne, has_kvm = _parse_file(p, fmt, fi, 0.0, raw, self.skipped, self.counts, progress)
            role = "host" if has_kvm else "guest"
            off = offsets.get(role, offsets.get(str(p), 0.0))
            if off:
                t = raw.ts
                for k in range(n0, len(raw)):
                    t[k] += off
            self.files.append(SourceFile(str(p), f or "none", role, off, nl, ne))
        if not len(raw):
            raise ImportError_("no trace event found in " + ", ".join(str(p) for p in paths) + " "
                               "(formats: " + ", ".join(lines.FORMATS) + ")")
        if len(paths) > 1:
            t = raw.ts
            order = sorted(range(len(raw)), key=t.__getitem__)     # stable: equal timestamps keep file order
            if any(order[k] != k for k in range(len(order))):
                raw.reorder(order)
        self._rebuild(raw, len(paths), checkpoint, progress)

    @classmethod
    def from_columns(cls, raw: "Columns", files: list, skipped: list, counts: Counter, checkpoint: int = CHECKPOINT,
                     progress=None) -> "ImportedTrace":
        """An ImportedTrace of events already read and merged (an imported ``.hvt``,
        hvt.py): the per-vCPU state, checkpoints and findings are rebuilt from them exactly
        as after a text import. ``progress(len(files), event)`` as in the constructor."""
        self = cls.__new__(cls)
        was = gc.isenabled()
        gc.disable()
        try:
            self.skipped = list(skipped)
            self.counts = Counter(counts)
            self.files = [SourceFile(*f) for f in files]
            self._rebuild(raw, len(self.files), checkpoint, progress)
        finally:
            if was:
                gc.enable()
        return self

    def _rebuild(self, raw: "Columns", nfiles: int, checkpoint: int, progress) -> None:
        self._raw = raw
        self.events = EventList(raw)
        self._ts = None
        names = Counter(raw.name)
        self.kinds = names
        self.apicv = bool(names["kvm_apic_accept_irq"]) and not names["kvm_inj_virq"]
        self._recon = Recon(raw, ipi_from_icr=not names["kvm_apic_ipi"], apicv=self.apicv)
        self._k = max(1, checkpoint)
        self._checkpoints: list[State] = []
        st = State()
        self._recon.collect = True
        step = self._recon.step
        k = self._k
        every = max(1, (1 << 16) // k)        # progress every ~65536 events (at checkpoints only)
        for i, (nm, vn, a) in enumerate(zip(raw.name, raw.vcpu, raw.args)):
            if not i % k:
                st.index = i - 1
                self._checkpoints.append(st.copy())
                if progress is not None and not (i // k) % every:
                    progress(nfiles, i)
            if a is not None and vn >= 0:      # step() ignores the others (opaque, no vCPU)
                step(st, i, nm, vn, a)
        st.index = len(raw) - 1
        self._recon.collect = False
        self.final = st
        self.findings = self._recon.final_findings(st, raw[-1][TS])
        self.flows = self._recon.flows

    # -- queries -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._raw)

    def state_at(self, i: int) -> State:
        """The reconstruction after event `i` (a fresh copy: the caller may keep it)."""
        n = len(self._raw)
        if not -n <= i < n:
            raise IndexError(f"event {i}: the trace has events 0..{n - 1}")
        if i < 0:
            i += n
        if i == n - 1:
            return self.final.copy()
        c = i // self._k
        st = self._checkpoints[c].copy()
        step = self._recon.step
        raw = self._raw
        nm, vc, ar = raw.name, raw.vcpu, raw.args
        for j in range(c * self._k, i + 1):
            step(st, j, nm[j], vc[j], ar[j])
        return st

    def index_at(self, ts: float) -> int:
        """The last event at or before timestamp `ts` (0 when `ts` is before the first)."""
        if self._ts is None:
            self._ts = self._raw.ts
        return max(0, bisect.bisect_right(self._ts, ts) - 1)

    # -- breakpoints and watchpoints for time travel ------------------------------------
    @staticmethod
    def _vector_of(name: str, a) -> int | None:
        if a is None:
            return None
        if name in ("kvm_apic_accept_irq", "kvm_eoi", "kvm_pv_eoi", "kvm_apic_ipi"):
            return a[1] & 0xff
        if name == "kvm_inj_virq" or ((name.endswith("_entry") or name.endswith("_exit")) and len(a) == 1):
            return a[0]
        if name == "kvm_ioapic_set_irq":
            return a[2]
        return None

    @staticmethod
    def _msr_of(name: str, a) -> int | None:
        if a is None:
            return None
        if name == "kvm_msr":
            return a[1]
        if name in ("write_msr", "read_msr"):
            return a[0]
        return None

    def find(self, start: int, forward: bool = True, name: str | None = None, vcpu: int | None = None,
             vector: int | None = None, msr: int | None = None) -> int | None:
        """The first event after `start` (before it when not `forward`) matching every given
        condition: event name, vCPU, vector (accept/inject/EOI/IPI/guest handler/IOAPIC), MSR
        (host or guest access). None when there is none."""
        raw = self._raw
        n = len(raw)
        rng = range(start + 1, n) if forward else range(min(start, n) - 1, -1, -1)
        names, vcs, ar = raw.name, raw.vcpu, raw.args
        for i in rng:
            nm = names[i]
            if name is not None and nm != name:
                continue
            if vcpu is not None and vcs[i] != vcpu:
                continue
            if vector is not None and self._vector_of(nm, ar[i]) != vector:
                continue
            if msr is not None and self._msr_of(nm, ar[i]) != msr:
                continue
            return i
        return None

    @staticmethod
    def _watched(st: State, vcpu: int, what: str, key):
        if what not in ("irr", "isr", "msr", "tpr", "hotplug"):
            raise ValueError(f"watch: unknown kind {what!r} (irr, isr, msr, tpr, hotplug)")
        v = st.vcpus.get(vcpu)
        if v is None:
            return False if what in ("irr", "isr") else None
        if what == "irr":
            return key in v.irr
        if what == "isr":
            return key in v.isr
        if what == "msr":
            m = v.msrs.get(key)
            return None if m is None else m[0]
        if what == "tpr":
            return None if v.tpr is None else v.tpr[0]
        h = v.hotplug                      # "hotplug"
        return None if h is None else (h["phase"], h["step"])

    def watch(self, start: int, vcpu: int, what: str, key=None, forward: bool = True) -> int | None:
        """The next event after `start` (or the last at or before `start` when not `forward`)
        that changes the watched value of `vcpu`: "irr"/"isr" (key = vector), "msr" (key =
        MSR; a write of the same value is no change), "tpr", "hotplug"."""
        raw = self._raw
        n = len(raw)
        step = self._recon.step
        nm, vc, ar = raw.name, raw.vcpu, raw.args
        get = self._watched
        if forward:
            if start >= n - 1:
                return None
            st = self.state_at(start) if start >= 0 else State()
            old = get(st, vcpu, what, key)
            for j in range(start + 1, n):
                step(st, j, nm[j], vc[j], ar[j])
                new = get(st, vcpu, what, key)
                if new != old:
                    return j
            return None
        start = min(start, n - 1)
        K = self._k
        for c in range(start // K, -1, -1):          # checkpoint windows, newest first
            st = self._checkpoints[c].copy()
            old = get(st, vcpu, what, key)
            last = None
            for j in range(c * K, min(start + 1, (c + 1) * K)):
                step(st, j, nm[j], vc[j], ar[j])
                new = get(st, vcpu, what, key)
                if new != old:
                    last = j
                    old = new
            if last is not None:
                return last
        return None

    def vcpus(self) -> list[int]:
        return sorted(self.final.vcpus)

    def describe(self, i: int) -> str:
        e = self._raw[i]
        ts, cpu, pid, name, vcpu, a, text = e[:7]
        who = f"vCPU {vcpu}" if vcpu is not None else f"cpu {cpu}"
        d = None
        if a is not None:
            if name == "kvm_entry":
                d = f"enters the guest at rip 0x{a[1]:x}"
            elif name == "kvm_exit":
                d = f"exits: {a[1]} at rip 0x{a[2]:x}"
            elif name == "kvm_apic_accept_irq":
                d = f"accepts vector 0x{a[1]:02x} into IRR ({a[2]}, {a[3]})"
            elif name == "kvm_inj_virq":
                d = f"injects vector 0x{a[0]:02x} (IRR -> ISR)" if not a[1] else f"injects soft interrupt 0x{a[0]:02x}"
            elif name in ("kvm_eoi", "kvm_pv_eoi"):
                d = f"EOI of vector 0x{a[1] & 0xff:02x} (ISR clears){' via PV-EOI' if name == 'kvm_pv_eoi' else ''}"
            elif name == "kvm_apic":
                d = f"APIC {'write' if a[0] else 'read'} {a[1]} = 0x{a[2]:x}"
            elif name == "kvm_msr":
                d = f"{'wrmsr' if a[0] else 'rdmsr'} {decode.msr_name(a[1])} = 0x{a[2]:x}{' #GP' if a[3] else ''}"
            elif name == "kvm_apic_ipi":
                d = f"sends IPI vector 0x{a[1]:02x} to {a[4] if a[4] != 'dst' else 'APIC 0x%x' % a[0]} ({a[2]})"
            elif name in ("write_msr", "read_msr"):
                d = f"guest {'wrmsr' if name == 'write_msr' else 'rdmsr'} {decode.msr_name(a[0])} = 0x{a[1]:x}"
            elif name in ("cpuhp_enter", "cpuhp_multi_enter"):
                d = f"hotplug CPU {a[0]}: step {a[2]} ({a[3]}) towards {a[1]}"
                who = f"cpu {cpu}"
            elif name == "cpuhp_exit":
                d = f"hotplug CPU {a[0]}: step {a[2]} done, state {a[1]}, ret {a[3]}"
                who = f"cpu {cpu}"
            elif name.endswith("_entry") and len(a) == 1:
                d = f"guest handler {name[:-6]} vector 0x{a[0]:02x} starts"
            elif name.endswith("_exit") and len(a) == 1:
                d = f"guest handler {name[:-5]} vector 0x{a[0]:02x} returns"
        if d is None:
            d = f"{name}: {text if text is not None else ' '.join(f'{k}={v}' for k, v in a) if name.startswith('kvm_hv_') else a}"
        from ..safe import printable
        return printable(f"#{i} {ts:.6f} {who}: {d}", 200)

    def summary(self, at: int | None = None) -> dict:
        i = len(self._raw) - 1 if at is None else at
        st = self.state_at(i)
        return {
            "files": [f._asdict() for f in self.files],
            "events": len(self._raw),
            "kinds": dict(self.kinds.most_common()),
            "vcpus": self.vcpus(),
            "apicv_suspected": self.apicv,
            "skipped_lines": self.counts["skipped"], "garbled_events": self.counts["garbled"],
            "cut_lines": self.counts["cut"], "lost_markers": self.counts["lost"],
            "skipped": [{"file": fi, "line": n, "why": w} for fi, n, w in self.skipped],
            "findings": [f.to_dict() for f in self.findings],
            "state_at": i,
            "state": {str(n): v.to_dict(self.apicv) for n, v in sorted(st.vcpus.items())},
        }


def import_trace(paths, fmt: str = "auto", offsets: dict | None = None, **kw) -> ImportedTrace:
    if isinstance(paths, (str, bytes)) or hasattr(paths, "__fspath__"):
        paths = [paths]
    return ImportedTrace(list(paths), fmt, offsets, **kw)
