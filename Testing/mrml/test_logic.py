"""The Slicer logic on a real slicer-core scene: geometry, segments, live threshold, edits, safety, parameters."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
import slicerio
import vtk

from conftest import blob_volume
from mrml_helpers import add_volume, export_segment, volume_hash
from slicer58 import REAL_SEGMENT
from UNetSigmoidSegLib.contract.options import SegmentOptions
from UNetSigmoidSegLib.engine.loading.model import load_model
from UNetSigmoidSegLib.engine.running.pipeline import segment
from UNetSigmoidSegLib.errors import CancelledError, InputError, UserError
from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
from UNetSigmoidSegLib.mrml.parameters import (
    Parameters,
    get_parameter_node,
    read_parameters,
    set_reference,
    write_parameters,
)
from UNetSigmoidSegLib.mrml.volumes import volume_to_engine


@pytest.mark.parametrize("flip", [False, True])
def test_geometry_round_trip_matches_engine_voxel_for_voxel(scene, model_file, flip):
    vol = add_volume(scene, blob_volume((37, 29, 19)), spacing=(0.7, 1.3, 3.1), angle=28, flip=flip)
    path = model_file(out_channels=2, seed=3)
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.segment(vol, path, activation="sigmoid", multiLabel=True, threshold=0.5, device="cpu")
    engine = segment(
        volume_to_engine(vol),
        load_model(path),
        SegmentOptions(activation="sigmoid", multi_label=True, threshold=0.5, device="cpu"),
    )
    ids = list(seg.GetSegmentation().GetSegmentIDs())
    assert len(ids) == 2
    for channel, sid in enumerate(ids):
        exported = export_segment(scene, seg, sid, vol)
        assert exported.shape == (19, 29, 37)
        np.testing.assert_array_equal(exported > 0, engine.masks[channel].T)
        assert 0 < exported.sum() < exported.size


def test_seg_nrrd_saved_by_slicer_loads_in_slicerio(scene, model_file, tmp_path):
    vol = add_volume(scene, blob_volume((30, 26, 16)), angle=15)
    logic = UNetSigmoidSegLogic(scene)
    path = model_file(out_channels=2, seed=1)
    import json

    (tmp_path / "model.json").write_text(json.dumps({"labels": ["liver", "spleen"]}))
    seg = logic.segment(vol, path, device="cpu", activation="sigmoid", multiLabel=True)
    storage = seg.CreateDefaultStorageNode()
    out = str(tmp_path / "result.seg.nrrd")
    storage.SetFileName(out)
    assert storage.WriteData(seg)
    data = slicerio.read_segmentation(out)
    names = [s["name"] for s in data["segments"]]
    assert names == ["liver", "spleen"]
    colors = {s["name"]: s["color"] for s in data["segments"]}
    segmentation = seg.GetSegmentation()
    for sid in segmentation.GetSegmentIDs():
        s = segmentation.GetSegment(sid)
        np.testing.assert_allclose(colors[s.GetName()], s.GetColor(), atol=1e-3)
    liver = [s for s in data["segments"] if s["name"] == "liver"][0]
    assert liver["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    assert liver["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
    m = vtk.vtkMatrix4x4()
    vol.GetIJKToRASMatrix(m)
    ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(data["ijkToLPS"], np.diag([-1, -1, 1, 1]) @ ras, atol=1e-4)
    stats = {s["segment"]: s["voxels"] for s in logic.statistics(seg)}
    for s in data["segments"]:
        assert slicerio.segment_mask(data, s).sum() == stats[s["name"]]


def test_terminology_is_set_through_a_tag_that_slicer_5_8_has(scene, model_file, monkeypatch):
    """``vtkSegment.SetTerminology`` exists only from Slicer 5.10: the module sets the terminology tag itself, which
    every release reads the same way. Runs with Slicer 5.8's vtkSegment (Testing/mrml/slicer58.py)."""
    import json

    from slicer58 import Segment58

    monkeypatch.setattr(slicer, "vtkSegment", Segment58)
    vol = add_volume(scene, blob_volume((20, 18, 10)))
    path = model_file(out_channels=1, seed=2)
    (Path(path).parent / "model.json").write_text(json.dumps({"labels": ["brain"]}))  # the demo model's label
    seg = UNetSigmoidSegLogic(scene).segment(vol, path, device="cpu")
    segmentation = seg.GetSegmentation()
    [segment] = [segmentation.GetSegment(sid) for sid in segmentation.GetSegmentIDs()]
    assert isinstance(segment, Segment58)
    tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    assert tag == "TerminologyEntry"
    entry = vtk.mutable("")
    assert segment.GetTag(tag, entry)
    assert "~SCT^12738006^Brain~" in str(entry) and "SCT^123037004^Anatomical Structure" in str(entry)
    if hasattr(REAL_SEGMENT, "GetTerminology"):  # the 5.10+ accessor reads the very same tag
        assert REAL_SEGMENT.GetTerminology(segment) == str(entry)


