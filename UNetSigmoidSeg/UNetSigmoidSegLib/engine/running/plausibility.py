"""Checks that a run is plausible, on every segmentation: an error before the run, warnings (never silent) after
it, each naming the likely cause and the fix. They catch what a newcomer gets wrong without an error: a network
fed raw intensities because nobody said how its input was normalised (an error before any window runs:
``check_input``), outputs saturated far beyond what training gives, a "segment" that is almost the whole volume
(typically the background channel of a softmax model run with sigmoid).

Thresholds are chosen so correctly normalised runs stay quiet: a normalised input (z-score, a CT window scaled to
[0, 1]) almost never holds values beyond ±20, while raw CT (Hounsfield units) and raw MR hold them in most voxels;
MONAI UNets trained with ``BCEWithLogitsLoss`` / ``DiceCELoss`` keep most logits well under ±50.
"""

from typing import List, Optional, Sequence

import numpy as np
import torch

from ...errors import OptionError

RAW_VALUE = 20.0  # |input| beyond this is not a normalised intensity
RAW_SHARE = 0.01  # ... and a normalised input has (almost) no voxel there
SATURATED_LOGIT = 50.0
SATURATED_SHARE = 0.5  # "most of the volume"
FULL_SHARE = 0.9  # a segment over 90 % of the volume is rarely an organ
SAMPLE = 1 << 20  # voxels looked at (evenly spaced): the checks cost milliseconds on any volume


def _sample(values: torch.Tensor) -> torch.Tensor:
    flat = values.detach().reshape(-1)
    step = max(1, flat.numel() // SAMPLE)
    return flat[::step].float().cpu()


def check_input(image: torch.Tensor, normalization_known: bool, hint: str) -> None:
    """Before any window runs: a network's input (after preprocessing) that holds raw intensities while nobody said
    how to normalise it is an ``OptionError`` — the user's choice is needed once (a checkpoint can record it)."""
    if normalization_known:
        return
    values = _sample(image)
    share = float((values.abs() > RAW_VALUE).float().mean())
    if share <= RAW_SHARE:
        return
    raise OptionError(
        f"The model does not record how its input was normalised in training and none was given, so the network "
        f"would see raw intensities ({float(values.min()):.4g} to {float(values.max()):.4g}); a network trained on "
        "normalised input gives nonsense on these, without an error",
        f"Give the normalisation it was trained with ({hint}); 'none' if it was trained on raw intensities.",
    )


def output_warnings(logits: torch.Tensor, activation: str) -> List[str]:
    """Logits far beyond what training produces over most of the volume (sigmoid / softmax)."""
    if activation not in ("sigmoid", "softmax"):
        return []
    values = _sample(logits)
    share = float((values.abs() > SATURATED_LOGIT).float().mean())
    if share <= SATURATED_SHARE:
        return []
    return [
        f"The network's outputs are saturated: |logit| > {SATURATED_LOGIT:g} in {share:.0%} of the volume (up to "
        f"{float(values.abs().max()):.3g}); a trained network rarely gives that. Its input was probably not "
        "prepared as in training: check the normalisation (and the CT window) and the orientation/spacing."
    ]


def mask_warnings(masks: np.ndarray, labels: Sequence[str], activation: str, n_out: Optional[int]) -> List[str]:
    """A segment covering almost the whole volume."""
    out = []
    for mask, label in zip(masks, labels):
        share = float(np.count_nonzero(mask)) / max(1, mask.size)
        if share <= FULL_SHARE:
            continue
        cause = "the preprocessing or the threshold"
        if activation == "sigmoid" and (n_out or 0) > 1:
            cause = "the activation (run with sigmoid, a softmax model's background channel becomes a segment)"
        out.append(
            f"Segment '{label}' covers {share:.0%} of the volume, which a segmentation rarely does: check {cause}."
        )
    return out
