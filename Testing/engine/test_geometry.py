"""Property tests: geometry survives every conversion and every invertible preprocessing step."""

import numpy as np
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from UNetSigmoidSegLib.contract.options import SegmentOptions
from UNetSigmoidSegLib.engine.files.volume import Volume, affine_from_sitk, array_to_sitk, read_volume, write_image
from UNetSigmoidSegLib.engine.loading.model import LoadedModel, ModelInfo
from UNetSigmoidSegLib.engine.running.pipeline import segment

spacings = st.tuples(*[st.floats(0.3, 5.0)] * 3)
origins = st.tuples(*[st.floats(-300, 300)] * 3)
rotations = st.tuples(*[st.floats(-1, 1)] * 4)
shapes = st.tuples(st.integers(3, 17), st.integers(3, 17), st.integers(2, 9))


def _affine(spacing, origin, quat, flip):
    q = np.array(quat)
    if np.linalg.norm(q) < 1e-3:
        q = np.array([0, 0, 0, 1.0])
    rot = np.array(sitk.VersorTransform(tuple(float(v) for v in q / np.linalg.norm(q))).GetMatrix()).reshape(3, 3)
    if flip:
        rot = rot @ np.diag([1, 1, -1])
    a = np.eye(4)
    a[:3, :3] = rot * np.array(spacing)
    a[:3, 3] = origin
    return a


@settings(max_examples=60, deadline=None)
@given(spacings, origins, rotations, st.booleans(), shapes)
def test_sitk_round_trip(spacing, origin, quat, flip, shape):
    affine = _affine(spacing, origin, quat, flip)
    arr = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    image = array_to_sitk(arr, affine)
    np.testing.assert_allclose(affine_from_sitk(image), affine, atol=1e-6)
    assert image.GetSize() == shape
    assert image.GetPixel(shape[0] - 1, 0, 1) == arr[shape[0] - 1, 0, 1]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spacings, origins, rotations, st.booleans(), shapes, st.sampled_from(["nrrd", "nii.gz", "mha"]))
def test_file_round_trip(tmp_path, spacing, origin, quat, flip, shape, ext):
    affine = _affine(spacing, origin, quat, flip)
    arr = np.random.default_rng(0).integers(0, 100, shape).astype(np.int16)
    path = str(tmp_path / f"v.{ext}")
    write_image(arr, affine, path)
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.array[0], arr)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-3 if ext == "nii.gz" else 1e-6)


class PassThrough(torch.nn.Module):
    """Identity network: the output equals the (preprocessed) input, so inversion can be checked voxel-wise."""

    def forward(self, x):
        return x


@settings(max_examples=15, deadline=None)
@given(spacings, origins, rotations, st.booleans(), st.floats(0.8, 3.0))
# a 45° oblique whose axes tie: MONAI's inverse orientation chose another axis order than its forward (found by CI)
@example(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), quat=(0.0, 0.5, 0.5, 0.75), flip=False, target=1.0)
def test_preprocessing_inverts_onto_input_grid(spacing, origin, quat, flip, target):
    affine = _affine(spacing, origin, quat, flip)
    shape = (12, 10, 6)
    grid = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    arr = (0.2 + 0.6 * grid[0] * grid[1]).astype(np.float32)[None]  # smooth, in (0, 1): bilinear round trips stay close
    vol = Volume(arr.copy(), affine)
    model = LoadedModel(
        PassThrough(),
        ModelInfo(
            path="mem",
            format="checkpoint",
            architecture="identity",
            in_channels=1,
            out_channels=1,
            activation="none",
            activation_source="test",
        ),
    )
    result = segment(
        vol, model, SegmentOptions(activation="none", orientation="RAS", spacing=[target] * 3, device="cpu")
    )
    assert result.probabilities.quantized.shape[1:] == shape
    np.testing.assert_array_equal(result.affine, affine)
    # orientation alone is a pure permutation/flip: exact up to the 1/255 quantisation
    exact = segment(vol, model, SegmentOptions(activation="none", orientation="RAS", device="cpu"))
    np.testing.assert_allclose(exact.probabilities.as_float(0), arr[0], atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(vol.array, arr)  # the input is never modified, even by a network returning its input


def test_a_cube_at_a_45_degree_tie_comes_back_on_its_own_axes():
    """Same sizes on every axis: a grid on permuted axes would fit the shape, silently wrong; the affine decides."""
    affine = _affine((1.0, 1.0, 1.0), (5.0, 0.0, -3.0), (0.0, 0.5, 0.5, 0.75), False)
    arr = np.random.default_rng(0).random((1, 8, 8, 8)).astype(np.float32) * 0.5 + 0.2
    model = LoadedModel(
        PassThrough(),
        ModelInfo(path="mem", format="checkpoint", architecture="identity", in_channels=1, out_channels=1,
                  activation="none", activation_source="test"),
    )  # fmt: skip
    result = segment(
        Volume(arr.copy(), affine), model, SegmentOptions(activation="none", orientation="RAS", device="cpu")
    )
    np.testing.assert_allclose(result.probabilities.as_float(0), arr[0], atol=0.5 / 255 + 1e-6)