def test_class_level_slicer_calls_exist_in_every_checked_release():
    """Calls on a Slicer class (static methods such as ``vtkSegment.GetTerminologyEntryTagName``) never reach
    slicer58.py's profiler: each one in the module's source must be declared at every release of slicer_api.json."""
    import re

    from slicer58 import PRODUCT, RELEASES, is_slicer_class, missing_at

    calls = set()
    for path in Path(PRODUCT).rglob("*.py"):
        calls |= {(m[0], m[1], path.name) for m in re.findall(r"slicer\.(vtk\w+)\.([A-Z]\w*)\(", path.read_text())}
    assert {c[:2] for c in calls} >= {("vtkSegment", "GetTerminologyEntryTagName")}
    assert RELEASES[:2] == ["5.8.0", "5.10.0"]
    wrong = []
    for cls, method, where in sorted(calls):
        chain = [c.__name__ for c in getattr(slicer, cls).__mro__ if is_slicer_class(c)]
        if missing_at(chain, method):
            wrong.append(f"{where}: {cls}.{method} missing at {missing_at(chain, method)}")
    assert not wrong, wrong
    assert missing_at(["vtkSegment"], "SetTerminology") == ["5.8.0"]  # the table knows what 5.8 lacks


def test_threshold_moves_update_segments_in_place(scene, model_file):
    vol = add_volume(scene, blob_volume((32, 28, 16)))
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.segment(vol, model_file(out_channels=2, seed=5), activation="sigmoid", multiLabel=True, device="cpu")
    ids = list(seg.GetSegmentation().GetSegmentIDs())
    image_before = seg.GetSegmentation().GetSegment(ids[0]).GetRepresentation("Binary labelmap")
    counts = {}
    for t in (0.0, 0.3, 0.5, 0.7, 1.0):
        logic.setThreshold(seg, t)
        counts[t] = [s["voxels"] for s in logic.statistics(seg)]
        exported = export_segment(scene, seg, ids[0], vol)
        assert exported.sum() == counts[t][0]
    n = 32 * 28 * 16
    assert counts[0.0] == [n, n]
    assert counts[0.0][0] >= counts[0.3][0] >= counts[0.5][0] >= counts[0.7][0] >= counts[1.0][0]
    assert counts[0.3][0] > counts[0.7][0]
    logic.setThreshold(seg, [0.0, 1.0])  # per segment
    per = [s["voxels"] for s in logic.statistics(seg)]
    assert per[0] == n and per[1] == counts[1.0][1]
    assert seg.GetSegmentation().GetSegment(ids[0]).GetRepresentation("Binary labelmap") is image_before  # in place
    with pytest.raises(UserError, match="outside"):
        logic.setThreshold(seg, 1.2)


def test_softmax_segments_and_minimum_confidence(scene, model_file):
    vol = add_volume(scene, blob_volume((30, 24, 16)))
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.segment(vol, model_file(out_channels=3, seed=2), activation="softmax", device="cpu")
    stats = logic.statistics(seg)
    assert len(stats) == 2
    a = export_segment(scene, seg, stats[0]["segmentID"], vol)
    b = export_segment(scene, seg, stats[1]["segmentID"], vol)
    assert not np.logical_and(a, b).any()
    total = sum(s["voxels"] for s in stats)
    logic.setThreshold(seg, 0.7)
    assert sum(s["voxels"] for s in logic.statistics(seg)) < total


