"""Runner conformance: one set of tests run against every runner — in-process, the worker process and a real server
on loopback (and any runner added later: add it to ``RUNNERS``). Each must give the engine's result voxel for voxel,
stream progress in stage order, stop within a window of a cancel, raise the same typed errors, deliver each warning
once and reuse its warm model. Real torch, MONAI, subprocesses and HTTP; nothing is mocked."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "Testing" / "remote"))
from remote_fixtures import Server, ct_volume, long_volume, make_models  # noqa: E402
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions  # noqa: E402
from UNetSigmoidSegLib.contract.messages import TERMINAL, Log, Progress, Result  # noqa: E402
from UNetSigmoidSegLib.contract.runner import Job, Runner  # noqa: E402
from UNetSigmoidSegLib.engine.loading.model import load_model  # noqa: E402
from UNetSigmoidSegLib.engine.running.pipeline import segment  # noqa: E402
from UNetSigmoidSegLib.errors import CancelledError, ModelError, OptionError  # noqa: E402
from UNetSigmoidSegLib.runners import make_runner  # noqa: E402

RUNNERS = ("in-process", "worker", "remote", "ray")
OPTIONS = SegmentOptions(device="cpu", roi_size=[32, 32, 16])
LONG = SegmentOptions(device="cpu", roi_size=[16, 16, 16], overlap=0.5)
STAGES = ("load", "preprocess", "inference", "postprocess")


class Subject:
    """A runner under test and how it names the models of ``models`` (a path locally, a name on the server)."""

    def __init__(self, name: str, runner, models: Path, remote: bool) -> None:
        self.name, self.runner, self.models, self.remote = name, runner, models, remote

    def spec(self, model: str) -> ModelSpec:
        return ModelSpec(name=model) if self.remote else ModelSpec(str(self.models / f"{model}.pt"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = make_models(tmp_path_factory.mktemp("models"))
    (folder / "broken.pt").write_bytes(b"not a checkpoint at all")
    return folder


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    srv = Server(models, tmp_path_factory.mktemp("server"), "--client-timeout", "30")
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=RUNNERS)
def subject(request, models):
    if request.param == "remote":
        srv = request.getfixturevalue("server")
        runner = make_runner(server=srv.url, token=srv.token)
    elif request.param == "ray":  # a private local Ray cluster, one warm actor
        from UNetSigmoidSegLib.runners.ray_pool import RayRunner

        runner = RayRunner(replicas=1, num_cpus=2)
    else:
        runner = make_runner(worker=request.param == "worker", worker_python=sys.executable)
    yield Subject(request.param, runner, models, request.param == "remote")
    runner.close()


def test_every_runner_implements_the_protocol_and_says_where_it_runs(subject):
    assert isinstance(subject.runner, Runner)
    assert subject.runner.runs_here is (subject.name in ("in-process", "worker"))  # Ray: on its cluster
    job = subject.runner.inspect(subject.spec("tiny"))
    assert isinstance(job, Job)
    info = job.wait(timeout=300)
    assert info.in_channels == 1 and info.labels == ["body"]
    assert subject.runner.describe() is not None or subject.remote  # a server answers in the background


def test_same_result_as_the_engine_voxel_for_voxel(subject):
    volume = ct_volume()
    expected = segment(volume, load_model(str(subject.models / "tiny.pt")), OPTIONS)
    got = subject.runner.submit(volume, subject.spec("tiny"), OPTIONS).wait(timeout=300)
    assert np.array_equal(got.masks, expected.masks) and got.masks.any() and (~got.masks).any()
    assert np.array_equal(got.probabilities.quantized, expected.probabilities.quantized)
    assert (got.labels, got.thresholds, got.activation) == (expected.labels, expected.thresholds, expected.activation)
    assert np.array_equal(got.affine, expected.affine) and got.warnings == expected.warnings


def test_kept_probabilities_travel_exactly(subject):
    """``keep_probabilities`` (a probability file) brings the float32 probabilities back bit for bit, and
    re-thresholds on them equal the engine's float thresholds."""
    volume, options = ct_volume(), SegmentOptions(device="cpu", roi_size=[32, 32, 16], keep_probabilities=True)
    expected = segment(volume, load_model(str(subject.models / "tiny.pt")), options)
    got = subject.runner.submit(volume, subject.spec("tiny"), options).wait(timeout=300)
    assert got.probabilities.exact.dtype == np.float32
    assert np.array_equal(got.probabilities.exact, expected.probabilities.exact)
    assert np.array_equal(got.rethreshold(0.37), expected.probabilities.exact >= 0.37)


