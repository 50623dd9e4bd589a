"""Helpers for tests on a real slicer-core scene."""

import hashlib

import numpy as np
import vtk
from vtk.util import numpy_support

from conftest import oblique_direction


def add_volume(scene, array_ijk, spacing=(1.2, 0.8, 2.5), angle=20.0, flip=False, origin=(5.0, -6.0, 7.0), name="CT"):
    """A scalar volume node holding ``array_ijk`` (I, J, K) with an oblique, anisotropic geometry."""
    from UNetSigmoidSegLib.mrml.volumes import _vtk_matrix

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    i, j, k = array_ijk.shape
    image = vtk.vtkImageData()
    image.SetDimensions(i, j, k)
    image.AllocateScalars(numpy_support.get_vtk_array_type(array_ijk.dtype), 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = np.ascontiguousarray(
        array_ijk.transpose(2, 1, 0)
    ).ravel()
    node.SetAndObserveImageData(image)
    m = np.eye(4)
    m[:3, :3] = oblique_direction(angle, flip) * np.asarray(spacing)
    m[:3, 3] = origin
    node.SetIJKToRASMatrix(_vtk_matrix(m))
    node.CreateDefaultDisplayNodes()
    return node


def volume_hash(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    voxels = numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars())
    return hashlib.sha256(
        voxels.tobytes() + str([m.GetElement(r, c) for r in range(4) for c in range(4)]).encode()
    ).hexdigest()


def export_segment(scene, seg_node, segment_id, reference):
    """The segment as a (K, J, I) array on the reference grid, through Slicer's own export logic."""
    import slicer

    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, label, reference)
    image = label.GetImageData()
    dims = image.GetDimensions()
    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0]).copy()
    scene.RemoveNode(label)
    return arr
