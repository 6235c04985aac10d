"""Machine snapshots as bytes, and the checks a snapshot read from a file must pass.

A trace stores a snapshot at every segment start (issue 10), so opening it at any step
re-executes one segment instead of the whole history. A snapshot from a file is untrusted:
``decode`` rebuilds it only if every slot has the type and range the model gives it (routine
ids, op indexes, frames, 256-bit IRR/ISR, 64-bit registers and MSRs, in-flight IPIs, page
owners, the saved hibernation image, 4 KiB pages), so the engine can run from it without
failing; that it is the state the recorded history reached is what the digest beside it and
the re-execution of the segment check (and, for the whole history, ``replay --verify``).

Encoding: zlib(msgpack([slots, [[pfn, page], ...], [[key, page], ...], [[pfn, gen, purpose,
cpu], ...]])); a slot int that does not fit 64 bits is 33 little-endian bytes (signed),
tuples are arrays.
"""
from __future__ import annotations

import zlib

import msgpack

from .defs import PAGE_SIZE
from .machine import (BIG_INT_BYTES, F_FRAMES, F_HALT, F_HV, F_IF, F_IRR, F_ISR, F_PC, F_R0, F_RT, F_TPR, N_FIXED,
                      Machine, _canon)
from .ops import MAX_CALL_DEPTH

MAX_SNAPSHOT_BYTES = 256 << 20       # decompressed; a snapshot is ~35 KB for 4 vCPUs
MAX_FRAMES = MAX_CALL_DEPTH + 256    # call frames plus nested interrupt frames
_U64 = 1 << 64
_S64 = 1 << 63


class SnapshotError(ValueError):
    pass


def encode(snap: tuple) -> bytes:
    S, ram, ovl, own = snap
    data = [[_canon(v) for v in S], [[k, bytes(v)] for k, v in sorted(ram.items())],
            [[k, bytes(v)] for k, v in sorted(ovl.items())],
            [[k, o[0], o[1], o[2]] for k, o in sorted(own.items())]]
    return zlib.compress(msgpack.packb(data, use_bin_type=True), 1)


def _reject(code, data):
    raise SnapshotError("extension types are not allowed")


def _unpack(blob: bytes):
    if not isinstance(blob, (bytes, bytearray)):
        raise SnapshotError("snapshot is not bytes")
    d = zlib.decompressobj()
    try:
        raw = d.decompress(blob, MAX_SNAPSHOT_BYTES + 1)
    except zlib.error as e:
        raise SnapshotError(f"snapshot does not decompress ({e})") from None
    if len(raw) > MAX_SNAPSHOT_BYTES or d.unconsumed_tail:
        raise SnapshotError(f"snapshot decompresses to more than {MAX_SNAPSHOT_BYTES} bytes")
    if not d.eof or d.unused_data:
        raise SnapshotError("snapshot is not one complete zlib stream")
    n = len(raw)
    try:
        return msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=True, max_str_len=n, max_bin_len=n,
                               max_array_len=n, max_map_len=n // 2, max_ext_len=0, ext_hook=_reject)
    except SnapshotError:
        raise
    except Exception as e:
        raise SnapshotError(f"snapshot does not decode ({type(e).__name__})") from None