def test_existing_user_segments_are_preserved(scene, model_file):
    vol = add_volume(scene, blob_volume((30, 24, 16)))
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(vol)
    user_id = seg.GetSegmentation().AddEmptySegment("tumour", "tumour", [0.1, 0.9, 0.1])
    mask = np.zeros((16, 24, 30), np.uint8)
    mask[4:9, 5:15, 6:20] = 1
    _set_labelmap(scene, seg, user_id, vol, mask)
    before = export_segment(scene, seg, user_id, vol)
    logic = UNetSigmoidSegLogic(scene)
    out = logic.segment(vol, model_file(), device="cpu", outputSegmentation=seg)
    assert out is seg
    logic.setThreshold(seg, 0.2)
    out = logic.segment(
        vol, model_file(seed=9, name="other.pt"), device="cpu", outputSegmentation=seg
    )  # second run replaces only ours
    ids = list(seg.GetSegmentation().GetSegmentIDs())
    assert user_id in ids and len(ids) == 2
    np.testing.assert_array_equal(export_segment(scene, seg, user_id, vol), before)
    assert seg.GetSegmentation().GetSegment(user_id).GetName() == "tumour"


def _set_labelmap(scene, seg, segment_id, reference, mask_kji):
    """Write a segment the way Slicer's editor effects do (SetBinaryLabelmapToSegment)."""
    image = slicer.vtkOrientedImageData()
    k, j, i = mask_kji.shape
    image.SetExtent(0, i - 1, 0, j - 1, 0, k - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    from vtk.util import numpy_support

    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask_kji.ravel()
    m = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(m)
    image.SetImageToWorldMatrix(m)
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, seg, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    )


def _segment_then_edit_first(scene, model_file):
    """Segment (2 sigmoid outputs), then edit the first produced segment the way Slicer's editor does."""
    vol = add_volume(scene, blob_volume((30, 24, 16)))
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.segment(vol, model_file(out_channels=2, seed=4), activation="sigmoid", multiLabel=True, device="cpu")
    ids = list(seg.GetSegmentation().GetSegmentIDs())
    edit = np.zeros((16, 24, 30), np.uint8)
    edit[2:5, 2:5, 2:5] = 1
    _set_labelmap(scene, seg, ids[0], vol, edit)
    return logic, vol, seg, ids, edit


def test_manual_edit_is_respected(scene, model_file):
    logic, vol, seg, ids, edit = _segment_then_edit_first(scene, model_file)
    updated = logic.setThreshold(seg, 0.1)
    assert updated == [ids[1]]
    np.testing.assert_array_equal(export_segment(scene, seg, ids[0], vol), edit)
    notes = {s["segmentID"]: s["note"] for s in logic.statistics(seg)}
    assert notes[ids[0]] == "edited by the user" and notes[ids[1]] == ""
    seg.GetSegmentation().RemoveSegment(ids[1])
    assert logic.setThreshold(seg, 0.5) == []


def test_input_volume_never_modified_and_no_temporary_nodes(scene, model_file):
    vol = add_volume(scene, (blob_volume((30, 24, 16)) * 10).astype(np.int16))
    digest = volume_hash(vol)
    logic = UNetSigmoidSegLogic(scene)
    before = scene.GetNumberOfNodes()
    seg = logic.segment(vol, model_file(), device="cpu", probabilityVolume=True, largestComponent=True, fillHoles=True)
    logic.setThreshold(seg, 0.3)
    assert volume_hash(vol) == digest
    classes = sorted(scene.GetNthNode(i).GetClassName() for i in range(before, scene.GetNumberOfNodes()))
    assert "vtkMRMLLabelMapVolumeNode" not in classes
    assert classes.count("vtkMRMLSegmentationNode") == 1 and classes.count("vtkMRMLScalarVolumeNode") == 1


