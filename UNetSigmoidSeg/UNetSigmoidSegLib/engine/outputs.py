"""Writing results: Slicer ``.seg.nrrd`` (names, colours, layers), NIfTI/NRRD labelmaps, probability maps."""

import os
from typing import Optional

import numpy as np

from ..errors import OutputError
from .pipeline import SegmentResult
from .volume import LPS_TO_RAS, atomic_output, check_writable, write_image

SEG_EXTENSIONS = (".seg.nrrd",)
IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".mha")  # single-file formats: written atomically


def _has_ext(path: str, exts) -> bool:
    return path.lower().endswith(tuple(exts))


def check_output_path(path: str, kind: str = "segmentation") -> None:
    """Fail before inference when an output path has an unknown extension or is not writable."""
    exts = SEG_EXTENSIONS + IMAGE_EXTENSIONS if kind == "segmentation" else IMAGE_EXTENSIONS
    if not _has_ext(path, exts):
        raise OutputError(f"Unknown {kind} file type: {path}", f"Use one of: {', '.join(exts)}.")
    check_writable(path)


def write_seg_nrrd(result: SegmentResult, path: str) -> None:
    """Slicer segmentation file: one segment per output, overlapping segments in extra layers."""
    import slicerio

    seg = slicerio.create_segmentation(result.masks.shape[1:], LPS_TO_RAS @ result.affine)
    for i, (name, color, mask) in enumerate(zip(result.names, result.colors, result.masks)):
        slicerio.add_segment(seg, mask, {"id": f"Segment_{i + 1}", "name": name, "color": list(color)})
    seg["containedRepresentationNames"] = ["Binary labelmap"]
    with atomic_output(path) as tmp:
        slicerio.write_segmentation(tmp, seg)


def labelmap(result: SegmentResult) -> np.ndarray:
    """``(I, J, K)`` uint8/uint16 labels 1..S (later segments win where sigmoid segments overlap)."""
    dtype = np.uint8 if len(result.names) < 255 else np.uint16
    out = np.zeros(result.masks.shape[1:], dtype=dtype)
    for i, mask in enumerate(result.masks):
        out[mask] = i + 1
    return out


def write_segmentation(result: SegmentResult, path: str) -> Optional[str]:
    """``.seg.nrrd`` or a labelmap image by extension; returns a warning if overlaps were flattened."""
    if _has_ext(path, SEG_EXTENSIONS):
        write_seg_nrrd(result, path)
        return None
    write_image(labelmap(result), result.affine, path)
    if len(result.masks) > 1 and (result.masks.sum(axis=0) > 1).any():
        return f"Segments overlap; {os.path.basename(path)} keeps the later segment there. Use .seg.nrrd to keep every segment."
    return None


def write_probabilities(result: SegmentResult, path: str) -> None:
    """Probability map as float32 in [0, 1] (from the 1/255 cache): one volume per segment
    (several segments: components of one file), the winning-class confidence for softmax."""
    pm = result.probabilities
    if pm.mode == "softmax" or pm.values.shape[0] == 1:
        write_image(pm.as_float(0), result.affine, path)
    else:
        write_image(np.stack([pm.as_float(s) for s in range(pm.n_segments)]), result.affine, path)
