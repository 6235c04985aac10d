"""`hvdbg import`: read real text traces (KVM host, Linux guest), print what they hold, the
reconstructed per-vCPU state and the findings (docs/import.md).

Registered in cli.py by `import_cli.add_parser(sub)` and the "import" entry of the command
table. Exit 0 (even with skipped lines: they are listed with their line numbers), 2 with one
line when nothing at all is a trace or an option is wrong.
"""
from __future__ import annotations

import json
import os
import re

JSON_MAGIC = b'{"hvdbg_import"'
FORMAT_CHOICES = ("auto", "trace", "trace-pipe", "trace-cmd", "perf-script")


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="read ftrace / trace-cmd / perf script text traces of a KVM host or a Linux "
                                      "guest: events, rebuilt LAPIC/MSR/hotplug state, findings")
    p.add_argument("files", nargs="+", metavar="FILE", help="text trace (plain, .gz or .xz); host and guest "
                                                           "traces of one run are merged by timestamp")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto", help="line format (default: detected)")
    p.add_argument("-o", "--output", metavar="OUT.hvt", help="write an hvdbg trace of the imported events (opens "
                                                             "with hvdbg tui / info / export without re-reading the "
                                                             "text); a name ending in .json: the summary, findings "
                                                             "and state as JSON")
    p.add_argument("--at", metavar="N|@TS", help="show the state after event N (or at timestamp @TS) "
                                                 "instead of the end")
    p.add_argument("--offset", action="append", default=[], metavar="ROLE=±SECONDS",
                   help="shift the timestamps of the host or guest file(s), e.g. guest=+0.000123")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the text summary")


_OFFSET = re.compile(r"(host|guest)=([+-]?\d{1,9}(?:\.\d{1,12})?)$")


def parse_offsets(items, usage, prog: str = "hvdbg import") -> dict:
    out = {}
    for s in items:
        m = _OFFSET.match(s.strip())
        if not m:
            raise usage(f"{prog}: --offset {s[:40]!r}: expected host=±SECONDS or guest=±SECONDS")
        out[m.group(1)] = float(m.group(2))
    return out