def test_probability_volume(scene, model_file):
    vol = add_volume(scene, blob_volume((30, 24, 16)))
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.segment(vol, model_file(), device="cpu", probabilityVolume=True)
    prob = seg.GetNodeReference("UNetSigmoidSeg.Probabilities")
    from vtk.util import numpy_support

    arr = numpy_support.vtk_to_numpy(prob.GetImageData().GetPointData().GetScalars())
    assert arr.min() >= 0 and arr.max() <= 1 and arr.dtype == np.float32
    assert prob.GetImageData().GetDimensions() == (30, 24, 16)
    assert prob.GetDisplayNode().GetColorNodeID() in (
        "vtkMRMLColorTableNodeFileInferno.txt",
        "vtkMRMLPETProceduralColorNodePET-Heat",
    )
    mask = export_segment(scene, seg, list(seg.GetSegmentation().GetSegmentIDs())[0], vol)
    np.testing.assert_array_equal(mask.ravel() > 0, arr >= 0.5)


def test_review_table_and_histogram_follow_the_threshold(scene, model_file):
    vol = add_volume(scene, blob_volume((30, 24, 16)))
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.segment(vol, model_file(), device="cpu")
    live = logic.liveResult(seg)
    logic.setThreshold(seg, 0.35)
    table = live.table.GetTable()
    assert table.GetValueByName(0, "Threshold").ToDouble() == pytest.approx(0.35)
    assert table.GetValueByName(0, "Voxels").ToDouble() == logic.statistics(seg)[0]["voxels"]
    chart, hist_table = live.plot[0], live.plot[1].GetTable()
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    assert hist_table.GetValueByName(0, "threshold_x").ToDouble() == pytest.approx(0.35)
    assert (
        sum(hist_table.GetValueByName(r, "voxels").ToDouble() for r in range(hist_table.GetNumberOfRows()))
        >= 30 * 24 * 16
    )
    # the user deletes the review nodes: the next threshold move makes new ones in the scene, never writes the dead
    old_table, old_chart = live.table, live.plot[0]
    scene.RemoveNode(old_table)
    scene.RemoveNode(old_chart)
    logic.setThreshold(seg, 0.4)
    assert live.table is not old_table and live.table.GetScene() is scene
    assert live.plot[0] is not old_chart and all(n.GetScene() is scene for n in live.plot)
    assert live.table.GetTable().GetValueByName(0, "Threshold").ToDouble() == pytest.approx(0.4)
    assert live.plot[0].GetNumberOfPlotSeriesNodes() == 2
    assert scene.GetNodesByClass("vtkMRMLPlotChartNode").GetNumberOfItems() == 1  # the old set's survivors went


@pytest.mark.parametrize(
    "case,match",
    [
        ("vector", "not a scalar volume"),
        ("transform", "not hardened"),
        ("empty", "no voxels"),
        ("none", "No input volume"),
    ],
)
def test_bad_volume_nodes(scene, model_file, case, match):
    logic = UNetSigmoidSegLogic(scene)
    if case == "vector":
        node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    elif case == "transform":
        node = add_volume(scene, blob_volume((20, 20, 10)))
        tr = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t")
        node.SetAndObserveTransformNodeID(tr.GetID())
    elif case == "empty":
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    else:
        node = None
    with pytest.raises(InputError, match=match):
        logic.segment(node, model_file(), device="cpu")


def test_scene_close_mid_run_cancels_cleanly(scene, model_file):
    vol = add_volume(scene, blob_volume((64, 64, 32)))
    logic = UNetSigmoidSegLogic(scene)

    def close_on_inference(stage, fraction, message):
        if stage == "inference" and fraction > 0:
            scene.Clear(0)

    handle = logic.segmentAsync(vol, model_file(), device="cpu", roiSize=[16, 16, 16], onProgress=close_on_inference)
    with pytest.raises(CancelledError, match="scene was closed"):
        handle.wait()
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert not logic.isRunning
    vol2 = add_volume(scene, blob_volume((20, 20, 10)))
    assert logic.segment(vol2, model_file(), device="cpu") is not None  # the next run works


