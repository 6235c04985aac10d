"""Machine state as plain data, written only through one journaled path.

State = a flat list of slots (ints and tuples of ints) + sparse guest RAM pages + one
VP-assist overlay page per vCPU. Every mutation goes through :meth:`Machine.set`,
:meth:`Machine.write_mem`, :meth:`Machine.new_page` or :meth:`Machine.new_overlay`,
which append ``(location, old, new)`` to the current event's write list. Applying the
old values in reverse order restores the previous state exactly (reverse-step).

Locations: an int (slot index), ``("m", space, addr)`` for a memory byte range
(space -1 = guest RAM, space c = vCPU c's overlay page, addr = GPA or page offset),
``("pg", pfn)`` for a RAM page coming into existence, ``("ov", c)`` for an overlay page,
``("own", pfn)`` for a guest page's owner (kernel generation, purpose, cpu) or None.
"""
from __future__ import annotations

import hashlib
import zlib

import msgpack

from . import msr as _msr
from .defs import PAGE_SHIFT, PAGE_SIZE

RAM = -1

# Fixed per-vCPU fields (offsets inside a vCPU block).
F_RT, F_PC, F_IF, F_HALT, F_R0, F_R1, F_R2, F_R3, F_FRAMES, F_IRR, F_ISR, F_TPR, F_HV = range(13)
N_FIXED = 13
FIELD_NAMES = ["routine", "pc", "IF", "halted", "r0", "r1", "r2", "r3", "frames", "IRR", "ISR", "TPR", "hv"]
assert _msr.F_TPR == F_TPR
# Per-CPU kernel variables with fixed positions: hotplug state and LAPIC timer armed.
BUILTIN_PCPU = ["hp", "timer", "online"]


class Layout:
    """Slot numbering for globals, per-vCPU machine fields, MSRs and per-CPU variables."""

    def __init__(self, ncpu: int, gvars: list[str], pvars: list[str], extra_globals: list[str]):
        self.ncpu = ncpu
        self.gnames = ["inflight"] + list(extra_globals) + [f"${v}" for v in gvars]
        self.gindex = {n: i for i, n in enumerate(self.gnames)}
        self.gvar = {v: self.gindex[f"${v}"] for v in gvars}
        # one slot per catalogue MSR (every registered hypervisor model's), sorted by number
        self.msr_list: list[int] = _msr.msr_list()
        self.msr_off: dict[int, int] = {m: N_FIXED + i for i, m in enumerate(self.msr_list)}
        n_msr = len(self.msr_list)
        self.pvars = BUILTIN_PCPU + [v for v in pvars if v not in BUILTIN_PCPU]
        self.pvar = {v: N_FIXED + n_msr + i for i, v in enumerate(self.pvars)}
        self.msr_by_off = {o: m for m, o in self.msr_off.items()}
        self.pvar_by_off = {o: v for v, o in self.pvar.items()}
        self.block = N_FIXED + n_msr + len(self.pvars)
        self.nglobal = len(self.gnames)
        self.size = self.nglobal + ncpu * self.block
        self.P_HP = self.pvar["hp"]
        self.P_TIMER = self.pvar["timer"]
        self.P_ONLINE = self.pvar["online"]

    def base(self, cpu: int) -> int:
        return self.nglobal + cpu * self.block

    def describe(self, loc) -> str:
        """Human name of a journal location."""
        if isinstance(loc, tuple):
            if loc[0] == "m":
                sp = "RAM" if loc[1] == RAM else f"overlay(cpu{loc[1]})"
                return f"{sp}[0x{loc[2]:x}]"
            if loc[0] == "pg":
                return f"RAM page pfn 0x{loc[1]:x}"
            if loc[0] == "ov":
                return f"overlay page of cpu{loc[1]}"
            if loc[0] == "own":
                return f"owner of page 0x{loc[1] << PAGE_SHIFT:x}"
            return str(loc)
        if loc < self.nglobal:
            return self.gnames[loc]
        cpu, off = divmod(loc - self.nglobal, self.block)
        if off < N_FIXED:
            return f"cpu{cpu}.{FIELD_NAMES[off]}"
        n_msr = len(self.msr_list)
        if off < N_FIXED + n_msr:
            m = self.msr_list[off - N_FIXED]
            return f"cpu{cpu}.msr.{_msr.MSR_NAMES.get(m, hex(m))}"
        return f"cpu{cpu}.%{self.pvars[off - N_FIXED - n_msr]}"

    def split(self, loc: int) -> tuple[int, int]:
        """(cpu, offset) of a per-vCPU slot; cpu -1 for globals."""
        if loc < self.nglobal:
            return -1, loc
        return divmod(loc - self.nglobal, self.block)


