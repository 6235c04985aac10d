"""hvdbg trace file format: constants, framing, descriptor codec, errors.

Byte layout (all integers little-endian; full description in docs/trace-format.md)::

    offset 0   MAGIC            8 bytes  b"HVDBGTR\\0"
    offset 8   format version   u32      FORMAT_VERSION
    offset 12  frames ...       each: FRAME_HEAD (<IIB: length, crc32, kind) + msgpack payload
    [tail]     after the footer frame: u64 footer offset + TAIL_MAGIC (16 bytes)

The CRC32 covers the length field, the kind byte and every payload byte
(everything in the frame but the CRC field itself), so any single damaged byte
is detected.

This module is the only place that talks to msgpack; swapping the codec (for
example to msgspec) only touches ``pack_payload`` / ``unpack_payload``.
"""

from __future__ import annotations

import os
import struct
import zlib
from array import array
from typing import Any

import msgpack

MAGIC = b"HVDBGTR\0"
FORMAT_VERSION = 3
#: Versions this hvdbg refuses with a reason (their state layout or content differs).
OLD_VERSIONS = {1: "format version 1 was written by hvdbg 0.1, before the bug library: its machine state layout "
                   "(page owners, kernel generations, the KVM PV MSRs) differs, so its digests cannot be checked; "
                   "re-record it with this hvdbg (hvdbg run SCENARIO --record FILE)",
                2: "format version 2 was written before segmented traces (issue 10): it has no snapshots and its "
                   "state digests encode IRR/ISR differently; re-record it with this hvdbg "
                   "(hvdbg run SCENARIO --record FILE, or hvdbg replay OLD --verify with the hvdbg that wrote it)"}
FILE_HEAD = struct.Struct("<8sI")  # magic, format version
FILE_HEAD_SIZE = FILE_HEAD.size  # 12

FRAME_HEAD = struct.Struct("<IIB")  # payload length, crc32, record kind
FRAME_HEAD_SIZE = FRAME_HEAD.size  # 9
_LEN = struct.Struct("<I")

#: A frame declaring a larger payload is damage (or hostile), never an allocation.
MAX_FRAME = 16 * 1024 * 1024

TAIL_MAGIC = b"HVDBGEND"
TAIL = struct.Struct("<Q8s")  # footer frame offset, TAIL_MAGIC
TAIL_SIZE = TAIL.size  # 16

# Record kinds (the u8 in each frame head).
K_HEADER = 1
K_EVENTS = 2
K_CHECKPOINT = 3
K_BRANCH = 4
K_FOOTER = 5
K_IMPORTED = 6      # events of an imported trace (header trace_kind "imported"; hvdbg/trace_import/hvt.py)
KIND_NAMES = {
    K_HEADER: "header",
    K_EVENTS: "events",
    K_CHECKPOINT: "checkpoint",
    K_BRANCH: "branch",
    K_FOOTER: "footer",
    K_IMPORTED: "imported events",
}
#: The header's ``trace_kind`` of a trace written by ``hvdbg import -o FILE.hvt``: events read
#: from text traces, no scenario, no model (only tui / info / export open it).
IMPORTED_KIND = "imported"

#: Writer flush policy: an events frame is written once the batch holds this
#: many events, or the oldest pending event is this old (checked on each call).
FLUSH_EVENTS = 1000
FLUSH_SECONDS = 0.100

#: An events frame (v3): msgpack [first event, n, zlib(codes u32 x n | where u32 x n | checks u16 x n)],
#: all little-endian. EVENT_BYTES is the decompressed size per event.
EVENT_BYTES = 10
#: A checkpoint's summary and statistics are bounded (entries), whatever the frame size.
MAX_SUMMARY_ENTRIES = 1 << 20
MAX_STATS_ENTRIES = 256

