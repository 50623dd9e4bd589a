"""An image on a voxel grid in MONAI's convention (numpy only)."""

from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass
class Volume:
    """An image on a voxel grid, as ``LoadImage`` + ``EnsureChannelFirst`` give it.

    array: ``(C, I, J, K)`` channel-first array (any numeric dtype), spatial axes in voxel index order.
    affine: ``(4, 4)`` voxel index → RAS millimetres (Slicer's IJKToRAS).
    """

    array: np.ndarray
    affine: np.ndarray

    @property
    def spatial_shape(self) -> Tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(np.asarray(self.affine, float)[:3, :3], axis=0)

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(np.asarray(self.affine, float)[:3, :3]))) / 1000.0
