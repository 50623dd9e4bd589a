"""Clean-up after thresholding (SimpleITK filters) and per-segment statistics."""

import math
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import SimpleITK as sitk


@dataclass
class Cleanup:
    """Optional clean-up of each binary segment, applied in this order."""

    largest_component: bool = False
    fill_holes: bool = False
    min_island_mm3: float = 0.0

    @property
    def active(self) -> bool:
        return self.largest_component or self.fill_holes or self.min_island_mm3 > 0


def clean_mask(mask: np.ndarray, spacing, cleanup: Cleanup) -> np.ndarray:
    """Clean one ``(I, J, K)`` bool mask; ``spacing`` (mm) converts the island size to voxels."""
    if not cleanup.active or not mask.any():
        return mask
    image = sitk.GetImageFromArray(mask.astype(np.uint8).transpose(2, 1, 0))
    image.SetSpacing([float(s) for s in spacing])
    if cleanup.min_island_mm3 > 0 or cleanup.largest_component:
        voxel_mm3 = float(np.prod(spacing))
        min_size = int(math.ceil(cleanup.min_island_mm3 / voxel_mm3)) if cleanup.min_island_mm3 > 0 else 0
        relabel = sitk.RelabelComponent(sitk.ConnectedComponent(image), minimumObjectSize=min_size, sortByObjectSize=True)
        image = sitk.Equal(relabel, 1) if cleanup.largest_component else sitk.Greater(relabel, 0)
    if cleanup.fill_holes:
        image = sitk.BinaryFillhole(sitk.Cast(image, sitk.sitkUInt8), fullyConnected=False, foregroundValue=1)
    return sitk.GetArrayViewFromImage(image).transpose(2, 1, 0).astype(bool)


def statistics(masks: np.ndarray, names: List[str], voxel_volume_ml: float) -> List[Dict[str, object]]:
    """Voxel count and volume (mL) of each ``(S, I, J, K)`` mask."""
    out = []
    for name, m in zip(names, masks):
        n = int(np.count_nonzero(m))
        out.append({"segment": name, "voxels": n, "volume_ml": round(n * voxel_volume_ml, 4)})
    return out
