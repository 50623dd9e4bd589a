"""The remote server's body framing: JSON fields plus named numpy arrays, each array compressed with zlib.

This is framing, not a second serialisation: requests carry ``ModelSpec.to_dict`` / ``SegmentOptions.to_dict``
and the volume's ``(C, I, J, K)`` array + affine; responses carry ``SegmentResult.to_wire()``'s fields and arrays.

Layout: ``MAGIC`` (8 bytes), header length (4 bytes, big-endian), the header as UTF-8 JSON
``{"version", "fields", "arrays": [{"name", "dtype", "shape", "encoding", "size"}]}``, then each array's bytes
in C order (``encoding`` ``zlib`` or ``raw``, ``size`` bytes on the wire). Decoding checks every number against
the caller's limits *before* decompressing, decompresses with a bounded output (no zip bomb), and accepts only
plain numeric dtypes (nothing is unpickled). numpy and the standard library only (the Slicer side uses it).
"""

import json
import math
import struct
import zlib
from typing import Any, BinaryIO, Dict, List, Tuple

import numpy as np

MAGIC = b"UNSGWIRE"
VERSION = 1
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAYS = 16
# plain numeric dtypes only, little-endian on the wire
DTYPES = ("|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8")
LEVEL = 1  # zlib level: fastest; medical volumes and the uint8 probabilities still shrink 2-10x
INFLATE_SLICE = 8 << 20  # bytes inflated per step
RAW_ABOVE = 0.9  # an array that compresses worse than this ratio travels raw (saves the decompression)


class WireError(ValueError):
    """A body that is not a well-formed frame within the limits."""


def _wire_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype if dtype.itemsize == 1 else dtype.newbyteorder("<")


def encode(fields: Dict[str, Any], arrays: Dict[str, np.ndarray], level: int = LEVEL) -> List[bytes]:
    """The frame as a list of byte chunks (send them in order; ``b"".join`` for one buffer)."""
    descriptors, parts = [], []
    for name, array in arrays.items():
        array = np.asarray(array)
        dtype = _wire_dtype(array.dtype)
        if dtype.str not in DTYPES:
            raise WireError(f"array {name!r}: dtype {array.dtype} cannot travel (numeric arrays only)")
        raw = np.ascontiguousarray(array, dtype=dtype).data.cast("B")
        packed = zlib.compress(raw, level)
        encoding = "zlib" if len(packed) <= RAW_ABOVE * max(1, raw.nbytes) else "raw"
        part = packed if encoding == "zlib" else bytes(raw)
        descriptors.append(
            {"name": name, "dtype": dtype.str, "shape": [int(s) for s in array.shape], "encoding": encoding}
        )
        descriptors[-1]["size"] = len(part)
        parts.append(part)
    header = json.dumps({"version": VERSION, "fields": fields, "arrays": descriptors}).encode("utf-8")
    return [MAGIC + struct.pack(">I", len(header)) + header] + parts


def encoded_size(chunks: List[bytes]) -> int:
    return sum(len(c) for c in chunks)


def _header(prefix: bytes, total: int) -> Tuple[Dict[str, Any], List[Dict[str, Any]], int]:
    """(fields, array descriptors, header end offset) from the first bytes of a frame of ``total`` bytes."""
    if len(prefix) < 12 or prefix[:8] != MAGIC:
        raise WireError("not a UNetSigmoidSeg frame (bad magic)")
    (length,) = struct.unpack(">I", prefix[8:12])
    if length > MAX_HEADER_BYTES or 12 + length > min(len(prefix), total):
        raise WireError(f"header of {length} bytes is too large or truncated")
    try:
        header = json.loads(prefix[12 : 12 + length].decode("utf-8"))
    except ValueError as exc:
        raise WireError(f"header is not JSON: {exc}") from None
    except RecursionError:
        raise WireError("header nests too deeply to be a request") from None
    version = header.get("version") if isinstance(header, dict) else None
    if version != VERSION:
        raise WireError(f"frame version {version!r}, this version reads {VERSION}")
    fields, descriptors = header.get("fields"), header.get("arrays")
    if not isinstance(fields, dict) or not isinstance(descriptors, list) or len(descriptors) > MAX_ARRAYS:
        raise WireError("header needs 'fields' (object) and at most %d 'arrays'" % MAX_ARRAYS)
    checked = []
    for d in descriptors:
        name, dtype, shape, encoding, size = _descriptor(d)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize  # Python integers: no 64-bit wrap-around
        checked.append(
            {"name": name, "dtype": dtype, "shape": shape, "encoding": encoding, "size": size, "nbytes": nbytes}
        )
    if len({d["name"] for d in checked}) != len(checked):
        raise WireError("two arrays have the same name")
    if 12 + length + sum(d["size"] for d in checked) != total:
        raise WireError("array sizes do not add up to the body length")
    return fields, checked, 12 + length


