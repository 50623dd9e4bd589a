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


def ras_view(arrays: List[np.ndarray], affine: np.ndarray) -> Tuple[List[np.ndarray], np.ndarray]:
    """Reorder/flip ``(I, J, K)`` arrays so that axes point to R, A, S (for display only);
    returns them and the ``(3,)`` spacing along R, A, S."""
    m = np.asarray(affine, float)[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing[None, :]
    order: List[int] = []
    for world in range(3):  # the voxel axis closest to R, then A, then S
        cands = [v for v in range(3) if v not in order]
        order.append(max(cands, key=lambda v: abs(direction[world, v])))
    out = []
    for arr in arrays:
        a = np.transpose(arr, order)
        for world, v in enumerate(order):
            if direction[world, v] < 0:
                a = np.flip(a, axis=world)
        out.append(a)
    return out, spacing[order]


def write_overview(
    path: str,
    image: np.ndarray,
    pred: np.ndarray,
    reference: np.ndarray,
    probabilities: np.ndarray,
    affine: np.ndarray,
    threshold: float,
    title: str,
    color: Tuple[float, float, float] = (0.9, 0.35, 0.25),
) -> None:
    """PNG: axial, coronal, sagittal slices through the predicted segment's centre (image ``(I, J, K)``,
    prediction filled, reference outlined) and a histogram of the ``(I, J, K)`` probabilities."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is only needed here
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    (img, prd, ref), sp = ras_view([image, pred, reference], affine)
    centre = np.rint(np.argwhere(prd).mean(axis=0)).astype(int) if prd.any() else np.array(img.shape) // 2
    lo, hi = np.percentile(img, [0.5, 99.5])
    fig = Figure(figsize=(16, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.1]})
    # (name, slicer, (x axis, y axis) in RAS, edge letters left/right, invert x for radiological display)
    views = [
        ("axial", lambda a: a[:, :, centre[2]], (0, 1), ("R", "L"), True),
        ("coronal", lambda a: a[:, centre[1], :], (0, 2), ("R", "L"), True),
        ("sagittal", lambda a: a[centre[0], :, :], (1, 2), ("P", "A"), False),
    ]
    for ax, (name, cut, (xa, ya), letters, invert) in zip(axes, views):
        aspect = sp[ya] / sp[xa]
        ax.imshow(cut(img).T, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
        overlay = np.ma.masked_where(~cut(prd).T, np.ones(cut(prd).T.shape))
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
        if cut(ref).any():
            ax.contour(cut(ref).T.astype(float), levels=[0.5], colors="yellow", linewidths=0.9)
        if invert:
            ax.invert_xaxis()
        ax.set_title(f"{name} (slice {centre[{'axial': 2, 'coronal': 1, 'sagittal': 0}[name]]})", fontsize=10)
        ax.text(0.02, 0.5, letters[0], transform=ax.transAxes, color="w", fontsize=11, va="center")
        ax.text(0.95, 0.5, letters[1], transform=ax.transAxes, color="w", fontsize=11, va="center")
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
    fig.suptitle(
        title + "   (filled: model, yellow line: reference mask; radiological view, R on the left)", fontsize=11
    )
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc}", "Choose another --output-dir.") from None


def run(output_dir: str, device: str = "auto", quiet: bool = False, resources: Optional[str] = None) -> DemoResult:
    """Segment the demo image and write the three outputs into ``output_dir`` (created if needed)."""
    from .contract.model import ModelSpec
    from .contract.options import SegmentOptions
    from .engine.files.outputs import write_probabilities, write_seg_nrrd
    from .engine.files.paths import protected_files
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
    result = runner.submit(volume, spec, SegmentOptions(device=device)).wait(progress=progress, log=log)
    reads = protected_files([paths["image"], paths["reference"], paths["model"]])  # never written over
    write_seg_nrrd(result, files["seg"], reads)
    write_probabilities(result, files["prob"], reads + [files["seg"]])
    progress("write", 1.0, os.path.basename(files["seg"]))
    progress.end_line()
    pred, ref = result.masks[0], reference.array[0] > 0
    notes = list(result.warnings)
    score = dice(pred, ref)
    overview: Optional[str] = files["png"]
    try:
        title = f"{MODEL_NAME} demo: Dice {score:.3f} vs reference, {result.statistics()[0]['volume_ml']:.0f} mL"
        write_overview(
            files["png"],
            volume.array[0],
            pred,
            ref,
            result.probabilities.as_float(0),
            volume.affine,
            result.thresholds[0],
            title,
            tuple(result.colors[0]),
        )
    except ImportError:
        overview = None
        notes.append("overview PNG skipped: matplotlib is not installed (pip install matplotlib)")
    return DemoResult(
        image=paths["image"],
        segmentation=files["seg"],
        probabilities=files["prob"],
        overview=overview,
        dice=score,
        volume_ml=float(result.statistics()[0]["volume_ml"]),
        reference_ml=float(ref.sum()) * volume.voxel_volume_ml,
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
