"""How a run is asked to go: ``SegmentOptions`` (with its ``Cleanup``) and the vocabulary it uses.

This module is the one source of the activation, device, blend-mode, normalization and orientation
names, of the ranges of every number and of the defaults. The CLI, the Slicer logic, the panel and the
worker protocol all build a ``SegmentOptions`` and carry it with ``to_dict`` / ``from_dict`` only. An
invalid ``SegmentOptions`` cannot be built: ``__post_init__`` validates and normalises every field.
Plain Python (no numpy, no torch): the Slicer panel imports it before torch is installed.
"""

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import OptionError

# (value, what it means) — the panel shows the second part as the item's tooltip
ACTIVATION_CHOICES: Tuple[Tuple[str, str], ...] = (
    ("auto", "The model's own choice (bundle / checkpoint config), else 1 output channel → sigmoid, more → softmax."),
    (
        "sigmoid",
        "Binary / multi-label: one segment per output channel, each with its own threshold; segments may overlap.",
    ),
    (
        "softmax",
        "Multi-class: channel 0 is background, every voxel gets its most probable class; the threshold is a "
        "minimum confidence.",
    ),
    ("none", "The network already outputs probabilities (it ends in a Sigmoid/Softmax layer): use them as they are."),
)
DEVICE_CHOICES: Tuple[Tuple[str, str], ...] = (
    ("auto", "CUDA if this Python sees an NVIDIA GPU, else Apple MPS, else CPU; the log says which and why."),
    ("cuda", "NVIDIA GPU. An error (never a silent fallback) if the worker's torch has no CUDA or sees no GPU."),
    ("cpu", "Processor only: always available, slower for large volumes."),
    ("mps", "Apple GPU (Metal) on Apple-silicon Macs."),
)
BACKEND_CHOICES: Tuple[Tuple[str, str], ...] = (
    (
        "auto",
        "CPU runs: the fastest backend measured on this model and window (once; remembered), PyTorch for short runs; "
        "CUDA / MPS: PyTorch (with AMP on CUDA). The log and the summary say which ran and why.",
    ),
    ("torch", "PyTorch as it is: the reference, on every device."),
    (
        "onednn",
        "PyTorch with every convolution sent to oneDNN (no extra package); CPU, non-TorchScript networks; checked "
        "against PyTorch on a probe window first.",
    ),
    (
        "openvino",
        "Intel OpenVINO (f32) on the CPU: the network is exported to ONNX once per model and window, checked against "
        "PyTorch and cached in your private cache folder.",
    ),
)
BLEND_MODE_CHOICES: Tuple[Tuple[str, str], ...] = (
    ("gaussian", "Weight each window's centre more than its border (MONAI default): smoother seams."),
    ("constant", "Average overlapping windows equally: faster, may show seams."),
)
ACTIVATIONS = tuple(v for v, _ in ACTIVATION_CHOICES)
DEVICES = tuple(v for v, _ in DEVICE_CHOICES)
BACKENDS = tuple(v for v, _ in BACKEND_CHOICES)
BLEND_MODES = tuple(v for v, _ in BLEND_MODE_CHOICES)
NORMALIZATIONS = ("none", "zscore", "zscore-nonzero", "ct", "range-sigmoid")
ORIENTATIONS = ("keep", "RAS")

# Ranges (inclusive) and defaults of the numbers a run takes.
RANGES: Dict[str, Tuple[float, float]] = {
    "threshold": (0.0, 1.0),
    "overlap": (0.0, 0.95),
    "sw_batch_size": (1, 64),
    "min_island_mm3": (0.0, 1e9),
    "roi_size": (1, 4096),
    "spacing": (1e-3, 1e3),
    "ct_window": (-1e7, 1e7),
    "slice_axis": (0, 2),
}
DEFAULT_ROI = 96
DEFAULT_OVERLAP = 0.25
DEFAULT_SW_BATCH_SIZE = 1
DEFAULT_BLEND_MODE = "gaussian"


def default_threshold(activation: str, model_threshold: Optional[float] = None) -> float:
    """Threshold when the user gives none: the model's own (``ModelInfo.threshold``), else a minimum confidence of 0
    for softmax (the plain argmax), else probability 0.5. The engine, the panel and the CLI all ask here."""
    if model_threshold is not None:
        return float(model_threshold)
    return 0.0 if activation == "softmax" else 0.5


def check_choice(name: str, value: Any, choices: Sequence[str], flag: str = "") -> str:
    """``value`` as one of ``choices`` (case-insensitive), or an ``OptionError`` listing them."""
    text = str(value)
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise OptionError(
        f"Unknown {name} {value!r}", f"Use one of: {', '.join(choices)}" + (f" ({flag})." if flag else ".")
    )


