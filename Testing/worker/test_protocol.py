"""Protocol and hand-off units (no process): framing, validation, size limits, packing, stale-folder sweep."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from UNetSigmoidSegLib.contract import result as contract_result
from UNetSigmoidSegLib.worker import handoff
from UNetSigmoidSegLib.worker.protocol import (
    CLIENT_TYPES,
    MAX_MESSAGE_BYTES,
    WORKER_TYPES,
    ProtocolError,
    decode,
    encode,
    make,
    read_messages,
)


def test_round_trip_and_validation():
    message = make("progress", job="7", stage="inference", fraction=0.5, message="window 3/6", eta=1.5)
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line, WORKER_TYPES) == message
    with pytest.raises(ProtocolError, match="lacks field 'job'"):
        decode(b'{"type": "run", "model_path": "m.pt"}', CLIENT_TYPES)
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode(b'{"type": "hello", "protocol": 1, "pid": 3}', CLIENT_TYPES)  # a worker type sent to the worker
    with pytest.raises(ProtocolError, match="has type"):
        decode(b'{"type": "heartbeat", "busy": 1}', WORKER_TYPES)
    with pytest.raises(ProtocolError, match="not JSON"):
        decode(b"\xff\xfe nonsense", WORKER_TYPES)
    with pytest.raises(ProtocolError, match="JSON object"):
        decode(b"[1, 2, 3]", WORKER_TYPES)
    with pytest.raises(ProtocolError, match="over the"):
        encode(make("log", message="x" * MAX_MESSAGE_BYTES))
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode({"type": "log", "message": float("nan")})


def test_reader_skips_bad_and_oversized_lines_without_hanging():
    good = encode(make("heartbeat", busy=False))
    stream = io.BytesIO(
        good + b"garbage\n" + b"y" * (3 * 1024 + 17) + b"\n" + b"\n" + good + b'{"type": "busy"}\n' + good[:-1]
    )
    items = list(read_messages(stream, WORKER_TYPES, max_bytes=1024))
    kinds = [type(i).__name__ if isinstance(i, ProtocolError) else i["type"] for i in items]
    assert kinds == ["heartbeat", "ProtocolError", "ProtocolError", "heartbeat", "ProtocolError", "heartbeat"]
    assert "over the 1024-byte limit" in items[2].message and items[2].line_start.startswith(b"yyy")
    # an oversized line without a newline at EOF ends the stream cleanly
    assert isinstance(list(read_messages(io.BytesIO(b"z" * 5000), WORKER_TYPES, max_bytes=1024))[0], ProtocolError)


def test_handoff_arrays_and_packed_masks(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)
    desc = handoff.write_array(str(tmp_path), "input", array)
    mapped = handoff.map_array(desc)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable and np.array_equal(mapped, array)
    assert np.array_equal(handoff.read_array(desc), array)
    with pytest.raises(ValueError, match="expected"):
        handoff.read_array(dict(desc, shape=[1, 2]))
    masks = rng.random((3, 5, 6, 7)) > 0.5
    packed = contract_result.pack_masks(masks)
    assert packed.nbytes == -(-masks.size // 8)
    back = contract_result.unpack_masks(packed, masks.shape)
    assert back.dtype == bool and np.array_equal(back, masks)


def test_sweep_removes_only_folders_of_dead_owners(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / (handoff.DIR_PREFIX + "stale")
    (stale / "job-1").mkdir(parents=True)
    (stale / "job-1" / "input.npy").write_bytes(b"x" * 100)
    (stale / handoff.OWNER_FILE).write_text(json.dumps({"pid": dead.pid, "create_time": None}))
    live = handoff.make_private_dir(str(tmp_path))  # owned by this test process
    fresh = tmp_path / (handoff.DIR_PREFIX + "being-created")  # no pid file yet, young: kept
    fresh.mkdir()
    other = tmp_path / "not-ours"
    other.mkdir()
    removed = handoff.sweep_stale(str(tmp_path))
    assert removed == [str(stale)]
    assert not stale.exists() and os.path.isdir(live) and fresh.exists() and other.exists()
