"""Crafting traces for hostile-input tests: take a real recording apart into its records,
change what a test wants, and put it back together with valid framing (CRCs, footer index,
tail), so that only the content is wrong."""
from __future__ import annotations

import msgpack

from hvdbg.trace import format as F


def records(data: bytes) -> list[list]:
    """[[kind, payload object], ...] of an intact trace (our own files: trusted here)."""
    out = []
    pos = F.FILE_HEAD_SIZE
    end = len(data) - F.TAIL_SIZE
    while pos < end:
        ln, _crc, kind = F.FRAME_HEAD.unpack_from(data, pos)
        payload = data[pos + F.FRAME_HEAD_SIZE:pos + F.FRAME_HEAD_SIZE + ln]
        out.append([kind, msgpack.unpackb(payload, raw=False, strict_map_key=False)])
        pos += F.FRAME_HEAD_SIZE + ln
    return out


def build(recs: list, fix_index: bool = True, version: int = F.FORMAT_VERSION, tail: bool = True) -> bytes:
    """Frames for `recs`; with fix_index the footer's offsets and event count are recomputed
    so the file is framed like one the writer produced."""
    frames, offsets = [], []
    pos = F.FILE_HEAD_SIZE
    ck, br = [], []
    for kind, obj in recs:
        if kind == F.K_FOOTER and fix_index and isinstance(obj, dict):
            obj = dict(obj, checkpoints=ck, branches=br)
        payload = msgpack.packb(obj, use_bin_type=True)
        if kind == F.K_CHECKPOINT:
            ck.append(pos)
        elif kind == F.K_BRANCH:
            br.append(pos)
        fr = F.frame(kind, payload)
        frames.append(fr)
        offsets.append(pos)
        pos += len(fr)
    body = F.FILE_HEAD.pack(F.MAGIC, version) + b"".join(frames)
    if tail and recs and recs[-1][0] == F.K_FOOTER:
        body += F.TAIL.pack(offsets[-1], F.TAIL_MAGIC)
    return body


def columns_of(recs) -> tuple[list, list, list]:
    """(codes, where, checks) of every event, in order."""
    codes, where, checks = [], [], []
    for kind, obj in recs:
        if kind == F.K_EVENTS:
            c, w, k = F.unpack_columns(obj[2], obj[1])
            codes += list(c)
            where += list(w)
            checks += [int.from_bytes(k[i:i + 2], "little") for i in range(0, len(k), 2)]
    return codes, where, checks


def events_of(recs) -> list:
    """All packed choices, in order."""
    return columns_of(recs)[0]


def events_frame(start: int, codes, where, checks) -> list:
    from array import array
    return [F.K_EVENTS, [start, len(codes), F.pack_columns(array("I", codes), array("I", where),
                                                           array("H", checks))]]


def with_events(recs, codes: list, batch: int = 1000, where: list | None = None, checks: list | None = None) -> list:
    """`recs` with its events replaced by `codes` (renumbered frames, checkpoints moved to
    the same steps where they still fit, footer counts renumbered): a file that is framed
    and counted right but records other choices. The where / check columns follow the
    original positions (padded with the last value) unless given."""
    c0, w0, k0 = columns_of(recs)
    if where is None:
        where = [w0[min(i, len(w0) - 1)] if w0 else 0 for i in range(len(codes))]
    if checks is None:
        checks = [k0[min(i, len(k0) - 1)] if k0 else 0 for i in range(len(codes))]
    head = [r for r in recs if r[0] == F.K_HEADER]
    ckpts = [r for r in recs if r[0] == F.K_CHECKPOINT]
    branches = [r for r in recs if r[0] == F.K_BRANCH]
    footer = [r for r in recs if r[0] == F.K_FOOTER]
    out = list(head)
    done = 0

    def emit(upto):
        nonlocal done
        while done < upto:
            n = min(batch, upto - done)
            out.append(events_frame(done, codes[done:done + n], where[done:done + n], checks[done:done + n]))
            done += n
    for _, ck in ckpts:
        step = ck["step"]
        if step > len(codes):
            break
        emit(step)
        out.append([F.K_CHECKPOINT, dict(ck, event=done)])
    emit(len(codes))
    out += branches
    for _, f in footer:
        out.append([F.K_FOOTER, dict(f, events=len(codes), steps=len(codes))])
    return out


def rewrite(tr, path, header: dict | None = None, acts: list | None = None) -> None:
    """Write trace `tr` (as read by load_trace) again at `path` through the real writer, with
    another header and/or other recorded choices (each event keeps its recorded where and
    check, every checkpoint its digest, snapshot, summary and statistics)."""
    from hvdbg.core.journal import Summary
    from hvdbg.trace import TraceWriter
    acts = list(tr.events) if acts is None else acts
    w = TraceWriter(path, header or tr.header)
    done = 0
    checks = tr.checks
    for i, (step, digest, snap, _off) in enumerate(tr.checkpoints):
        for k in range(done, step):
            w.event(acts[k], tr.where[k], int.from_bytes(checks[2 * k:2 * k + 2], "little"))
        done = step
        summ = tr.checkpoint_summaries[i]
        w.checkpoint(step, digest, snap, None if summ is None else Summary(*summ), tr.checkpoint_stats[i])
    for k in range(done, len(acts)):
        w.event(acts[k], tr.where[min(k, len(tr.where) - 1)], 0)
    if tr.footer is not None:
        w.close(tr.footer["outcome"], len(acts))
    else:
        w.abandon()