def remove_at_first_window(scene, doomed, handle_box):
    """A progress callback that removes ``doomed`` at the first inference window and records, right after the
    removal, the run's ``cancel_reason``, the time, and how many progress calls follow."""
    seen = {"after": 0}

    def on_progress(stage, fraction, message):
        if "removed_at" in seen:
            seen["after"] += 1
        elif stage == "inference" and fraction > 0:
            scene.RemoveNode(doomed)
            seen["reason"] = handle_box[0].cancel_reason
            seen["removed_at"] = time.perf_counter()

    return seen, on_progress


@pytest.mark.parametrize("removed", ["input volume", "output segmentation"])
def test_node_removed_mid_run_cancels_at_once(scene, model_file, removed):
    """The scene's NodeAboutToBeRemoved observer receives the node (VTK_OBJECT call data) and cancels the run
    during the removal itself: no further window runs, nothing is created."""
    vol = add_volume(scene, blob_volume((64, 64, 32)))
    out = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "target")
    doomed = vol if removed == "input volume" else out
    logic = UNetSigmoidSegLogic(scene)
    box = []
    seen, on_progress = remove_at_first_window(scene, doomed, box)
    box.append(
        logic.segmentAsync(
            vol, model_file(), device="cpu", roiSize=[16, 16, 16], outputSegmentation=out, onProgress=on_progress
        )
    )
    with pytest.raises(CancelledError, match=f"{removed} was removed"):
        box[0].wait()
    ended_after_s = time.perf_counter() - seen["removed_at"]
    assert seen["reason"] == f"cancelled: the {removed} was removed"  # set by the removal, not at the run's end
    assert seen["after"] == 0, f"{seen['after']} more windows ran after the removal"
    assert ended_after_s < 1.0, f"the run ended {ended_after_s:.2f} s after the removal"
    assert not logic.isRunning
    assert all(
        scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode").GetSegmentation().GetNumberOfSegments() == 0
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))
    )


def test_node_removed_mid_worker_run_cancels_at_once(scene, model_file):
    """The same through a real worker: the cancel reaches the worker during the removal, the worker acknowledges
    it between windows (it is not killed: the same process serves the next run), the run ends within 1 s."""
    import psutil

    from UNetSigmoidSegLib.runners.worker import WorkerRunner

    vol = add_volume(scene, blob_volume((96, 96, 48)))
    path = model_file()
    client = WorkerRunner(python_executable=sys.executable)
    logic = UNetSigmoidSegLogic(scene, runner=client)
    try:
        box = []
        seen, on_progress = remove_at_first_window(scene, vol, box)
        box.append(logic.segmentAsync(vol, path, device="cpu", roiSize=[16, 16, 16], onProgress=on_progress))
        pid, deadline = None, time.time() + 180
        while not box[0].poll():
            pid = pid or client.pid
            assert time.time() < deadline, "the run neither finished nor was cancelled"
            time.sleep(0.01)
        ended_after_s = time.perf_counter() - seen["removed_at"]
        with pytest.raises(CancelledError, match="input volume was removed"):
            box[0].wait()
        assert seen["reason"] == "cancelled: the input volume was removed"
        assert ended_after_s < 1.0, f"the run ended {ended_after_s:.2f} s after the removal"
        assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
        assert client.pid == pid and psutil.pid_exists(pid)  # acknowledged by the worker, not killed
        assert logic.segment(add_volume(scene, blob_volume((20, 20, 10))), path, device="cpu") is not None
        assert client.pid == pid
    finally:
        logic.cleanup()


def test_double_segment_is_refused_while_running(scene, model_file):
    vol = add_volume(scene, blob_volume((20, 20, 10)))
    logic = UNetSigmoidSegLogic(scene)
    handle = logic.segmentAsync(vol, model_file(), device="cpu")
    with pytest.raises(UserError, match="already running"):
        logic.segmentAsync(vol, model_file(), device="cpu")
    finished = []
    handle.on_finished = finished.append
    while not logic.poll():
        pass
    assert finished and finished[0].IsA("vtkMRMLSegmentationNode")


