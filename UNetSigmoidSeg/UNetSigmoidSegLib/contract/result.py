"""What a run gives back: ``SegmentResult`` with its cached ``Probabilities``, and their one serialisation.

Quantisation (documented): probabilities are cached as ``uint8`` ``q = round(255 · p)``, one byte per
voxel and segment (resolution 1/255 ≈ 0.004, finer than the slider's 0.01 step). Re-thresholding at
``t`` keeps voxels with ``q ≥ ceil(255 · t)``; it can differ from thresholding the float probabilities
only for voxels within 1/510 of ``t`` (at ``t = 0.5`` it is exact).

``SegmentResult.to_wire`` / ``from_wire`` is the only way a result crosses a process or a network: JSON
fields plus named numpy arrays (the worker writes them as ``.npy`` files, the remote server compresses them).
numpy only: no torch, no SimpleITK at import.
"""

import math
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .options import Cleanup, check_thresholds

SCALE = 255
WIRE_VERSION = 1


@dataclass
class DeviceChoice:
    """The device a run used and why it was chosen."""

    device: str
    reason: str


@dataclass
class BackendChoice:
    """What ran the network's windows, and why (``SegmentOptions.backend`` asked for ``requested``).

    backend: ``torch`` | ``onednn`` | ``openvino``; reason: one line (auto's measurement, or why a faster backend
    was not used); runtime: its name and version; source: where the prepared network came from (``exported`` now,
    ``disk cache``, ``warm`` in this process' memory, ``""`` when nothing needs preparing); prepare_s: seconds spent
    preparing it in this run (export, compile, validation, measurement).

    Where a backend other than PyTorch ran (``engine.backends.check.GuardedForward``): windows: window batches of the
    run; pytorch_windows: how many of them PyTorch ran because a window was constant (its answer there is decided by
    rounding, not by the network); checked: how many were also run on PyTorch and compared; max_abs_diff: the
    largest logit difference those checks saw, held to ``tolerance``; check_s: the seconds they cost. redone: why
    the run was redone on PyTorch (a check failed; ``backend`` is then ``torch``), else ``""``.
    """

    requested: str
    backend: str
    reason: str
    runtime: str = ""
    source: str = ""
    prepare_s: float = 0.0
    windows: int = 0
    pytorch_windows: int = 0
    checked: int = 0
    max_abs_diff: Optional[float] = None
    tolerance: Optional[float] = None
    check_s: float = 0.0
    redone: str = ""

    def agreement(self) -> str:
        """What was checked against PyTorch, e.g. ``checked against PyTorch on 3 of 32 window batches (max |Δlogit|
        2.1e-05, tolerance 0.0039); 4 constant window batches ran on PyTorch``; ``""`` where PyTorch ran them all."""
        if self.redone:
            return f"redone on PyTorch: {self.redone}"
        parts = []
        if self.checked:
            parts.append(
                f"checked against PyTorch on {self.checked} of {self.windows} window batches (max |Δlogit| "
                f"{self.max_abs_diff:.2g}, tolerance {self.tolerance:.2g})"
            )
        if self.pytorch_windows:
            parts.append(f"{self.pytorch_windows} constant window batches ran on PyTorch")
        return "; ".join(parts)

    def short(self) -> str:
        """For a result line: ``openvino (3 of 32 window batches checked against PyTorch)``, ``torch (redone: …)``."""
        if self.redone:
            return f"{self.backend} (redone: {self.redone.split(':')[0]})"
        if self.checked:
            return f"{self.backend} ({self.checked} of {self.windows} window batches checked against PyTorch)"
        return self.backend

    def describe(self) -> str:
        """One line, e.g. ``openvino (auto: fastest on a probe window, …; checked against PyTorch on …)``."""
        why = "; ".join(p for p in (self.reason, self.agreement()) if p)
        return f"{self.backend} ({why})" if why else self.backend

    def to_dict(self) -> Dict[str, Any]:
        def number(value: Optional[float]) -> Optional[float]:
            return None if value is None else float("%.3g" % value)

        return {
            "requested": str(self.requested),
            "backend": str(self.backend),
            "reason": str(self.reason),
            "runtime": str(self.runtime),
            "source": str(self.source),
            "prepare_s": round(float(self.prepare_s), 3),
            "windows": int(self.windows),
            "pytorch_windows": int(self.pytorch_windows),
            "checked": int(self.checked),
            "max_abs_diff": number(self.max_abs_diff),
            "tolerance": number(self.tolerance),
            "check_s": round(float(self.check_s), 3),
            "redone": str(self.redone),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BackendChoice":
        """Inverse of ``to_dict`` (keys this version does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


AXIS_NAMES = ("i", "j", "k")


@dataclass
class Window:
    """The sliding window a run used: exactly what MONAI's inferer got.

    roi_size: voxels per axis of the image the network saw (after preprocessing): 3-D ``(i, j, k)``; 2-D the two
    in-plane axes in ``i, j, k`` order without ``slice_axis``, as MONAI's ``SliceInferer(roi_size, spatial_dim=…)``.
    requested_roi: what the user or the model asked for, when it had to be rounded up to fit the network's downsampling.
    """

    roi_size: List[int]
    overlap: float
    sw_batch_size: int
    blend_mode: str
    slice_axis: Optional[int] = None
    requested_roi: Optional[List[int]] = None
    extra: Dict[str, Any] = field(default_factory=dict)  # a bundle inferer's padding_mode, sigma_scale, cval

    def describe(self) -> str:
        """One line, e.g. ``roi 96×96×96, overlap 0.25, batch 1, gaussian`` (2-D: ``2-D slices along k, roi …``)."""
        roi = "×".join(str(int(r)) for r in self.roi_size)
        head = "" if self.slice_axis is None else f"2-D slices along {AXIS_NAMES[self.slice_axis]}, "
        asked = f" (asked {'×'.join(str(int(r)) for r in self.requested_roi)})" if self.requested_roi else ""
        more = "".join(f", {k} {v}" for k, v in sorted(self.extra.items()))
        return f"{head}roi {roi}{asked}, overlap {self.overlap:g}, batch {self.sw_batch_size}, {self.blend_mode}{more}"

    def to_dict(self) -> Dict[str, Any]:
        """The fields; ``extra`` only when a bundle's inferer set any."""
        out = {
            "roi_size": [int(r) for r in self.roi_size],
            "overlap": float(self.overlap),
            "sw_batch_size": int(self.sw_batch_size),
            "blend_mode": str(self.blend_mode),
            "slice_axis": None if self.slice_axis is None else int(self.slice_axis),
            "requested_roi": None if self.requested_roi is None else [int(r) for r in self.requested_roi],
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Window":
        """Inverse of ``to_dict`` (keys this version does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def quantize(probabilities: np.ndarray) -> np.ndarray:
    """float probabilities in [0, 1] → uint8 ``round(255 · p)`` (half to even). Rounded in their own float type, then
    converted: several times faster than rounding straight into uint8 (a casting loop), with the same result."""
    scaled = np.clip(probabilities, 0.0, 1.0).astype(np.result_type(probabilities, np.float32), copy=False)
    np.multiply(scaled, SCALE, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def level(t: float) -> int:
    """Cache level equivalent to probability threshold ``t``: keep ``q >= level(t)``."""
    return int(math.ceil(round(t * SCALE, 6)))


@dataclass
class Probabilities:
    """The probabilities of a run, cached on the input grid.

    sigmoid / none: ``quantized`` is ``(S, I, J, K)`` uint8, one channel per segment, ``argmax`` is None.
    softmax: ``quantized`` is ``(1, I, J, K)`` uint8 confidence of the winning class and ``argmax``
    ``(I, J, K)`` uint8 the winning class (0 = background, segment s ↔ class s + 1).
    exact: the float32 probabilities themselves, ``(C, I, J, K)`` (softmax: every class, background first), kept
    only when asked (``SegmentOptions.keep_probabilities``: a probability file); thresholds then use them, exactly.
    """

    activation: str
    quantized: np.ndarray
    argmax: Optional[np.ndarray] = None
    n_classes: int = 0  # softmax only: classes including background
    exact: Optional[np.ndarray] = None

    @property
    def softmax(self) -> bool:
        return self.argmax is not None

    @property
    def n_segments(self) -> int:
        return int(self.n_classes - 1) if self.softmax else int(self.quantized.shape[0])

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.quantized, self.argmax, self.exact) if a is not None))

    def as_float(self, segment: int = 0) -> np.ndarray:
        """Probability (or winning-class confidence for softmax) of one segment as float32 in [0, 1]."""
        return self.quantized[0 if self.softmax else segment].astype(np.float32) / SCALE

    def transposed(self) -> "Probabilities":
        """The same probabilities with the spatial axes reversed ((I, J, K) ⇄ (K, J, I)), contiguous."""
        return Probabilities(
            self.activation,
            np.ascontiguousarray(self.quantized.transpose(0, 3, 2, 1)),
            None if self.argmax is None else np.ascontiguousarray(self.argmax.T),
            self.n_classes,
            None if self.exact is None else np.ascontiguousarray(self.exact.transpose(0, 3, 2, 1)),
        )


def make_probabilities(probabilities: np.ndarray, activation: str, keep: bool = False) -> Probabilities:
    """``(C, I, J, K)`` float probabilities → compact cache (softmax keeps argmax + confidence); ``keep``: the
    float32 probabilities too (``exact``)."""
    exact = np.ascontiguousarray(probabilities, dtype=np.float32) if keep else None
    if activation == "softmax":
        argmax = np.argmax(probabilities, axis=0).astype(np.uint8)
        confidence = quantize(np.max(probabilities, axis=0))[None]
        return Probabilities("softmax", confidence, argmax, n_classes=int(probabilities.shape[0]), exact=exact)
    return Probabilities(activation, quantize(probabilities), exact=exact)


def threshold_map(
    probabilities: Probabilities,
    thresholds: Sequence[float],
    segment: Optional[int] = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Pure, fast re-threshold of the cache: ``(S, I, J, K)`` bool masks (or one ``(I, J, K)`` for ``segment``).

    sigmoid/none: segment s = ``q_s ≥ level(t_s)``. softmax: segment s = argmax is s + 1 and the
    winning confidence ≥ t_s (minimum confidence; 0 gives the plain argmax). ``out`` (bool, the
    result's shape) is reused when given, so live updates allocate nothing. With ``exact`` probabilities the
    comparisons use them (``p ≥ t``, what MONAI's ``AsDiscrete(threshold=t)`` does): equal to the run's own masks.
    """
    segments = list(range(probabilities.n_segments)) if segment is None else [segment]
    shape = probabilities.quantized.shape[1:]
    if out is None:
        out = np.empty((len(segments),) + shape, dtype=bool)
    masks = out.reshape((len(segments),) + shape)
    for i, s in enumerate(segments):
        t = thresholds[s]
        exact = probabilities.exact
        if probabilities.softmax:
            np.equal(probabilities.argmax, s + 1, out=masks[i])
            if t > 0:  # where class s + 1 wins, its probability is the winning confidence
                masks[i] &= (probabilities.quantized[0] >= level(t)) if exact is None else (exact[s + 1] >= t)
        elif exact is not None:
            np.greater_equal(exact[s], t, out=masks[i])
        else:
            np.greater_equal(probabilities.quantized[s], level(t), out=masks[i])
    return masks[0] if segment is not None else masks


def statistics(masks: np.ndarray, labels: Sequence[str], voxel_volume_ml: float) -> List[Dict[str, object]]:
    """Voxel count and volume (mL) of each ``(S, I, J, K)`` mask."""
    out = []
    for label, m in zip(labels, masks):
        n = int(np.count_nonzero(m))
        out.append({"segment": label, "voxels": n, "volume_ml": round(n * voxel_volume_ml, 4)})
    return out


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """``(S, I, J, K)`` bool → flat uint8, 8 voxels per byte."""
    return np.packbits(np.ascontiguousarray(masks, dtype=bool).reshape(-1))


def unpack_masks(packed: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Inverse of ``pack_masks``: ``(S, I, J, K)`` bool."""
    shape = tuple(int(s) for s in shape)
    return np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).view(bool)


@dataclass
class SegmentResult:
    """Probabilities cached on the input grid and the segments at the chosen thresholds.

    masks: ``(S, I, J, K)`` bool; affine: voxel → RAS ``(4, 4)``; spacing: ``(3,)`` mm; labels: segment names;
    placement: where the windows ran and where they were stitched (``CPU``, ``CUDA``, or an out-of-memory fallback).
    window: the sliding window MONAI's inferer got (roi size, overlap, batch, blend mode; 2-D: the slice axis).
    backend: what ran the windows (PyTorch, oneDNN, OpenVINO) and why.
    """

    probabilities: Probabilities
    masks: np.ndarray
    labels: List[str]
    colors: List[Tuple[float, ...]]
    thresholds: List[float]
    activation: str
    affine: np.ndarray
    spacing: np.ndarray
    device: DeviceChoice
    placement: str
    cleanup: Cleanup
    timings: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    window: Optional[Window] = None
    backend: Optional[BackendChoice] = None

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def statistics(self) -> List[Dict[str, object]]:
        return statistics(self.masks, self.labels, self.voxel_volume_ml)

    def rethreshold(self, threshold: Union[float, Sequence[float]]) -> np.ndarray:
        """New thresholds on the cache (no network run), with the run's clean-up; updates and returns ``masks``."""
        from ..engine.running.postprocess import clean_mask  # SimpleITK, imported only when clean-up is asked for

        self.thresholds = check_thresholds(threshold, self.probabilities.n_segments)
        masks = threshold_map(self.probabilities, self.thresholds)
        if self.cleanup.active:
            masks = np.stack([clean_mask(m, self.spacing, self.cleanup) for m in masks])
        self.masks = masks
        return self.masks

    # ------------------------------------------------------------------ the one serialisation
    def to_wire(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        """JSON-able fields and named arrays (``quantized``, ``argmax`` for softmax, bit-packed ``masks``)."""
        fields_ = {
            "version": WIRE_VERSION,
            "activation": self.activation,
            "n_classes": int(self.probabilities.n_classes),
            "probabilities_activation": self.probabilities.activation,
            "masks_shape": [int(s) for s in self.masks.shape],
            "labels": list(self.labels),
            "colors": [[float(c) for c in color] for color in self.colors],
            "thresholds": [float(t) for t in self.thresholds],
            "affine": np.asarray(self.affine, float).tolist(),
            "spacing": np.asarray(self.spacing, float).tolist(),
            "device": {"device": self.device.device, "reason": self.device.reason},
            "placement": self.placement,
            "cleanup": self.cleanup.__dict__.copy(),
            "timings": {k: float(v) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "window": None if self.window is None else self.window.to_dict(),
            "backend": None if self.backend is None else self.backend.to_dict(),
        }
        arrays = {"quantized": self.probabilities.quantized, "masks": pack_masks(self.masks)}
        for name in ("argmax", "exact"):
            if getattr(self.probabilities, name) is not None:
                arrays[name] = getattr(self.probabilities, name)
        return fields_, arrays

    @classmethod
    def from_wire(cls, fields_: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> "SegmentResult":
        """Inverse of ``to_wire``; a mismatch raises ``ValueError`` naming it."""
        if fields_.get("version") != WIRE_VERSION:
            raise ValueError(f"result format {fields_.get('version')!r}, this version reads {WIRE_VERSION}")
        shape = [int(s) for s in fields_["masks_shape"]]
        quantized = np.asarray(arrays["quantized"])
        argmax = arrays.get("argmax")
        if quantized.dtype != np.uint8 or list(quantized.shape[1:]) != shape[1:]:
            raise ValueError(f"probabilities {quantized.dtype}{list(quantized.shape)} do not fit masks {shape}")
        if argmax is not None and (argmax.dtype != np.uint8 or list(argmax.shape) != shape[1:]):
            raise ValueError(f"argmax {argmax.dtype}{list(argmax.shape)} does not fit masks {shape}")
        n_classes = int(fields_["n_classes"])
        exact = arrays.get("exact")
        channels = n_classes if argmax is not None else quantized.shape[0]
        if exact is not None and (exact.dtype != np.float32 or list(exact.shape) != [channels] + shape[1:]):
            raise ValueError(f"probabilities {exact.dtype}{list(exact.shape)} do not fit {channels} channels {shape}")
        probabilities = Probabilities(
            str(fields_["probabilities_activation"]), quantized, argmax, n_classes=n_classes, exact=exact
        )
        return cls(
            probabilities,
            unpack_masks(np.asarray(arrays["masks"]), shape),
            [str(x) for x in fields_["labels"]],
            [tuple(float(v) for v in c) for c in fields_["colors"]],
            [float(t) for t in fields_["thresholds"]],
            str(fields_["activation"]),
            np.asarray(fields_["affine"], dtype=float),
            np.asarray(fields_["spacing"], dtype=float),
            DeviceChoice(**fields_["device"]),
            str(fields_["placement"]),
            Cleanup.from_dict(fields_["cleanup"]),
            {str(k): float(v) for k, v in fields_["timings"].items()},
            [str(w) for w in fields_["warnings"]],
            Window.from_dict(fields_["window"]) if fields_.get("window") else None,
            BackendChoice.from_dict(fields_["backend"]) if fields_.get("backend") else None,
        )
