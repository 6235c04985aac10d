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


def events_of(recs) -> list:
    """All encoded choices, in order."""
    out = []
    for kind, obj in recs:
        if kind == F.K_EVENTS:
            out += list(obj[1])
    return out


def with_events(recs, codes: list, batch: int = 1000) -> list:
    """`recs` with its events replaced by `codes` (renumbered frames, checkpoints moved to
    the same steps where they still fit, footer counts renumbered): a file that is framed
    and counted right but records other choices."""
    head = [r for r in recs if r[0] == F.K_HEADER]
    ckpts = [r for r in recs if r[0] == F.K_CHECKPOINT]
    branches = [r for r in recs if r[0] == F.K_BRANCH]
    footer = [r for r in recs if r[0] == F.K_FOOTER]
    out = list(head)
    done = 0
    for _, ck in ckpts:
        step = ck["step"]
        if step > len(codes):
            break
        while done < step:
            n = min(batch, step - done)
            out.append([F.K_EVENTS, [done, codes[done:done + n]]])
            done += n
        out.append([F.K_CHECKPOINT, dict(ck, event=done)])
    while done < len(codes):
        n = min(batch, len(codes) - done)
        out.append([F.K_EVENTS, [done, codes[done:done + n]]])
        done += n
    out += branches
    for _, f in footer:
        out.append([F.K_FOOTER, dict(f, events=len(codes), steps=len(codes))])
    return out
