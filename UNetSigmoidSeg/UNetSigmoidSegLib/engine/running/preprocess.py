"""Preprocessing as invertible MONAI dictionary transforms on key ``"image"``, and its inversion.

Plain checkpoints get orientation / spacing / intensity options; bundles bring their own
``preprocessing`` (minus image loading, which the caller already did in MONAI's convention).
Every spatial step is undone with MONAI's ``Invertd`` so outputs land on the input grid.
"""

import itertools
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...contract.options import NORMALIZATIONS, ORIENTATIONS, check_choice
from ...errors import OptionError

INVERSE_WARNING = "inverse has been called but no invertible transforms"  # MONAI's Compose.inverse, start of message


def build_transforms(
    normalization: str = "none",
    ct_window: Optional[Sequence[float]] = None,
    orientation: str = "keep",
    spacing: Optional[Sequence[float]] = None,
):
    """MONAI ``Compose`` for a plain checkpoint.

    normalization: ``none`` | ``zscore`` (per channel) | ``zscore-nonzero`` | ``ct`` (clip
    ``ct_window`` = [low, high] HU to 0–1) | ``range-sigmoid`` (MONAIAuto3DSeg's CT mode:
    ``ct_window`` → [-1, 1], then sigmoid). orientation: ``keep`` | ``RAS``. spacing: mm or None.
    """
    from monai.transforms import Compose, Lambdad, NormalizeIntensityd, Orientationd, ScaleIntensityRanged, Spacingd

    normalization = check_choice("normalization", normalization, NORMALIZATIONS)
    orientation = check_choice("orientation", orientation or "keep", ORIENTATIONS)
    transforms: List[Any] = []
    if orientation == "RAS":
        transforms.append(Orientationd(keys="image", axcodes="RAS", labels=None))  # labels from the tensor's space
    if spacing is not None:
        transforms.append(Spacingd(keys="image", pixdim=list(spacing), mode="bilinear"))
    if normalization in ("ct", "range-sigmoid"):
        if not ct_window or len(ct_window) != 2 or ct_window[0] >= ct_window[1]:
            raise OptionError(
                f"Normalization {normalization} needs a window [low, high], got {ct_window}",
                "e.g. --ct-window -160 240",
            )
        lo, hi = float(ct_window[0]), float(ct_window[1])
        if normalization == "ct":
            transforms.append(ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
        else:
            transforms.append(ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=False))
            transforms.append(Lambdad(keys="image", func=torch.sigmoid))
    elif normalization == "zscore":
        transforms.append(NormalizeIntensityd(keys="image", channel_wise=True))
    elif normalization == "zscore-nonzero":
        transforms.append(NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True))
    return Compose(transforms)


def to_meta(array: np.ndarray, affine: np.ndarray):
    """``(C, I, J, K)`` array + affine → float32 ``MetaTensor`` as ``LoadImage`` would give it."""
    from monai.data import MetaTensor

    spatial = np.asarray(array.shape[1:])
    meta = {
        "original_affine": np.asarray(affine, dtype=np.float64),
        "spatial_shape": spatial,
        "original_channel_dim": 0,
        "space": "RAS",
    }
    # torch.tensor always copies: nothing downstream (even an in-place op on a view) can touch the caller's array
    return MetaTensor(
        torch.tensor(np.ascontiguousarray(array), dtype=torch.float32),
        affine=torch.as_tensor(affine, dtype=torch.float64),
        meta=meta,
    )


def apply(transforms, image) -> Dict[str, Any]:
    """Run the Compose on ``{"image": image}``; returns the data dict."""
    return transforms({"image": image})


def apply_volume(transforms, array: np.ndarray, affine: np.ndarray, flat: bool) -> Dict[str, Any]:
    """``apply`` on a ``(C, I, J, K)`` volume. ``flat``: a 2-D bundle's preprocessing on a one-slice volume (a PNG
    frame): it runs on the 2-D image ``(C, I, J)`` as MONAI's ``LoadImage`` gives a frame (a 2-D ``Resized`` needs
    that), and its result comes back with the slice axis, ``(C, H, W, 1)``; the 2-D image stays under
    ``"image_2d"`` for ``invert``."""
    from monai.data import MetaTensor

    if not flat:
        return apply(transforms, to_meta(array, affine))
    plane = np.delete(np.delete(np.asarray(affine, dtype=np.float64), 2, 0), 2, 1)  # the I, J axes and the origin
    data = apply(transforms, to_meta(array[..., 0], plane))
    image_2d = data["image"]
    grid = np.asarray(affine, dtype=np.float64).copy()
    have = np.asarray(image_2d.affine, dtype=np.float64)
    grid[:2, :2], grid[:2, 3] = have[:2, :2], have[:2, 2]
    grid[2, :2], grid[:2, 2] = 0.0, 0.0  # K: the volume's own slice direction (one slice)
    image = MetaTensor(image_2d.as_tensor()[..., None], affine=torch.as_tensor(grid), meta=dict(image_2d.meta))
    return {**data, "image": image, "image_2d": image_2d}