# Descriptor kind codes and the number of int arguments each takes.
DESC_CODES = {"op": 0, "deliver": 1, "land": 2, "timer": 3, "traffic": 4, "edit": 5}
DESC_NAMES = {v: k for k, v in DESC_CODES.items()}
DESC_ARITY = {"op": 1, "deliver": 2, "land": 3, "timer": 2, "traffic": 3}
EDIT_CODE = DESC_CODES["edit"]
_ARITY_BY_CODE = {DESC_CODES[k]: n for k, n in DESC_ARITY.items()}
MAX_EDIT_ARGS = 64

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class TraceError(ValueError):
    """A trace file that cannot be loaded at all. ``str()`` is one line naming the byte offset."""

    def __init__(self, path: Any, offset: int, reason: str):
        self.path = display_name(path)
        self.offset = offset
        self.reason = one_line(reason)
        super().__init__(f"{self.path}: byte {offset}: {self.reason}")


class ImportedTraceRefused(TraceError):
    """An imported trace (``hvdbg import -o FILE.hvt``) given to a command that re-executes
    the model: it holds events read from text traces and nothing to replay."""

    def __init__(self, path: Any):
        super().__init__(path, FILE_HEAD_SIZE, "imported trace: no model to replay")
        self.args = (str(self),)

    def __str__(self) -> str:
        return (f"{self.path}: imported trace: no model to replay (it holds events read from text traces; "
                "open it with hvdbg tui, info or export)")


def display_name(path: Any) -> str:
    if path is None:
        return "<trace>"
    try:
        name = os.fspath(path)
    except TypeError:
        name = getattr(path, "name", None) or "<trace>"
    if isinstance(name, bytes):
        name = name.decode("utf-8", "backslashreplace")
    from ..safe import printable
    return printable(str(name), 200)


def one_line(s: str) -> str:
    """One visible line: whitespace runs collapsed, control and bidi characters escaped, cut."""
    from ..safe import printable
    return printable(" ".join(str(s).split()), 300)


# ---------------------------------------------------------------- descriptors


def _check_int(x: Any, desc: Any) -> int:
    if type(x) is not int or not (_INT_MIN <= x <= _INT_MAX):
        raise ValueError(f"descriptor {desc!r}: argument {x!r} is not a 64-bit int")
    return x


PACK_ARG_MAX = 255  # args 0..255 of a non-edit descriptor allow the packed (single int) form


def encode_descriptor(desc: tuple) -> int | tuple:
    """Encode a descriptor for an events frame.

    Packed form (non-edit kinds, every arg in 0..255): one int
    ``code | a[-1] << 3 | a[-2] << 11 | a[-3] << 19`` (last arg in the low bits, so
    ("op", 2) -> 16 and ("deliver", 1, 0xfb) -> 2009 pack into 1 and 3 msgpack bytes).
    General form (anything else): a tuple ``(code, *ints)``; edits are always
    ``(5, kind_str, *ints)``.
    """
    if not isinstance(desc, tuple) or not desc:
        raise ValueError(f"descriptor must be a non-empty tuple, got {desc!r}")
    name = desc[0]
    code = DESC_CODES.get(name) if isinstance(name, str) else None
    if code is None:
        raise ValueError(f"unknown descriptor kind {name!r} in {desc!r}")
    if code == EDIT_CODE:
        if len(desc) < 2 or not isinstance(desc[1], str):
            raise ValueError(f"edit descriptor needs a str kind: {desc!r}")
        if len(desc) - 2 > MAX_EDIT_ARGS:
            raise ValueError(f"edit descriptor has more than {MAX_EDIT_ARGS} args: {desc!r}")
        return (code, desc[1], *(_check_int(x, desc) for x in desc[2:]))
    if len(desc) != DESC_ARITY[name] + 1:
        raise ValueError(f"{name} descriptor takes {DESC_ARITY[name]} ints: {desc!r}")
    args = [_check_int(x, desc) for x in desc[1:]]
    if all(0 <= a <= PACK_ARG_MAX for a in args):
        packed, shift = code, 3
        for a in reversed(args):
            packed |= a << shift
            shift += 8
        return packed
    return (code, *args)


