"""Imported traces as hvdbg trace files: ``hvdbg import TEXT... -o OUT.hvt`` writes, ``hvdbg
tui/info/export OUT.hvt`` read (docs/import.md, "Imported .hvt files"; docs/trace-format.md
for the framing).

The file uses the framing of every hvdbg trace (hvdbg/trace/format.py): ``MAGIC``, the format
version, frames of ``<IIB`` (length, CRC32 over length + kind + payload, kind) + msgpack
payload, a footer frame and the 16-byte tail. What differs is the content:

* header (kind 1): ``{"trace_kind": "imported", "imported_version": 1, "tool", "files":
  [[path, format, role, offset, lines, events], ...], "counts": {"skipped", "garbled", "cut",
  "lost"}, "skipped": [[file, line, why], ...]}`` (at most ``MAX_SKIPPED``) - the simulated-trace readers
  (``load_trace``) refuse it with one line: "imported trace: no model to replay";
* imported events (kind 6, up to ``BATCH`` events each): ``[first, n, names, columns,
  values_len, values]``; ``names`` the distinct event names of the frame, ``columns``
  zlib(ts f64 | cpu i32 | pid i64 | vcpu i32 | line i64 | file u16 | name index u16), each
  ``n`` long, little-endian; ``values`` zlib(msgpack list of ``n``: the decoded argument
  array of an event, or its text when it was kept opaque), ``values_len`` its inflated size;
* footer (kind 5): ``{"events", "frames", "summary"}`` (``summary``: what ``hvdbg import
  --json`` prints, at the last event; informational - the state and findings are rebuilt
  from the events on open), then the tail.

Reading is hostile-input safe: the file is read frame by frame (at most ``MAX_FRAME`` bytes
of payload, and inflated blocks of a declared, capped size), every payload is decoded with
the project's msgpack limits (``format.unpack_payload``: no ext types, str keys only), every
event's arguments are checked against the shape its decoder produces (``SHAPES``) before
anything uses them, and any problem is a ``TraceError``: one line with the byte offset.
"""
from __future__ import annotations

import os
import stat
import sys
import zlib
from array import array
from collections import Counter

from ..safe import UnsafeFile, kind_of, open_partial, output_target
from ..trace import format as F
from ..trace.reader import header_record
from ..trace.writer import publish
from .model import CHECKPOINT
from .trace import MAX_REPORTED, MAX_VCPU, Columns, ImportedTrace

VERSION = 1
BATCH = 16384                  # events per frame
COL_BYTES = 8 + 4 + 8 + 4 + 8 + 2 + 2
MAX_VALUES = 32 << 20          # inflated bytes of one frame's values
MAX_TEXT = 4096                # characters of an opaque event's text / a string argument
MAX_NAME = 128
MAX_FILES = 256
#: events in one imported trace (a text import of ~3 GB); more is refused before it is held
MAX_EVENTS = 1 << 25
CANON = 1 << 14                # distinct argument tuples per event name kept for sharing while reading
MAX_HEADER = 4 << 20           # a header frame: at most MAX_FILES file names and MAX_SKIPPED skipped lines
MAX_SKIPPED = MAX_REPORTED + MAX_FILES     # the reported ones, plus one unreadable rest per file

# The decoded argument shapes (decode.py) by event name: "i" int, "b" bool, "s" str, "I" int or None.
SHAPES = {
    "kvm_entry": "ii", "kvm_exit": "Isi", "kvm_inj_virq": "ibb", "kvm_apic": "bsi", "kvm_msr": "biib",
    "kvm_apic_ipi": "iisss", "kvm_apic_accept_irq": "iissb", "kvm_eoi": "ii", "kvm_pv_eoi": "ii",
    "kvm_set_irq": "iii", "kvm_ioapic_set_irq": "iiisbb", "kvm_msi_set_irq": "ii", "kvm_pic_set_irq": "iisbb",
    "write_msr": "iib", "read_msr": "iib", "cpuhp_enter": "iiis", "cpuhp_multi_enter": "iiis",
    "cpuhp_exit": "iiii",
}


def _le(arr: array) -> bytes:
    if sys.byteorder != "little":
        arr = array(arr.typecode, arr)
        arr.byteswap()
    return arr.tobytes()


# ------------------------------------------------------------------------------ writing