def invert(
    transforms, data: Dict[str, Any], pred: torch.Tensor, affine: np.ndarray, shape: Tuple[int, ...]
) -> torch.Tensor:
    """Undo the spatial preprocessing on ``pred`` ``(C, ...)`` (bilinear: it holds probabilities), onto the input's
    grid (``affine``, ``shape``: see ``onto_grid``)."""
    from monai.data import MetaTensor
    from monai.transforms import Invertd, InvertibleTransform

    flat = transforms.flatten().transforms if hasattr(transforms, "flatten") else getattr(transforms, "transforms", ())
    if not any(isinstance(t, InvertibleTransform) for t in flat or ()):
        return pred  # nothing to undo (e.g. intensity only): MONAI would only warn that it has nothing to invert
    if "image_2d" in data:  # apply_volume(flat=True): undone on the 2-D image, then the slice axis back
        plain = {k: v for k, v in data.items() if k != "image_2d"}
        pred_2d = invert(transforms, {**plain, "image": data["image_2d"]}, pred[..., 0], affine, shape[:2])
        return torch.as_tensor(pred_2d)[..., None]
    image = data["image"]
    meta = {k: v for k, v in image.meta.items() if k != "affine"}  # the affine is passed once, explicitly
    pred_meta = MetaTensor(pred, affine=image.affine, meta=meta)
    with warnings.catch_warnings():
        # MONAI's Compose.inverse warns when none of the transforms it was given is invertible; that says nothing
        # about this run (the spatial ones are inverted), so exactly that message is kept from the user
        warnings.filterwarnings("ignore", message=INVERSE_WARNING, category=UserWarning)
        inverted = Invertd(keys="pred", transform=transforms, orig_keys="image", nearest_interp=False)(
            {"pred": pred_meta, "image": image}
        )
    return onto_grid(inverted["pred"], affine, shape)


def onto_grid(pred: Any, affine: np.ndarray, shape: Tuple[int, ...]) -> Any:
    """``pred`` (``(C, …)``, a MetaTensor after ``invert``) laid on the input grid (``affine``, ``shape``).

    MONAI's inverse of an orientation can pick another axis order than its forward did where the axes of a rotated
    volume tie (45° obliques: ``nibabel.io_orientation`` breaks the tie either way): the array is then the right data
    on a permuted grid. Its own affine says which: of the 48 axis permutations and flips, the one whose affine is the
    input's is applied. Anything else is returned as it is (the caller refuses a grid that does not fit)."""
    if not hasattr(pred, "affine") or len(shape) != 3:
        return pred
    have = np.asarray(pred.affine, dtype=float)
    want = np.asarray(affine, dtype=float)
    tolerance = 1e-3 * float(np.linalg.norm(want[:3, :3], axis=0).min())
    if tuple(pred.shape[1:]) == tuple(shape) and np.allclose(have, want, atol=tolerance):
        return pred  # the usual case: on the input grid already (a cube whose axes tie is checked too)
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            moved = have.copy()
            for j, (axis, flip) in enumerate(zip(perm, flips)):
                moved[:3, j] = have[:3, axis] * (-1.0 if flip else 1.0)
                if flip:
                    moved[:3, 3] += have[:3, axis] * (pred.shape[1 + axis] - 1)
            sizes = tuple(pred.shape[1 + axis] for axis in perm)
            if sizes == tuple(shape) and np.allclose(moved, want, atol=tolerance):
                out = pred.permute(0, *[1 + axis for axis in perm])
                dims = [1 + j for j, flip in enumerate(flips) if flip]
                return out.flip(dims) if dims else out
    if tuple(pred.shape[1:]) == tuple(shape):
        raise RuntimeError(f"internal: the inverted output's grid {have.round(4).tolist()} is not the input's")
    return pred
