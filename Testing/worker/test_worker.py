"""The background worker with real subprocesses and tiny real MONAI UNets (no fakes of the process).

One warm worker (module fixture) serves the happy path, warm re-run, engine errors, busy, cancel and
the SIGKILL case; faults that need their own worker use cheap start-up stages (``@start``/``@hello``:
before MONAI is imported). Every test ends by checking that no hand-off folder is left behind.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import blob_volume, tiny_unet, worker_fault_env
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, Volume
from UNetSigmoidSegLib.contract.messages import Progress, Result
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.errors import (
    CancelledError,
    InputError,
    ModelError,
    OptionError,
    WorkerError,
    WorkerInternalError,
)
from UNetSigmoidSegLib.runners.worker import WorkerRunner
from UNetSigmoidSegLib.worker.handoff import pid_alive
from UNetSigmoidSegLib.worker.protocol import CLIENT_TYPES, PROTOCOL_VERSION, WORKER_TYPES, decode, encode, make

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fault injection uses POSIX signals")

AFFINE = np.array([[1.2, 0.1, 0.0, 10.0], [0.0, 0.9, 0.2, -4.0], [0.1, 0.0, 2.0, 3.0], [0, 0, 0, 1.0]])
SMALL = SegmentOptions(device="cpu", roi_size=[16, 16, 16])
LONG = SegmentOptions(device="cpu", roi_size=[16, 16, 16], overlap=0.6)  # ~900 windows on (64, 64, 48): seconds of work


def submit(runner, array, model, options=SMALL):
    """``runner.submit`` of an array on ``AFFINE``; ``options`` a ``SegmentOptions`` or its dict."""
    if not isinstance(options, SegmentOptions):
        options = SegmentOptions.from_dict(options)
    return runner.submit(Volume(array, AFFINE), ModelSpec(model), options)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, out in (("sigmoid", 2), ("softmax", 3)):
        paths[name] = str(folder / f"{name}.pt")
        torch.save(tiny_unet(out_channels=out, seed=out).state_dict(), paths[name])
    return paths


@pytest.fixture(scope="module")
def temp_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("worker-temp"))


@pytest.fixture(scope="module")
def client(temp_root):
    c = WorkerRunner(temp_root=temp_root, heartbeat_timeout_s=20.0)
    c.start(wait=False)  # warm up while the first test builds its inputs
    yield c
    c.close()
    assert not os.path.exists(c.temp_dir)


def assert_clean(client):
    """No job folder left; the private folder holds only pid files."""
    leftovers = [n for n in os.listdir(client.temp_dir) if not n.endswith(".pid")]
    assert leftovers == []


def volume(shape=(40, 36, 24), channels=1):
    return np.stack([blob_volume(shape, seed=c) for c in range(channels)])


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def start_long_job(client, models):
    job = submit(client, volume((64, 64, 48)), models["sigmoid"], LONG)
    seen = []
    wait_for(
        lambda: (
            seen.extend(job.poll())
            or any(isinstance(m, Progress) and m.stage == "inference" and m.fraction > 0 for m in seen)
            or job.done
        ),
        timeout=120,
    )
    assert not job.done, seen[-3:]
    return job


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_result_equals_in_process_segment_bit_for_bit_and_warm_rerun(client, models, activation):
    arr = volume()
    opts = SegmentOptions(
        device="cpu",
        roi_size=[16, 16, 16],
        activation=activation,
        threshold=0.3 if activation == "sigmoid" else None,
        multi_label=activation == "sigmoid",
    )
    job = submit(client, arr, models[activation], opts)
    messages = []
    wait_for(lambda: messages.extend(job.poll()) or job.done, timeout=120)
    messages += job.poll()
    result = job.wait(0)
    expected = segment(Volume(arr, AFFINE), load_model(models[activation]), opts)
    got, ref = result.probabilities, expected.probabilities
    assert (got.activation, got.n_classes) == (ref.activation, ref.n_classes)
    assert got.quantized.dtype == np.uint8 and np.array_equal(got.quantized, ref.quantized)
    assert (got.argmax is None and ref.argmax is None) or np.array_equal(got.argmax, ref.argmax)
    assert result.masks.dtype == bool and np.array_equal(result.masks, expected.masks) and result.masks.any()
    for name in ("labels", "colors", "thresholds", "activation", "placement", "cleanup", "warnings", "device"):
        assert getattr(result, name) == getattr(expected, name), name
    assert np.array_equal(result.affine, expected.affine) and np.array_equal(result.spacing, expected.spacing)
    assert result.statistics() == expected.statistics()
    assert set(result.timings) == set(expected.timings)
    stages = [m.stage for m in messages if isinstance(m, Progress)]
    assert stages[0] == "preprocess" and "inference" in stages and stages[-1] == "postprocess"
    assert any(isinstance(m, Progress) and m.eta is not None for m in messages)
    assert isinstance(messages[-1], Result) and messages[-1].type == "result"
    first = job.info
    assert first.cache_hit is False
    again = submit(client, arr, models[activation], opts)
    again_result = again.wait(timeout=60)
    assert again.info.cache_hit is True and again.info.load_count == first.load_count
    assert again.info.pid == first.pid == client.pid
    assert np.array_equal(again_result.probabilities.quantized, got.quantized)
    assert_clean(client)


def test_engine_errors_arrive_as_their_user_error_and_worker_survives(client, models):
    pid = client.pid or client.start()["pid"]
    with pytest.raises(InputError, match="expects 1 input channel") as info:
        submit(client, volume(channels=2), models["sigmoid"], SMALL).wait(timeout=60)
    assert "2-channel model" in info.value.hint and isinstance(info.value.log_tail, list)
    with pytest.raises(OptionError, match="Threshold 1.5 is outside"):
        submit(client, volume(), models["sigmoid"], dict(device="cpu", threshold=1.5)).wait(timeout=60)
    with pytest.raises(OptionError, match="Unknown segment option"):
        submit(client, volume(), models["sigmoid"], {"treshold": 0.5}).wait(timeout=60)
    with pytest.raises(ModelError, match="Model not found"):
        submit(client, volume(), models["sigmoid"] + ".missing", SMALL).wait(timeout=60)
    info = client.inspect(ModelSpec(models["softmax"])).wait(timeout=60)
    assert info.out_channels == 3 and info.activation == "softmax"
    assert client.pid == pid
    assert_clean(client)


def test_unexpected_exception_in_the_engine_is_an_internal_error_with_the_traceback(temp_root, models):
    with fault_client(temp_root, "raise@inference") as c:
        with pytest.raises(WorkerInternalError, match="injected fault at stage inference") as info:
            submit(c, volume(), models["sigmoid"], LONG).wait(timeout=120)
        assert "Traceback" in str(info.value)
        assert_clean(c)


def test_stray_prints_do_not_reach_the_protocol_stream(temp_root, models):
    with fault_client(temp_root, "noise@preprocess") as c:
        result = submit(c, volume(), models["sigmoid"], SMALL)
        assert result.wait(timeout=120).masks.shape[1:] == (40, 36, 24)
        wait_for(lambda: any("noise written to file descriptor 1" in ln for ln in c.log_tail), timeout=5)
        assert any("noise from print()" in ln for ln in c.log_tail)


def test_busy_rejected_at_once_then_cancel_mid_run_then_next_run(client, models):
    pid = client.pid or client.start()["pid"]
    job = start_long_job(client, models)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="busy") as info:
        submit(client, volume(), models["sigmoid"], SMALL).wait(timeout=10)
    assert info.value.reason == "busy" and time.monotonic() - t0 < 5
    assert not job.done
    t0 = time.monotonic()
    job.cancel()
    with pytest.raises(CancelledError):
        job.wait(timeout=30)
    latency = time.monotonic() - t0
    assert client.pid == pid, "the worker was killed: cancel was not acknowledged in time"
    assert latency < 2.0, f"cancel acknowledged after {latency:.2f} s"
    assert submit(client, volume(), models["sigmoid"], SMALL).wait(timeout=60).masks.any()
    assert client.pid == pid
    assert_clean(client)


def test_sigkill_mid_run_gives_clear_error_and_next_run_starts_fresh_worker(client, models):
    job = start_long_job(client, models)
    old_pid, starts = client.pid, client.starts
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(WorkerError) as info:
        job.wait(timeout=30)
    assert info.value.reason == "crashed" and "SIGKILL" in info.value.message
    assert "Last worker log lines" in info.value.message and info.value.log_tail
    assert "next run starts a fresh worker" in info.value.hint
    assert_clean(client)
    assert submit(client, volume(), models["sigmoid"], SMALL).wait(timeout=120).masks.any()
    assert client.starts == starts + 1 and client.pid != old_pid
    assert_clean(client)


def fault_client(temp_root, fault, **kwargs):
    return WorkerRunner(temp_root=temp_root, env=worker_fault_env(fault), **kwargs)


def test_hung_worker_is_detected_by_heartbeat_timeout(temp_root, models):
    with fault_client(temp_root, "hang@hello", heartbeat_timeout_s=2.0) as c:
        job = submit(c, volume(), models["sigmoid"], SMALL)
        c.start()
        pid = c.hello["pid"]
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match="stopped responding") as info:
            job.wait(timeout=60)
        assert info.value.reason == "hang" and time.monotonic() - t0 < 6
        assert "no heartbeat for 2 s" in info.value.message and not pid_alive(pid)
        assert_clean(c)
    assert not os.path.exists(c.temp_dir)


def test_unacknowledged_cancel_kills_the_whole_process_tree(temp_root, models):
    with fault_client(temp_root, "hangtree@hello", heartbeat_timeout_s=60.0) as c:
        job = submit(c, volume(), models["sigmoid"], SMALL)
        wait_for(lambda: any(ln.startswith("child pid") for ln in c.log_tail), timeout=60)
        child = int(next(ln for ln in c.log_tail if ln.startswith("child pid")).split()[-1])
        assert pid_alive(child)
        t0 = time.monotonic()
        job.cancel()
        with pytest.raises(CancelledError, match="not acknowledged"):
            job.wait(timeout=30)
        assert 1.9 < time.monotonic() - t0 < 5
        wait_for(lambda: not pid_alive(child), timeout=5)
        assert_clean(c)
    assert not os.path.exists(c.temp_dir)


def test_malformed_messages_from_the_worker_are_a_protocol_error(temp_root, models):
    with fault_client(temp_root, "garbage@hello") as c:
        with pytest.raises(WorkerError, match="malformed message") as info:
            submit(c, volume(), models["sigmoid"], SMALL).wait(timeout=60)
        assert info.value.reason == "protocol" and any("not JSON" in ln for ln in info.value.log_tail)
        assert_clean(c)
    assert not os.path.exists(c.temp_dir)


def test_malformed_and_oversized_commands_are_rejected_and_worker_goes_on(temp_root):
    proc = subprocess.Popen(
        [sys.executable, "-m", "UNetSigmoidSegLib.worker", "--heartbeat", "30"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    try:
        assert decode(proc.stdout.readline(), WORKER_TYPES)["type"] == "hello"
        bad = [
            b"not json at all\n",
            b'{"type": "launch_missiles"}\n',
            b"[1, 2]\n",
            b'{"type": "run", "job": 5}\n',
            b"x" * (2 << 20) + b"\n",
        ]
        for line in bad:
            proc.stdin.write(line)
        proc.stdin.write(encode(make("cancel", job="nothing-running")))
        proc.stdin.write(encode(make("shutdown")))
        proc.stdin.flush()
        replies = [decode(line, WORKER_TYPES) for line in proc.stdout]
        errors = [r for r in replies if r["type"] == "error"]
        assert [e["kind"] for e in errors] == ["protocol"] * len(bad)
        assert "not JSON" in errors[0]["message"] and "unknown message type 'launch_missiles'" in errors[1]["message"]
        assert "over the" in errors[4]["message"]
        assert proc.wait(timeout=30) == 0  # explicit shutdown: clean exit
        assert set(CLIENT_TYPES) == {"load", "run", "cancel", "shutdown"}
    finally:
        proc.kill()


def test_worker_that_crashes_during_start_up(temp_root, models):
    with fault_client(temp_root, "segfault@start") as c:
        with pytest.raises(WorkerError, match="could not start") as info:
            submit(c, volume(), models["sigmoid"], SMALL).wait(timeout=60)
        assert "SIGSEGV" in info.value.message and any("Segmentation fault" in ln for ln in info.value.log_tail)
        assert_clean(c)
    assert not os.path.exists(c.temp_dir)


def test_worker_that_exits_with_a_queued_job(temp_root, models):
    with fault_client(temp_root, "exit@hello") as c:
        job = submit(c, volume(), models["sigmoid"], SMALL)
        with pytest.raises(WorkerError, match=r"died \(exit code 3\)") as info:
            job.wait(timeout=60)
        assert info.value.reason == "crashed" and "injected fault exit@hello" in info.value.message
        assert c.hello["protocol"] == PROTOCOL_VERSION and c.pid is None
        assert_clean(c)
    assert not os.path.exists(c.temp_dir)


def test_missing_interpreter(temp_root, models):
    with WorkerRunner(python_executable="/no/such/python3", temp_root=temp_root) as c:
        with pytest.raises(WorkerError, match="not found") as info:
            submit(c, volume(), models["sigmoid"], SMALL)
        assert info.value.reason == "start" and "torch and MONAI" in info.value.hint
        assert_clean(c)


def test_interpreter_without_torch_says_what_to_install(tmp_path, temp_root, models):
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=60)
    python = str(tmp_path / "bare" / "bin" / "python")
    with WorkerRunner(python_executable=python, temp_root=temp_root) as c:
        with pytest.raises(WorkerError, match="torch, monai") as info:
            submit(c, volume(), models["sigmoid"], SMALL).wait(timeout=60)
        assert info.value.reason == "missing_dependency" and python in info.value.message
        assert (
            "-m pip install numpy torch monai SimpleITK" in info.value.hint and "PyTorch extension" in info.value.hint
        )
        assert_clean(c)
    assert time.monotonic() - t0 < 20


def test_idle_worker_exits_and_temp_folders_are_removed(temp_root):
    c = WorkerRunner(temp_root=temp_root, idle_timeout_s=1.0)
    hello = c.start()
    pid = hello["pid"]
    assert (
        hello["protocol"] == PROTOCOL_VERSION
        and hello["torch"] == torch.__version__
        and hello["cuda"] == torch.cuda.is_available()
    )
    assert hello["monai"] and hello["python"]
    wait_for(lambda: c.pid is None, timeout=20)
    assert not pid_alive(pid) and any("idle for 1 s: shutting down" in ln for ln in c.log_tail)
    assert_clean(c)
    folder = c.temp_dir
    c.close()
    assert not os.path.exists(folder)