BIG_INT_BYTES = 33    # a 256-bit IRR/ISR set (vector 255 included) as a signed little-endian int


def _canon(v):
    """msgpack-able form of a slot value: an int outside 64 bits (the 256-bit IRR/ISR sets)
    becomes BIG_INT_BYTES little-endian bytes (signed)."""
    if isinstance(v, int) and not -(1 << 63) <= v < (1 << 64):
        return v.to_bytes(BIG_INT_BYTES, "little", signed=True)
    return v


class Machine:
    """The whole guest-visible and hypervisor-private state."""

    __slots__ = ("L", "S", "ram", "ovl", "own", "w", "_crc")

    def __init__(self, layout: Layout):
        self.L = layout
        self.S: list = [0] * layout.size
        self.S[0] = ()
        self.ram: dict[int, bytearray] = {}
        self.ovl: dict[int, bytearray] = {}
        self.own: dict[int, tuple] = {}    # pfn -> (kernel generation, purpose, cpu): who owns a guest page
        self.w: list = []          # writes of the event being executed
        self._crc: dict = {}       # (space, pfn-or-cpu) -> CRC32 of that page, dropped on every write to it

    @property
    def zob(self) -> int:
        """A fast state hash for cycle detection and exploration (not the digest).
        Ints and tuples hash the same in every process; pages go through CRC32."""
        h = hash(tuple(self.S))
        crc = self._crc
        for k in sorted(self.ram):
            c = crc.get((RAM, k))
            if c is None:
                c = crc[(RAM, k)] = zlib.crc32(self.ram[k])
            h = hash((h, k, c))
        for k in sorted(self.ovl):
            c = crc.get((0, k))
            if c is None:
                c = crc[(0, k)] = zlib.crc32(self.ovl[k])
            h = hash((h, -k, c))
        if self.own:
            h = hash((h, tuple(sorted(self.own.items()))))
        return h

    def reset_cpu_slots(self, cpu: int) -> None:
        b = self.L.base(cpu)
        for m, off in self.L.msr_off.items():
            self.S[b + off] = _msr.msr_reset_value(m, cpu)
        self.S[b + F_FRAMES] = ()

    def reset_cpu_msrs(self, cpu: int) -> None:
        """Every MSR of `cpu` back to its reset value (journaled: a partition reset)."""
        b = self.L.base(cpu)
        for m, off in self.L.msr_off.items():
            self.set(b + off, _msr.msr_reset_value(m, cpu))

    def set_owner(self, pfn: int, owner: tuple | None) -> None:
        """Record who owns guest page `pfn` (journaled like every write)."""
        old = self.own.get(pfn)
        if old != owner:
            if owner is None:
                del self.own[pfn]
            else:
                self.own[pfn] = owner
            self.w.append((("own", pfn), old, owner))

    # ---- the one write path ----
    def set(self, i: int, v) -> None:
        S = self.S
        old = S[i]
        if old != v:
            S[i] = v
            self.w.append((i, old, v))

    def read_mem(self, space: int, addr: int, size: int) -> int | None:
        """Little-endian read; None if no page backs it (RAM) or no overlay page exists."""
        if space == RAM:
            pg = self.ram.get(addr >> PAGE_SHIFT)
            off = addr & (PAGE_SIZE - 1)
        else:
            pg = self.ovl.get(space)
            off = addr & (PAGE_SIZE - 1)
        if pg is None or off + size > PAGE_SIZE:
            return None
        return int.from_bytes(pg[off:off + size], "little")

    def write_mem(self, space: int, addr: int, size: int, value: int) -> bool:
        if space == RAM:
            pg = self.ram.get(addr >> PAGE_SHIFT)
        else:
            pg = self.ovl.get(space)
        off = addr & (PAGE_SIZE - 1)
        if pg is None or off + size > PAGE_SIZE:
            return False
        new = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        return self.write_bytes(space, addr, new)

    def write_bytes(self, space: int, addr: int, new: bytes) -> bool:
        pg = self.ram.get(addr >> PAGE_SHIFT) if space == RAM else self.ovl.get(space)
        off = addr & (PAGE_SIZE - 1)
        if pg is None or off + len(new) > PAGE_SIZE:
            return False
        old = bytes(pg[off:off + len(new)])
        if old != new:
            pg[off:off + len(new)] = new
            self._crc.pop((RAM, addr >> PAGE_SHIFT) if space == RAM else (0, space), None)
            loc = ("m", space, addr)
            self.w.append((loc, old, bytes(new)))
        return True

    def new_page(self, pfn: int, content: bytes) -> None:
        """A RAM page (re)appears with `content` (an allocation: new, or reused after a kexec)."""
        old = self.ram.get(pfn)
        self.ram[pfn] = bytearray(content)
        self._crc.pop((RAM, pfn), None)
        self.w.append((("pg", pfn), None if old is None else bytes(old), bytes(content)))

    def new_overlay(self, cpu: int, content: bytes) -> None:
        old = self.ovl.get(cpu)
        self.ovl[cpu] = bytearray(content)
        self._crc.pop((0, cpu), None)
        self.w.append((("ov", cpu), None if old is None else bytes(old), bytes(content)))

    def drop_overlay(self, cpu: int) -> None:
        """An overlay page goes away (a partition reset)."""
        old = self.ovl.pop(cpu, None)
        self._crc.pop((0, cpu), None)
        if old is not None:
            self.w.append((("ov", cpu), bytes(old), None))

    def undo(self, writes: list) -> None:
        """Apply recorded old values in reverse order (reverse-step)."""
        S = self.S
        for loc, old, new in reversed(writes):
            if loc.__class__ is int:
                S[loc] = old
            elif loc[0] == "m":
                key = (RAM, loc[2] >> PAGE_SHIFT) if loc[1] == RAM else (0, loc[1])
                pg = self.ram[key[1]] if loc[1] == RAM else self.ovl[loc[1]]
                off = loc[2] & (PAGE_SIZE - 1)
                pg[off:off + len(old)] = old
                self._crc.pop(key, None)
            elif loc[0] == "pg":
                self._crc.pop((RAM, loc[1]), None)
                if old is None:
                    del self.ram[loc[1]]
                else:
                    self.ram[loc[1]] = bytearray(old)
            elif loc[0] == "ov":
                self._crc.pop((0, loc[1]), None)
                if old is None:
                    del self.ovl[loc[1]]
                else:
                    self.ovl[loc[1]] = bytearray(old)
            elif loc[0] == "own":
                if old is None:
                    self.own.pop(loc[1], None)
                else:
                    self.own[loc[1]] = old

    def redo(self, writes: list) -> None:
        """Apply recorded new values in order (forward replay of a recorded event)."""
        S = self.S
        for loc, old, new in writes:
            if loc.__class__ is int:
                S[loc] = new
            elif loc[0] == "m":
                key = (RAM, loc[2] >> PAGE_SHIFT) if loc[1] == RAM else (0, loc[1])
                pg = self.ram[key[1]] if loc[1] == RAM else self.ovl[loc[1]]
                off = loc[2] & (PAGE_SIZE - 1)
                pg[off:off + len(new)] = new
                self._crc.pop(key, None)
            elif loc[0] == "pg":
                self._crc.pop((RAM, loc[1]), None)
                if new is None:
                    del self.ram[loc[1]]
                else:
                    self.ram[loc[1]] = bytearray(new)
            elif loc[0] == "ov":
                self._crc.pop((0, loc[1]), None)
                if new is None:
                    del self.ovl[loc[1]]
                else:
                    self.ovl[loc[1]] = bytearray(new)
            elif loc[0] == "own":
                if new is None:
                    self.own.pop(loc[1], None)
                else:
                    self.own[loc[1]] = new

    def digest(self) -> str:
        """Exact state digest (BLAKE2b over a canonical msgpack encoding)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(msgpack.packb([_canon(v) for v in self.S], use_bin_type=True))
        for pfn in sorted(self.ram):
            h.update(pfn.to_bytes(8, "little"))
            h.update(self.ram[pfn])
        for c in sorted(self.ovl):
            h.update(b"ovl" + c.to_bytes(4, "little", signed=True))
            h.update(self.ovl[c])
        if self.own:
            h.update(b"own" + msgpack.packb(sorted(self.own.items()), use_bin_type=True))
        return h.hexdigest()

    def snapshot(self) -> tuple:
        return (list(self.S), {k: bytes(v) for k, v in self.ram.items()},
                {k: bytes(v) for k, v in self.ovl.items()}, dict(self.own))

    def restore(self, snap: tuple) -> None:
        S, ram, ovl, own = snap
        self.S = list(S)
        self.ram = {k: bytearray(v) for k, v in ram.items()}
        self.ovl = {k: bytearray(v) for k, v in ovl.items()}
        self.own = dict(own or {})
        self._crc = {}
