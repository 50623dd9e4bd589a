"""Shared by the benchmark scripts: environment description, paired timing, printing and saving results, the
benchmark networks wrapped as loaded models."""

import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple


def loaded_model(net: Any, size_divisor: int, out_channels: int = 1, activation: str = "sigmoid", **info: Any) -> Any:
    """A benchmark network as the engine's ``LoadedModel`` (a UNet checkpoint with one input channel)."""
    from UNetSigmoidSegLib.engine.loading.model import LoadedModel, ModelInfo

    return LoadedModel(
        net,
        ModelInfo(
            path="bench",
            format="checkpoint",
            architecture="UNet",
            in_channels=1,
            out_channels=out_channels,
            activation=activation,
            activation_source="bench",
            size_divisor=size_divisor,
            **info,
        ),
    )


def environment(**extra: Any) -> Dict[str, Any]:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    env.update(extra)
    return env


def paired(baseline: Callable[[], Any], candidate: Callable[[], Any], repeats: int) -> Tuple[float, float, float]:
    """Median seconds of each, and the median of per-pair ratios (adjacent runs share the machine's load)."""
    b, c = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        baseline()
        b.append(time.perf_counter() - t)
        t = time.perf_counter()
        candidate()
        c.append(time.perf_counter() - t)
    return statistics.median(b), statistics.median(c), statistics.median(ci / bi for bi, ci in zip(b, c))


def emit(env: Dict[str, Any], results: List[Dict[str, Any]], json_path: Optional[str]) -> int:
    """Print the environment and one JSON line per result; save both when ``json_path`` is given."""
    print("environment:", json.dumps(env, default=str))
    for r in results:
        print(json.dumps(r))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2, default=str)
    return 0


def blob_probabilities(shape: Tuple[int, ...]) -> Any:
    """A blob-shaped probability field (I, J, K) in [0, 1], float32, so thresholds move a real boundary."""
    import numpy as np

    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    r2 = sum(((g - s / 2) / (s / 3)) ** 2 for g, s in zip(grids, shape))
    return (1.0 / (1.0 + np.exp(4 * (r2 - 1)))).astype(np.float32)


def empty_volume_node(scene: Any, shape: Tuple[int, ...]) -> Any:
    """A scalar volume node of ``shape`` (int16 voxels, unset) in ``scene``: the grid a result is shown on."""
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "vol")
    image = vtk.vtkImageData()
    image.SetDimensions(*shape)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(image)
    return node


def resampled_ct(size: Tuple[int, ...] = (256, 256, 128)) -> Any:
    """The real abdominal CT (TotalSegmentator example, 122×101×112, 3 mm) resampled (linear) to ``size`` voxels over
    the same extent, int16, as a SimpleITK image."""
    import SimpleITK as sitk

    path = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "Data", "totalsegmentator", "example_ct.nii.gz"
    )
    image = sitk.ReadImage(path)
    spacing = [sz * sp / n for sz, sp, n in zip(image.GetSize(), image.GetSpacing(), size)]
    return sitk.Resample(
        image,
        [int(n) for n in size],
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        -1024,
        sitk.sitkInt16,
    )