def decode_descriptor(enc: Any) -> tuple:
    """Inverse of encode_descriptor; raises ValueError on anything malformed."""
    if type(enc) is int:
        code = enc & 7
        n = _ARITY_BY_CODE.get(code)
        if n is None or enc < 0 or enc >> (3 + 8 * n):
            raise ValueError(f"malformed packed descriptor {enc}")
        args = [(enc >> (3 + 8 * i)) & 0xFF for i in range(n)]
        return (DESC_NAMES[code], *reversed(args))
    if type(enc) is not tuple or not enc or type(enc[0]) is not int:
        raise ValueError(f"malformed descriptor {enc!r:.60}")
    code = enc[0]
    if code == EDIT_CODE:
        if len(enc) < 2 or type(enc[1]) is not str or len(enc) - 2 > MAX_EDIT_ARGS:
            raise ValueError(f"malformed edit descriptor {enc!r:.60}")
        for x in enc[2:]:
            if type(x) is not int:
                raise ValueError(f"malformed edit descriptor {enc!r:.60}")
        return ("edit", *enc[1:])
    n = _ARITY_BY_CODE.get(code)
    if n is None:
        raise ValueError(f"unknown descriptor code {code}")
    if len(enc) != n + 1:
        raise ValueError(f"malformed {DESC_NAMES[code]} descriptor {enc!r:.60}")
    for x in enc[1:]:
        if type(x) is not int:
            raise ValueError(f"malformed {DESC_NAMES[code]} descriptor {enc!r:.60}")
    return (DESC_NAMES[code], *enc[1:])


class Choices:
    """A trace's recorded choices, 4 bytes each: the packed descriptor codes in an
    ``array('I')`` (every valid model action packs: CPUs < 64, vectors < 256), decoded to
    descriptor tuples on access through a small interning table. Indexable, iterable,
    sized - the engine reads it through a cursor."""

    __slots__ = ("codes", "_table", "_interned_all")

    def __init__(self, codes: array | None = None):
        self.codes = codes if codes is not None else array("I")
        self._table: dict = {}
        self._interned_all = codes is None    # every code came through extend_*: all are in _table

    def _decode(self, code: int) -> tuple:
        t = self._table.get(code)
        if t is None:
            t = self._table[code] = decode_descriptor(code)
        return t

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._decode(c) for c in self.codes[i]]
        return self._decode(self.codes[i])

    def __iter__(self):
        dec = self._decode
        for c in self.codes:
            yield dec(c)

    def __eq__(self, other) -> bool:
        if isinstance(other, Choices):
            return self.codes == other.codes
        try:
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        except TypeError:
            return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"Choices({len(self)} events)"

    def distinct(self) -> list[tuple]:
        """Each distinct descriptor once (for validation against the model). Codes appended
        with extend_codes/extend_batch were all interned on the way in (no second pass over
        millions of events)."""
        if self._interned_all:
            return list(self._table.values())
        return [self._decode(c) for c in set(self.codes)]

    def extend_codes(self, codes: array) -> None:
        """Append packed codes (an events frame's column): every one must unpack to a model
        action, else ValueError."""
        self.intern(codes)
        self.codes.extend(codes)

    def intern(self, codes) -> dict:
        """Unpack and remember each code not seen before (ValueError for one that is not a
        model action); returns {code: descriptor} of the new ones (for checks against the
        model; `forget` one that fails them)."""
        from ..core.events import unpack_act
        new = {code: unpack_act(code) for code in set(codes) - self._table.keys()}
        self._table.update(new)
        return new

    def forget(self, code: int) -> None:
        self._table.pop(code, None)

    def extend_batch(self, batch) -> None:
        """Append an events batch (a tuple of encoded descriptors): every entry must be a
        packed code of a non-edit kind, else ValueError."""
        try:
            arr = array("I", batch)
        except (TypeError, OverflowError):
            bad = next((x for x in batch if type(x) is not int or not 0 <= x < 1 << 32), None)
            raise ValueError(f"event {str(bad)[:40]} is not a packed model action (edits and out-of-range "
                             "arguments cannot be recorded choices)") from None
        for code in set(arr) - self._table.keys():
            self._decode(code)           # validates (ValueError) and interns
        self.codes.extend(arr)


