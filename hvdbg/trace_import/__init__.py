"""Importing real text traces (ftrace, trace-cmd report, perf script) of a KVM host and a
Linux guest: parsing, per-vCPU LAPIC/MSR/hotplug reconstruction and findings.

Pure: no UI imports. Entry points: :func:`import_trace` -> :class:`ImportedTrace`.
"""
from .lines import is_text_trace
from .model import CHECKPOINT, Finding, State, VcpuState
from .trace import Event, ImportedTrace, ImportError_ as TraceImportError, import_trace

__all__ = ["CHECKPOINT", "Event", "Finding", "ImportedTrace", "State", "TraceImportError", "VcpuState",
           "import_trace", "is_text_trace"]
