"""``unetsigmoidseg demo``: segment the bundled T1 head MRI with the bundled demo brain model.

Uses the source checkout's ``Resources`` folder (``../../Resources`` from this package):
``Models/BrainT1UNet`` (MONAI bundle) and ``Data/T1_head.nii.gz`` + ``Data/T1_head_brainmask.nii.gz``.
Writes ``T1_head.seg.nrrd``, ``T1_head_probabilities.nrrd`` and ``T1_head_overview.png`` and prints
the Dice against the reference mask. The model was trained on this very image, so that Dice shows
the product working end to end, not how well the model generalises (see the model card).
"""

import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import NOT_CLINICAL
from .errors import InputError, ModelError, OutputError

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
RESOURCES_ENV = "UNETSIGMOIDSEG_RESOURCES"  # optional override of the Resources folder
MODEL_NAME = "BrainT1UNet"
SAMPLE = "T1_head.nii.gz"
REFERENCE = "T1_head_brainmask.nii.gz"


@dataclass
class DemoResult:
    """What the demo produced: file paths, Dice vs the reference mask, segment volume, timings."""

    image: str
    segmentation: str
    probabilities: str
    overview: Optional[str]
    dice: float
    volume_ml: float
    reference_ml: float
    device: str
    seconds: float
    notes: List[str]


def resources_dir() -> str:
    """The ``Resources`` folder of the source checkout (or ``$UNETSIGMOIDSEG_RESOURCES``)."""
    return os.path.abspath(os.environ.get(RESOURCES_ENV) or os.path.join(PACKAGE_DIR, "..", "..", "Resources"))


def demo_paths(resources: Optional[str] = None) -> Dict[str, str]:
    """``{"model", "image", "reference"}`` paths; a ``UserError`` naming what is missing otherwise."""
    root = resources or resources_dir()
    paths = {
        "model": os.path.join(root, "Models", MODEL_NAME),
        "image": os.path.join(root, "Data", SAMPLE),
        "reference": os.path.join(root, "Data", REFERENCE),
    }
    if not os.path.isdir(root):
        raise ModelError(
            f"The demo files are not here: {root} does not exist",
            "The demo runs from a source checkout: clone the repository and run `pip install -e .` in it "
            f"(or set {RESOURCES_ENV} to the checkout's Resources folder).",
        )
    missing = [
        p
        for p in (
            os.path.join(paths["model"], "configs", "inference.json"),
            os.path.join(paths["model"], "models", "model.pt"),
            paths["image"],
            paths["reference"],
        )
        if not os.path.isfile(p)
    ]
    if missing:
        raise ModelError(
            f"Demo file(s) missing: {', '.join(missing)}",
            "Restore them from the repository (git checkout -- Resources), or retrain the model with "
            "python Resources/Training/train_brain_unet.py.",
        )
    return paths


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean ``(I, J, K)`` arrays."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(a & b)) / denom


# The three slice views: (name, RAS axis normal to the slice, (x, y) RAS axes on screen, x reversed: radiological).
VIEWS = (("axial", 2, (0, 1), True), ("coronal", 1, (0, 2), True), ("sagittal", 0, (1, 2), False))
RAS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # (negative end, positive end) of the R, A and S axes


def ras_axes(affine: np.ndarray) -> Tuple[List[int], List[bool]]:
    """For R, A, S in turn: the voxel axis closest to it, and whether that voxel axis runs the other way."""
    m = np.asarray(affine, float)[:3, :3]
    direction = m / np.linalg.norm(m, axis=0)[None, :]
    order: List[int] = []
    for world in range(3):  # the voxel axis closest to R, then A, then S
        cands = [v for v in range(3) if v not in order]
        order.append(max(cands, key=lambda v: abs(direction[world, v])))
    return order, [bool(direction[world, v] < 0) for world, v in enumerate(order)]


def ras_view(arrays: List[np.ndarray], affine: np.ndarray) -> Tuple[List[np.ndarray], np.ndarray]:
    """Reorder/flip ``(I, J, K)`` arrays so that axes point to R, A, S (for display only);
    returns them and the ``(3,)`` spacing along R, A, S."""
    order, flips = ras_axes(affine)
    spacing = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    out = []
    for arr in arrays:
        a = np.transpose(arr, order)
        for world, flip in enumerate(flips):
            if flip:
                a = np.flip(a, axis=world)
        out.append(a)
    return out, spacing[order]