def test_progress_in_stage_order_and_one_terminal_message_last(subject):
    job = subject.runner.submit(ct_volume(), subject.spec("tiny"), OPTIONS)
    messages = []
    deadline = time.time() + 300
    while not job.done or not any(isinstance(m, TERMINAL) for m in messages):
        messages += job.poll()
        assert time.time() < deadline, messages[-3:]
        time.sleep(0.01)
    messages += job.poll()
    assert [type(m) for m in messages if isinstance(m, TERMINAL)] == [Result] and isinstance(messages[-1], Result)
    engine = [(m.stage, m.fraction) for m in messages if isinstance(m, Progress) and m.stage in STAGES]
    ranks = [STAGES.index(stage) for stage, _ in engine]
    assert ranks == sorted(ranks) and {"preprocess", "inference", "postprocess"} <= {s for s, _ in engine}
    inference = [f for s, f in engine if s == "inference"]
    assert inference == sorted(inference) and inference[-1] == 1.0
    assert engine[-1] == ("postprocess", 1.0)
    assert any(isinstance(m, Log) and m.message.startswith("device: cpu") for m in messages)
    assert job.wait(timeout=0).masks.any()


def test_cancel_stops_within_a_window_and_nothing_is_returned(subject):
    job = subject.runner.submit(long_volume(), subject.spec("tiny"), LONG)
    seen = []

    def progress(stage, fraction, message):
        seen.append((stage, fraction))
        if stage == "inference" and fraction > 0:
            job.cancel()

    with pytest.raises(CancelledError):
        job.wait(timeout=300, progress=progress)
    inference = [f for s, f in seen if s == "inference"]
    assert inference and inference[-1] < 0.5, inference[-5:]  # stopped at a window, long before the end
    assert not any(s == "postprocess" for s, _ in seen) and job.done


@pytest.mark.parametrize(
    "model, options, error, text",
    [
        (
            "tiny",
            SegmentOptions(device="cpu", activation="softmax"),
            OptionError,
            "Softmax needs at least 2 output channels",
        ),
        ("tiny", SegmentOptions(device="cpu", threshold=[0.3, 0.5, 0.7]), OptionError, "3 thresholds"),
        ("broken", SegmentOptions(device="cpu"), ModelError, ""),
    ],
    ids=["softmax-on-one-channel", "threshold-count", "broken-model"],
)
def test_errors_are_typed_the_same_everywhere(subject, model, options, error, text):
    job = subject.runner.submit(ct_volume(), subject.spec(model), options)
    with pytest.raises(error) as raised:
        job.wait(timeout=300)
    assert type(raised.value) is error and text in str(raised.value)
    assert raised.value.hint, "every user error says what to do"


def test_each_warning_is_delivered_once_and_is_in_the_result(subject):
    lines = []
    options = SegmentOptions(device="cpu", roi_size=[32, 32, 16], threshold=0.0)  # every voxel: a loud warning
    result = subject.runner.submit(ct_volume(), subject.spec("tiny"), options).wait(timeout=300, log=lines.append)
    warned = [line for line in lines if line.startswith("warning: ")]
    assert result.warnings and any("covers 100%" in w for w in result.warnings)
    assert warned == ["warning: " + w for w in result.warnings]


def test_the_warm_model_is_reused(subject):
    first = subject.runner.submit(ct_volume(), subject.spec("tiny2"), OPTIONS)
    first.wait(timeout=300)
    again = subject.runner.submit(ct_volume(), subject.spec("tiny2"), OPTIONS)
    again.wait(timeout=300)
    assert again.info.cache_hit is True and again.info.load_count == first.info.load_count
    summary = again.info.summary()
    sections = {"remote": {"server"}, "worker": {"worker"}, "ray": {"ray"}}
    assert set(summary) == sections.get(subject.name, set())
