"""The clean-up gives what MONAI's own transforms give with their default arguments — ``RemoveSmallObjects``
(by measure), ``KeepLargestConnectedComponent`` and ``FillHoles``, run here on scikit-image and SciPy as MONAI runs
them — on random masks full of equal-size components (MONAI's tie rule) and on a mask made from the real CT.
Islands: MONAI's documented rule (objects smaller than ``ceil(mm³ / voxel mm³)`` voxels go), which scikit-image 0.26
changed under MONAI to "not larger than" — see ``SKIMAGE_INCLUSIVE`` and the README's clean-up section."""

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import FillHoles, KeepLargestConnectedComponent, RemoveSmallObjects

from conftest import shared_data
from UNetSigmoidSegLib.contract import Cleanup
from UNetSigmoidSegLib.engine.running.postprocess import clean_mask

skimage = pytest.importorskip(
    "skimage", reason="MONAI's clean-up transforms need scikit-image (pip install -e .[test])"
)
# scikit-image 0.26 turned remove_small_objects' min_size into an inclusive max_size (an object of exactly min_size
# voxels goes too), which MONAI 1.6 passes on; the product keeps MONAI's documented rule, "smaller than min_size"
SKIMAGE_INCLUSIVE = int(tuple(int(v) for v in skimage.__version__.split(".")[:2]) >= (0, 26))


def monai_cleanup(mask: np.ndarray, spacing, cleanup: Cleanup) -> np.ndarray:
    """What a MONAI user's script gives: the same three steps in the product's order, MONAI's defaults."""
    img = torch.as_tensor(mask[None].astype(np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image's renamed min_size, inside MONAI
        if cleanup.min_island_mm3 > 0:  # MONAI's by_measure size in voxels, then its documented rule: smaller goes
            voxels = int(np.ceil(cleanup.min_island_mm3 / np.prod(np.array(spacing))))
            img = RemoveSmallObjects(min_size=voxels - SKIMAGE_INCLUSIVE)(img)
        if cleanup.largest_component:
            img = KeepLargestConnectedComponent()(img)
        if cleanup.fill_holes:
            img = FillHoles()(img)
    return np.asarray(img[0]).astype(bool)


def random_masks(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        shape = tuple(int(v) for v in rng.integers(2, 16, 3))
        density = rng.uniform(0.01, 0.06) if rng.random() < 0.5 else rng.uniform(0.06, 0.75)  # sparse: ties
        yield rng.random(shape) < density, tuple(float(v) for v in rng.uniform(0.5, 3.0, 3))


@pytest.mark.parametrize(
    "cleanup",
    [
        Cleanup(largest_component=True),
        Cleanup(fill_holes=True),
        Cleanup(min_island_mm3=20.0),
        Cleanup(largest_component=True, fill_holes=True, min_island_mm3=8.0),
    ],
    ids=["largest", "holes", "islands", "all"],
)
def test_each_step_equals_monai_on_random_masks(cleanup):
    ties = 0
    for mask, spacing in random_masks(150, seed=int(cleanup.largest_component) * 4 + int(cleanup.fill_holes) * 2):
        got = clean_mask(mask, spacing, cleanup)
        want = monai_cleanup(mask, spacing, cleanup)
        assert np.array_equal(got, want), (mask.shape, spacing)
        components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
        sizes = np.bincount(sitk.GetArrayFromImage(components).reshape(-1))[1:]
        ties += int(len(sizes) > 1 and np.sum(sizes == sizes.max()) > 1)
    if cleanup.largest_component:
        assert ties >= 10, "the masks must hold components of equal largest size (MONAI's tie rule)"


def test_largest_component_is_full_connectivity_as_in_monai():
    mask = np.zeros((6, 6, 6), bool)
    mask[1:3, 1:3, 1:3] = True  # 8 voxels
    mask[3, 3, 3] = True  # touches the cube by a corner only
    mask[4:6, 4:6, 4:5] = True  # 4 voxels, by a corner to the voxel above
    got = clean_mask(mask, (1, 1, 1), Cleanup(largest_component=True))
    assert got.sum() == 13 and np.array_equal(got, monai_cleanup(mask, (1, 1, 1), Cleanup(largest_component=True)))


def test_real_ct_mask_equals_monai():
    image = sitk.ReadImage(str(shared_data("totalsegmentator", "example_ct_sm.nii.gz")))
    ct = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (I, J, K)
    spacing = image.GetSpacing()
    mask = (ct > 150) & (ct < 400)  # bone-ish: many pieces, holes, specks
    cleanup = Cleanup(largest_component=True, fill_holes=True, min_island_mm3=30.0)
    got = clean_mask(mask, spacing, cleanup)
    assert np.array_equal(got, monai_cleanup(mask, spacing, cleanup))
    assert 0 < got.sum() < mask.sum()
