"""Activation of the network's logits (MONAI ``Activations``), its warnings, and exact float thresholding.

The compact probability cache and its re-thresholding are torch-free and live in ``contract.result``.
"""

import math
from typing import List, Sequence

import numpy as np
import torch

DOUBLE_SIGMOID_RANGE = (0.5, 1.0 / (1.0 + math.exp(-1.0)))  # sigmoid of a probability lies in [0.5, 0.731]


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
        return [
            f"All probabilities lie in [{lo:.3f}, {hi:.3f}] ⊂ [0.5, 0.731]: the network probably ends in a "
            "sigmoid already and got a second one. Use activation 'none'."
        ]
    if activation == "none" and (lo < -1e-3 or hi > 1 + 1e-3):
        return [
            f"Activation 'none' but the network output spans [{lo:.3g}, {hi:.3g}], outside [0, 1]: these look "
            "like logits. Use 'sigmoid' (binary / multi-label) or 'softmax' (multi-class); values were clipped to "
            "[0, 1]."
        ]
    return []


def threshold_float(probabilities: np.ndarray, thresholds: Sequence[float], activation: str) -> np.ndarray:
    """Exact thresholding of float ``(C, I, J, K)`` probabilities, as MONAI's ``AsDiscrete`` does."""
    from monai.transforms import AsDiscrete

    if activation == "softmax":
        argmax = np.argmax(probabilities, axis=0)
        confidence = np.max(probabilities, axis=0)
        return np.stack([(argmax == s + 1) & (confidence >= t if t > 0 else True) for s, t in enumerate(thresholds)])
    return np.stack(
        [
            np.asarray(AsDiscrete(threshold=t)(probabilities[s : s + 1]))[0].astype(bool)
            for s, t in enumerate(thresholds)
        ]
    )
