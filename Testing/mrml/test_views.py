"""The module's segments in Slicer's own views: a slice view and a 3-D view rendered off screen by Slicer's
displayable managers (``views.py``) on a slicer-core scene, checked pixel by pixel; and the 3-D surface during a
threshold drag (kept, then rebuilt on release) on the scene alone."""

import numpy as np
import pytest
from views import SliceView, ThreeDView, blob, coloured, rendering_problem, result_on

from mrml_helpers import add_volume
from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
from UNetSigmoidSegLib.mrml.scene import application_logic
from UNetSigmoidSegLib.mrml.segments import CLOSED

SHAPE = (40, 36, 24)
COLOR = (0.9, 0.3, 0.2)
needs_rendering = pytest.mark.skipif(bool(rendering_problem()), reason=rendering_problem() or "renders")


def shown(scene, size=(160, 160)):
    """A volume with a probability blob, the logic, and the blob's result applied (threshold 0.5)."""
    probabilities = blob(SHAPE)
    volume = add_volume(scene, probabilities * 100, spacing=(1.0, 1.0, 1.5), angle=0.0, origin=(0.0, 0.0, 0.0))
    volume.GetDisplayNode().AutoWindowLevelOff()
    volume.GetDisplayNode().SetWindowLevel(100, 50)  # probability 0.5 (voxel 50) shows as mid-grey
    logic = UNetSigmoidSegLogic(scene)
    return volume, probabilities, logic


def mid_slice_voxels(probabilities, threshold):
    k = SHAPE[2] // 2
    return int(np.count_nonzero(probabilities[:, :, k] >= threshold))


@needs_rendering
def test_segments_appear_in_a_slice_view_and_follow_the_threshold(scene):
    volume, probabilities, logic = shown(scene)
    view = SliceView(scene, application_logic(scene), "Red", (160, 160))
    view.show(volume)
    grey = view.render()
    assert not coloured(grey, COLOR).any()  # the grey volume alone: no overlay colour
    seg = logic.applyResult(volume, result_on(volume, probabilities, color=COLOR))
    overlay = coloured(view.render(), COLOR)
    above_half = grey[..., 0] >= 128  # where the image itself says probability >= 0.5
    assert (overlay & above_half).sum() / (overlay | above_half).sum() > 0.9  # the overlay sits on the image's blob
    areas = {}
    for t in (0.5, 0.3, 0.7, 0.5):
        logic.setThreshold(seg, t)
        mask = coloured(view.render(), COLOR)
        areas.setdefault(t, []).append(int(mask.sum()))
        rows, cols = np.nonzero(mask)
        assert abs(rows.mean() - 79.5) < 4 and abs(cols.mean() - 79.5) < 4  # the blob's centre, as in the volume
    assert areas[0.3][0] > areas[0.5][0] > areas[0.7][0] > 0  # the overlay grows and shrinks with the mask
    assert areas[0.5][0] == areas[0.5][1]  # back to 0.5: the same pixels
    for t in (0.3, 0.7):  # the coloured area scales as the mask's cross-section in that slice
        expected = mid_slice_voxels(probabilities, t) / mid_slice_voxels(probabilities, 0.5)
        assert areas[t][0] / areas[0.5][0] == pytest.approx(expected, rel=0.1)
    display = seg.GetDisplayNode()
    display.SetSegmentVisibility(logic.liveResult(seg).writer.segment_ids[0], False)
    assert not coloured(view.render(), COLOR).any()  # Slicer's segmentation displayable manager drew them


@needs_rendering
def test_the_3d_surface_follows_the_threshold_and_waits_for_the_release_while_dragging(scene):
    volume, probabilities, logic = shown(scene)
    seg = logic.applyResult(volume, result_on(volume, probabilities, color=COLOR))
    slice_view = SliceView(scene, application_logic(scene), "Red", (128, 128))
    slice_view.show(volume)
    view = ThreeDView(scene, application_logic(scene), (128, 128))
    assert not coloured(view.render(), COLOR).any()  # no closed surface yet: nothing in 3-D
    assert seg.CreateClosedSurfaceRepresentation()  # what Show 3D does
    view.look_from()
    at_05 = view.render()
    assert coloured(at_05, COLOR).sum() > 500

    logic.setThreshold(seg, 0.3)  # a release (or a typed value): the surface is rebuilt at once
    at_03 = coloured(view.render(), COLOR).sum()
    assert seg.GetSegmentation().ContainsRepresentation(CLOSED) and at_03 > coloured(at_05, COLOR).sum()

    in_2d = coloured(slice_view.render(), COLOR).sum()
    frozen = view.render()
    logic.setThreshold(seg, 0.7, cleanup=False, update3D=False)  # a drag step: 2-D follows, 3-D keeps its surface
    assert coloured(slice_view.render(), COLOR).sum() < in_2d
    np.testing.assert_array_equal(view.render(), frozen)
    assert logic.updateSurface(seg)  # the release rebuilds it
    at_07 = coloured(view.render(), COLOR).sum()
    assert 0 < at_07 < coloured(at_05, COLOR).sum()
    assert not logic.updateSurface(seg)  # nothing left to rebuild


def surface_points(seg, sid):
    surface = seg.GetSegmentation().GetSegment(sid).GetRepresentation(CLOSED)
    return None if surface is None else surface.GetNumberOfPoints()


def test_a_drag_keeps_every_segments_surface_and_the_release_rebuilds_them(scene):
    """Without rendering: what the 3-D view gets during a drag (no conversion) and after the release."""
    import slicer

    volume, probabilities, logic = shown(scene)
    seg = logic.applyResult(volume, result_on(volume, probabilities))
    ours = logic.liveResult(seg).writer.segment_ids[0]
    labelmap = slicer.vtkOrientedImageData()  # a segment the user drew (own layer): not the module's
    labelmap.DeepCopy(seg.GetSegmentation().GetSegment(ours).GetRepresentation("Binary labelmap"))
    mine = slicer.vtkSegment()
    mine.SetName("mine")
    mine.AddRepresentation("Binary labelmap", labelmap)
    theirs = "mine"
    seg.GetSegmentation().AddSegment(mine, theirs)
    assert logic.setThreshold(seg, 0.5) == [ours]
    without = surface_points(seg, ours)
    assert without is None  # no 3-D shown: nothing is converted on a threshold step
    assert seg.CreateClosedSurfaceRepresentation()
    before = {sid: surface_points(seg, sid) for sid in (ours, theirs)}
    logic.setThreshold(seg, 0.2, cleanup=False, update3D=False)
    assert {sid: surface_points(seg, sid) for sid in (ours, theirs)} == before  # both kept, not converted
    assert logic.liveResult(seg).writer.surface_stale
    assert logic.updateSurface(seg)
    assert surface_points(seg, ours) > before[ours] and surface_points(seg, theirs) == before[theirs]
    logic.setThreshold(seg, 0.8)  # a plain step rebuilds at once (Slicer would otherwise drop the surface)
    assert 0 < surface_points(seg, ours) < before[ours] and not logic.updateSurface(seg)
    seg.RemoveClosedSurfaceRepresentation()  # Show 3D off during a drag: the release converts nothing
    logic.setThreshold(seg, 0.4, update3D=False)
    assert not logic.updateSurface(seg) and surface_points(seg, ours) is None
