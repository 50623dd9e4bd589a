"""The remote body framing and the token file, without a server: round trips, limits checked before
decompressing, corrupt and hostile frames refused with a clear reason."""

import io
import json
import os
import stat
import struct

import numpy as np
import pytest

from UNetSigmoidSegLib.contract import ModelSpec, wire
from UNetSigmoidSegLib.contract.model import looks_like_path
from UNetSigmoidSegLib.errors import ModelError, OptionError
from UNetSigmoidSegLib.remote import tokens

BIG = 1 << 30


def frame(fields, arrays, level=wire.LEVEL):
    return b"".join(wire.encode(fields, arrays, level))


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "uint16", "int32", "float32", "float64", ">i2"])
def test_every_numeric_dtype_round_trips_exactly(dtype):
    rng = np.random.default_rng(3)
    array = (rng.normal(0, 300, (1, 7, 5, 3)) if dtype != "bool" else rng.random((1, 7, 5, 3)) > 0.5).astype(dtype)
    fields, arrays = wire.decode(frame({"a": [1, 2]}, {"volume": array}), BIG, BIG)
    assert fields == {"a": [1, 2]}
    assert arrays["volume"].shape == array.shape and np.array_equal(arrays["volume"], array)
    assert arrays["volume"].dtype == array.dtype.newbyteorder("=")


def test_compressible_arrays_shrink_and_incompressible_ones_travel_raw():
    smooth = np.zeros((1, 64, 64, 32), np.int16)
    smooth[0, 10:50, 10:50, 5:25] = 1000
    noise = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 32), dtype=np.uint8)
    header = json.loads(wire.encode({}, {"smooth": smooth, "noise": noise})[0][12:])
    encodings = {d["name"]: (d["encoding"], d["size"]) for d in header["arrays"]}
    assert encodings["smooth"][0] == "zlib" and encodings["smooth"][1] < smooth.nbytes / 50
    assert encodings["noise"] == ("raw", noise.nbytes)


def test_read_only_views_unless_writable():
    data = frame({}, {"x": np.arange(10, dtype=np.float32)})
    assert not wire.decode(data, BIG, BIG)[1]["x"].flags.writeable
    assert wire.decode(data, BIG, BIG, writable=True)[1]["x"].flags.writeable


def test_limits_are_checked_from_the_header_before_decompressing():
    bomb = np.zeros((1, 512, 512, 256), np.uint8)  # 64 MiB of zeros: under 0.5 % of that compressed
    data = frame({}, {"volume": bomb})
    assert len(data) < bomb.nbytes / 200
    with pytest.raises(wire.WireError, match="over the limit of 1000000"):
        wire.decode(data, 1_000_000, BIG)
    with pytest.raises(wire.WireError, match="in all are over the limit"):
        wire.decode(data, BIG, 1_000_000)
    fields, descriptors = wire.read_header(io.BytesIO(data), len(data))
    assert descriptors[0]["nbytes"] == bomb.nbytes and descriptors[0]["shape"] == bomb.shape


def _tamper(data: bytes, change) -> bytes:
    (length,) = struct.unpack(">I", data[8:12])
    header = json.loads(data[12 : 12 + length])
    change(header)
    raw = json.dumps(header).encode()
    return data[:8] + struct.pack(">I", len(raw)) + raw + data[12 + length :]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"NOTAWIRE" + d[8:], "bad magic"),
        (lambda d: d[:8] + struct.pack(">I", wire.MAX_HEADER_BYTES + 1) + d[12:], "too large or truncated"),
        (lambda d: d[:-5], "do not add up"),
        (lambda d: d + b"extra", "do not add up"),
        (lambda d: _tamper(d, lambda h: h.update(version=99)), "version 99"),
        (lambda d: _tamper(d, lambda h: h["arrays"][0].update(dtype="|O")), "dtype '\\|O'"),
        (lambda d: _tamper(d, lambda h: h["arrays"][0].update(shape=[-1, 4])), "bad shape"),
        (lambda d: _tamper(d, lambda h: h["arrays"][0].update(shape=[2, 2, 2, 2])), "does not hold"),
        (lambda d: _tamper(d, lambda h: h["arrays"][0].update(name="../x" * 30)), "bad array name"),
        (lambda d: _tamper(d, lambda h: h["arrays"].append(dict(h["arrays"][0], size=0))), "same name"),
    ],
)
def test_malformed_frames_are_refused_with_the_reason(mutate, message):
    data = frame({"k": 1}, {"volume": np.arange(64, dtype=np.int16).reshape(1, 4, 4, 4)})
    with pytest.raises(wire.WireError, match=message):
        wire.decode(mutate(data), BIG, BIG)


def test_corrupt_compressed_bytes_are_refused():
    data = bytearray(frame({}, {"volume": np.zeros((1, 32, 32, 32), np.int16)}))
    data[-8:] = b"\xff" * 8
    with pytest.raises(wire.WireError, match="compressed data"):
        wire.decode(bytes(data), BIG, BIG)


def test_object_arrays_cannot_be_sent():
    with pytest.raises(wire.WireError, match="numeric arrays only"):
        wire.encode({}, {"x": np.array([object()])})


def test_model_names_are_never_paths():
    assert ModelSpec(name="BrainT1UNet").reference == "BrainT1UNet" and ModelSpec(name="BrainT1UNet").path == ""
    for bad in ("../etc/passwd", "a/b", "..", ".hidden", "model.pt", "x.zip", "a..b", "", "c:\\x", "a" * 200):
        with pytest.raises(OptionError, match="not a model name"):
            ModelSpec(name=bad)
        assert looks_like_path(bad)
    assert not looks_like_path("BrainT1UNet") and not looks_like_path("liver.v2")
    with pytest.raises(OptionError, match="not both"):
        ModelSpec("x.pt", name="x")
    with pytest.raises(OptionError, match="server's to decide"):
        ModelSpec(name="x", trust_bundle=True)
    assert ModelSpec.from_dict(ModelSpec(name="x", strides=[2, 1]).to_dict()) == ModelSpec(name="x", strides=[2, 1])


def test_local_runners_refuse_a_server_model_name():
    from UNetSigmoidSegLib.runners.inprocess import InProcessRunner

    with pytest.raises(ModelError, match="server model name.*this computer runs model files"):
        InProcessRunner().inspect(ModelSpec(name="BrainT1UNet")).wait()


def test_token_file_is_created_private_and_read_back(tmp_path):
    path = tmp_path / "deep" / "server.token"
    token, created = tokens.load_or_create_token(str(path))
    assert created and len(token) >= 43 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert tokens.load_or_create_token(str(path)) == (token, False)
    rotated, created = tokens.load_or_create_token(str(path), rotate=True)
    assert created and rotated != token and tokens.read_token(str(path)) == rotated
    assert tokens.same_token(rotated, rotated.encode()) and not tokens.same_token(rotated, token)
    os.chmod(path, 0o644)
    with pytest.raises(OptionError, match="can be read by other users.*chmod 600"):
        tokens.read_token(str(path))
    with pytest.raises(OptionError, match="Token file not found"):
        tokens.read_token(str(tmp_path / "missing"))
