"""Clean-up after thresholding, with SimpleITK filters (no torch), giving what MONAI's transforms give with their
default arguments (checked against MONAI in Testing/engine/test_postprocess_monai.py):

- islands: ``RemoveSmallObjects(min_size=ceil(mm³ / voxel mm³), by_measure)``: face connectivity (MONAI's default 1),
  objects smaller than the size go;
- largest component: ``KeepLargestConnectedComponent()``: full connectivity (MONAI's default), and among components
  of equal size the one MONAI keeps (components numbered in C order as scikit-image numbers them, ranked by
  ``numpy.argsort`` of their sizes as MONAI ranks them);
- fill holes: ``FillHoles()``: a hole is background that full-connectivity background paths do not link to the
  border (MONAI's default connectivity).
"""

import dataclasses
import math
from typing import Any, Dict

import numpy as np
import SimpleITK as sitk

from ...contract.options import Cleanup


def _image(mask: np.ndarray) -> sitk.Image:
    """``mask`` as it is laid out (SimpleITK's x is its last axis, so raster order is C order)."""
    return sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """MONAI's ``get_largest_connected_component_mask(mask, connectivity=None, num_components=1)``."""
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(_image(mask), True))
    counts = np.bincount(labels.reshape(-1))
    if len(counts) <= 2:  # no component or one
        return mask.astype(bool)
    counts[0] = 0
    keep = np.zeros(len(counts), dtype=bool)
    keep[np.argsort(counts)[::-1][:1]] = True
    return keep[labels]


def clean_mask(mask: np.ndarray, spacing, cleanup: Cleanup) -> np.ndarray:
    """Clean one ``(I, J, K)`` bool mask, in this order: islands, largest component, holes. ``spacing`` (mm)
    converts the island size to voxels."""
    if not cleanup.active or not mask.any():
        return mask
    out = mask.astype(bool)
    if cleanup.min_island_mm3 > 0:
        min_size = int(math.ceil(cleanup.min_island_mm3 / float(np.prod(spacing))))
        components = sitk.ConnectedComponent(_image(out), False)
        relabel = sitk.RelabelComponent(components, minimumObjectSize=min_size)
        out = sitk.GetArrayFromImage(relabel) > 0
    if cleanup.largest_component and out.any():
        out = keep_largest(out)
    if cleanup.fill_holes and out.any():
        filled = sitk.BinaryFillhole(_image(out), fullyConnected=True, foregroundValue=1)
        out = sitk.GetArrayFromImage(filled).astype(bool)
    return out


def with_model_cleanup(cleanup: Cleanup, model_cleanup: Dict[str, Any]) -> Cleanup:
    """The run's clean-up with what the model brings switched on too (``ModelInfo.cleanup``: a bundle's
    ``KeepLargestConnectedComponent``, which ``monai.bundle run`` always applies)."""
    largest = cleanup.largest_component or bool(model_cleanup.get("largest_component"))
    return dataclasses.replace(cleanup, largest_component=largest)