def _int(v, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v < hi:
        raise SnapshotError(f"{what} is {str(v)[:40]}, expected an integer in {lo}..{hi - 1}")
    return v


def _big(v, what: str) -> int:
    if type(v) is bytes and len(v) == BIG_INT_BYTES:
        v = int.from_bytes(v, "little", signed=True)
    return _int(v, 0, 1 << 256, what)


class _Checker:
    def __init__(self, eng):
        self.e = eng
        self.L = eng.L
        self.n = eng.n
        self.nrt = len(eng.routines)
        self.nops = [len(r.ops) for r in eng.routines]
        L = self.L
        self.big = set()
        for c in range(self.n):
            self.big.add(L.base(c) + F_IRR)
            self.big.add(L.base(c) + F_ISR)

    def rt_pc(self, rt, pc, what):
        _int(rt, 0, self.nrt, f"{what} routine")
        _int(pc, 0, self.nops[rt] + 1, f"{what} pc")

    def frame(self, fr, what):
        if type(fr) is not tuple or not fr or fr[0] not in (0, 1):
            raise SnapshotError(f"{what} is not a call or interrupt frame")
        if fr[0] == 0:
            if len(fr) != 3:
                raise SnapshotError(f"{what}: a call frame has 3 fields")
            self.rt_pc(fr[1], fr[2], what)
        else:
            if len(fr) != 9:
                raise SnapshotError(f"{what}: an interrupt frame has 9 fields")
            self.rt_pc(fr[1], fr[2], what)
            _int(fr[3], 0, 2, f"{what} IF")
            for i in range(4):
                _int(fr[4 + i], -_S64, _U64, f"{what} r{i}")
            _int(fr[8], 0, 256, f"{what} vector")

    def slot(self, i: int, v, what: str):
        """The value of slot i, checked (and decoded: a 256-bit int from its 32 bytes)."""
        L = self.L
        if i < L.nglobal:
            name = L.gnames[i]
            if i == 0:
                if type(v) is not tuple or len(v) > 4 * self.n * self.n * 256:
                    raise SnapshotError(f"{what} (IPIs in flight) is not a bounded list")
                for t in v:
                    if type(t) is not tuple or len(t) != 3:
                        raise SnapshotError(f"{what}: an in-flight IPI is (src, dst, vector)")
                    _int(t[0], 0, self.n, f"{what} source"), _int(t[1], 0, self.n, f"{what} destination")
                    _int(t[2], 0, 256, f"{what} vector")
                return v
            if name == "image":
                return self.image(v, what)
            if name in ("kgen", "kgen_next"):
                return _int(v, 0, 1 << 32, what)
            if name == "alloc_next":
                return _int(v, 0, 1 << 52, what)
            return _int(v, -_U64, _U64, what)
        cpu, off = L.split(i)
        if off == F_RT:
            return _int(v, 0, self.nrt, what)
        if off == F_PC:
            rt = self.S[i - F_PC + F_RT]
            return _int(v, 0, self.nops[rt] + 1 if type(rt) is int and 0 <= rt < self.nrt else 1, what)
        if off in (F_IF, F_HALT):
            return _int(v, 0, 2, what)
        if F_R0 <= off < F_R0 + 4:
            return _int(v, -_S64, _U64, what)
        if off == F_FRAMES:
            if type(v) is not tuple or len(v) > MAX_FRAMES:
                raise SnapshotError(f"{what} is not a frame stack of at most {MAX_FRAMES} frames")
            for k, fr in enumerate(v):
                self.frame(fr, f"{what}[{k}]")
            return v
        if off in (F_IRR, F_ISR):
            return _big(v, what)
        if off == F_TPR:
            return _int(v, 0, 256, what)
        if off == F_HV:
            return _int(v, 0, _U64, what)
        if off < N_FIXED + len(L.msr_list):
            return _int(v, 0, _U64, what)
        return _int(v, -_U64, _U64, what)

    def image(self, v, what):
        if v == () or v == 0 or v is None:
            return v if v is not None else 0
        if type(v) is not tuple or len(v) != 4:
            raise SnapshotError(f"{what} is not a hibernation image (generation, variables, owners, pages)")
        gen, vals, owned, pages = v
        _int(gen, 0, 1 << 32, f"{what} generation")
        if type(vals) is not tuple or type(owned) is not tuple or type(pages) is not tuple:
            raise SnapshotError(f"{what} fields are not lists")
        kernel = set(self.e._kernel_var_slots())
        for item in vals:
            if type(item) is not tuple or len(item) != 2 or item[0] not in kernel:
                raise SnapshotError(f"{what}: a saved variable is (kernel variable slot, value)")
            self.slot(item[0], item[1], f"{what} variable {item[0]}")
        for item in owned:
            if type(item) is not tuple or len(item) != 2:
                raise SnapshotError(f"{what}: a saved owner is (pfn, owner)")
            self.owner(item[0], item[1], f"{what} owner")
        for item in pages:
            if type(item) is not tuple or len(item) != 2:
                raise SnapshotError(f"{what}: a saved page is (pfn, content)")
            _int(item[0], 0, 1 << 52, f"{what} page")
            if type(item[1]) is not bytes or len(item[1]) != PAGE_SIZE:
                raise SnapshotError(f"{what}: a saved page is {PAGE_SIZE} bytes")
        return v

    def owner(self, pfn, o, what):
        _int(pfn, 0, 1 << 52, f"{what} pfn")
        if type(o) is not tuple or len(o) != 3 or type(o[1]) is not str or not 0 < len(o[1]) <= 64 \
                or not o[1].isprintable():
            raise SnapshotError(f"{what} is not (generation, purpose, cpu)")
        _int(o[0], 0, 1 << 32, f"{what} generation")
        _int(o[2], -1, self.n, f"{what} cpu")
        return o

    def check(self, data) -> tuple:
        if type(data) is not tuple or len(data) != 4:
            raise SnapshotError("snapshot is not [slots, pages, overlays, owners]")
        slots, ram, ovl, own = data
        L = self.L
        if type(slots) is not tuple or len(slots) != L.size:
            raise SnapshotError(f"snapshot has {len(slots) if type(slots) is tuple else '?'} slots, the machine {L.size}")
        self.S = slots
        S = [self.slot(i, v, L.describe(i)) for i, v in enumerate(slots)]
        pages = {}
        for item in ram:
            if type(item) is not tuple or len(item) != 2:
                raise SnapshotError("a RAM page is [pfn, content]")
            pfn = _int(item[0], 0, 1 << 52, "RAM page pfn")
            if type(item[1]) is not bytes or len(item[1]) != PAGE_SIZE or pfn in pages:
                raise SnapshotError(f"RAM page 0x{pfn:x} is not one {PAGE_SIZE}-byte page")
            pages[pfn] = item[1]
        ovls = {}
        for item in ovl:
            if type(item) is not tuple or len(item) != 2:
                raise SnapshotError("an overlay page is [space, content]")
            k = _int(item[0], -1 - self.n, self.n, "overlay space")
            if k == -1 or type(item[1]) is not bytes or len(item[1]) != PAGE_SIZE or k in ovls:
                raise SnapshotError(f"overlay page {k} is not one {PAGE_SIZE}-byte page of a vCPU")
            ovls[k] = item[1]
        owners = {}
        for item in own:
            if type(item) is not tuple or len(item) != 4:
                raise SnapshotError("a page owner is [pfn, generation, purpose, cpu]")
            o = self.owner(item[0], (item[1], item[2], item[3]), "page owner")
            owners[item[0]] = o
        return (S, pages, ovls, owners)


def decode(blob: bytes, eng, digest: str | None = None) -> tuple:
    """The snapshot in `blob`, checked against `eng`'s machine (SnapshotError with the reason),
    and against `digest` (the state digest recorded beside it) when given."""
    snap = _Checker(eng).check(_unpack(blob))
    if digest is not None:
        m = Machine(eng.L)
        m.restore(snap)
        if m.digest() != digest:
            raise SnapshotError("snapshot does not match the state digest recorded beside it")
    return snap
