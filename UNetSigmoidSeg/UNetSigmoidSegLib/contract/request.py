"""``RunRequest``: what every transport carries for one run — the model, the options and the volume's geometry.

The voxels travel beside it the way each transport moves arrays (this process: the array itself; the worker: a
hand-off file; a server: a frame of the request body). ``to_wire()`` gives the request's JSON fields (``model``,
``options``, ``affine``) which the worker's ``run`` message and a server request carry as they are; ``from_wire``
validates them (a wrong affine is an ``OptionError``, never an unexpected error). ``run_request`` is the one place
keywords (the console's, the panel's parameters) become a ``ModelSpec`` and ``SegmentOptions``. Torch-free.
"""

import os
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ..errors import InputError, OptionError, UserError
from .model import ModelSpec, looks_like_path
from .options import Cleanup, SegmentOptions
from .volume import Volume

AFFINE_HINT = "Give the voxel→RAS (IJKToRAS) matrix."
SPACING_MM = (1e-4, 1e4)  # voxel sizes a scan can have (0.1 µm … 10 m): outside, the geometry is not a scan's


@dataclass
class RunRequest:
    """One segmentation run: ``model`` (how to load the network), ``options`` (how to run it) and ``affine``
    (the ``(4, 4)`` voxel→RAS matrix of the volume whose voxels travel beside the request)."""

    model: ModelSpec
    options: SegmentOptions
    affine: np.ndarray

    def __post_init__(self) -> None:
        self.affine = check_affine(self.affine)

    def volume(self, array: np.ndarray) -> Volume:
        """The ``Volume`` of the voxels that travelled beside this request."""
        return Volume(array, self.affine)

    def to_wire(self, with_model: bool = True) -> Dict[str, Any]:
        """JSON fields: ``model`` (``ModelSpec.to_dict``, left out with ``with_model=False``: an upload carries the
        model itself), ``options`` (``SegmentOptions.to_dict``) and ``affine`` (4 rows of 4 numbers)."""
        fields: Dict[str, Any] = {"options": self.options.to_dict(), "affine": self.affine.tolist()}
        if with_model:
            fields["model"] = self.model.to_dict()
        return fields

    @classmethod
    def from_wire(cls, fields: Dict[str, Any], model: Optional[ModelSpec] = None) -> "RunRequest":
        """The request of ``to_wire``'s fields; ``model``: the spec a host resolved itself (a server's own path)."""
        if model is None:
            data = fields.get("model")
            if not isinstance(data, dict):
                raise OptionError("The request names no model", "Send ModelSpec.to_dict() as 'model'.")
            model = ModelSpec.from_dict(data)
        options = fields.get("options")
        if options is not None and not isinstance(options, dict):  # never read as "the defaults"
            raise OptionError(
                f"The request's options must be an object of segment options, not {type(options).__name__}",
                "Send SegmentOptions.to_dict() as 'options'.",
            )
        return cls(model, SegmentOptions.from_dict(options or {}), fields.get("affine"))


def check_affine(affine: Any) -> np.ndarray:
    """``affine`` as a finite ``(4, 4)`` float array, else an ``OptionError`` naming what it is."""
    try:
        array = np.asarray(affine, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise OptionError("The affine must be a finite 4×4 matrix of numbers", AFFINE_HINT) from None
    if array.shape != (4, 4):
        raise OptionError(f"The affine must be a finite 4×4 matrix, got shape {array.shape}", AFFINE_HINT)
    if not np.all(np.isfinite(array)):
        raise OptionError("The affine must be a finite 4×4 matrix: it holds NaN or infinity", AFFINE_HINT)
    spacing = np.sqrt((array[:3, :3] ** 2).sum(axis=0))
    if not np.all((spacing >= SPACING_MM[0]) & (spacing <= SPACING_MM[1])):
        raise InputError(
            f"The volume's voxel spacing {', '.join(f'{s:.4g}' for s in spacing)} mm is outside "
            f"{SPACING_MM[0]:g}–{SPACING_MM[1]:g} mm: not the geometry of a scan",
            "Check the image header (pixel spacing, slice thickness) or the affine you give.",
        )
    if abs(np.linalg.det(array[:3, :3] / spacing)) < 1e-6:
        raise InputError(
            "The volume's axes are singular (two of them point the same way): its geometry cannot be inverted",
            "Check the image header's direction cosines or the affine you give.",
        )
    return array


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


# Console keywords (camelCase, as Slicer's API) → where they go: ModelSpec, SegmentOptions or its Cleanup.
MODEL_KEYWORDS = {_camel(f.name): f.name for f in fields(ModelSpec) if f.name not in ("path", "name")}
OPTION_KEYWORDS = {_camel(f.name): f.name for f in fields(SegmentOptions) if f.name != "cleanup"}
CLEANUP_KEYWORDS = {_camel(f.name): f.name for f in fields(Cleanup)}


def run_request(
    model: Union[str, ModelSpec], options: Optional[SegmentOptions] = None, **keywords: Any
) -> Tuple[ModelSpec, SegmentOptions]:
    """``(ModelSpec, SegmentOptions)`` from a path or spec, optional options, and console keywords
    (``activation``, ``threshold``, ``device``, ``backend``, ``roiSize``, ``largestComponent``, ``trustBundle``, …) that
    override them. An unknown keyword is an ``OptionError`` listing the known ones."""
    unknown = sorted(set(keywords) - set(MODEL_KEYWORDS) - set(OPTION_KEYWORDS) - set(CLEANUP_KEYWORDS))
    if unknown:
        known = sorted(set(MODEL_KEYWORDS) | set(OPTION_KEYWORDS) | set(CLEANUP_KEYWORDS))
        raise OptionError(f"Unknown keyword(s): {', '.join(unknown)}", f"Known: {', '.join(known)}.")
    spec = model if isinstance(model, ModelSpec) else None
    if spec is None:
        if model and not os.path.exists(str(model)) and not looks_like_path(str(model)):
            spec = ModelSpec(name=str(model))  # a server model's name (RemoteRunner); local runners refuse names
        elif not model or not os.path.exists(str(model)):
            raise UserError(
                f"Model not found: {model}",
                "Pick a checkpoint file (.pt/.pth/.ckpt), a TorchScript file or a MONAI bundle folder.",
            )
        else:
            spec = ModelSpec(str(model))
    spec_values = spec.to_dict()
    spec_values.update({MODEL_KEYWORDS[k]: v for k, v in keywords.items() if k in MODEL_KEYWORDS})
    values = (options or SegmentOptions()).to_dict()
    values.update({OPTION_KEYWORDS[k]: v for k, v in keywords.items() if k in OPTION_KEYWORDS})
    values["cleanup"].update({CLEANUP_KEYWORDS[k]: v for k, v in keywords.items() if k in CLEANUP_KEYWORDS})
    return ModelSpec.from_dict(spec_values), SegmentOptions.from_dict(values)