def write(tr: ImportedTrace, path, tool: str = "hvdbg 0.1.0") -> None:
    """Write `tr` to `path` (an ``.hvt``): through ``path.partial`` and a rename; a path that
    exists and is not an hvdbg trace is refused (``safe.output_target``: UnsafeFile)."""
    target = output_target(path, F.MAGIC, "trace")
    tmp = target + ".partial"
    f = open_partial(tmp)
    try:
        _write(tr, f, tool)
        f.flush()
        os.fsync(f.fileno())
    except BaseException:
        f.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    f.close()
    publish(tmp, target)


def _write(tr: ImportedTrace, f, tool: str) -> None:
    packer = F.make_packer()
    raw = tr._raw
    if len(tr.files) > MAX_FILES:
        raise ValueError(f"{len(tr.files)} source files: an imported trace holds at most {MAX_FILES}")
    header = {"trace_kind": F.IMPORTED_KIND, "imported_version": VERSION, "tool": tool,
              "files": [list(x) for x in tr.files],
              "counts": {k: int(tr.counts[k]) for k in ("skipped", "garbled", "cut", "lost")},
              "skipped": [list(x) for x in tr.skipped[:MAX_SKIPPED]]}
    pos = 0

    def put(b: bytes) -> int:
        nonlocal pos
        off = pos
        f.write(b)
        pos += len(b)
        return off

    put(F.FILE_HEAD.pack(F.MAGIC, F.FORMAT_VERSION))
    put(F.frame(F.K_HEADER, F.check_header_dict(header, packer)))
    n = len(raw)
    frames = 0
    texts = raw.text
    for start in range(0, n, BATCH):
        end = min(n, start + BATCH)
        names: dict = {}
        idx = array("H", [names.setdefault(nm, len(names)) for nm in raw.name[start:end]])
        cols = b"".join((_le(raw.ts[start:end]), _le(array("i", raw.cpu[start:end])), _le(raw.pid[start:end]),
                         _le(array("i", raw.vcpu[start:end])), _le(raw.line[start:end]), _le(raw.file[start:end]),
                         _le(idx)))
        args = raw.args
        vals = [args[i] if args[i] is not None else texts.get(i, "") for i in range(start, end)]
        try:
            vb = packer.pack(vals)
        except (OverflowError, TypeError, ValueError) as e:       # decode.py keeps every number in 64 bits
            raise ValueError(f"imported events {start}..{end - 1} do not pack: {e}") from None
        payload = packer.pack((start, end - start, list(names), zlib.compress(cols, 1), len(vb),
                               zlib.compress(vb, 1)))
        put(F.frame(F.K_IMPORTED, payload))
        frames += 1
    footer = {"events": n, "frames": frames, "summary": tr.summary()}
    off = put(F.frame(F.K_FOOTER, F.check_header_dict(footer, packer)))
    put(F.TAIL.pack(off, F.TAIL_MAGIC))


# ------------------------------------------------------------------------------ reading

def _header_of(f, path):
    """(header dict, offset after it) of an open hvdbg trace file, or raise TraceError."""
    head = f.read(F.FILE_HEAD_SIZE)
    if len(head) < len(F.MAGIC) or head[:len(F.MAGIC)] != F.MAGIC:
        raise F.TraceError(path, 0, "not an hvdbg trace (bad magic)")
    if len(head) < F.FILE_HEAD_SIZE:
        raise F.TraceError(path, len(head), "truncated inside the format version")
    _, version = F.FILE_HEAD.unpack(head)
    if version != F.FORMAT_VERSION:
        raise F.TraceError(path, 8, f"format version {version}: imported traces are written as version "
                                    f"{F.FORMAT_VERSION}")
    off, kind, payload = _frame(f, F.FILE_HEAD_SIZE, path, MAX_HEADER)
    return header_record(path, off, kind, payload), off + F.FRAME_HEAD_SIZE + len(payload)


