"""Volume nodes ⇄ engine volumes, and the probability volume node."""

from typing import Any, Optional

import numpy as np
import vtk
from vtk.util import numpy_support

from ..contract.volume import Volume
from ..errors import InputError


def _matrix_to_numpy(matrix: Any) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def ijk_to_ras(node: Any) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return _matrix_to_numpy(m)


def volume_to_engine(node: Any) -> Volume:
    """A scalar volume node → engine ``Volume`` (``(1, I, J, K)`` copy + IJK→RAS). The node is not modified.

    Errors for: no node, a vector / multi-component or non-scalar volume, no voxels, and a volume under
    a transform that is not hardened (the voxels would not be where Slicer shows them).
    """
    if node is None:
        raise InputError("No input volume selected", "Pick a volume in 'Input volume'.")
    if not node.IsA("vtkMRMLScalarVolumeNode") or any(
        node.IsA(c)
        for c in ("vtkMRMLVectorVolumeNode", "vtkMRMLTensorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode")
    ):
        raise InputError(
            f"'{node.GetName()}' is a {node.GetClassName()}, not a scalar volume",
            "Pick a scalar (grayscale) volume; convert vector/RGB volumes first (Vector to Scalar Volume module).",
        )
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0 or image.GetPointData().GetScalars() is None:
        raise InputError(f"Volume '{node.GetName()}' has no voxels", "Load image data into the volume first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"Volume '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel",
            "Pick a single-component volume (e.g. one channel of a multi-channel image).",
        )
    transform = node.GetParentTransformNode()
    if transform is not None:
        kind = "non-linear" if not transform.IsTransformToWorldLinear() else "linear"
        raise InputError(
            f"Volume '{node.GetName()}' is under a {kind} transform ('{transform.GetName()}') that is not hardened",
            "Harden the transform first (Data module: right-click the volume → Harden transform), or remove it.",
        )
    dims = image.GetDimensions()
    kji = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    return Volume(np.ascontiguousarray(kji.transpose(2, 1, 0))[None], ijk_to_ras(node))


def add_probability_volume(
    scene: Any, reference: Any, probabilities_kji: np.ndarray, name: str, existing: Optional[Any] = None
) -> Any:
    """A float32 scalar volume with the probabilities (``(K, J, I)`` in [0, 1]) on the reference grid, shown
    with a heat colour table (window 0–1) for overlay review."""
    node = existing if existing is not None else scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    k, j, i = probabilities_kji.shape
    image.SetDimensions(i, j, k)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)[:] = probabilities_kji
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras(reference)))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    for color_id in (
        "vtkMRMLColorTableNodeFileInferno.txt",
        "vtkMRMLPETProceduralColorNodePET-Heat",
        "vtkMRMLColorTableNodeRainbow",
    ):
        if scene.GetNodeByID(color_id) is not None:
            display.SetAndObserveColorNodeID(color_id)
            break
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    node.SetAttribute("UNetSigmoidSeg.Probabilities", "1")
    return node


def _vtk_matrix(a: np.ndarray) -> Any:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m
