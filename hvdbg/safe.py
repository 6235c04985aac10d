"""What hvdbg trusts (nothing from a file) and what it writes over (only its own files).

Three rules live here so that every reader and writer applies the same ones
(docs/security.md):

* :func:`printable` - every string that came from a file (a trace header's tool or
  scenario name, a branch name, a path, an echoed value) is escaped before it reaches a
  terminal: control characters, bidi overrides and newlines become visible escapes and
  long values are cut, so an error stays one line.
* :func:`read_regular` - input files are opened without blocking, must be regular files
  (a FIFO, a device, a directory or a socket is refused before a byte is read) and are
  read up to a size limit that the caller derives from its format.
* :func:`output_target` / :func:`open_partial` - an output path is written only if it does
  not exist, or is a regular file that hvdbg wrote (it starts with the caller's magic).
  A symlink to such a file is written through (the new file replaces the link's target;
  the link stays); a dangling symlink or one to anything else is refused. The
  ``FILE.partial`` beside it is opened with ``O_NOFOLLOW``.
"""
from __future__ import annotations

import os
import stat

# Characters that reorder or hide text on a terminal (Unicode bidi controls and marks).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(value, limit: int = 160) -> str:
    """`value` as one visible line: non-printable characters (newlines, ESC, NUL, bidi
    controls) escaped as \\xNN / \\uNNNN, cut to `limit` characters with a count."""
    s = value if isinstance(value, str) else str(value)
    if len(s) > 4 * limit:
        s = s[:4 * limit]
    out = []
    for ch in s:
        if ch in _BIDI or not ch.isprintable():
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    t = "".join(out)
    full = len(value) if isinstance(value, str) else len(t)
    if len(t) > limit:
        return t[:limit] + f"... ({full} characters)"
    return t


class UnsafeFile(OSError):
    """An input or output path that hvdbg refuses: str() is one line naming it and why."""

    def __init__(self, path, why: str):
        self.path_text = printable(os.fspath(path) if not isinstance(path, int) else str(path))
        self.why = why
        super().__init__(f"{self.path_text}: {why}")

    def __str__(self) -> str:
        return f"{self.path_text}: {self.why}"


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "not a regular file"


def read_regular(path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file, at most `limit` of them. Never blocks on a FIFO, never
    reads a device. Raises FileNotFoundError/PermissionError (OSError) or UnsafeFile."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(path, f"{kind_of(st.st_mode)}, not a regular {what}; hvdbg reads only regular files")
        if st.st_size > limit:
            raise UnsafeFile(path, f"{st.st_size} bytes, over the {limit}-byte limit for a {what}")
        chunks, total = [], 0
        while True:
            b = os.read(fd, min(1 << 20, limit + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > limit:
                raise UnsafeFile(path, f"grew past the {limit}-byte limit for a {what} while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path, limit: int, what: str = "file") -> str:
    """A regular UTF-8 text file (see read_regular); UnicodeDecodeError is the caller's."""
    return read_regular(path, limit, what).decode("utf-8")


def output_target(path, magic: bytes, what: str = "trace") -> str:
    """The path to replace for an output at `path`, after the checks in the module doc.
    Returns the real path (a symlink's target) or raises UnsafeFile."""
    p = os.fspath(path)
    if not p:
        raise UnsafeFile(p, f"empty file name for the {what}")
    try:
        lst = os.lstat(p)
    except FileNotFoundError:
        d = os.path.dirname(os.path.abspath(p))
        if not os.path.isdir(d):
            raise UnsafeFile(p, f"the directory {printable(d)} does not exist") from None
        return p
    if stat.S_ISLNK(lst.st_mode):
        real = os.path.realpath(p)
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise UnsafeFile(p, "a dangling symlink; hvdbg writes through a symlink only to an existing "
                                f"{what} file") from None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(p, f"a symlink to {kind_of(st.st_mode)}; refusing to replace it")
        _check_ours(p, real, magic, what)
        return real
    if not stat.S_ISREG(lst.st_mode):
        raise UnsafeFile(p, f"{kind_of(lst.st_mode)}; hvdbg writes a {what} only to a regular file")
    _check_ours(p, p, magic, what)
    return p


def _check_ours(shown, real: str, magic: bytes, what: str) -> None:
    try:
        with open(real, "rb") as f:
            head = f.read(len(magic))
    except OSError as e:
        raise UnsafeFile(shown, f"cannot read it to check that it is an hvdbg {what}: {e.strerror or e}") from None
    if head != magic and os.path.getsize(real) > 0:
        raise UnsafeFile(shown, f"exists and is not an hvdbg {what}; refusing to replace it (remove it first)")


def open_partial(path: str):
    """Open `path` (a FILE.partial of ours) for writing: created or truncated, never through
    a symlink, never a FIFO or device. Returns a binary file object."""
    try:
        lst = os.lstat(path)
        if not stat.S_ISREG(lst.st_mode):
            raise UnsafeFile(path, f"{kind_of(lst.st_mode)}; refusing to write a partial file there")
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    f = open(path, "wb", opener=lambda p, _f: os.open(p, flags, 0o644))
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise UnsafeFile(path, f"{kind_of(st.st_mode)}; refusing to write a partial file there")
    os.set_blocking(f.fileno(), True)
    return f