def test_parameter_node_survives_save_and_load(scene, tmp_path, model_file):
    vol = add_volume(scene, blob_volume((20, 20, 10)))
    node = get_parameter_node(scene)
    write_parameters(
        node,
        Parameters(
            modelPath=model_file(),
            activation="softmax",
            threshold=0.35,
            segmentThresholds=[0.2, 0.4],
            largestComponent=True,
            minIslandMm3=12.5,
            roiSize=[64, 64, 32],
            trustBundle=False,
        ),
    )
    set_reference(node, "InputVolume", vol)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    from UNetSigmoidSegLib.mrml.scene import create_headless_scene

    other = create_headless_scene()
    other.SetURL(str(tmp_path / "scene.mrml"))
    assert other.Import()
    restored = get_parameter_node(other, create=False)
    assert restored is not None
    values = read_parameters(restored)
    assert (
        values.activation,
        values.threshold,
        values.segmentThresholds,
        values.largestComponent,
        values.minIslandMm3,
        values.roiSize,
    ) == ("softmax", 0.35, [0.2, 0.4], True, 12.5, [64, 64, 32])
    assert restored.GetNodeReference("InputVolume").GetName() == "CT"


def test_console_api_errors(scene, model_file, tmp_path):
    vol = add_volume(scene, blob_volume((20, 20, 10)))
    logic = UNetSigmoidSegLogic(scene)
    with pytest.raises(UserError, match="Model not found"):
        logic.segment(vol, str(tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="Unknown activation"):
        logic.segment(vol, model_file(), activation="tanh")
    with pytest.raises(UserError, match="No cached probabilities"):
        logic.setThreshold(scene.AddNewNodeByClass("vtkMRMLSegmentationNode"), 0.5)


def test_apply_engine_result_from_the_console(scene, model_file):
    """A result computed with the engine API (or the CLI's) can be shown as live segments."""
    vol = add_volume(scene, blob_volume((24, 20, 12)))
    result = segment(
        volume_to_engine(vol),
        load_model(model_file(out_channels=2)),
        SegmentOptions(activation="sigmoid", multi_label=True, device="cpu"),
    )
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.applyResult(vol, result)
    assert [s["voxels"] for s in logic.statistics(seg)] == [int(m.sum()) for m in result.masks]
    logic.setThreshold(seg, 0.0)
    assert [s["voxels"] for s in logic.statistics(seg)] == [24 * 20 * 12] * 2
    other = add_volume(scene, blob_volume((10, 10, 10)), name="other")
    with pytest.raises(InputError, match="not on this volume's grid"):
        logic.applyResult(other, result)


def test_result_is_placed_in_the_input_study(scene, model_file):
    from UNetSigmoidSegLib.mrml.scene import subject_hierarchy

    vol = add_volume(scene, blob_volume((20, 20, 10)))
    sh = subject_hierarchy(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "CT study")
    sh.CreateItem(study, vol)
    seg = UNetSigmoidSegLogic(scene).segment(vol, model_file(), device="cpu", probabilityVolume=True)
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == study
    assert sh.GetItemParent(sh.GetItemByDataNode(seg.GetNodeReference("UNetSigmoidSeg.Probabilities"))) == study


def test_logic_through_the_background_worker(scene, model_file):
    """The panel's path: the logic drives a real worker process, polled like a Qt timer would."""
    from UNetSigmoidSegLib.runners.worker import WorkerRunner

    vol = add_volume(scene, blob_volume((40, 36, 20)))
    path = model_file(out_channels=2, seed=6)
    client = WorkerRunner(python_executable=sys.executable)
    logic = UNetSigmoidSegLogic(scene, runner=client)
    try:
        stages, logs = [], []
        handle = logic.segmentAsync(
            vol,
            path,
            activation="sigmoid",
            multiLabel=True,
            device="cpu",
            onProgress=lambda s, f, m: stages.append(s),
            onLog=logs.append,
        )
        deadline = time.time() + 180
        while not handle.poll():
            assert time.time() < deadline, "worker run did not finish"
            time.sleep(0.05)
        seg = handle.wait()
        assert "inference" in stages and any("device: cpu" in m for m in logs)
        engine = segment(
            volume_to_engine(vol),
            load_model(path),
            SegmentOptions(activation="sigmoid", multi_label=True, device="cpu"),
        )
        for channel, sid in enumerate(seg.GetSegmentation().GetSegmentIDs()):
            np.testing.assert_array_equal(export_segment(scene, seg, sid, vol) > 0, engine.masks[channel].T)
        logic.setThreshold(seg, 0.9)
        assert [s["voxels"] for s in logic.statistics(seg)] == [
            int((engine.probabilities.quantized[c] >= 230).sum()) for c in range(2)
        ]
        # cancel mid-run: acknowledged, nothing created, the next run works
        big = add_volume(scene, blob_volume((96, 96, 48)), name="big")
        before = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
        stages.clear()
        handle = logic.segmentAsync(
            big, path, device="cpu", roiSize=[16, 16, 16], onProgress=lambda s, f, m: stages.append(s)
        )
        deadline = time.time() + 120
        while "inference" not in stages:
            assert not handle.poll() and time.time() < deadline, "run ended or stalled before inference"
            time.sleep(0.02)
        handle.cancel()
        with pytest.raises(CancelledError):
            handle.wait()
        assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == before
        assert logic.segment(vol, path, device="cpu") is not None
    finally:
        logic.cleanup()
    assert client.pid is None or not __import__("psutil").pid_exists(client.pid)


def test_corrupt_parameter_values_keep_their_defaults(scene):
    node = get_parameter_node(scene)
    for name, raw in (
        ("threshold", "null"),
        ("overlap", '"abc"'),
        ("swBatchSize", "[1]"),
        ("minIslandMm3", "NaN"),
        ("amp", "0"),
    ):
        node.SetParameter(name, raw)
    values = read_parameters(node)
    assert (values.threshold, values.overlap, values.swBatchSize, values.minIslandMm3, values.amp) == (
        0.5,
        0.25,
        1,
        0.0,
        False,
    )


def test_rerun_keeps_segments_the_user_edited(scene, model_file):
    logic, vol, seg, ids, edit = _segment_then_edit_first(scene, model_file)  # then Segment again, slider untouched
    logic.segment(
        vol,
        model_file(out_channels=2, seed=4),
        activation="sigmoid",
        multiLabel=True,
        device="cpu",
        outputSegmentation=seg,
    )
    now = list(seg.GetSegmentation().GetSegmentIDs())
    assert ids[0] in now and len(now) == 3  # the edited one kept, two fresh ones added
    np.testing.assert_array_equal(export_segment(scene, seg, ids[0], vol), edit)


def test_preprocessing_and_strides_reach_the_engine(scene, model_file, tmp_path):
    from monai.networks.nets import UNet

    vol = add_volume(scene, blob_volume((24, 20, 12)) * 50 + 1000)
    torch_net = UNet(3, 1, 1, (4, 8, 16), (2, 1), num_res_units=1).eval()
    import torch

    torch.save(torch_net.state_dict(), tmp_path / "s.pt")
    logic = UNetSigmoidSegLogic(scene)
    with pytest.raises(UserError, match="strides"):  # the residual units show level 2 does not downsample
        logic.segment(vol, str(tmp_path / "s.pt"), device="cpu", strides=[2, 2])
    seg = logic.segment(
        vol, str(tmp_path / "s.pt"), device="cpu", strides=[2, 1], normalization="zscore", orientation="RAS"
    )
    expected = segment(
        volume_to_engine(vol),
        load_model(str(tmp_path / "s.pt"), strides=[2, 1]),
        SegmentOptions(device="cpu", normalization="zscore", orientation="RAS"),
    )
    assert logic.statistics(seg)[0]["voxels"] == int(expected.masks[0].sum())


def test_cli_seg_nrrd_has_the_names_colours_and_terminology_slicer_writes(scene, model_file, tmp_path):
    """The command line's writer (slicerio) and the Slicer module (segments saved by Slicer's own storage node)
    give the same segment names, colours, terminology entries and voxels for the same run."""
    import json

    from UNetSigmoidSegLib.engine.files.outputs import write_seg_nrrd

    vol = add_volume(scene, blob_volume((30, 26, 16)), angle=15)
    path = model_file(out_channels=3, seed=4)
    labels = ["Bladder", "kidney_left", "tumour"]
    (tmp_path / "model.json").write_text(json.dumps({"labels": labels, "activation": "sigmoid"}))
    seg = UNetSigmoidSegLogic(scene).segment(vol, path, device="cpu")
    storage = seg.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp_path / "slicer.seg.nrrd"))
    assert storage.WriteData(seg)
    engine = segment(volume_to_engine(vol), load_model(path), SegmentOptions(device="cpu"))
    write_seg_nrrd(engine, str(tmp_path / "cli.seg.nrrd"))
    by_slicer = slicerio.read_segmentation(str(tmp_path / "slicer.seg.nrrd"))
    by_cli = slicerio.read_segmentation(str(tmp_path / "cli.seg.nrrd"))
    assert [s["name"] for s in by_slicer["segments"]] == [s["name"] for s in by_cli["segments"]] == labels
    for ours, theirs in zip(by_cli["segments"], by_slicer["segments"]):
        np.testing.assert_allclose(ours["color"], theirs["color"], atol=1e-5)
        assert ours.get("terminology") == theirs.get("terminology"), ours["name"]
        np.testing.assert_array_equal(
            slicerio.extract_segments(by_cli, [(ours["name"], 1)])["voxels"] > 0,
            slicerio.extract_segments(by_slicer, [(theirs["name"], 1)])["voxels"] > 0,
        )
    assert by_cli["segments"][1]["terminology"]["typeModifier"] == ["SCT", "7771000", "Left"]
    notice = "Research use - not for clinical use."  # in both files: a segment tag (Slicer), a header field (CLI)
    assert all(s["tags"]["UNetSigmoidSeg.Notice"] == notice for s in by_slicer["segments"])
    assert f"UNetSigmoidSeg.Notice:={notice}" in (tmp_path / "cli.seg.nrrd").read_bytes()[:8192].decode("latin-1")
    assert by_cli["segments"][2]["terminology"]["type"] == ["SCT", "85756007", "Tissue"]