def pack_columns(codes: array, where: array, checks: array) -> bytes:
    """The compressed column block of an events frame (little-endian on every host)."""
    import sys
    cols = [array("I", codes), array("I", where), array("H", checks)]
    if sys.byteorder != "little":
        for c in cols:
            c.byteswap()
    return zlib.compress(b"".join(c.tobytes() for c in cols), 1)


def inflate_exact(blob, want: int, what: str, short: str | None = None) -> bytes:
    """zlib-inflate untrusted `blob` that must give exactly `want` bytes (never more than
    want + 1 are inflated); ValueError naming `what` otherwise."""
    if not isinstance(blob, (bytes, bytearray)):
        raise ValueError(f"{what} are not bytes")
    d = zlib.decompressobj()
    try:
        raw = d.decompress(blob, want + 1)
    except zlib.error as e:
        raise ValueError(f"{what} do not decompress ({e})") from None
    if len(raw) != want or d.unconsumed_tail or not d.eof or d.unused_data:
        raise ValueError(f"{what} {short or f'do not inflate to {want} bytes'}")
    return raw


def unpack_columns(blob: bytes, n: int) -> tuple[array, array, bytes]:
    """(codes, where, checks bytes) of an events frame's block of `n` events; ValueError when
    it does not decompress to exactly n * EVENT_BYTES bytes (never more is inflated)."""
    import sys
    if type(n) is not int or not 0 < n <= MAX_FRAME:
        raise ValueError(f"events frame claims {str(n)[:20]} events")
    if not isinstance(blob, (bytes, bytearray)):
        raise ValueError("events frame columns are not bytes")
    raw = inflate_exact(blob, n * EVENT_BYTES, "events frame columns", f"are not {n} events")
    codes, where = array("I"), array("I")
    codes.frombytes(raw[:4 * n])
    where.frombytes(raw[4 * n:8 * n])
    if sys.byteorder != "little":
        codes.byteswap()
        where.byteswap()
    return codes, where, raw[8 * n:]


class DescriptorEncoder(dict):
    """Caching encode table: ``encoder[descriptor] -> encoded tuple`` (validated once)."""

    def __missing__(self, desc):
        enc = encode_descriptor(desc)
        self[desc] = enc
        return enc


# ---------------------------------------------------------------- frames / payloads


def make_packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, autoreset=True, strict_types=False)


def frame(kind: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"{KIND_NAMES.get(kind, kind)} record is {len(payload)} bytes, over MAX_FRAME={MAX_FRAME}")
    head = _LEN.pack(len(payload))
    crc = zlib.crc32(payload, zlib.crc32(bytes((kind,)), zlib.crc32(head)))
    return FRAME_HEAD.pack(len(payload), crc, kind) + payload


def frame_crc(length: int, kind: int, payload) -> int:
    return zlib.crc32(payload, zlib.crc32(bytes((kind,)), zlib.crc32(_LEN.pack(length))))


def _reject_ext(code, data):  # pragma: no cover - max_ext_len=0 rejects first
    raise ValueError(f"unknown msgpack ext code {code}")


def unpack_payload(payload, *, use_list: bool) -> Any:
    """Decode one frame payload (untrusted): limits derived from its length, no ext types."""
    n = len(payload)
    return msgpack.unpackb(
        payload,
        raw=False,
        strict_map_key=True,
        use_list=use_list,
        max_str_len=n,
        max_bin_len=n,
        max_array_len=n,
        max_map_len=n // 2,
        max_ext_len=0,
        ext_hook=_reject_ext,
    )


def check_header_dict(header: Any, packer: msgpack.Packer | None = None) -> bytes:
    """Pack a header (or any record) dict and prove it loads back under the reader's rules."""
    if not isinstance(header, dict):
        raise TypeError(f"trace header must be a dict, got {type(header).__name__}")
    packer = packer or make_packer()
    try:
        payload = packer.pack(header)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"trace header is not msgpack-serialisable: {e}") from e
    try:
        unpack_payload(payload, use_list=True)
    except ValueError as e:
        raise ValueError(f"trace header would not load back (non-str map key?): {e}") from e
    return payload