def _frame(f, off: int, path, limit: int = F.MAX_FRAME):
    """(offset, kind, payload) of the frame at `off` (the file positioned there), CRC checked."""
    head = f.read(F.FRAME_HEAD_SIZE)
    if len(head) < F.FRAME_HEAD_SIZE:
        raise F.TraceError(path, off, "cut: no frame here" if not head else
                           f"cut inside a frame header ({len(head)} of {F.FRAME_HEAD_SIZE} bytes)")
    length, want, kind = F.FRAME_HEAD.unpack(head)
    if length > limit:
        raise F.TraceError(path, off, f"frame declares {length} payload bytes, over the {limit}-byte limit")
    payload = f.read(length)
    if len(payload) < length:
        raise F.TraceError(path, off, f"cut inside the {F.KIND_NAMES.get(kind, f'kind-{kind}')} frame "
                                      f"({len(payload)} of {length} payload bytes)")
    if F.frame_crc(length, kind, payload) != want:
        raise F.TraceError(path, off, f"CRC mismatch in the {F.KIND_NAMES.get(kind, f'kind-{kind}')} frame (damaged)")
    return off, kind, payload


def _open(path):
    """A binary file of a regular file (never blocks on a FIFO, never reads a device)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(path, f"{kind_of(st.st_mode)}, not a regular trace file; hvdbg reads only regular files")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=1 << 16), st.st_size
    except BaseException:
        os.close(fd)
        raise


def is_imported(path) -> bool:
    """Is `path` a regular file holding an imported trace (header trace_kind "imported")?
    Never raises: anything unreadable or damaged is False (its reader then says why)."""
    try:
        f, _ = _open(os.fspath(path))
    except (OSError, TypeError, ValueError):
        return False
    with f:
        try:
            h, _ = _header_of(f, path)
        except F.TraceError:
            return False
    return h.get("trace_kind") == F.IMPORTED_KIND


def _col(raw: bytes, pos: int, code: str, n: int, size: int) -> tuple[array, int]:
    a = array(code)
    a.frombytes(raw[pos:pos + n * size])
    if sys.byteorder != "little":
        a.byteswap()
    return a, pos + n * size


_T = {"i": (int,), "b": (bool,), "s": (str,), "I": (int, type(None))}


def _shape_types(shape: str) -> frozenset:
    """Every tuple of value types `shape` allows ("I": int or None)."""
    out = [()]
    for ch in shape:
        out = [t + (x,) for t in out for x in _T[ch]]
    return frozenset(out)


_SHAPE_TYPES = {name: (_shape_types(shape), tuple(k for k, ch in enumerate(shape) if ch == "s"))
                for name, shape in SHAPES.items()}
_VECTOR = frozenset({(int,)})


def _check_args(name: str, a) -> None:
    """`a` has the shape the decoder of `name` produces (what the reconstruction indexes)."""
    st = _SHAPE_TYPES.get(name)
    if type(a) is not tuple:
        raise ValueError(f"{name} arguments are not an array")
    if st is not None:
        types, strs = st
        if tuple(map(type, a)) not in types:
            raise ValueError(f"{name} arguments are not {SHAPES[name]} (i int, b bool, s string, I int or nil)")
        for k in strs:
            if len(a[k]) > MAX_TEXT:
                raise ValueError(f"{name} argument {k} is over {MAX_TEXT} characters")
        return
    # irq_vectors *_entry/_exit: (vector,); kvm_hv_*: (key, int) pairs (a kvm_hv_*_entry may be either)
    if (name.endswith("_entry") or name.endswith("_exit")) and tuple(map(type, a)) in _VECTOR:
        return
    if name.startswith("kvm_hv_"):
        if not a or len(a) > 256 or not all(
                type(p) is tuple and len(p) == 2 and type(p[0]) is str and len(p[0]) <= 24 and type(p[1]) is int
                for p in a):
            raise ValueError(f"{name} arguments are not (key, int) pairs")
        return
    if name.endswith("_entry") or name.endswith("_exit"):
        raise ValueError(f"{name} arguments are not (vector,)")
    raise ValueError(f"{name} has decoded arguments, but hvdbg decodes no event of that name")


def _check_header(h: dict) -> tuple:
    if h.get("imported_version") != VERSION:
        raise ValueError(f"imported_version {str(h.get('imported_version'))[:20]} (this hvdbg reads {VERSION})")
    files = h.get("files")
    if type(files) is not list or not 1 <= len(files) <= MAX_FILES:
        raise ValueError(f"files is not a list of 1..{MAX_FILES} source files")
    out = []
    for x in files:
        if (type(x) is not list or len(x) != 6 or type(x[0]) is not str or len(x[0]) > 4096 or type(x[1]) is not str
                or len(x[1]) > 32 or x[2] not in ("host", "guest") or type(x[3]) not in (int, float)
                or type(x[4]) is not int or type(x[5]) is not int):
            raise ValueError("a source file is not [path, format, role, offset, lines, events]")
        out.append(tuple(x))
    counts = h.get("counts")
    if not isinstance(counts, dict) or not all(k in ("skipped", "garbled", "cut", "lost") and type(v) is int and v >= 0
                                               for k, v in counts.items()):
        raise ValueError("counts is not a map of skipped / garbled / cut / lost to integers")
    skipped = h.get("skipped")
    if type(skipped) is not list or len(skipped) > MAX_SKIPPED or not all(
            type(s) is list and len(s) == 3 and type(s[0]) is int and 0 <= s[0] < len(out) and type(s[1]) is int
            and type(s[2]) is str and len(s[2]) <= 1000 for s in skipped):
        raise ValueError(f"skipped is not a list of at most {MAX_SKIPPED} [file, line, why]")
    return out, Counter(counts), [tuple(s) for s in skipped]


def read(path, progress=None, checkpoint: int = CHECKPOINT) -> ImportedTrace:
    """The ImportedTrace held by the imported ``.hvt`` at `path`: events decoded and checked
    frame by frame, then the state rebuilt (``progress(1, events so far)`` after each frame and
    as the rebuild goes; an exception it raises ends the read).
    Raises TraceError (one line with the byte offset) for anything damaged or invalid,
    UnsafeFile / OSError when it cannot be read."""
    p = os.fspath(path)
    f, size = _open(p)
    with f:
        h, pos = _header_of(f, p)
        if h.get("trace_kind") != F.IMPORTED_KIND:
            raise F.TraceError(p, F.FILE_HEAD_SIZE, "a simulated hvdbg trace, not an imported one")
        try:
            files, counts, skipped = _check_header(h)
        except ValueError as e:
            raise F.TraceError(p, F.FILE_HEAD_SIZE, f"invalid header record: {e}") from None
        raw = Columns()
        footer = None
        names_seen: dict = {}
        canon: dict = {}
        frames = 0
        while True:
            off, kind, payload = _frame(f, pos, p)
            pos = off + F.FRAME_HEAD_SIZE + len(payload)
            try:
                if kind == F.K_IMPORTED:
                    _read_events(payload, raw, names_seen, len(files), canon)
                    frames += 1
                    if progress is not None:
                        progress(1, len(raw))
                elif kind == F.K_FOOTER:
                    footer = F.unpack_payload(payload, use_list=True)
                    if not isinstance(footer, dict) or footer.get("events") != len(raw) \
                            or footer.get("frames") != frames:
                        raise ValueError(f"footer does not say {len(raw)} events in {frames} frames")
                    if not isinstance(footer.get("summary"), dict):
                        raise ValueError("footer summary is not a map")
                else:
                    raise ValueError(f"a {F.KIND_NAMES.get(kind, f'kind-{kind}')} record in an imported trace")
            except F.TraceError:
                raise
            except Exception as e:  # a CRC-intact frame whose content is wrong: refused whole
                why = F.one_line(str(e))[:160] or type(e).__name__
                raise F.TraceError(p, off, f"invalid {F.KIND_NAMES.get(kind, f'kind-{kind}')} record: {why}") \
                    from None
            if footer is not None:
                break
        tail = f.read(F.TAIL_SIZE + 1)
        if len(tail) != F.TAIL_SIZE:
            raise F.TraceError(p, pos, f"{'cut inside the tail' if len(tail) < F.TAIL_SIZE else 'bytes after the tail'}"
                                       " after the footer")
        toff, magic = F.TAIL.unpack(tail)
        if magic != F.TAIL_MAGIC or toff != off:
            raise F.TraceError(p, pos, "damaged tail after the footer")
    if not len(raw):
        raise F.TraceError(p, pos, "an imported trace with no events")
    if sum(x[5] for x in files) != len(raw):
        raise F.TraceError(p, F.FILE_HEAD_SIZE, f"the source files hold {sum(x[5] for x in files)} events, "
                                                f"the trace {len(raw)}")
    tr = ImportedTrace.from_columns(raw, files, skipped, counts, checkpoint,
                                    None if progress is None else lambda _n, i: progress(1, i))
    tr.stored_summary = footer["summary"]
    tr.hvt = p
    tr.hvt_bytes = size
    return tr


def _read_events(payload, raw: Columns, names_seen: dict, nfiles: int, canon: dict) -> None:
    rec = F.unpack_payload(payload, use_list=False)
    if type(rec) is not tuple or len(rec) != 6:
        raise ValueError("not [first, n, names, columns, values_len, values]")
    start, n, names, cols, vlen, vals = rec
    if start != len(raw):
        raise ValueError(f"starts at event {str(start)[:20]}, expected {len(raw)} (frame lost?)")
    if type(n) is not int or not 0 < n <= BATCH:
        raise ValueError(f"holds {str(n)[:20]} events (1..{BATCH})")
    if len(raw) + n > MAX_EVENTS:
        raise ValueError(f"more than {MAX_EVENTS} events")
    if type(names) is not tuple or not 0 < len(names) <= n:
        raise ValueError("names is not a list of 1..n names")
    table = []
    for nm in names:
        if type(nm) is not str or not 0 < len(nm) <= MAX_NAME:
            raise ValueError("an event name is not 1..128 characters")
        table.append(names_seen.setdefault(nm, sys.intern(nm)))
    if type(vlen) is not int or not 0 < vlen <= MAX_VALUES:
        raise ValueError(f"values claim {str(vlen)[:20]} bytes (1..{MAX_VALUES})")
    cb = F.inflate_exact(cols, n * COL_BYTES, "columns")
    ts, q = _col(cb, 0, "d", n, 8)
    cpu, q = _col(cb, q, "i", n, 4)
    pid, q = _col(cb, q, "q", n, 8)
    vcpu, q = _col(cb, q, "i", n, 4)
    line, q = _col(cb, q, "q", n, 8)
    fil, q = _col(cb, q, "H", n, 2)
    idx, q = _col(cb, q, "H", n, 2)
    if max(idx) >= len(table):
        raise ValueError("an event's name index is outside the frame's names")
    if max(fil) >= nfiles:
        raise ValueError("an event names a source file the header does not list")
    if min(vcpu) < -1 or max(vcpu) >= MAX_VCPU:
        raise ValueError(f"a vCPU number outside -1..{MAX_VCPU - 1}")
    if any(t != t for t in ts):
        raise ValueError("a timestamp is not a number")
    values = F.unpack_payload(F.inflate_exact(vals, vlen, "values"), use_list=False)
    if type(values) is not tuple or len(values) != n:
        raise ValueError(f"values is not a list of {n}")
    nm = [table[k] for k in idx]
    args: list = []
    base = len(raw)
    texts = raw.text
    shapes = _SHAPE_TYPES
    put = args.append
    for k, v in enumerate(values):
        tv = type(v)
        if tv is tuple:
            st = shapes.get(nm[k])
            if st is not None and tuple(map(type, v)) in st[0]:     # the common case, inline
                for j in st[1]:
                    if len(v[j]) > MAX_TEXT:
                        raise ValueError(f"event {base + k}: {nm[k]} argument {j} is over {MAX_TEXT} characters")
            else:
                try:
                    _check_args(nm[k], v)
                except ValueError as e:
                    raise ValueError(f"event {base + k}: {e}") from None
            # equal argument tuples of one event name share one object, as the text import's
            # decode cache shares them (per name: (1, 0) == (True, False) across names)
            cn = canon.get(nm[k])
            if cn is None:
                cn = canon[nm[k]] = {}
            c = cn.get(v)
            if c is None:
                if len(cn) >= CANON:
                    cn.clear()
                c = cn[v] = v
            put(c)
        elif tv is str:
            if len(v) > MAX_TEXT:
                raise ValueError(f"event {base + k}: text over {MAX_TEXT} characters")
            texts[base + k] = v
            put(None)
        else:
            raise ValueError(f"event {base + k}: its value is neither arguments nor text")
    raw.ts.extend(ts)
    raw.cpu.extend(cpu.tolist())
    raw.pid.extend(pid)
    raw.vcpu.extend(vcpu.tolist())
    raw.line.extend(line)
    raw.file.extend(fil)
    raw.name.extend(nm)
    raw.args.extend(args)
