"""Clean-up after thresholding, with SimpleITK filters (no torch)."""

import math

import numpy as np
import SimpleITK as sitk

from ...contract.options import Cleanup


def clean_mask(mask: np.ndarray, spacing, cleanup: Cleanup) -> np.ndarray:
    """Clean one ``(I, J, K)`` bool mask; ``spacing`` (mm) converts the island size to voxels."""
    if not cleanup.active or not mask.any():
        return mask
    image = sitk.GetImageFromArray(mask.astype(np.uint8).transpose(2, 1, 0))
    image.SetSpacing([float(s) for s in spacing])
    if cleanup.min_island_mm3 > 0 or cleanup.largest_component:
        voxel_mm3 = float(np.prod(spacing))
        min_size = int(math.ceil(cleanup.min_island_mm3 / voxel_mm3)) if cleanup.min_island_mm3 > 0 else 0
        components = sitk.ConnectedComponent(image)
        relabel = sitk.RelabelComponent(components, minimumObjectSize=min_size, sortByObjectSize=True)
        image = sitk.Equal(relabel, 1) if cleanup.largest_component else sitk.Greater(relabel, 0)
    if cleanup.fill_holes:
        image = sitk.BinaryFillhole(sitk.Cast(image, sitk.sitkUInt8), fullyConnected=False, foregroundValue=1)
    return sitk.GetArrayViewFromImage(image).transpose(2, 1, 0).astype(bool)
