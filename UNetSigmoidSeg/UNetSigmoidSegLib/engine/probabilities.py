"""Activation, compact probability cache and thresholding.

Quantisation (documented): probabilities are cached as ``uint8`` ``q = round(255 · p)``, one byte
per voxel and segment (resolution 1/255 ≈ 0.004, finer than the slider's 0.01 step). Re-thresholding
at ``t`` keeps voxels with ``q ≥ ceil(255 · t)``; it can differ from thresholding the float
probabilities only for voxels within 1/510 of ``t`` (at ``t = 0.5`` it is exact).
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import OptionError

SCALE = 255
DOUBLE_SIGMOID_RANGE = (0.5, 1.0 / (1.0 + math.exp(-1.0)))  # sigmoid of a probability lies in [0.5, 0.731]


def check_activation(name: str) -> str:
    name = str(name).lower()
    if name not in ("auto", "sigmoid", "softmax", "none"):
        raise OptionError(f"Unknown activation {name!r}", "Use one of: auto, sigmoid, softmax, none.")
    return name


def check_thresholds(threshold: Union[None, float, Sequence[float]], n: int) -> List[float]:
    """One threshold per segment (a single value is used for all); each in [0, 1]."""
    if threshold is None:
        values = [0.5] * n
    elif isinstance(threshold, (int, float)):
        values = [float(threshold)] * n
    else:
        values = [float(t) for t in threshold]
        if len(values) == 1:
            values = values * n
        if len(values) != n:
            raise OptionError(f"{len(values)} thresholds given for {n} segments", f"Give one value or {n} values.")
    for t in values:
        if not (0.0 <= t <= 1.0) or math.isnan(t):
            raise OptionError(f"Threshold {t} is outside [0, 1]", "Thresholds apply to probabilities: pick a value between 0 and 1, e.g. 0.5.")
    return values


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """``(C, ...)`` logits → probabilities with MONAI's ``Activations`` (``none`` clips to [0, 1])."""
    from monai.transforms import Activations

    if activation == "sigmoid":
        return Activations(sigmoid=True)(logits)
    if activation == "softmax":
        return Activations(softmax=True, dim=0)(logits)
    return logits.clamp(0.0, 1.0)


def activation_warnings(probs_or_logits: torch.Tensor, activation: str) -> List[str]:
    """Warnings about a probable doubled sigmoid, or 'none' applied to non-probabilities."""
    lo, hi = float(probs_or_logits.min()), float(probs_or_logits.max())
    if activation == "sigmoid" and lo >= DOUBLE_SIGMOID_RANGE[0] - 1e-6 and hi <= DOUBLE_SIGMOID_RANGE[1] + 1e-6:
        return [f"All probabilities lie in [{lo:.3f}, {hi:.3f}] ⊂ [0.5, 0.731]: the network probably ends in a sigmoid already "
                "and got a second one. Use activation 'none'."]
    if activation == "none" and (lo < -1e-3 or hi > 1 + 1e-3):
        return [f"Activation 'none' but the network output spans [{lo:.3g}, {hi:.3g}], outside [0, 1]: these look like logits. "
                "Use 'sigmoid' (binary / multi-label) or 'softmax' (multi-class); values were clipped to [0, 1]."]
    return []


def quantize(probabilities: np.ndarray) -> np.ndarray:
    """float probabilities in [0, 1] → uint8 ``round(255 · p)``."""
    out = np.empty(probabilities.shape, dtype=np.uint8)
    np.rint(np.clip(probabilities, 0.0, 1.0) * SCALE, out=out, casting="unsafe")
    return out


def level(t: float) -> int:
    """Cache level equivalent to probability threshold ``t``: keep ``q >= level(t)``."""
    return int(math.ceil(round(t * SCALE, 6)))


@dataclass
class ProbabilityMap:
    """Cached probabilities on the input grid.

    sigmoid / none: ``values`` is ``(S, I, J, K)`` uint8, one channel per segment.
    softmax: ``values`` is ``(1, I, J, K)`` uint8 confidence of the winning class and ``labels``
    ``(I, J, K)`` uint8 the argmax (0 = background, segment s ↔ label s + 1).
    """

    mode: str
    values: np.ndarray
    labels: Optional[np.ndarray] = None
    n_classes: int = 0  # softmax only: classes including background

    @property
    def n_segments(self) -> int:
        return int(self.n_classes - 1) if self.mode == "softmax" else int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + (self.labels.nbytes if self.labels is not None else 0))

    def as_float(self, segment: int = 0) -> np.ndarray:
        """Probability (or winning-class confidence for softmax) of one segment as float32 in [0, 1]."""
        return self.values[0 if self.mode == "softmax" else segment].astype(np.float32) / SCALE


def make_probability_map(probabilities: np.ndarray, mode: str) -> ProbabilityMap:
    """``(C, I, J, K)`` float probabilities → compact cache (softmax keeps argmax + confidence)."""
    if mode == "softmax":
        labels = np.argmax(probabilities, axis=0).astype(np.uint8)
        conf = quantize(np.max(probabilities, axis=0))[None]
        return ProbabilityMap("softmax", conf, labels, n_classes=int(probabilities.shape[0]))
    return ProbabilityMap(mode, quantize(probabilities))


def threshold_map(pm: ProbabilityMap, thresholds: Sequence[float], segment: Optional[int] = None,
                  out: Optional[np.ndarray] = None) -> np.ndarray:
    """Pure, fast re-threshold of the cache: ``(S, I, J, K)`` bool masks (or one ``(I, J, K)`` for ``segment``).

    sigmoid/none: segment s = ``q_s ≥ level(t_s)``. softmax: segment s = argmax is s + 1 and the
    winning confidence ≥ t_s (minimum confidence; 0 gives the plain argmax). ``out`` (bool, the
    result's shape) is reused when given, so live updates allocate nothing.
    """
    segments = list(range(pm.n_segments)) if segment is None else [segment]
    shape = pm.values.shape[1:]
    if out is None:
        out = np.empty((len(segments),) + shape, dtype=bool)
    masks = out.reshape((len(segments),) + shape)
    for i, s in enumerate(segments):
        t = thresholds[s]
        if pm.mode == "softmax":
            np.equal(pm.labels, s + 1, out=masks[i])
            if t > 0:
                masks[i] &= pm.values[0] >= level(t)
        else:
            np.greater_equal(pm.values[s], level(t), out=masks[i])
    return masks[0] if segment is not None else masks


def threshold_float(probabilities: np.ndarray, thresholds: Sequence[float], mode: str) -> np.ndarray:
    """Exact thresholding of float ``(C, I, J, K)`` probabilities, as MONAI's ``AsDiscrete`` does."""
    from monai.transforms import AsDiscrete

    if mode == "softmax":
        labels = np.argmax(probabilities, axis=0)
        conf = np.max(probabilities, axis=0)
        return np.stack([(labels == s + 1) & (conf >= t if t > 0 else True) for s, t in enumerate(thresholds)])
    return np.stack([np.asarray(AsDiscrete(threshold=t)(probabilities[s:s + 1]))[0].astype(bool) for s, t in enumerate(thresholds)])