def test_output_into_a_surface_sourced_segmentation_converts_its_source_and_says_so(scene, model_file, tmp_path):
    """Segments added as labelmaps into a segmentation whose source is closed surface would stay empty in 3-D and
    on save: the source becomes binary labelmap (the user's surface segment converted, kept) and a warning says so."""
    vol = add_volume(scene, blob_volume((30, 26, 16)))
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surfaces")
    seg.SetSourceRepresentationToClosedSurface()
    bounds = [0.0] * 6
    vol.GetRASBounds(bounds)
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter([(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)])
    sphere.SetRadius(6)
    sphere.Update()
    seg.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "ball", [1.0, 0.0, 0.0])
    logic = UNetSigmoidSegLogic(scene)
    engine = segment(volume_to_engine(vol), load_model(model_file(seed=2)), SegmentOptions(device="cpu"))
    logic.applyResult(vol, engine, seg, "model.pt")
    segmentation = seg.GetSegmentation()
    assert segmentation.GetSourceRepresentationName() == "Binary labelmap"
    assert any("converted to binary labelmap" in w for w in engine.warnings)
    names = [segmentation.GetSegment(s).GetName() for s in segmentation.GetSegmentIDs()]
    assert "ball" in names and len(names) == 2  # the user's segment is kept
    storage = seg.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp_path / "saved.seg.nrrd"))
    assert storage.WriteData(seg)
    saved = slicerio.read_segmentation(str(tmp_path / "saved.seg.nrrd"))
    ours = [s for s in saved["segments"] if s["name"] != "ball"][0]
    assert slicerio.segment_mask(saved, ours).sum() == engine.masks[0].sum() > 0  # not empty on save
