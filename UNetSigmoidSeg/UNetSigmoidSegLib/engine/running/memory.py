"""The memory guard: the peak a run needs, from the grid after preprocessing, the window and the batch.

A run holds the input as float32, the resampled image, the stitched output and its weight map, the
probabilities on both grids and the masks; a window batch adds ``sw_batch × roi`` voxels of activations.
``predicted_spatial_shape`` says, before anything is resampled, what grid the spatial transforms
(orientation, spacing, resize, pad, crop) will produce, so ``--spacing 0.02`` on a small volume is refused
before torch is asked for tens of GB; the pipeline checks again with the real grid once preprocessing ran and
the window and batch are chosen.
"""

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ...errors import InputError

MEMORY_FIX = (
    "Crop the volume or downsample it (a coarser --spacing), reduce --roi-size / --sw-batch-size, or free memory."
)
DEFAULT_WIDTH = 32  # feature channels per voxel at full resolution when the network does not say


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def network_width(network_args: Optional[Dict[str, Any]]) -> int:
    """Feature channels of the network's first level (UNet ``channels[0]``, ``features[0]``, ``init_filters``…)."""
    args = network_args or {}
    for key in ("channels", "features", "filters"):
        value = args.get(key)
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], int):
            return int(value[0])
    for key in ("init_filters", "feature_size"):
        if isinstance(args.get(key), int):
            return int(args[key])
    return DEFAULT_WIDTH


def peak_bytes(
    input_shape: Sequence[int],
    pre_shape: Sequence[int],
    in_channels: int,
    out_channels: int,
    roi: Sequence[int],
    sw_batch: int,
    width: int,
) -> int:
    """Bytes a run needs at its peak (float32 everywhere, as the pipeline computes)."""
    n_in = float(np.prod([int(s) for s in input_shape]))
    n_pre = float(np.prod([int(s) for s in pre_shape]))
    padded = [max(int(s), int(r)) for s, r in zip(pre_shape, roi)] if len(roi) == len(pre_shape) else pre_shape
    n_out = float(np.prod([int(s) for s in padded]))  # the inferer pads an image smaller than the window
    c, k = max(1, in_channels), max(1, out_channels)
    window = sw_batch * float(np.prod([int(r) for r in roi])) * 4 * (c + k + 2 * width)
    return int(
        4 * c * n_in  # the float32 copy of the input
        + 8 * c * n_pre  # resampling: source and result
        + 4 * (k + 1) * n_out  # the stitched output and its weight map
        + window
        + 4 * k * n_pre  # probabilities after the activation
        + 4 * k * n_in  # probabilities inverted to the input grid
        + 2 * k * n_in  # masks and the 1-byte cache
    )


def check_memory(
    input_shape: Sequence[int],
    pre_shape: Sequence[int],
    in_channels: int,
    out_channels: Optional[int],
    roi: Sequence[int],
    sw_batch: int,
    width: int,
    available: Optional[int],
) -> None:
    """An ``InputError`` when the run's peak would exceed 90 % of the ``available`` memory (bytes; None: unknown)."""
    need = peak_bytes(input_shape, pre_shape, in_channels, out_channels or 1, roi, sw_batch, width)
    if available is None or need <= 0.9 * available:
        return
    grid = "" if list(pre_shape) == list(input_shape) else f", {tuple(int(s) for s in pre_shape)} after preprocessing"
    raise InputError(
        f"The volume {tuple(int(s) for s in input_shape)} needs about {_size(need)} of memory to segment; "
        f"{_size(available)} is free (windows {list(roi)} × {sw_batch}{grid})",
        MEMORY_FIX,
    )


def predicted_spatial_shape(transforms: Any, shape: Sequence[int], affine: np.ndarray) -> List[int]:
    """The spatial shape the preprocessing ``Compose`` will produce from ``shape`` (voxels) with ``affine``
    (voxel → RAS), without running it. Orientation, spacing, resize, pad and crop steps are followed; other
    steps keep the shape (foreground crops only shrink it)."""
    shape = [int(s) for s in shape]
    matrix = np.asarray(affine, dtype=float)[:3, :3]
    spacing = [float(v) for v in np.linalg.norm(matrix, axis=0)]
    world = [int(np.argmax(np.abs(matrix[:, i]))) for i in range(3)]  # the RAS axis each voxel axis follows
    for step in getattr(transforms, "transforms", []):
        name = type(step).__name__
        if name == "Orientationd":
            codes = getattr(step.ornt_transform, "axcodes", None)
            if codes and len(set(world)) == 3:  # an axis halfway between two: the voxel count is what matters
                axis = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}
                order = [world.index(axis[c]) for c in str(codes).upper()]
                shape = [shape[i] for i in order]
                spacing = [spacing[i] for i in order]
                world = [world[i] for i in order]
        elif name == "Spacingd":
            pixdim = [float(p) for p in np.atleast_1d(step.spacing_transform.pixdim)]
            pixdim = (pixdim * 3)[:3] if len(pixdim) == 1 else pixdim + spacing[len(pixdim) :]
            for i, p in enumerate(pixdim[:3]):
                if p > 0:
                    shape[i], spacing[i] = max(1, int(round(shape[i] * spacing[i] / p))), p
        elif name == "Resized":
            shape = _resized(shape, step.resizer.spatial_size, step.resizer.size_mode)
        elif name == "SpatialPadd":
            shape = [max(s, int(z)) if int(z) > 0 else s for s, z in zip(shape, _per_axis(step.padder.spatial_size))]
        elif name == "DivisiblePadd":
            shape = [
                int(math.ceil(s / int(k)) * int(k)) if int(k) > 0 else s
                for s, k in zip(shape, _per_axis(step.padder.k))
            ]
        elif name == "CenterSpatialCropd":
            shape = [min(s, int(z)) if int(z) > 0 else s for s, z in zip(shape, _per_axis(step.cropper.roi_size))]
    return shape


def _per_axis(value: Any) -> List[Any]:
    values = list(np.atleast_1d(value))
    return values * 3 if len(values) == 1 else values


def _resized(shape: List[int], size: Any, mode: str) -> List[int]:
    if mode == "longest":
        scale = float(np.atleast_1d(size)[0]) / max(shape)
        return [max(1, int(round(s * scale))) for s in shape]
    return [int(z) if int(z) > 0 else s for s, z in zip(shape, _per_axis(size))]