def read_header(f: BinaryIO, total: int) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """(fields, descriptors with ``nbytes``) of a frame of ``total`` bytes in the file ``f`` — nothing decompressed."""
    prefix = f.read(12)
    if len(prefix) == 12 and prefix[:8] == MAGIC:
        prefix += f.read(min(struct.unpack(">I", prefix[8:12])[0], MAX_HEADER_BYTES))
    fields, descriptors, _end = _header(prefix, total)
    return fields, descriptors


def decode(
    data: bytes, max_array_bytes: int, max_total_bytes: int, writable: bool = False
) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """``(fields, arrays)`` of a frame. Raises ``WireError`` naming the first problem: bad magic or version,
    header too large, unknown dtype, an array over ``max_array_bytes`` or all over ``max_total_bytes``
    (checked from the header before decompressing), sizes that do not add up, corrupt compressed data.
    ``writable``: copy arrays out of the buffer (else they are read-only views)."""
    view = memoryview(data)
    fields, descriptors, offset = _header(bytes(view[: 12 + MAX_HEADER_BYTES]), len(view))
    for d in descriptors:
        if d["nbytes"] > max_array_bytes:
            raise WireError(f"array {d['name']!r} of {d['nbytes']} bytes is over the limit of {max_array_bytes}")
    total = sum(d["nbytes"] for d in descriptors)
    if total > max_total_bytes:
        raise WireError(f"arrays of {total} bytes in all are over the limit of {max_total_bytes}")
    arrays: Dict[str, np.ndarray] = {}
    for d in descriptors:
        part = view[offset : offset + d["size"]]
        offset += d["size"]
        nbytes = d["nbytes"]
        if d["encoding"] == "zlib":
            raw = _inflate(part, nbytes, d["name"])
        else:
            if d["size"] != nbytes:
                raise WireError(f"array {d['name']!r}: {d['size']} raw bytes for {nbytes}")
            raw = part
        array = np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"])
        arrays[d["name"]] = array.astype(array.dtype.newbyteorder("="), copy=True) if writable else array
    return fields, arrays


def _inflate(part: memoryview, nbytes: int, name: str) -> np.ndarray:
    """The ``nbytes`` bytes ``part`` inflates to, written slice by slice into one array: never more than ``nbytes``
    (no zip bomb), and the interpreter is held only for one slice at a time (a server's other clients go on)."""
    out = np.empty(nbytes, np.uint8)
    inflater = zlib.decompressobj()
    pos, pending = 0, part
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, min(INFLATE_SLICE, nbytes - pos + 1))
            if pos + len(chunk) > nbytes:
                break
            out[pos : pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
            pos += len(chunk)
            pending = inflater.unconsumed_tail
            if not chunk and not pending:  # no progress: the data ends before its stream does
                break
    except zlib.error as exc:
        raise WireError(f"array {name!r}: corrupt compressed data ({exc})") from None
    if pos != nbytes or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise WireError(f"array {name!r}: compressed data does not hold {nbytes} bytes")
    out.flags.writeable = False  # as a view of the body would be: ``decode(writable=True)`` copies
    return out


def _descriptor(d: Any) -> Tuple[str, str, Tuple[int, ...], str, int]:
    if not isinstance(d, dict):
        raise WireError("array descriptor is not an object")
    name, dtype, shape, encoding, size = (d.get(k) for k in ("name", "dtype", "shape", "encoding", "size"))
    if not isinstance(name, str) or not name or len(name) > 64:
        raise WireError(f"bad array name {name!r}")
    if dtype not in DTYPES:
        raise WireError(f"array {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 1 << 40 for s in shape)
    ):
        raise WireError(f"array {name!r}: bad shape {shape!r}")
    if encoding not in ("zlib", "raw") or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise WireError(f"array {name!r}: bad encoding {encoding!r} or size {size!r}")
    return name, dtype, tuple(shape), encoding, size
