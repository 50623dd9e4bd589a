"""The Slicer logic on a real slicer-core scene with a ``RemoteRunner``: the same segments as a local run, a
threshold move makes no request, and a network drop (a test-owned TCP proxy cut from outside) mid-upload or
mid-job ends in a clear error with nothing written into the scene and the server freeing the job."""

import os
import re
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from remote_fixtures import (
    FaultProxy,
    ct_volume,
    long_volume,
    models_dir_fixture,  # noqa: F401 - fixture
    server_fixture,  # noqa: F401 - fixture
)
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, Volume
from UNetSigmoidSegLib.errors import RemoteError

sys.path.insert(0, str(REPO / "Testing" / "mrml"))
from mrml_helpers import add_volume, export_segment, volume_hash  # noqa: E402

pytestmark = pytest.mark.skipif(os.name != "posix", reason="servers are stopped with POSIX signals")


@pytest.fixture(autouse=True)
def nothing_left_on_the_server(server):
    yield
    server.wait_idle(timeout=60)
    assert server.temp_entries() == []


@pytest.fixture
def proxy(server):
    p = FaultProxy(server.port)
    yield p
    p.close()


def scene_with(volume_array):
    from UNetSigmoidSegLib.mrml.scene import create_headless_scene

    scene = create_headless_scene()
    node = add_volume(scene, volume_array)
    user = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user")
    user.SetReferenceImageGeometryParameterFromVolumeNode(node)
    segment = user.GetSegmentation().AddEmptySegment("tumour", "tumour", [0.1, 0.8, 0.1])
    return scene, node, user, segment


def test_the_logic_gives_the_same_segments_remotely_and_a_threshold_move_makes_no_request(server, models_dir):
    from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic

    scene, node, _user, _segment = scene_with(ct_volume().array[0])
    local = UNetSigmoidSegLogic(scene)
    runner = server.runner()
    remote = UNetSigmoidSegLogic(scene, runner=runner)
    options = {"device": "cpu", "roiSize": [32, 32, 16], "threshold": 0.5}
    seg_local = local.segment(node, str(models_dir / "tiny2.pt"), **options)
    seg_remote = remote.segment(node, "tiny2", **options)  # a name: the server's model
    assert seg_remote.GetAttribute("UNetSigmoidSeg.Model") == "tiny2"
    assert [s["voxels"] for s in local.statistics(seg_local)] == [s["voxels"] for s in remote.statistics(seg_remote)]
    requests = runner.counters.requests
    health = server.runner().health()["requests"]
    for t in (0.2, 0.35, 0.8):
        local.setThreshold(seg_local, t)
        remote.setThreshold(seg_remote, t)
        assert [s["voxels"] for s in local.statistics(seg_local)] == [
            s["voxels"] for s in remote.statistics(seg_remote)
        ]
    assert runner.counters.requests == requests  # the threshold is local: no network traffic
    assert server.runner().health()["requests"] == health + 1  # only this health request reached the server
    remote.cleanup()
    local.cleanup()


def test_a_local_runner_refuses_a_server_model_name_clearly(server):
    from UNetSigmoidSegLib.errors import ModelError
    from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic

    scene, node, _user, _segment = scene_with(np.zeros((16, 16, 8), np.int16))
    with pytest.raises(ModelError, match="'tiny2' is a server model name"):
        UNetSigmoidSegLogic(scene).segment(node, "tiny2", device="cpu")


def _poll_until_done(handle, timeout=180.0):
    deadline = time.time() + timeout
    while not handle.poll():
        assert time.time() < deadline, "the run did not end"
        time.sleep(0.05)


@pytest.mark.parametrize("when", ["upload", "job"])
def test_a_network_drop_ends_in_a_clear_error_and_nothing_is_written(server, proxy, when):
    from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic

    array = long_volume().array[0]
    if when == "upload":  # incompressible voxels, so the upload takes many chunks
        array = np.random.default_rng(0).normal(0, 500, (160, 160, 100)).astype(np.float32)
    scene, node, user, segment = scene_with(array)
    before = {
        "volume": volume_hash(node),
        "user": export_segment(scene, user, segment, node).tobytes(),
        "nodes": scene.GetNumberOfNodes(),
        "segments": list(user.GetSegmentation().GetSegmentIDs()),
    }
    from UNetSigmoidSegLib.runners.remote import RemoteRunner

    runner = RemoteRunner(proxy.url, token=server.token, reconnect_s=2.0, poll_wait_s=1.0)  # through the proxy
    logic = UNetSigmoidSegLogic(scene, runner=runner)
    stages = []
    if when == "upload":
        proxy.cut_after(2_000_000)
    handle = logic.segmentAsync(
        node,
        "tiny",
        device="cpu",
        roiSize=[16, 16, 16],
        overlap=0.5,
        outputSegmentation=user,
        probabilityVolume=True,
        onProgress=lambda s, f, m: stages.append((s, f)),
    )
    if when == "job":
        deadline = time.time() + 120
        while not any(s == "inference" and f > 0 for s, f in stages):
            handle.poll()
            assert time.time() < deadline and not handle.done, stages
            time.sleep(0.02)
        proxy.cut()
    _poll_until_done(handle)
    error = handle.error
    assert isinstance(error, RemoteError) and error.reason == "connection", repr(error)
    doing = "while sending the volume" if when == "upload" else "during the run"
    assert doing in str(error) and "run again" in error.hint.lower()
    assert not logic.isRunning
    after_segments = list(user.GetSegmentation().GetSegmentIDs())
    assert after_segments == before["segments"] and scene.GetNumberOfNodes() == before["nodes"]
    assert export_segment(scene, user, segment, node).tobytes() == before["user"]
    assert volume_hash(node) == before["volume"]
    # the server notices the silent client (--client-timeout 5 s): it cancels the job, or frees its uncollected result
    server.wait_idle(timeout=60)
    assert server.temp_entries() == []
    deadline = time.time() + 30
    while server.runner().health()["held"]:
        assert time.time() < deadline, server.log()[-2000:]
        time.sleep(0.2)
    if when == "job":
        assert re.search(r"no word from 127.0.0.1|did not collect it for 5 s, freed", server.log())
    else:
        assert "disconnected while sending" in server.log()
    logic.cleanup()


def test_the_logic_after_a_failed_remote_run_works_again(server):
    from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic

    scene, node, _user, _segment = scene_with(ct_volume().array[0])
    runner = server.runner()
    logic = UNetSigmoidSegLogic(scene, runner=runner)
    with pytest.raises(Exception, match="no model 'missing'"):
        logic.segment(node, "missing", device="cpu")
    seg = logic.segment(node, ModelSpec(name="tiny"), SegmentOptions(device="cpu", roi_size=[32, 32, 16]))
    assert logic.statistics(seg)[0]["segment"] == "body"
    volume = Volume(ct_volume().array, np.eye(4))
    assert runner.submit(volume, ModelSpec(name="tiny"), SegmentOptions(device="cpu")).wait(300).masks.shape[0] == 1
    logic.cleanup()
