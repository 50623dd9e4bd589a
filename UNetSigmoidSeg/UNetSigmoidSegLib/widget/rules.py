"""What the panel shows and allows, as plain functions of plain values (no Qt, no Slicer, no torch).

The module file calls these and copies the answers into widgets; the CI tests them directly.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..contract.model import ModelInfo, ModelSpec
from ..contract.options import (
    ACTIVATION_CHOICES,
    BACKEND_CHOICES,
    BLEND_MODE_CHOICES,
    DEVICE_CHOICES,
    SegmentOptions,
    default_threshold,
)
from ..contract.request import run_request as contract_run_request
from ..errors import CancelledError, OptionError, UserError, WorkerError

# (value, tooltip) of the panel's combo boxes: the run contract's vocabulary
ACTIVATIONS = ACTIVATION_CHOICES
NORMALIZATION_ITEMS = (
    ("model", "What the model records (its bundle, or the JSON next to a checkpoint)."),
    ("none", "Raw intensities: only for a network trained on them."),
    ("zscore", "Each channel to mean 0, standard deviation 1 (MR)."),
    ("zscore-nonzero", "As zscore, over the non-zero voxels only (skull-stripped MR)."),
    ("ct", "Clip to the window below and scale to [0, 1] (CT in Hounsfield units)."),
    ("range-sigmoid", "Sigmoid over the window below (MONAI Auto3DSeg's CT normalisation)."),
)
DEVICES = DEVICE_CHOICES
BLEND_MODES = BLEND_MODE_CHOICES
BACKENDS = BACKEND_CHOICES
RECENT_MODELS = 10


@dataclass
class PanelState:
    """Everything the Segment button depends on."""

    volume: bool = False
    model_path: str = ""
    model_exists: bool = False
    model_error: str = ""  # the model summary failed with this (actionable) message
    inspecting: bool = False  # the worker is reading the model for its summary
    running: bool = False
    cancelling: bool = False
    dependencies_ok: bool = True
    server: bool = False  # Run on → Server
    server_problem: str = ""  # why it cannot run there yet (remote_rules.server_problem)
    model_question: str = ""  # what the model does not record and the run needs (model_question)


@dataclass
class ButtonState:
    enabled: bool
    text: str
    tooltip: str


def segment_button(state: PanelState) -> ButtonState:
    """Segment while idle, Cancel while running; disabled with the reason as tooltip when inputs are not valid."""
    if state.running:
        if state.cancelling:
            return ButtonState(
                False, "Cancelling…", "Waiting for the worker to stop (it is killed if it does not answer)."
            )
        return ButtonState(True, "Cancel", "Stop the running segmentation; nothing partial is kept.")
    reason = ""
    if not state.volume:
        reason = "Select an input volume."
    elif state.server_problem:
        reason = state.server_problem
    elif not state.model_path:
        reason = "Select a model: a checkpoint (.pt/.pth/.ckpt), a TorchScript file or a MONAI bundle folder."
    elif not state.model_exists:
        reason = f"Model not found: {state.model_path}"
    elif state.model_error:
        reason = state.model_error
    elif state.inspecting:
        reason = "Reading the model…"
    elif state.model_question:
        reason = state.model_question
    if reason:
        return ButtonState(False, "Segment", reason)
    if not state.dependencies_ok:
        return ButtonState(
            True, "Segment", "PyTorch and MONAI are missing: you will be asked before anything is installed."
        )
    where = "on the server" if state.server else "in the background worker"
    return ButtonState(True, "Segment", f"Run the network on the input volume ({where}).")


def effective_activation(choice: str, info: Optional[ModelInfo]) -> str:
    """The activation a run will use: the explicit choice, else the model's default."""
    if choice != "auto" or info is None:
        return choice
    return str(info.activation or "auto")


def threshold_label(activation: str) -> Tuple[str, str]:
    """(label, tooltip) of the threshold slider for this activation."""
    if activation == "softmax":
        return (
            "Minimum confidence:",
            "A voxel keeps its most probable class only if that probability reaches this value (0: always).",
        )
    return (
        "Threshold:",
        "Probability at or above which a voxel belongs to the segment. Moving it re-thresholds the cached "
        "probabilities live; no network run.",
    )


def model_defaults(info: ModelInfo, activation_choice: str) -> Dict[str, Any]:
    """Panel values a newly picked model brings (Parameters field → value); absent ones keep the panel's."""
    out: Dict[str, Any] = {
        "threshold": default_threshold(effective_activation(activation_choice, info), info.threshold),
        "segmentThresholds": [],
        "roiSize": list(info.roi_size or []),
    }
    for key, field in (("overlap", "overlap"), ("sw_batch_size", "swBatchSize"), ("blend_mode", "blendMode")):
        if getattr(info, key) is not None:
            out[field] = getattr(info, key)
    return out


