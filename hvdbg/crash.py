"""Crash reports: an unexpected exception becomes one line naming a file that holds the
traceback (design §7, exit status 1). The REPL, scripts and the TUI use the same file
so that one bad command never takes a session - and its unsaved branches - down."""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
from .paths import crash_dir




def write_crash_report(context: str = "") -> str:
    """Write the traceback of the exception being handled; return the report's path."""
    try:
        d = crash_dir()
        d.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="crash-", suffix=".txt", dir=d)
    except OSError:
        fd, path = tempfile.mkstemp(prefix="hvdbg-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"hvdbg crash report\nargv: {sys.argv!r}\n")
        if context:
            f.write(f"while: {context}\n")
        f.write("\n")
        traceback.print_exc(file=f)
    return path