def load(args, usage):
    """The ImportedTrace of args.files, or raise usage(one line)."""
    from .safe import UnsafeFile, printable
    from .trace_import import TraceImportError, import_trace
    offsets = parse_offsets(args.offset, usage)
    fmt = "trace" if args.format == "trace-pipe" else args.format
    for f in args.files:
        if is_imported_hvt(f):
            raise usage(f"hvdbg {args.cmd}: {printable(f, 200)}: an imported trace already (hvdbg info, tui and export "
                        "read it; import the text traces it came from again to change it)")
    try:
        return import_trace(args.files, fmt, offsets)
    except TraceImportError as e:
        raise usage(f"hvdbg import: {printable(str(e), 300)}") from None
    except (UnsafeFile, OSError, EOFError) as e:
        # EOFError / lzma / gzip errors: a compressed file cut short or not what it claims
        why = getattr(e, "why", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise usage(f"hvdbg import: {printable(getattr(e, 'filename', None) or ' '.join(args.files), 120)}: "
                    f"cannot read: {printable(why, 200)}") from None


def _at(tr, at, usage) -> int | None:
    if at is None:
        return None
    s = at.strip()
    try:
        if s.startswith("@"):
            return tr.index_at(float(s[1:]))
        n = int(s, 0)
    except ValueError:
        raise usage(f"hvdbg import: --at {s[:40]!r}: expected an event index or @TIMESTAMP") from None
    if not 0 <= n < len(tr.events):
        raise usage(f"hvdbg import: --at {n}: the trace has events 0..{len(tr.events) - 1}")
    return n


def render(tr, rep: dict, out) -> None:
    from .safe import printable
    w = out.write
    for f in rep["files"]:
        w(f"{printable(f['path'], 100)}: {f['format']}, {f['role']} trace, {f['lines']} lines, {f['events']} events"
          + (f", timestamps {f['offset']:+.9f} s" if f["offset"] else "") + "\n")
    w(f"events: {rep['events']}  vCPUs: {', '.join(map(str, rep['vcpus'])) or 'none'}\n")
    w("kinds: " + ", ".join(f"{printable(k, 40)} {n}" for k, n in list(rep["kinds"].items())[:30])
      + (" ..." if len(rep["kinds"]) > 30 else "") + "\n")
    if rep["apicv_suspected"]:
        w("note: acceptances but no kvm_inj_virq at all - APICv/posted interrupts likely: IRR->ISR moves are not "
          "in the trace (unknown)\n")
    if rep["lost_markers"]:
        w(f"warning: {rep['lost_markers']} lost-events markers: the ring buffer overran, state after them is "
          "inferred from an incomplete trace\n")
    if rep["skipped_lines"] or rep["garbled_events"] or rep["cut_lines"] or rep["lost_markers"]:
        w(f"skipped: {rep['skipped_lines']} lines that are not events, {rep['garbled_events']} events whose fields "
          f"do not parse (kept as text), {rep['cut_lines']} lines cut at 4096 characters\n")
        for s in rep["skipped"][:20]:
            w(f"  {printable(rep['files'][s['file']]['path'], 200)}:{s['line']}: {s['why']}\n")
        more = (rep["skipped_lines"] + rep["garbled_events"] + rep["cut_lines"] + rep["lost_markers"]
                - min(20, len(rep["skipped"])))
        if more > 0:
            w(f"  ... and {more} more\n")
    w(f"findings: {len(rep['findings'])}\n")
    for f in rep["findings"]:
        w(f"  [{f['kind']}] {printable(f['text'], 400)}\n")
        w(f"    events: {', '.join(map(str, f['events']))}\n")
        for i in f["events"][:4]:
            w(f"      {tr.describe(i)}\n")
    i = rep["state_at"]
    w(f"state after event {i} ({tr.describe(i)}), inferred from the events:\n")
    for n, v in rep["state"].items():
        parts = []
        irr = ", ".join(f"{k}@{d['set_by']}" + ("?" if "unknown" in d else "") for k, d in v["irr"].items())
        isr = ", ".join(f"{k}@{d['set_by']}" + ("?" if "unknown" in d else "") for k, d in v["isr"].items())
        parts.append(f"IRR [{irr}]")
        parts.append(f"ISR [{isr}]")
        if v["tpr"]:
            parts.append(f"TPR 0x{v['tpr']['value']:02x}@{v['tpr']['set_by']}")
        if v["exit_reason"]:
            parts.append(("in guest, last exit " if v["in_guest"] else "exit ")
                         + f"{printable(v['exit_reason']['reason'], 40)}@{v['exit_reason']['event']}")
        if v["guest_isr"]:
            parts.append("guest handlers [" + ", ".join(f"{g['vector']}@{g['event']}" for g in v["guest_isr"]) + "]")
        if v["hotplug"]:
            h = v["hotplug"]
            parts.append(f"hotplug {h['phase']} step {h['step']} state {h.get('state')} target {h.get('target')} "
                         f"({printable(h.get('callback') or '-', 40)})@{h['event']}")
        w(f"  vCPU {n}: " + "; ".join(parts) + "\n")
        for m, d in v["msrs"].items():
            w(f"    {d['name']} = {d['value']} ({d['access']}@{d['event']})\n")
    w("(@N = the event that set it; ? = unknown: see docs/import.md)\n")


def cmd_import(args, out) -> int:
    from .cli import UsageError
    from .safe import UnsafeFile, output_target, printable
    tr = load(args, UsageError)
    at = _at(tr, args.at, UsageError)
    rep = tr.summary(at)
    if args.output and args.output.lower().endswith(".json"):
        try:
            real = output_target(args.output, JSON_MAGIC, "import summary")
        except UnsafeFile as e:
            raise UsageError(f"hvdbg import: -o {e}") from None
        data = json.dumps({"hvdbg_import": 1, **rep}, indent=1, default=str)
        tmp = real + ".partial"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(data)
            os.replace(tmp, real)
        except OSError as e:
            raise UsageError(f"hvdbg import: -o {printable(args.output)}: {e.strerror or e}") from None
    elif args.output:
        from .trace_import import hvt
        try:
            hvt.write(tr, args.output)
        except UnsafeFile as e:
            raise UsageError(f"hvdbg import: -o {e}") from None
        except ValueError as e:
            raise UsageError(f"hvdbg import: -o {printable(args.output)}: {printable(str(e), 200)}") from None
        except OSError as e:
            raise UsageError(f"hvdbg import: -o {printable(args.output)}: {e.strerror or e}") from None
    if args.json:
        out.write(json.dumps({"hvdbg_import": 1, **rep}, default=str) + "\n")
    else:
        render(tr, rep, out)
    return 0


# -- `hvdbg tui FILE [FILE2 ...]` on text traces (hvdbg/tui/imported.py) ---------------------

def add_tui_options(p) -> None:
    """The options `hvdbg tui` takes for text traces, after its scenario argument: more
    files (host + guest on one timeline), --format, --offset."""
    p.add_argument("more", nargs="*", metavar="FILE2", help="more text traces of the same run on one timeline "
                                                            "(host + guest)")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto",
                   help="line format of text traces (default: detected)")
    p.add_argument("--offset", action="append", default=[], metavar="ROLE=±SECONDS",
                   help="text traces: shift the timestamps of the host or guest file(s), e.g. guest=+0.000123")