def check_activation(name: Any) -> str:
    return check_choice("activation", name, ACTIVATIONS)


def check_number(
    name: str, value: Any, integer: bool = False, lo: Optional[float] = None, hi: Optional[float] = None, hint: str = ""
) -> Union[int, float]:
    """A finite number within ``[lo, hi]`` (default: ``RANGES[name]``), or an ``OptionError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(str(value))
        except ValueError:
            raise OptionError(
                f"{name.replace('_', ' ').capitalize()} {value!r} is not a number", hint or f"Give a number for {name}."
            ) from None
    if not math.isfinite(value):
        raise OptionError(
            f"{name.replace('_', ' ').capitalize()} {value} is not a finite number",
            hint or f"Give a finite number for {name}.",
        )
    if integer:
        if float(value) != int(value):
            raise OptionError(
                f"{name.replace('_', ' ').capitalize()} {value} is not a whole number",
                hint or f"Give an integer for {name}.",
            )
        value = int(value)
    low, high = RANGES.get(name, (None, None))
    low, high = (low if lo is None else lo), (high if hi is None else hi)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low:g}, {high:g}]" if low is not None and high is not None else f"≥ {low:g}"
        raise OptionError(
            f"{name.replace('_', ' ').capitalize()} {value:g} is outside {bounds}",
            hint or f"Give {name} within {bounds}.",
        )
    return value


def check_thresholds(threshold: Union[None, float, Sequence[float]], n: int) -> List[float]:
    """One threshold per segment (a single value is used for all); each a probability in [0, 1]."""
    if threshold is None:
        return [0.5] * n
    values = [threshold] if isinstance(threshold, (int, float, str)) else list(threshold)
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise OptionError(f"{len(values)} thresholds given for {n} segments", f"Give one value or {n} values.")
    hint = "Thresholds apply to probabilities: pick a value between 0 and 1, e.g. 0.5."
    return [float(check_number("threshold", t, hint=hint)) for t in values]


def _numbers(name: str, value: Any, count: Tuple[int, ...], integer: bool, hint: str) -> Optional[List[Any]]:
    if value is None:
        return None
    values = [value] if isinstance(value, (int, float, str)) else list(value)
    if len(values) not in count:
        raise OptionError(
            f"{name.replace('_', ' ').capitalize()} {value} needs {' or '.join(map(str, count))} values", hint
        )
    return [check_number(name, v, integer=integer, hint=hint) for v in values]


@dataclass
class Cleanup:
    """Optional clean-up of each binary segment, applied in this order."""

    largest_component: bool = False
    fill_holes: bool = False
    min_island_mm3: float = 0.0

    def __post_init__(self) -> None:
        self.largest_component, self.fill_holes = bool(self.largest_component), bool(self.fill_holes)
        self.min_island_mm3 = float(
            check_number(
                "min_island_mm3", self.min_island_mm3 or 0.0, hint="Give a size in mm³ ≥ 0, e.g. --min-island-mm3 100."
            )
        )

    @property
    def active(self) -> bool:
        return self.largest_component or self.fill_holes or self.min_island_mm3 > 0

    @classmethod
    def from_dict(cls, data: Any) -> "Cleanup":
        return _from_dict(cls, data, "clean-up option")


@dataclass
class SegmentOptions:
    """Everything a run can be told. ``None`` means: the model's default, else the product default.

    threshold: one probability, or one per segment (softmax: a minimum confidence).
    roi_size: the sliding window, one size for every axis or one per axis (voxels); exactly what MONAI's
    ``sliding_window_inference`` gets (it pads a smaller image), rounded up only where the network needs sizes
    divisible by its downsampling. A 2-D network takes one or two in-plane sizes (of three, the slice axis' is unused).
    slice_axis: 2-D networks only: the axis (0, 1, 2 = i, j, k of the image the network sees) along which MONAI's
    ``SliceInferer`` runs slice by slice; None: the axis of largest spacing (ties: the later axis; axial for CT).
    backend: what runs the network's windows on the CPU (``BACKENDS``): ``auto`` picks the fastest one validated
    against PyTorch; an explicit one that cannot be used falls back to PyTorch with a warning saying why.
    spacing / ct_window / normalization / orientation: preprocessing of plain checkpoints.
    labels: segment names (one per segment), overriding the model's.
    keep_probabilities: return the float32 probabilities too (for a probability file; 4 bytes per voxel and class).
    multi_label: the output channels are independent labels: confirms ``sigmoid`` on a model with several output
    channels that does not record sigmoid (for a softmax-trained model, channel 0 is the background).
    """

    activation: str = "auto"
    threshold: Union[None, float, List[float]] = None
    device: str = "auto"
    amp: bool = True
    backend: str = "auto"
    roi_size: Optional[List[int]] = None
    sw_batch_size: Optional[int] = None
    overlap: Optional[float] = None
    blend_mode: Optional[str] = None
    slice_axis: Optional[int] = None
    normalization: Optional[str] = None
    ct_window: Optional[List[float]] = None
    orientation: Optional[str] = None
    spacing: Optional[List[float]] = None
    cleanup: Cleanup = field(default_factory=Cleanup)
    labels: Optional[List[str]] = None
    keep_probabilities: bool = False
    multi_label: bool = False

    def __post_init__(self) -> None:
        self.activation = check_activation(self.activation)
        self.device = check_choice("device", self.device, DEVICES)
        self.amp = bool(self.amp)
        for name in ("keep_probabilities", "multi_label"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be True or False, got {getattr(self, name)!r}", f"e.g. {name}=True")
        self.backend = check_choice("backend", self.backend, BACKENDS)
        if self.threshold is not None:
            scalar = isinstance(self.threshold, (int, float, str))
            values = check_thresholds(self.threshold, 1 if scalar else max(1, len(self.threshold)))
            self.threshold = values[0] if scalar or len(values) == 1 else values
        self.roi_size = _numbers(
            "roi_size",
            self.roi_size,
            (1, 2, 3),
            True,
            "Give one or one-per-axis positive integers, e.g. --roi-size 96 96 96.",
        )
        if self.sw_batch_size is not None:
            self.sw_batch_size = int(
                check_number(
                    "sw_batch_size",
                    self.sw_batch_size,
                    integer=True,
                    hint="Give a number of windows per batch ≥ 1, e.g. --sw-batch-size 2.",
                )
            )
        if self.overlap is not None:
            self.overlap = float(check_number("overlap", self.overlap, hint="e.g. --overlap 0.25"))
        if self.blend_mode is not None:
            self.blend_mode = check_choice("blend mode", self.blend_mode, BLEND_MODES)
        if self.slice_axis is not None:
            self.slice_axis = int(
                check_number(
                    "slice_axis",
                    self.slice_axis,
                    integer=True,
                    hint="Give 0, 1 or 2 (the i, j or k axis of the volume), e.g. --slice-axis 2 for axial CT slices.",
                )
            )
        if self.normalization is not None:
            self.normalization = check_choice("normalization", self.normalization, NORMALIZATIONS)
        if self.orientation is not None:
            self.orientation = check_choice("orientation", self.orientation, ORIENTATIONS)
        self.ct_window = _numbers("ct_window", self.ct_window, (2,), False, "e.g. --ct-window -160 240")
        if self.ct_window is not None and not self.ct_window[0] < self.ct_window[1]:
            raise OptionError(f"CT window {self.ct_window}: low must be below high", "e.g. --ct-window -160 240")
        spacing = _numbers(
            "spacing",
            self.spacing,
            (1, 3),
            False,
            "Give one or three positive numbers in mm, e.g. --spacing 1.5 1.5 2.",
        )
        self.spacing = None if spacing is None else [float(v) for v in (spacing * 3 if len(spacing) == 1 else spacing)]
        if not isinstance(self.cleanup, Cleanup):
            self.cleanup = Cleanup.from_dict(self.cleanup)
        if self.labels is not None:
            if isinstance(self.labels, str) or not all(isinstance(n, (str, int, float)) for n in self.labels):
                raise OptionError(
                    f"Labels (segment names) must be a list of strings, got {self.labels!r}",
                    "e.g. --labels liver tumour",
                )
            self.labels = [str(n) for n in self.labels]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able form (the worker protocol, the remote server and tests use only this pair)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "SegmentOptions":
        """Inverse of ``to_dict``; unknown keys or wrong values are an ``OptionError`` naming them."""
        return _from_dict(cls, data, "segment option")


def _from_dict(cls: Any, data: Any, what: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise OptionError(f"The {what}s must be a mapping, got {type(data).__name__}", "This is a bug in the caller.")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise OptionError(f"Unknown {what}(s): {', '.join(map(str, unknown))}", f"Known: {', '.join(known)}.")
    try:
        return cls(**data)
    except TypeError as exc:
        raise OptionError(f"Invalid {what}s: {exc}", f"Known: {', '.join(known)}.") from None
