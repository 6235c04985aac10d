"""`hvdbg export`: placeholder until the Perfetto writer lands."""
from __future__ import annotations


def add_parser(sub) -> None:
    pass


def cmd_export(args, out) -> int:
    return 2
