"""The command line's files: inputs expanded from folders, output paths checked before any run, output folders.

An output given as a folder (``results/``, or an existing folder) gets ``<input name>.seg.nrrd``; an existing output
is refused unless ``--overwrite``; no output may resolve to an input, the model or another output.
"""

import contextlib
import os
from typing import Dict, Iterator, List, Optional, Sequence

from .engine.files.paths import check_output_paths, protected_files
from .errors import OutputError, UserError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Files as given; a folder of DICOM files is one input, any other folder is a batch of images."""
    import SimpleITK as sitk

    out: List[str] = []
    for item in inputs:
        if os.path.isdir(item) and not sitk.ImageSeriesReader.GetGDCMSeriesIDs(item):
            found = sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_SUFFIXES) and not _is_our_output(f)
            )
            if not found:
                raise UserError(
                    f"No images (NIfTI/NRRD/MHA) or DICOM series in folder {item}",
                    "Point to image files or a DICOM folder.",
                )
            out.extend(found)
        else:
            out.append(item)
    return out


def _is_our_output(name: str) -> bool:
    """Results of an earlier run in a batch folder are not inputs."""
    low = name.lower()
    return low.endswith(".seg.nrrd") or stem(low).endswith("_probabilities")


def stem(path: str) -> str:
    name = os.path.basename(os.path.normpath(path))
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_folder(path: Optional[str]) -> bool:
    """``-o results/`` or an existing folder: a folder (created if missing) that gets ``<input name>.seg.nrrd``."""
    return bool(path) and (path.endswith(("/", os.sep)) or os.path.isdir(path))


def output_paths(
    inputs: List[str],
    output: Optional[str],
    probabilities: Optional[str],
    reads: Sequence[str] = (),
    overwrite: bool = False,
    strip: str = "",
) -> List[Dict[str, Optional[str]]]:
    """One case per input: ``{"input", "segmentation", "probabilities"}`` paths, checked before any run: known
    extensions, writable, not existing unless ``overwrite``, and none resolving to an input, to a file in ``reads``
    (the model's) or to another output. Output folders must exist (``output_folders`` makes them). ``strip``: a
    suffix of input names that output names drop (``ct_probabilities.nrrd`` → ``ct.seg.nrrd``)."""
    batch = len(inputs) > 1
    for flag, value in (("--output", output), ("--probabilities", probabilities)):
        if batch and value and not is_folder(value):
            raise OutputError(
                f"With several inputs {flag} must be a folder, got the file name {value}",
                f"End it with a slash for a folder (created if missing), e.g. {flag} {stem(value)}/; "
                "or give one input.",
            )
    cases = [_case(path, output, probabilities, batch, strip) for path in inputs]
    targets = [c[k] for c in cases for k in ("segmentation", "probabilities") if c[k]]
    clash = sorted({t for t in targets if targets.count(t) > 1})
    if clash:
        raise UserError(
            f"Several inputs would write the same output file: {', '.join(clash)}",
            "Inputs in a batch need distinct file names; run them into separate --output folders.",
        )
    outputs = [(k, c[k]) for c in cases for k in ("segmentation", "probabilities") if c[k]]
    check_output_paths(outputs, protected_files(list(inputs) + list(reads)))
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(
            f"{existing[0]} already exists{more}: nothing was run and it is untouched",
            "Pass --overwrite to replace it, or choose another --output.",
        )
    return cases


@contextlib.contextmanager
def output_folders(*paths: Optional[str]) -> Iterator[None]:
    """Create the output folders given as folders (``results/``) that do not exist; remove them again if they are
    still empty when the command ends (a refused or failed run leaves nothing behind)."""
    created = []
    for path in paths:
        if is_folder(path) and not os.path.isdir(path):
            try:
                os.makedirs(path)
            except OSError as exc:
                for folder in reversed(created):
                    os.rmdir(folder)
                raise OutputError(
                    f"Cannot create the output folder {path}: {exc.strerror}",
                    "Choose a folder you can write to with --output / --probabilities.",
                ) from None
            created.append(path)
    try:
        yield
    finally:
        for folder in reversed(created):
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)


def _case(
    path: str, output: Optional[str], probabilities: Optional[str], batch: bool, strip: str = ""
) -> Dict[str, Optional[str]]:
    """The output paths of one input (checked: known extensions, a folder that can be written to)."""
    from .engine.files.outputs import check_output_path

    base = stem(path)
    base = base[: -len(strip)] if strip and base.endswith(strip) and len(base) > len(strip) else base
    if is_folder(output) or (batch and not output):
        seg = os.path.join(output or ".", base + ".seg.nrrd")
    else:
        seg = output or base + ".seg.nrrd"
    prob = os.path.join(probabilities, base + "_probabilities.nrrd") if is_folder(probabilities) else probabilities
    check_output_path(seg, "segmentation")
    if prob:
        check_output_path(prob, "probabilities")
    return {"input": path, "segmentation": seg, "probabilities": prob}