def tui_text_traces(args, usage, prog: str = "hvdbg tui") -> list | None:
    """The files of `hvdbg tui` (or `hvdbg serve`) when its first argument is a text trace
    (ftrace, trace-cmd report, perf script; plain, .gz or .xz) or an imported trace
    (`hvdbg import -o FILE.hvt`), else None (a scenario, a bug pack, a TOML file or an .hvt
    recording: the simulated TUI). Raises usage(one line) for options that do not fit what
    was given."""
    from .cli import RUN_OPTIONS
    from .safe import printable
    from .trace_import import is_text_trace
    first = getattr(args, "scenario", None)
    more = list(getattr(args, "more", None) or [])
    imported = bool(first) and is_imported_hvt(first)
    if first and (imported or is_text_trace(first)):
        what = "imported traces" if imported else "text traces"
        given = [f"--{k.replace('_', '-')}" for k in RUN_OPTIONS if getattr(args, k, None) is not None]
        if getattr(args, "memory", None) is not None:
            given.append("--memory")
        if given:
            raise usage(f"{prog}: {', '.join(given)}: these options apply to scenarios, not to {what}")
        if imported:
            if more:
                raise usage(f"{prog}: {printable(more[0], 120)}: an imported trace opens alone (import the "
                            "text traces together: hvdbg import HOST GUEST -o OUT.hvt)")
            if getattr(args, "offset", None) or getattr(args, "format", "auto") != "auto":
                raise usage(f"{prog}: --format and --offset apply to text traces; {printable(first, 120)} was "
                            "imported already (its offsets are in it)")
        return [first] + more
    if more:
        raise usage(f"{prog}: {printable(more[0], 120)}: only text traces (a host and a guest trace) open "
                    f"together; {printable(first, 120)} is not one")
    if getattr(args, "offset", None) or getattr(args, "format", "auto") != "auto":
        raise usage(f"{prog}: --format and --offset apply to text traces (ftrace, trace-cmd report, perf script)"
                    + (f"; {printable(first, 120)} is not one" if first else ""))
    return None


# -- imported traces (`hvdbg import -o FILE.hvt`) ----------------------------------------------

def is_imported_hvt(path) -> bool:
    """`path` is an hvdbg trace written by `hvdbg import -o` (never raises)."""
    from .commands import is_trace_file
    if not path or not is_trace_file(path):
        return False
    from .trace_import.hvt import is_imported
    return is_imported(path)


def read_imported(path, usage, prog: str = "hvdbg"):
    """The ImportedTrace of an imported .hvt, or raise usage(one line naming the byte offset)."""
    from .safe import UnsafeFile, printable
    from .trace.format import TraceError
    from .trace_import import hvt
    try:
        return hvt.read(path)
    except TraceError as e:
        raise usage(f"{prog}: {printable(str(e), 400)}") from None
    except (UnsafeFile, OSError) as e:
        why = getattr(e, "why", None) or getattr(e, "strerror", None) or str(e)
        raise usage(f"{prog}: {printable(path, 200)}: cannot read: {printable(why, 200)}") from None


def cmd_info_imported(args, out) -> int:
    """`hvdbg info FILE.hvt` for an imported trace: its sources, events, vCPUs, what was
    skipped and the findings (rebuilt from the events, as `hvdbg tui` shows them)."""
    from .cli import UsageError
    from .safe import printable
    tr = read_imported(args.trace, UsageError)
    rep = tr.summary()
    info = {"file": args.trace, "bytes": tr.hvt_bytes, "kind": "imported", "tool": None,
            "events": len(tr.events), "bytes_per_event": round(tr.hvt_bytes / max(1, len(tr.events)), 2),
            "files": rep["files"], "vcpus": rep["vcpus"], "kinds": rep["kinds"],
            "skipped_lines": rep["skipped_lines"], "garbled_events": rep["garbled_events"],
            "cut_lines": rep["cut_lines"], "lost_markers": rep["lost_markers"],
            "findings": rep["findings"], "replayable": False}
    if args.json:
        out.write(json.dumps(info, default=str) + "\n")
        return 0
    w = out.write
    w(f"{printable(args.trace, 200)}: imported trace, {info['bytes']} bytes, {info['events']} events, "
      f"{info['bytes_per_event']} bytes/event\n")
    for f in rep["files"]:
        w(f"  from {printable(f['path'], 200)}: {f['format']}, {f['role']} trace, {f['lines']} lines, "
          f"{f['events']} events" + (f", timestamps {f['offset']:+.9f} s" if f["offset"] else "") + "\n")
    ts = tr.events
    w(f"time: {ts[0].ts:.6f} .. {ts[-1].ts:.6f} s; vCPUs: {', '.join(map(str, rep['vcpus'])) or 'none'}\n")
    w("kinds: " + ", ".join(f"{printable(k, 40)} {n}" for k, n in list(rep["kinds"].items())[:30])
      + (" ..." if len(rep["kinds"]) > 30 else "") + "\n")
    w(f"skipped: {rep['skipped_lines']} lines, {rep['garbled_events']} garbled events, {rep['cut_lines']} cut lines, "
      f"{rep['lost_markers']} lost-events markers\n")
    w(f"findings: {len(rep['findings'])}\n")
    for f in rep["findings"]:
        w(f"  [{f['kind']}] {printable(f['text'], 400)}\n")
    w("replay: no (events read from text traces: no model to re-execute; hvdbg tui / export open it)\n")
    return 0
