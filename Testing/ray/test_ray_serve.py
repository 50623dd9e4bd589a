"""``serve --ray``: the same HTTP API with its jobs on a Ray cluster's warm model replicas (a real local cluster
the server starts, a real server on 127.0.0.1, the real client). Two replicas run two jobs at once; an actor killed
mid-job has its job re-run once on the restarted actor with the engine's answer; cancel still stops a job."""

import signal
import sys
import time

import numpy as np
import psutil
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "Testing" / "remote"))
from remote_fixtures import Server, ct_volume, long_volume, make_models, wait_for_stage  # noqa: E402
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions  # noqa: E402
from UNetSigmoidSegLib.engine.loading.model import load_model  # noqa: E402
from UNetSigmoidSegLib.engine.running.pipeline import segment  # noqa: E402
from UNetSigmoidSegLib.errors import CancelledError  # noqa: E402

pytestmark = pytest.mark.slow
LONG = SegmentOptions(device="cpu", backend="torch", roi_size=[16, 16, 16], overlap=0.5)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    srv = Server(models, tmp_path_factory.mktemp("server"), "--ray", "--ray-replicas", "2", "--ray-threads", "1")
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def expected(models):
    return segment(long_volume(), load_model(str(models / "tiny.pt")), LONG)


def actors():
    """The pool's actor processes (Ray titles them ``ray::EngineActor…``)."""
    return [p for p in psutil.process_iter(["cmdline"]) if " ".join(p.info["cmdline"] or []).startswith("ray::Engine")]


def test_two_replicas_run_two_jobs_at_once_with_the_engines_answer(server, expected):
    runner = server.runner()
    warm = [runner.submit(ct_volume(), ModelSpec(name="tiny"), LONG) for _ in range(2)]  # both replicas load it
    for job in warm:
        job.wait(timeout=600)
    first = runner.submit(long_volume(), ModelSpec(name="tiny"), LONG)
    wait_for_stage(first)
    assert runner.health()["busy"] is False  # one replica still free
    second = runner.submit(long_volume(), ModelSpec(name="tiny"), LONG)
    wait_for_stage(second)
    assert runner.health()["busy"] is True and len(actors()) == 2  # both at once, each on its own actor
    for job in (first, second):
        got = job.wait(timeout=600)
        assert np.array_equal(got.masks, expected.masks) and got.masks.any()
        assert np.array_equal(got.probabilities.quantized, expected.probabilities.quantized)
    runner.close()


def test_an_actor_killed_mid_job_reruns_the_job_once(server, expected):
    runner = server.runner()
    job = runner.submit(long_volume(), ModelSpec(name="tiny"), LONG)
    wait_for_stage(job)
    victims = actors()
    for victim in victims:  # the one running the job among them
        victim.send_signal(signal.SIGKILL)
    got = job.wait(timeout=600)
    assert np.array_equal(got.masks, expected.masks)
    assert not {v.pid for v in victims} & {p.pid for p in actors()}  # it ran on restarted actors
    runner.close()


def test_cancel_reaches_the_actor(server):
    runner = server.runner()
    job = runner.submit(long_volume(), ModelSpec(name="tiny"), LONG)
    wait_for_stage(job)
    job.cancel()
    with pytest.raises(CancelledError):
        job.wait(timeout=120)
    deadline = time.monotonic() + 60
    while runner.health()["busy"] or " cancelled in " not in server.log():
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.2)
    # the actor stopped between windows: the server's job ended cancelled, not with a result
    assert f"job {job.info.server_job[:6]} cancelled in" in server.log()
    runner.close()
