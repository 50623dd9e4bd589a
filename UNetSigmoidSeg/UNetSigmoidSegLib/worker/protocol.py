"""Worker message protocol: one JSON object per line (UTF-8, ``\\n``-terminated), both directions.

Client → worker: ``load``, ``run``, ``cancel``, ``shutdown``.
Worker → client: ``hello`` (first line: protocol version, pid, Python/torch/MONAI versions, CUDA),
``progress``, ``log``, ``warning``, ``result``, ``error``, ``cancelled``, ``heartbeat``, ``busy``.

``load`` and ``run`` carry the model as ``ModelSpec.to_dict()`` (``model``) and ``run`` the options as
``SegmentOptions.to_dict()`` (``options``); a run's ``result`` carries ``SegmentResult.to_wire()``'s fields
(``result``) and its arrays as hand-off file descriptors (``outputs``).
Every job-related message carries the ``job`` id the client chose. Arrays never travel in
messages: they are raw ``.npy`` files in the client's private temp folder (see ``handoff``), so
lines stay small; a line over ``MAX_MESSAGE_BYTES`` or one that is not a JSON object of a known
type is a ``ProtocolError`` for that line only — the reader skips it and goes on, never hangs.
"""

import json
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

PROTOCOL_VERSION = 2
MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB per line; results and errors are far smaller
MAX_TEXT_CHARS = 16000  # log / message texts are cut to this before encoding

CLIENT_TYPES = ("load", "run", "cancel", "shutdown")
WORKER_TYPES = ("hello", "progress", "log", "warning", "result", "error", "cancelled", "heartbeat", "busy")

# Fields each message type must have (more may be present), with their JSON types.
REQUIRED: Dict[str, Dict[str, Tuple[type, ...]]] = {
    "load": {"job": (str,), "model": (dict,)},
    "run": {
        "job": (str,),
        "model": (dict,),
        "options": (dict,),
        "input": (dict,),
        "affine": (list,),
        "output_dir": (str,),
    },
    "cancel": {"job": (str,)},
    "shutdown": {},
    "hello": {"protocol": (int,), "pid": (int,)},
    "progress": {"job": (str,), "stage": (str,), "fraction": (int, float)},
    "log": {"message": (str,)},
    "warning": {"job": (str,), "message": (str,)},
    "result": {"job": (str,)},
    "error": {"kind": (str,), "message": (str,)},
    "cancelled": {"job": (str,)},
    "heartbeat": {"busy": (bool,)},
    "busy": {"job": (str,)},
}


class ProtocolError(Exception):
    """A line that is not a valid message (malformed JSON, wrong shape, unknown type, oversized)."""

    def __init__(self, message: str, line_start: bytes = b"") -> None:
        super().__init__(message)
        self.message = message
        self.line_start = line_start[:80]


def clip_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, keeping the end (where tracebacks say what failed)."""
    text = str(text)
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def make(message_type: str, **fields: Any) -> Dict[str, Any]:
    """A message dict of type ``message_type`` (validated)."""
    message = {"type": message_type}
    message.update(fields)
    validate(message, CLIENT_TYPES + WORKER_TYPES)
    return message


def validate(message: Any, allowed: Tuple[str, ...]) -> Dict[str, Any]:
    """Check that ``message`` is a dict of an allowed type with its required fields; return it."""
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if kind not in allowed:
        raise ProtocolError(f"unknown message type {kind!r} (expected one of: {', '.join(allowed)})")
    for name, types in REQUIRED[kind].items():
        if name not in message:
            raise ProtocolError(f"{kind!r} message lacks field {name!r}")
        value = message[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ProtocolError(f"{kind!r} message field {name!r} has type {type(value).__name__}")
    return message


def encode(message: Dict[str, Any], max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """One message → one line of bytes (compact JSON, ASCII-safe, ``\\n``-terminated)."""
    try:
        data = json.dumps(message, separators=(",", ":"), allow_nan=False, default=_default).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"cannot encode {message.get('type')!r} message: {exc}") from None
    if len(data) + 1 > max_bytes:
        raise ProtocolError(f"{message.get('type')!r} message is {len(data)} bytes, over the {max_bytes}-byte limit")
    return data + b"\n"


def _default(value: Any) -> Any:
    """JSON for numpy scalars / arrays and tuples that slip into messages."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def decode(line: bytes, allowed: Tuple[str, ...], max_bytes: int = MAX_MESSAGE_BYTES) -> Dict[str, Any]:
    """One line (with or without ``\\n``) → a validated message dict, or ``ProtocolError``."""
    if len(line) > max_bytes:
        raise ProtocolError(f"message of {len(line)} bytes is over the {max_bytes}-byte limit", line)
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed message (not JSON: {exc})", line) from None
    try:
        return validate(message, allowed)
    except ProtocolError as exc:
        raise ProtocolError(exc.message, line) from None


def read_messages(
    stream: BinaryIO, allowed: Tuple[str, ...], max_bytes: int = MAX_MESSAGE_BYTES
) -> Iterator[Union[Dict[str, Any], ProtocolError]]:
    """Messages from a binary stream until EOF; a bad line yields a ``ProtocolError`` and reading goes on.

    An oversized line is consumed in chunks of ``max_bytes`` (memory stays bounded) and reported once.
    Blank lines are ignored.
    """
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            start, size = line[:80], len(line)
            while line and not line.endswith(b"\n"):  # discard the rest of the oversized line
                line = stream.readline(max_bytes + 1)
                size += len(line)
            yield ProtocolError(f"message of {size} bytes or more is over the {max_bytes}-byte limit", start)
            if not line:
                return
            continue
        if not line.strip():
            continue
        try:
            yield decode(line.rstrip(b"\r\n"), allowed, max_bytes)
        except ProtocolError as exc:
            yield exc


def log_tail_text(lines: List[str], n: int = 20) -> str:
    """The last ``n`` log lines as one indented block for error messages."""
    tail = [ln for ln in lines if ln.strip()][-n:]
    return "\n".join("    " + ln for ln in tail)


def error_message(
    kind: str,
    message: str,
    hint: str = "",
    job: Optional[str] = None,
    log_tail: Optional[List[str]] = None,
    **extra: Any,
) -> Dict[str, Any]:
    """An ``error`` message (``kind``: a ``UserError`` kind, ``internal`` or ``protocol``)."""
    fields: Dict[str, Any] = {
        "kind": kind,
        "message": clip_text(message),
        "hint": clip_text(hint),
        "log_tail": [clip_text(ln, 2000) for ln in (log_tail or [])[-40:]],
    }
    if job is not None:
        fields["job"] = job
    fields.update(extra)
    return make("error", **fields)
