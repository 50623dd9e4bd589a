"""Probability files that say what they hold, and reading them back to threshold again without the network.

A probability file is a float32 NRRD or MHA image on the input grid with one component per segment (sigmoid /
none) or per class, background first (softmax: the probability of each class, not only the winner's). Its header
records what it holds, in ``UNetSigmoidSeg.*`` fields: ``Content`` (``probabilities``), ``Format``, ``Activation``,
``Components`` (the name of each component), ``Colors``, ``Thresholds`` and ``Cleanup`` (the run's), ``Quantization``
(``none``: the float32 probabilities the run thresholded; ``1/255``: from the run's uint8 cache), ``Version`` and
``Notice`` (research use). NIfTI cannot carry these fields and is refused for probability files.

``load_probabilities`` reads such a file back as a ``SegmentResult`` — masks at the recorded thresholds with the
recorded clean-up — whose ``rethreshold(t)`` gives the masks a re-run at ``t`` gives (same comparisons on the same
float32 values). A file from elsewhere is data: every field is checked, none is evaluated.
"""

import json
import os
from typing import Any, Dict, List, Sequence

import numpy as np
import SimpleITK as sitk

from ... import NOT_CLINICAL_ASCII, __version__
from ...contract.options import ACTIVATIONS, Cleanup, check_thresholds
from ...contract.result import DeviceChoice, SegmentResult, make_probabilities
from ...errors import InputError, OptionError, OutputError
from .volume import _read_sitk, affine_from_sitk, write_image

PREFIX = "UNetSigmoidSeg."
FORMAT = "1"
EXTENSIONS = (".nrrd", ".mha")
MAX_FIELD = 1 << 20  # bytes of one header field read back
FIX = "Give a probability file written by `unetsigmoidseg segment --probabilities` (NRRD or MHA)."


def check_probability_path(path: str) -> None:
    """A probability file needs a format whose header can say what it holds."""
    if not path.lower().endswith(EXTENSIONS):
        raise OutputError(
            f"Probability files are NRRD or MHA, got {os.path.basename(path)}",
            "Use .nrrd (or .mha): their header records the activation, class names and quantisation; NIfTI's cannot.",
        )


def header(result: SegmentResult) -> Dict[str, str]:
    """The ``UNetSigmoidSeg.*`` fields of ``result``'s probability file (JSON values: ASCII, no line breaks)."""
    probabilities = result.probabilities
    names = (["background"] if probabilities.softmax else []) + list(result.labels)
    fields = {
        "Content": "probabilities",
        "Format": FORMAT,
        "Activation": result.activation,
        "Components": json.dumps(names),
        "Colors": json.dumps([[round(float(c), 6) for c in color[:3]] for color in result.colors]),
        "Thresholds": json.dumps([float(t) for t in result.thresholds]),
        "Cleanup": json.dumps(result.cleanup.__dict__, sort_keys=True),
        "Quantization": "none" if probabilities.exact is not None else "1/255",
        "Version": __version__,
        "Notice": NOT_CLINICAL_ASCII,
    }
    return {PREFIX + k: v for k, v in fields.items()}


def write_probabilities(result: SegmentResult, path: str, protected: Sequence[str] = ()) -> None:
    """The run's probabilities as a float32 file in [0, 1] with its header (see the module docstring)."""
    check_probability_path(path)
    probabilities = result.probabilities
    if probabilities.exact is not None:
        data = probabilities.exact
    elif probabilities.softmax:
        raise OutputError(
            "The per-class probabilities of this softmax run were not kept",
            "Run with keep_probabilities=True (keepProbabilities in the console); --probabilities sets it.",
        )
    else:
        data = np.stack([probabilities.as_float(s) for s in range(probabilities.n_segments)])
    write_image(
        data[0] if data.shape[0] == 1 else data, result.affine, path, protected=protected, metadata=header(result)
    )


def _field(image: sitk.Image, key: str, name: str) -> Any:
    if not image.HasMetaDataKey(PREFIX + key):
        raise InputError(f"{name} has no {PREFIX}{key} field: it is not a probability file of this product", FIX)
    raw = image.GetMetaData(PREFIX + key)
    if key in ("Content", "Format", "Activation", "Quantization"):
        return raw.strip()
    if len(raw) > MAX_FIELD:
        raise InputError(f"{name}: the {PREFIX}{key} field is too long ({len(raw)} bytes)", FIX)
    try:
        return json.loads(raw)
    except ValueError:
        raise InputError(f"{name}: the {PREFIX}{key} field is not valid JSON", FIX) from None


def _names(value: Any, count: int, name: str) -> List[str]:
    if not isinstance(value, list) or len(value) != count or not all(isinstance(v, str) for v in value):
        raise InputError(f"{name}: {PREFIX}Components must name each of the {count} component(s)", FIX)
    return value


def load_probabilities(path: str) -> SegmentResult:
    """A probability file (``write_probabilities``) as a ``SegmentResult`` ready for ``rethreshold``."""
    name = os.path.basename(path)
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder", FIX)
    image = _read_sitk(path)
    if image.GetDimension() != 3:
        raise InputError(f"{name} is a {image.GetDimension()}-D image, probability files are 3-D", FIX)
    if _field(image, "Content", name) != "probabilities" or _field(image, "Format", name) != FORMAT:
        raise InputError(f"{name} is not a probability file of format {FORMAT}", FIX)
    activation = _field(image, "Activation", name)
    if activation not in ACTIVATIONS or activation == "auto":
        raise InputError(f"{name}: unknown activation {activation!r}", FIX)
    quantization = _field(image, "Quantization", name)
    if quantization not in ("none", "1/255"):
        raise InputError(f"{name}: unknown quantisation {quantization!r}", FIX)
    array = sitk.GetArrayFromImage(image)  # (K, J, I) or (K, J, I, C)
    array = np.moveaxis(array, -1, 0) if array.ndim == 4 else array[None]
    data = np.ascontiguousarray(array.transpose(0, 3, 2, 1), dtype=np.float32)
    if not bool(np.isfinite(data).all()) or float(data.min()) < 0.0 or float(data.max()) > 1.0:
        raise InputError(f"{name} holds values outside [0, 1]: these are not probabilities", FIX)
    softmax = activation == "softmax"
    names = _names(_field(image, "Components", name), data.shape[0], name)
    labels = names[1:] if softmax else names
    if not labels:
        raise InputError(f"{name} has no segment component", FIX)
    try:
        thresholds = check_thresholds(_field(image, "Thresholds", name), len(labels))
        cleanup = Cleanup.from_dict(_field(image, "Cleanup", name))
    except OptionError as exc:
        raise InputError(f"{name}: {exc.message}", FIX) from None
    colors = _field(image, "Colors", name)
    if not isinstance(colors, list) or len(colors) != len(labels):
        raise InputError(f"{name}: {PREFIX}Colors must give one colour per segment", FIX)
    try:
        rgb = [tuple(min(1.0, max(0.0, float(c))) for c in color[:3]) for color in colors]
    except (TypeError, ValueError):
        raise InputError(f"{name}: {PREFIX}Colors must be RGB numbers", FIX) from None
    result = SegmentResult(
        make_probabilities(data, activation, keep=quantization == "none"),
        np.zeros((len(labels),) + data.shape[1:], dtype=bool),
        labels,
        rgb,
        thresholds,
        activation,
        affine_from_sitk(image),
        np.asarray(image.GetSpacing(), dtype=float),
        DeviceChoice("none", f"read from the probability file {name}; the network did not run"),
        "file",
        cleanup,
    )
    result.rethreshold(thresholds)
    return result