def display_index(voxel: np.ndarray, shape: Tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Where voxel ``(i, j, k)`` of an array of ``shape`` lies in ``ras_view``'s arrays (R, A, S order)."""
    order, flips = ras_axes(affine)
    return np.array([shape[v] - 1 - voxel[v] if flip else voxel[v] for v, flip in zip(order, flips)], dtype=int)


def ras_mm(affine: np.ndarray, voxel: np.ndarray) -> np.ndarray:
    """``(R, A, S)`` patient coordinates in mm of the centre of voxel ``(i, j, k)``."""
    a = np.asarray(affine, float)
    return a[:3, :3] @ np.asarray(voxel, float) + a[:3, 3]


def ras_label(axis: int, mm: float) -> str:
    """One coordinate as Slicer's Data Probe writes it: ``R 20.0 mm`` / ``L 20.0 mm`` (axis 0), A/P (1), S/I (2)."""
    value = round(float(mm), 1) + 0.0  # + 0.0: -0.0 becomes 0.0
    return f"{RAS_LETTERS[axis][int(value >= 0)]} {abs(value):.1f} mm"


def slice_titles(point_mm: np.ndarray) -> List[str]:
    """Titles of the axial, coronal, sagittal panels: each slice's position in mm, e.g. ``axial at S 12.0 mm``."""
    return [f"{name} at {ras_label(normal, point_mm[normal])}" for name, normal, _, _ in VIEWS]


def edge_letters(axis: int, reversed_x: bool) -> Tuple[str, str]:
    """(left, right) orientation letters of a panel whose x axis is RAS ``axis``, reversed or not."""
    neg, pos = RAS_LETTERS[axis]
    return (pos, neg) if reversed_x else (neg, pos)


def overview_caption(score: float, volume_ml: float, reference_ml: float) -> str:
    """The picture's three-line title: the Dice, what it does not show, the research-use note and the legend."""
    return "\n".join(
        [
            f"{MODEL_NAME} demo: Dice {score:.3f} against the reference brain mask; "
            f"brain {volume_ml:.0f} mL (reference {reference_ml:.0f} mL)",
            "Measured on the demo model's own training image (the model was trained on this very image): "
            "it shows the software works end to end and is not a measure of accuracy.",
            f"{NOT_CLINICAL} Red fill: model; yellow line: reference mask; radiological view (R on the left); "
            "slice positions in patient (RAS) mm.",
        ]
    )


def overview_figure(
    image: np.ndarray,
    pred: np.ndarray,
    reference: np.ndarray,
    probabilities: np.ndarray,
    affine: np.ndarray,
    threshold: float,
    title: str,
    color: Tuple[float, float, float] = (0.9, 0.35, 0.25),
):
    """The overview as a laid-out matplotlib ``Figure``: axial, coronal, sagittal slices through the predicted
    segment's centre (image ``(I, J, K)``, prediction filled, reference outlined, positions in RAS mm, orientation
    letters beside each slice) and a histogram of the ``(I, J, K)`` probabilities."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is only needed here
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    (img, prd, ref), sp = ras_view([image, pred, reference], affine)
    voxel = np.rint(np.argwhere(pred).mean(axis=0)).astype(int) if pred.any() else np.array(image.shape) // 2
    centre = display_index(voxel, image.shape, affine)
    lo, hi = np.percentile(img, [0.5, 99.5])
    fig = Figure(figsize=(16, 5.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.1]})
    for ax, (_, normal, (xa, ya), reversed_x), heading in zip(axes, VIEWS, slice_titles(ras_mm(affine, voxel))):
        cut_img = np.take(img, centre[normal], axis=normal).T  # (y, x) for imshow
        cut_prd = np.take(prd, centre[normal], axis=normal).T
        cut_ref = np.take(ref, centre[normal], axis=normal).T
        aspect = sp[ya] / sp[xa]
        ax.imshow(cut_img, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
        overlay = np.ma.masked_where(~cut_prd, np.ones(cut_prd.shape))
        ax.imshow(
            overlay,
            cmap=ListedColormap([color]),
            alpha=0.45,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
            vmin=0,
            vmax=1,
        )
        if cut_ref.any():
            ax.contour(cut_ref.astype(float), levels=[0.5], colors="yellow", linewidths=0.9)
        if reversed_x:
            ax.invert_xaxis()
        ax.set_title(heading, fontsize=10)
        left, right = edge_letters(xa, reversed_x)  # beside the image, never on it
        ax.text(-0.03, 0.5, left, transform=ax.transAxes, fontsize=11, fontweight="bold", ha="right", va="center")
        ax.text(1.03, 0.5, right, transform=ax.transAxes, fontsize=11, fontweight="bold", ha="left", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    hist_ax = axes[3]
    counts, edges = np.histogram(probabilities, bins=50, range=(0.0, 1.0))
    hist_ax.bar(edges[:-1], np.maximum(counts, 0.8), width=edges[1] - edges[0], align="edge", color="0.4")
    hist_ax.set_yscale("log")
    hist_ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:g}")
    hist_ax.set_xlabel("brain probability (sigmoid of the logit)")
    hist_ax.set_ylabel("voxels (log scale)")
    hist_ax.set_title("probability histogram", fontsize=10)
    hist_ax.legend(loc="upper center", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def write_overview(path: str, fig, title: str) -> None:
    """Save an ``overview_figure(...)`` as a PNG at ``path``; the title is also its ``Description`` text chunk."""
    try:
        fig.savefig(path, metadata={"Description": title})
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc}", "Choose another --output-dir.") from None


def run(output_dir: str, device: str = "auto", quiet: bool = False, resources: Optional[str] = None) -> DemoResult:
    """Segment the demo image and write the three outputs into ``output_dir`` (created if needed)."""
    from .contract.model import ModelSpec
    from .contract.options import SegmentOptions
    from .engine.files.outputs import write_seg_nrrd
    from .engine.files.paths import protected_files
    from .engine.files.probfile import write_probabilities
    from .engine.files.volume import read_volume, same_geometry
    from .engine.running.inference import select_device
    from .progress import Progress
    from .runners.inprocess import InProcessRunner

    paths = demo_paths(resources)
    select_device(device)  # an unusable --device fails before anything is written
    out = os.path.abspath(os.path.expanduser(output_dir))
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create the output folder {out}: {exc.strerror}",
            "Choose a folder you can write to with --output-dir.",
        ) from None
    files = {
        k: os.path.join(out, "T1_head" + s)
        for k, s in (("seg", ".seg.nrrd"), ("prob", "_probabilities.nrrd"), ("png", "_overview.png"))
    }
    log = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr))
    t0 = time.perf_counter()
    runner, spec = InProcessRunner(), ModelSpec(paths["model"], trust_bundle=False)
    log(f"model: {runner.inspect(spec).wait().summary()}")
    volume = read_volume(paths["image"])
    reference = read_volume(paths["reference"])
    if reference.spatial_shape != volume.spatial_shape or not same_geometry(reference.affine, volume.affine):
        raise InputError(
            "The demo's reference mask is not on the image's grid", "Restore Resources/Data from the repository."
        )
    progress = Progress(1, quiet=quiet)
    progress.start_case(0, "T1_head")
    options = SegmentOptions(device=device, keep_probabilities=True)  # the probability file: what was thresholded
    result = runner.submit(volume, spec, options).wait(progress=progress, log=log)
    reads = protected_files([paths["image"], paths["reference"], paths["model"]])  # never written over
    write_seg_nrrd(result, files["seg"], reads)
    write_probabilities(result, files["prob"], reads + [files["seg"]])
    progress("write", 1.0, os.path.basename(files["seg"]))
    progress.end_line()
    pred, ref = result.masks[0], reference.array[0] > 0
    notes = list(result.warnings)
    score = dice(pred, ref)
    volume_ml = float(result.statistics()[0]["volume_ml"])
    reference_ml = float(ref.sum()) * volume.voxel_volume_ml
    overview: Optional[str] = files["png"]
    try:  # default red fill, not the segment's colour: brain's near-white would not show on the grey MRI
        caption = overview_caption(score, volume_ml, reference_ml)
        figure = overview_figure(
            volume.array[0], pred, ref, result.probabilities.as_float(0), volume.affine, result.thresholds[0], caption
        )
        write_overview(files["png"], figure, caption)
    except ImportError:
        overview = None
        notes.append("overview PNG skipped: matplotlib is not installed (pip install matplotlib)")
    return DemoResult(
        image=paths["image"],
        segmentation=files["seg"],
        probabilities=files["prob"],
        overview=overview,
        dice=score,
        volume_ml=volume_ml,
        reference_ml=reference_ml,
        device=result.device.device,
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


def report(res: DemoResult) -> str:
    """The text the demo prints on stdout."""
    lines = [
        f"UNetSigmoidSeg demo: brain segmentation of {os.path.basename(res.image)} on {res.device} "
        f"in {res.seconds:.1f} s",
        f"  Dice vs reference brain mask: {res.dice:.4f}  (the demo model was trained on this image: this shows the "
        "product works end to end, not generalisation; see Resources/Models/BrainT1UNet/docs/README.md)",
        f"  brain volume: {res.volume_ml:.1f} mL (reference {res.reference_ml:.1f} mL)",
        f"  segmentation:  {res.segmentation}",
        f"  probabilities: {res.probabilities}",
        f"  overview:      {res.overview or 'not written'}",
        f"  input image:   {res.image}",
        "Open in 3D Slicer: drag and drop the input image and the .seg.nrrd into the Slicer window "
        "(or File > Add Data);",
        "  the segment 'brain' shows over the T1. The probability map loads as a volume (use it as a colour overlay).",
    ]
    lines += [f"  note: {n}" for n in res.notes]
    return "\n".join(lines)


def run_demo(output_dir: str, device: str = "auto", quiet: bool = False) -> int:
    """CLI entry point: run the demo, print the report, return the exit code 0."""
    print(report(run(output_dir, device=device, quiet=quiet)))
    return 0
