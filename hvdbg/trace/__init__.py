"""hvdbg trace files: versioned, framed, crash-tolerant msgpack (see docs/trace-format.md)."""

from .format import FORMAT_VERSION, MAGIC, MAX_FRAME, TraceError, decode_descriptor, encode_descriptor
from .reader import Trace, load_trace, read_checkpoint, read_footer
from .writer import TraceWriter, publish

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_FRAME",
    "Trace",
    "TraceError",
    "TraceWriter",
    "publish",
    "decode_descriptor",
    "encode_descriptor",
    "load_trace",
    "read_checkpoint",
    "read_footer",
]