def parse_roi_size(text: str) -> Optional[List[int]]:
    """``"96, 96, 64"`` / ``"96"`` → list of ints; empty → None (the model's default). Raises OptionError."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        values = [int(v) for v in text.replace(";", ",").replace("x", ",").replace("×", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) not in (1, 3) or min(values) < 1:
        raise OptionError(
            f"ROI size '{text}' is not understood",
            "Give one or three positive integers, e.g. 96,96,96 — or leave it empty for the model's default.",
        )
    return values * 3 if len(values) == 1 else values


def parse_window(text: str) -> List[float]:
    """``"-57 164"`` → ``[-57.0, 164.0]``; anything else → ``[]`` (no window)."""
    try:
        values = [float(v) for v in (text or "").replace(",", " ").split()]
    except ValueError:
        return []
    return values if len(values) == 2 and values[0] < values[1] else []


def model_question(info: Optional[ModelInfo], params: Any) -> Tuple[str, bool]:
    """(what the picked model does not record that this run needs from the user, whether Segment waits for it),
    shown next to the model's summary. Segment waits exactly where the engine would refuse the run before any window:
    a ct / range-sigmoid normalisation without its window, sigmoid on several output channels not recorded as
    independent labels. An unrecorded input normalisation is asked without blocking: the engine refuses it only on
    raw intensities (an image already normalised runs)."""
    if info is None:
        return "", False
    if params.normalization in ("ct", "range-sigmoid") and len(params.ctWindow) != 2:
        return f"Normalisation {params.normalization} needs a window: type LOW HIGH, e.g. -57 164.", True
    if not params.multiLabel and info.sigmoid_unconfirmed(params.activation):
        return (
            f"Sigmoid on {info.out_channels} output channels the model does not record as independent labels: a "
            "softmax-trained model's channel 0 is the background. Choose softmax (or auto), or tick Independent "
            "labels if the channels are multi-label.",
            True,
        )
    if params.normalization == "model" and not info.format.startswith("bundle"):
        if "normalization" not in info.preprocessing:
            return (
                "This model does not record how its input was normalised: choose Input normalisation as in training "
                "(e.g. ct with the window -57 164 for CT, zscore for MR; none only for raw intensities).",
                False,
            )
    return "", False


def format_roi_size(values: Sequence[int]) -> str:
    return ",".join(str(int(v)) for v in values or [])


def remember(recent: Sequence[str], path: str, cap: int = RECENT_MODELS) -> List[str]:
    """Most recent first, no duplicates, at most ``cap``."""
    if not path:
        return list(recent)[:cap]
    return [path] + [p for p in recent if p != path][: cap - 1]


def progress_text(stage: str, fraction: float, message: str = "") -> str:
    pct = int(round(100 * min(max(fraction, 0.0), 1.0)))
    return f"{stage} {pct}%" + (f": {message}" if message else "")


# Parameters fields that are run keywords as they are (contract.request.run_request's camelCase vocabulary).
PANEL_KEYWORDS = (
    "activation",
    "device",
    "overlap",
    "swBatchSize",
    "blendMode",
    "amp",
    "backend",
    "largestComponent",
    "fillHoles",
    "minIslandMm3",
    "trustBundle",
    "multiLabel",
)


def run_request(
    params: Any, roi_text: Optional[str] = None, server_model: Optional[str] = None
) -> Tuple[ModelSpec, SegmentOptions, bool]:
    """The panel's ``Parameters`` (+ the raw ROI text, validated here) → the run contract: ``(ModelSpec,
    SegmentOptions, probabilityVolume)``. The one place panel values become run options. ``server_model``: Run on
    → Server, the server model's name (then the model path and trust are not used)."""
    roi = parse_roi_size(roi_text) if roi_text is not None else (list(params.roiSize) or None)
    thresholds = list(params.segmentThresholds)
    keywords = {name: getattr(params, name) for name in PANEL_KEYWORDS}
    keywords.update(threshold=thresholds if len(thresholds) > 1 else float(params.threshold), roiSize=roi)
    if params.normalization != "model":
        keywords.update(normalization=params.normalization, ctWindow=list(params.ctWindow) or None)
    if server_model is not None:  # Run on → Server: the server's model, by name
        keywords.pop("trustBundle")
        spec, options = contract_run_request(ModelSpec(name=server_model), **keywords)
    else:
        spec, options = contract_run_request(ModelSpec(params.modelPath), **keywords)
    return spec, options, bool(params.createProbabilityVolume)


def model_key(path: str, trust_bundle: bool) -> Optional[Tuple[str, int, str]]:
    """Cache key of a model summary (the runners' model cache key: changes when the file, the JSON next to it
    or any file of a bundle is replaced, or the trust flag changes). None when the path does not exist."""
    if not path or not os.path.exists(path):
        return None
    return ModelSpec(path, trust_bundle=bool(trust_bundle)).cache_key()


def error_text(exc: BaseException) -> Tuple[str, str]:
    """(message for the error dialog, details) — the actionable ``what — what to do`` of a UserError, the
    worker's last log lines as details; anything else is named as a bug with its text."""
    tail = "\n".join(getattr(exc, "log_tail", []) or [])
    if isinstance(exc, CancelledError):
        return (str(exc) or "Cancelled.", "")
    if isinstance(exc, WorkerError):
        return (str(exc), f"Worker log (last lines):\n{tail}" if tail else "")
    if isinstance(exc, UserError):
        return (str(exc), tail)
    return (
        f"Unexpected error: {type(exc).__name__}: {exc}. This is a bug — please report it with the log below.",
        str(exc) + ("\n" + tail if tail else ""),
    )


def run_summary(
    stats: List[Dict[str, Any]],
    seconds: float,
    device: Optional[str],
    window: Optional[str] = None,
    backend: Optional[str] = None,
) -> str:
    """One status line after a run: time, device (``"cpu: why"`` as the segmentation's attribute has it), the backend
    that ran the windows (``BackendChoice.describe()``: only its name here; ``backend_label`` has the why), the window
    the network ran with (``Window.describe()``, as the segmentation's attribute has it) and the segment volumes."""
    name, _, why = (device or "unknown device").partition(": ")
    parts = ", ".join(f"{s['segment']} {s['volume_ml']:g} mL" for s in stats)
    ran = f" using {backend.split(' (', 1)[0]}" if backend else ""
    used = f" with {window}" if window else ""
    return f"Done in {seconds:.1f} s on {name}{f' ({why})' if why else ''}{ran}{used}: {parts or 'no segments'}."


def backend_label(backend: Optional[str]) -> str:
    """The Advanced section's line under the backend choice: what the last run used and why."""
    return f"Last run: {backend}" if backend else ""
