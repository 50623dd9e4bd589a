"""The Slicer side goes through the same validator: the panel's model summary (what picking a model does), the
logic's runs in process and in the worker. A hostile model is a clear ``ModelError``; nothing runs, no node
is created, the input volume node is untouched."""

import sys

import pytest
import torch
from hostile import REPO, UNET_DEF, guard, make_bundle  # noqa: F401

from conftest import blob_volume, tiny_unet
from UNetSigmoidSegLib.contract.model import ModelSpec
from UNetSigmoidSegLib.errors import ModelError
from UNetSigmoidSegLib.runners.inprocess import InProcessRunner
from UNetSigmoidSegLib.runners.worker import WorkerRunner
from UNetSigmoidSegLib.widget.summary import ModelSummaries

sys.path.insert(0, str(REPO / "Testing" / "mrml"))

from mrml_helpers import add_volume, volume_hash  # noqa: E402


def _hostile_bundle(tmp_path, marker):
    network = {**UNET_DEF, "_requires_": [{"_target_": "run_cmd", "cmd_list": ["touch", marker]}]}
    return make_bundle(tmp_path / "bundle", network_def=network)


EXPECT = r"network_def\._requires_ would run other config items first.*Nothing was run"


def test_panel_model_summary_shows_the_refusal(tmp_path, guard):  # noqa: F811
    root = _hostile_bundle(tmp_path, guard.marker())
    summaries = ModelSummaries()
    text = summaries.request(root, False, InProcessRunner())
    assert summaries.info is None and "Refused configs/inference.json" in text and "--trust-bundle" in text


def test_logic_in_process_refuses_and_creates_nothing(tmp_path, guard, scene):  # noqa: F811
    from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic

    node = add_volume(scene, blob_volume((24, 20, 12)))
    before = volume_hash(node)
    logic = UNetSigmoidSegLogic(scene)
    with pytest.raises(ModelError, match=EXPECT):
        logic.segment(node, _hostile_bundle(tmp_path, guard.marker()), device="cpu")
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    assert volume_hash(node) == before and not logic.isRunning


def test_worker_gives_the_same_refusal_as_in_process(tmp_path, guard):  # noqa: F811
    spec = ModelSpec(_hostile_bundle(tmp_path, guard.marker()))
    with pytest.raises(ModelError) as local:
        InProcessRunner().inspect(spec).wait()
    with WorkerRunner(temp_root=str(guard.temp)) as runner, pytest.raises(ModelError) as remote:
        runner.inspect(spec).wait()
    assert remote.value.message == local.value.message and remote.value.hint == local.value.hint


def test_logic_through_the_worker_with_a_hostile_checkpoint_config(tmp_path, guard, scene):  # noqa: F811
    from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic

    path = tmp_path / "model.pt"
    config = {"network": {**UNET_DEF, "_mode_": "debug"}}
    torch.save({"state_dict": tiny_unet(channels=(4, 8, 16)).state_dict(), "config": config}, path)
    node = add_volume(scene, blob_volume((24, 20, 12)))
    with WorkerRunner(temp_root=str(guard.temp)) as runner:
        logic = UNetSigmoidSegLogic(scene, runner=runner)
        with pytest.raises(ModelError, match=r"network\._mode_ = 'debug' would start the Python debugger"):
            logic.segment(node, str(path), device="cpu")
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
