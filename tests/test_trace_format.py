"""Trace file format: round trip, cut at every byte, bit flips / byte edits, hostile inputs."""

import io
import os
import random
import struct

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from hvdbg.trace import TraceError, TraceWriter, load_trace, read_checkpoint, read_footer
from hvdbg.trace import format as F
from hvdbg.trace import writer as W

FUZZ = settings(max_examples=40, deadline=None, database=None)

HEADER = {
    "tool": "hvdbg 0.1.0",
    "scenario": "smp",
    "source": "[scenario]\nname = 'smp'\ncpus = 2\n",
    "config": {"cpus": 2, "seed": 7, "weights": {"op": 64, "deliver": 64}, "fix": None, "vectors": [236, 251]},
    "program_digest": "ab" * 32,
}

VECS = [0xEC, 0xFB, 0xFC, 0xFD]


def synth(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r, c = rng.random(), rng.randrange(4)
        if r < 0.70:
            out.append(("op", c))
        elif r < 0.80:
            out.append(("deliver", c, rng.choice(VECS)))
        elif r < 0.90:
            out.append(("land", c, rng.randrange(4), rng.choice(VECS)))
        elif r < 0.95:
            out.append(("timer", c, 0xEC))
        else:
            out.append(("traffic", c, rng.randrange(4), rng.choice(VECS)))
    return out


def one_line_with_offset(e: TraceError):
    msg = str(e)
    assert "\n" not in msg and "\r" not in msg
    assert "byte " in msg
    assert f"byte {e.offset}:" in msg
    return msg


def record_small(path, events_per_flush=40, n=200):
    """A small complete recording (< 4 KB) with several frames of every kind."""
    evs = synth(n, seed=3)
    w = TraceWriter(path, HEADER)
    for i, e in enumerate(evs):
        w.event(e)
        if (i + 1) % events_per_flush == 0:
            w.flush()
        if i == 99:
            w.checkpoint(100, "d" * 16, b"\x00snap\xff")
        if i == 150:
            w.branch("what-if", "main", 150, ("edit", "drop_ipi", 1, 0xFB))
    w.checkpoint(len(evs), "e" * 16, None)
    w.close("ok", len(evs))
    return evs


def frame_map(data):
    """(end offset, events so far, checkpoints so far) after each frame of an intact file."""
    out, pos, n_ev, n_ck = [], F.FILE_HEAD_SIZE, 0, 0
    while pos < len(data) - F.TAIL_SIZE:
        ln, _, kind = F.FRAME_HEAD.unpack_from(data, pos)
        p = data[pos + 9 : pos + 9 + ln]
        if kind == F.K_EVENTS:
            n_ev += msgpack.unpackb(p)[1]
        if kind == F.K_CHECKPOINT:
            n_ck += 1
        pos += 9 + ln
        out.append((pos, kind, n_ev, n_ck))
    return out


def load_bytes(data, **kw):
    return load_trace(io.BytesIO(data), **kw)


# ------------------------------------------------------------------ round trip


def test_round_trip(tmp_path):
    p = tmp_path / "t.hvt"
    evs = synth(2500, seed=1)
    with TraceWriter(p, HEADER) as w:
        for i, e in enumerate(evs):
            w.event(e)
            if i % 1000 == 999:
                w.checkpoint(i + 1, f"{i:064x}", os.urandom(300) if i < 1500 else None)
        off_b = w.branch("b1", "main", 1200, ("edit", "drop_ipi", 0, 0xFB))
        w.branch("root", None, 0, None)
        w.branch("to-kvm", "main", 7, None, {"hypervisor": "kvm"})
        w.close("hang", len(evs))
    tr = load_trace(p)
    assert tr.salvage is None and tr.complete
    assert tr.header == HEADER
    assert tr.events == evs
    assert [c[0] for c in tr.checkpoints] == [1000, 2000]
    assert tr.checkpoint_events == [1000, 2000]
    assert isinstance(tr.checkpoints[0][2], bytes) and len(tr.checkpoints[0][2]) == 300
    assert tr.checkpoints[1][2] is None
    assert tr.branches[0] == {"name": "b1", "parent": "main", "fork_step": 1200,
                              "edit": ("edit", "drop_ipi", 0, 0xFB), "event": 2500, "offset": off_b, "switch": None}
    assert tr.branches[1]["parent"] is None and tr.branches[1]["edit"] is None
    assert tr.branches[2]["switch"] == {"hypervisor": "kvm"}
    assert tr.footer["outcome"] == "hang" and tr.footer["events"] == len(evs)
    assert tr.footer["checkpoints"] == [c[3] for c in tr.checkpoints]
    # index access without a scan
    assert read_footer(p) == tr.footer
    assert read_checkpoint(p, tr.checkpoints[0][3]) == tr.checkpoints[0]
    with pytest.raises(TraceError) as ei:
        read_checkpoint(p, off_b)
    one_line_with_offset(ei.value)


@pytest.mark.parametrize(
    "desc",
    [("op", 0), ("op", 15), ("op", 255), ("op", 256), ("deliver", 3, 0xFB), ("land", 255, 255, 255),
     ("timer", 0, 0), ("traffic", 1, 2, 0xFD), ("land", -1, 0, 0), ("op", 2**64 - 1), ("op", -(2**63)),
     ("edit", "x"), ("edit", "set_vector", 1, -2, 2**40)],
)
def test_descriptor_codec(desc):
    enc = F.encode_descriptor(desc)
    assert F.decode_descriptor(enc) == desc
    assert F.decode_descriptor(F.unpack_payload(msgpack.packb(enc), use_list=False)) == desc


@pytest.mark.parametrize(
    "bad",
    [("op",), ("op", 1, 2), ("fly", 1), (), ["op", 1], ("op", 1.0), ("op", True), ("op", 2**64),
     ("edit", 3), ("deliver", 1, "x")],
)
def test_descriptor_rejects(tmp_path, bad):
    with pytest.raises((ValueError, TypeError)):
        F.encode_descriptor(bad)
    w = TraceWriter(tmp_path / "t.hvt", HEADER)
    with pytest.raises((ValueError, TypeError)):
        w.event(bad)


@pytest.mark.parametrize("enc", [7, 5, 1 << 11, 1 | 1 << 19, -8, True, 1.0, (9, 1), (0,), (0, "x"), (5,), (5, 1), (), "op"])
def test_descriptor_decode_rejects(enc):
    with pytest.raises(ValueError):
        F.decode_descriptor(enc)


def test_compact_size(tmp_path):
    p = tmp_path / "t.hvt"
    evs = synth(20_000, seed=5)
    with TraceWriter(p, HEADER) as w:
        for i, e in enumerate(evs):
            w.event(e)
            if i % 1000 == 999:
                w.checkpoint(i + 1, "f" * 64)
        w.close("ok", len(evs))
    assert os.path.getsize(p) / len(evs) <= 24
    assert load_trace(p).events == evs


def test_header_validation(tmp_path):
    p = tmp_path / "t.hvt"
    with pytest.raises(ValueError):
        TraceWriter(p, {"addr_map": {0x1000: 1}})  # int map key would not load back
    with pytest.raises(ValueError):
        TraceWriter(p, {"x": object()})
    with pytest.raises(TypeError):
        TraceWriter(p, [1, 2])
    assert not p.exists()  # validated before touching the disk


def test_flush_policy(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(W, "monotonic", lambda: clock[0])
    p = tmp_path / "t.hvt"
    w = TraceWriter(p, HEADER)
    base = os.path.getsize(p)
    for i in range(999):
        w.event(("op", 0))
    assert os.path.getsize(p) == base and w.flushed_events == 0
    w.event(("op", 1))  # 1000th event: count flush
    assert w.flushed_events == 1000 and os.path.getsize(p) > base
    w.event(("op", 2))
    clock[0] += 0.05
    w.event(("op", 3))
    assert w.flushed_events == 1000
    clock[0] += 0.06  # oldest pending event is now 110 ms old
    w.event(("op", 0))
    assert w.flushed_events == 1003
    tr = load_trace(p)  # readable while the writer is open: no footer yet
    assert len(tr.events) == 1003 and tr.salvage and "no footer" in tr.salvage["reason"]
    w.close("ok", 1003)
    with pytest.raises(ValueError):
        w.event(("op", 0))


@pytest.mark.parametrize("cut", [1, 2])
def test_an_event_cut_off_between_its_column_appends_is_left_out(tmp_path, cut):
    """A signal handler raising inside event() (SIGTERM -> Terminated, Ctrl-C) between the
    appends of its columns, then abandon() on the way out: the file holds every complete
    event and loads (it used to end in a frame of unequal columns, refused on load)."""
    p = tmp_path / "t.hvt"
    evs = synth(30)

    class Cut(Exception):
        pass

    w = TraceWriter(p, HEADER)
    for e in evs[:-1]:
        w.event(e)
    columns = [w._codes, w._where, w._checks]
    target = columns[cut]

    class Raising(type(target)):
        def append(self, x):
            raise Cut()
    setattr(w, ["_codes", "_where", "_checks"][cut], Raising(target.typecode, target))
    with pytest.raises(Cut):
        w.event(evs[-1])
    w.abandon()
    tr = load_trace(p)
    assert tr.events == evs[:-1] and tr.salvage and "no footer" in tr.salvage["reason"]


def test_abandon_and_durable(tmp_path):
    p = tmp_path / "t.hvt"
    with pytest.raises(RuntimeError):
        with TraceWriter(p, HEADER, durable=True) as w:
            for e in synth(50):
                w.event(e)
            raise RuntimeError("engine crashed")
    tr = load_trace(p)
    assert len(tr.events) == 50 and tr.footer is None
    assert tr.salvage["offset"] == os.path.getsize(p) and tr.salvage["events_recovered"] == 50
    assert "byte " in tr.salvage["message"] and "\n" not in tr.salvage["message"]
    with pytest.raises(FileExistsError):
        TraceWriter(p, HEADER, overwrite=False)


def test_a_failed_save_leaves_the_old_trace_and_no_partial(tmp_path, monkeypatch):
    """save_session writes PATH.partial and publishes it only when complete: a failure in the
    middle leaves the old trace byte for byte and removes the partial file."""
    from hvdbg import recording
    from hvdbg.commands import Session
    p = tmp_path / "saved.hvt"
    s = Session.open("cpu-offline")
    recording.save_session(s, p)
    old = p.read_bytes()
    s.execute("goto 1000")
    s.execute("flip 0x10001000 0")

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(TraceWriter, "branch", boom)
    with pytest.raises(OSError):
        recording.save_session(s, p)
    assert p.read_bytes() == old and sorted(os.listdir(tmp_path)) == ["saved.hvt"]
    monkeypatch.undo()
    assert recording.save_session(s, p) == 1
    assert load_trace(p).salvage is None and len(load_trace(p).branches) == 1
    assert sorted(os.listdir(tmp_path)) == ["saved.hvt"]


# ------------------------------------------------------------------ cut at every byte


def test_cut_at_every_offset(tmp_path):
    p = tmp_path / "t.hvt"
    evs = record_small(p)
    data = p.read_bytes()
    assert len(data) <= 4096
    frames = frame_map(data)
    header_end = frames[0][0]
    footer_end = frames[-1][0]
    for k in range(len(data) + 1):
        cut = data[:k]
        if k < header_end:
            with pytest.raises(TraceError) as ei:
                load_bytes(cut)
            one_line_with_offset(ei.value)
            continue
        tr = load_bytes(cut)
        done = [f for f in frames if f[0] <= k]
        last_end, _, n_ev, n_ck = done[-1]
        assert tr.events == evs[:n_ev]
        assert len(tr.checkpoints) == n_ck
        assert tr.header == HEADER
        if k == len(data):
            assert tr.salvage is None and tr.footer is not None
            continue
        assert tr.salvage is not None, k
        assert tr.salvage["events_recovered"] == n_ev
        assert tr.salvage["offset"] == last_end, (k, tr.salvage)
        assert "byte " in tr.salvage["message"] and "\n" not in tr.salvage["message"]
        if k < footer_end:
            assert tr.footer is None


# ------------------------------------------------------------------ damage


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory):
    p = tmp_path_factory.mktemp("trace") / "t.hvt"
    evs = record_small(p, events_per_flush=25, n=120)
    return p.read_bytes(), evs


def _check_damaged(data, original, evs):
    if data == original:
        tr = load_bytes(data)
        assert tr.salvage is None
        return
    try:
        tr = load_bytes(data)
    except TraceError as e:
        one_line_with_offset(e)
        return
    assert tr.salvage is not None, "damage went undetected"
    assert "byte " in tr.salvage["message"] and "\n" not in tr.salvage["message"]
    # whatever was recovered is a prefix of what was written
    assert tr.events == evs[: len(tr.events)]


@FUZZ
@given(st.data())
def test_bit_flips_detected(small_trace, data):
    original, evs = small_trace
    buf = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= 1 << data.draw(st.integers(0, 7))
    _check_damaged(bytes(buf), original, evs)


@FUZZ
@given(st.data())
def test_byte_edits_detected(small_trace, data):
    original, evs = small_trace
    buf = bytearray(original)
    op = data.draw(st.sampled_from(["set", "insert", "delete", "truncate", "append"]))
    i = data.draw(st.integers(0, len(buf) - 1))
    if op == "set":
        buf[i : i + 4] = data.draw(st.binary(min_size=1, max_size=4))
    elif op == "insert":
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    elif op == "delete":
        del buf[i : i + data.draw(st.integers(1, 64))]
    elif op == "truncate":
        del buf[i:]
    else:
        buf += data.draw(st.binary(min_size=1, max_size=32))
    _check_damaged(bytes(buf), original, evs)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(blob):
    for data in (blob, F.MAGIC + blob, F.FILE_HEAD.pack(F.MAGIC, 1) + blob):
        try:
            tr = load_bytes(data)
        except TraceError as e:
            one_line_with_offset(e)
        else:
            assert tr.salvage is not None


def _file(*frames, version=F.FORMAT_VERSION):
    return F.FILE_HEAD.pack(F.MAGIC, version) + b"".join(frames)


def _hdr():
    return F.frame(F.K_HEADER, msgpack.packb(HEADER))


def _ev(start, codes, where=None, checks=None, n=None, blob=None):
    """An events frame (v3) for packed `codes`; n / blob override what the frame claims."""
    from array import array
    where = where if where is not None else [0] * len(codes)
    checks = checks if checks is not None else [0] * len(codes)
    if blob is None:
        blob = F.pack_columns(array("I", codes), array("I", where), array("H", checks))
    return F.frame(F.K_EVENTS, msgpack.packb((start, len(codes) if n is None else n, blob)))


def test_error_cases(tmp_path):
    cases = {
        "empty": (b"", 0, "empty"),
        "text": (b"scenario = 'smp'\ncpus = 2\n" * 10, 0, "bad magic"),
        "random": (bytes(random.Random(1).randrange(256) for _ in range(500)), 0, "bad magic"),
        "newer": (_file(_hdr(), version=7), 8, "format version 7 is newer than this hvdbg (3)"),
        "old": (_file(_hdr(), version=1), 8, "format version 1 was written by hvdbg 0.1"),
        "v2": (_file(_hdr(), version=2), 8, "format version 2 was written before segmented traces"),
        "version0": (_file(_hdr(), version=0), 8, "invalid format version"),
        "no header": (_file(), 12, "missing header record"),
        "events first": (_file(_ev(0, [16])), 12, "expected header"),
        "header not map": (_file(F.frame(F.K_HEADER, msgpack.packb([1, 2]))), 12, "expected a map"),
        "header int keys": (_file(F.frame(F.K_HEADER, msgpack.packb({1: 2}))), 12, "undecodable header"),
        "header 4GiB": (_file(struct.pack("<IIB", 0xFFFFFFFF, 0, F.K_HEADER) + b"x" * 20), 12, "over the"),
        "header crc": (_file(_hdr()[:-1] + b"\x00"), 12, "CRC mismatch in header frame"),
    }
    for name, (data, off, text) in cases.items():
        p = tmp_path / "trace.hvt"
        p.write_bytes(data)
        with pytest.raises(TraceError) as ei:
            load_trace(p)
        msg = one_line_with_offset(ei.value)
        assert ei.value.offset == off, (name, msg)
        assert text in msg, (name, msg)
        assert msg.startswith(str(p)), msg
    p.write_bytes(_file(_hdr()) + b"z" * 100)
    with pytest.raises(TraceError) as ei:
        load_trace(p, max_bytes=50)
    one_line_with_offset(ei.value)


def test_salvage_and_refusal_cases():
    """Damage (cut, CRC, absurd length, unknown kind) is salvaged; a frame whose CRC holds but
    whose content is wrong is refused whole, naming its byte."""
    ev0 = _ev(0, [16, 24])
    base = F.FILE_HEAD_SIZE + len(_hdr())
    after = base + len(ev0)
    salvaged = {
        "4GiB frame": (struct.pack("<IIB", 0xFFFFFFFF, 0, F.K_EVENTS) + b"\0" * 64, "over the"),
        "long frame": (struct.pack("<IIB", 1000, 0, F.K_EVENTS) + b"\0" * 64, "truncated events frame"),
        "unknown kind": (F.frame(77, msgpack.packb({"future": 1})), "unknown record kind 77"),
        "crc": (ev0[:-1] + b"\x11", "CRC mismatch in events frame"),
    }
    for name, (tail, text) in salvaged.items():
        tr = load_bytes(_file(_hdr(), ev0, tail))
        assert tr.events == [("op", 2), ("op", 3)], name
        assert tr.salvage["offset"] == after, (name, tr.salvage)
        assert text in tr.salvage["reason"], (name, tr.salvage)
        assert f"byte {after}:" in tr.salvage["message"]
    refused = {
        "ext type": (F.frame(F.K_EVENTS, msgpack.packb((2, 1, msgpack.ExtType(1, b"x")))), "invalid events record"),
        "timestamp": (F.frame(F.K_CHECKPOINT, msgpack.packb({"step": msgpack.Timestamp(1, 0)})), "invalid checkpoint"),
        "bad code": (_ev(2, [7]), "malformed action code"),
        "edit code": (_ev(2, [0xFFFFFFFF]), "malformed action code"),
        "huge arg": (_ev(2, [1 << 12]), "malformed action code"),
        "old batch": (F.frame(F.K_EVENTS, msgpack.packb((2, (16, 24)))), "not [start, count, columns]"),
        "count lies": (_ev(2, [16, 24], n=3), "not 3 events"),
        "count 0": (_ev(2, [16], n=0), "claims 0 events"),
        "not zlib": (_ev(2, [16], blob=b"plain bytes"), "do not decompress"),
        "zlib bomb": (_ev(2, [16], blob=__import__("zlib").compress(b"\0" * (1 << 20))), "not 1 events"),
        "gap": (_ev(5, [16]), "expected 2"),
        "array bomb": (F.frame(F.K_EVENTS, b"\x93\x02\xdd\xff\xff\xff\xff"), "invalid events record"),
        "nesting": (F.frame(F.K_BRANCH, b"\x91" * 5000), "invalid branch record"),
        "second header": (_hdr(), "second header"),
        "ckpt position": (F.frame(F.K_CHECKPOINT, msgpack.packb({"step": 1, "digest": "a" * 32, "snapshot": None,
                                                                 "event": 9})), "but 2 events precede it"),
        "ckpt future": (F.frame(F.K_CHECKPOINT, msgpack.packb({"step": 10 ** 8, "digest": "a" * 32, "snapshot": None,
                                                               "event": 2})), "but 2 events precede it"),
        "ckpt summary": (F.frame(F.K_CHECKPOINT, msgpack.packb({"step": 2, "digest": "a" * 32, "snapshot": None,
                                                                "event": 2, "summary": [[["zz", 1]], []]})),
                         "not a slot, page, overlay or owner"),
        "ckpt note": (F.frame(F.K_CHECKPOINT, msgpack.packb({"step": 2, "digest": "a" * 32, "snapshot": None,
                                                             "event": 2, "summary": [[], [["x" * 40, 1, 2]]]})),
                      "malformed note"),
        "ckpt stats": (F.frame(F.K_CHECKPOINT, msgpack.packb({"step": 2, "digest": "a" * 32, "snapshot": None,
                                                              "event": 2, "stats": [{"events": "many"}, {}]})),
                       "maps of names to integers"),
        "footer mismatch": (F.frame(F.K_FOOTER, msgpack.packb({"outcome": "ok", "steps": 3, "events": 3,
                                                               "checkpoints": [], "branches": []})), "step count"),
        "branch main": (F.frame(F.K_BRANCH, msgpack.packb({"name": "main", "parent": None, "fork_step": 0})),
                        "may not be named main"),
        "branch parent": (F.frame(F.K_BRANCH, msgpack.packb({"name": "b", "parent": "nope", "fork_step": 0})),
                          "neither main nor an earlier branch"),
        "branch fork": (F.frame(F.K_BRANCH, msgpack.packb({"name": "b", "parent": None, "fork_step": 3})),
                        "outside 0..2"),
        "branch name": (F.frame(F.K_BRANCH, msgpack.packb({"name": "a\u202eb", "parent": None, "fork_step": 0})),
                        "is not a name"),
    }
    for name, (tail, text) in refused.items():
        with pytest.raises(TraceError) as ei:
            load_bytes(_file(_hdr(), ev0, tail))
        msg = one_line_with_offset(ei.value)
        assert ei.value.offset == after, (name, msg)
        assert text in msg, (name, msg)
    b1 = F.frame(F.K_BRANCH, msgpack.packb({"name": "b", "parent": None, "fork_step": 0}))
    with pytest.raises(TraceError, match="a second branch named b"):
        load_bytes(_file(_hdr(), ev0, b1, b1))
    # footer good, then junk after the tail
    good = F.frame(F.K_FOOTER, msgpack.packb({"outcome": "ok", "steps": 2, "events": 2, "checkpoints": [],
                                              "branches": []}))
    tail = F.TAIL.pack(after, F.TAIL_MAGIC)
    assert load_bytes(_file(_hdr(), ev0, good) + tail).salvage is None
    tr = load_bytes(_file(_hdr(), ev0, good) + tail + b"\0")
    assert "trailing" in tr.salvage["reason"] and tr.footer is not None


def test_every_single_bit_flip_detected(small_trace):
    original, evs = small_trace
    errors = salvaged = 0
    for i in range(len(original)):
        for b in range(8):
            buf = bytearray(original)
            buf[i] ^= 1 << b
            try:
                tr = load_bytes(bytes(buf))
            except TraceError as e:
                one_line_with_offset(e)
                errors += 1
                continue
            assert tr.salvage is not None, (i, b)
            assert tr.events == evs[: len(tr.events)]
            salvaged += 1
    assert errors and salvaged
