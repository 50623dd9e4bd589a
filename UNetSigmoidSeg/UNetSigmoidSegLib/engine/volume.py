"""Volumes in MONAI's convention and their geometry; reading and writing with SimpleITK.

Convention (the one ``LoadImage`` + ``EnsureChannelFirst`` give): ``array`` is channel first,
shape ``(C, I, J, K)`` in voxel index order, and ``affine`` maps (i, j, k, 1) to RAS millimetres.
SimpleITK images are LPS; ``LPS_TO_RAS`` converts.
"""

import contextlib
import os
from typing import Iterator, List, Tuple

import numpy as np
import SimpleITK as sitk

from ..contract.volume import Volume
from ..errors import InputError, OutputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_from_sitk(image: sitk.Image) -> np.ndarray:
    """Voxel index -> RAS affine of a 3-D SimpleITK image."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), dtype=float)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[None, :]
    lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps


def geometry_from_affine(affine: np.ndarray) -> Tuple[List[float], List[float], List[float]]:
    """(spacing, origin, direction) in SimpleITK's LPS terms from a voxel -> RAS affine."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InputError("The volume's geometry has a zero spacing.", "Fix the image header (spacing must be > 0).")
    direction = lps[:3, :3] / spacing[None, :]
    return spacing.tolist(), lps[:3, 3].tolist(), direction.ravel().tolist()


def array_to_sitk(array_ijk: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A ``(I, J, K)`` array (or ``(C, I, J, K)``, written as vector components) as a SimpleITK image."""
    if array_ijk.ndim == 4:
        image = sitk.GetImageFromArray(
            np.ascontiguousarray(np.moveaxis(array_ijk, 0, -1).transpose(2, 1, 0, 3)), isVector=True
        )
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_ijk.transpose(2, 1, 0)))
    spacing, origin, direction = geometry_from_affine(affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _read_sitk(path: str) -> sitk.Image:
    if not os.path.exists(path):
        raise InputError(f"Input not found: {path}", "Check the path (quote paths with spaces).")
    try:
        if os.path.isdir(path):
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(path)
            if not series:
                raise InputError(
                    f"No DICOM series in folder {path}", "Point to a folder of DICOM files or to one image file."
                )
            files = reader.GetGDCMSeriesFileNames(path, series[0])
            reader.SetFileNames(files)
            return reader.Execute()
        return sitk.ReadImage(path)
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"Cannot read image {path}: {first}",
            "Use a NIfTI (.nii/.nii.gz), NRRD, MHA file or a DICOM series folder.",
        ) from exc


def read_volume(path: str) -> Volume:
    """Read NIfTI / NRRD / MHA / a DICOM series folder into a ``Volume`` (channel first)."""
    image = _read_sitk(path)
    dim = image.GetDimension()
    if dim == 2:
        raise InputError(
            f"{os.path.basename(path)} is a 2-D image {image.GetSize()}",
            "The UNet needs a 3-D volume: give a 3-D image.",
        )
    if dim == 4:
        # Treat the 4th axis as channels (e.g. multi-modal stacks); validated against the model later.
        arr = sitk.GetArrayFromImage(image)  # (T, K, J, I)
        size = image.GetSize()
        sub = sitk.Extract(image, list(size[:3]) + [0], [0, 0, 0, 0])
        affine = affine_from_sitk(sub)
        return Volume(np.ascontiguousarray(arr.transpose(0, 3, 2, 1)), affine)
    if dim != 3:
        raise InputError(f"{os.path.basename(path)} has {dim} dimensions", "Give a 3-D volume.")
    arr = sitk.GetArrayFromImage(image)  # (K, J, I) or (K, J, I, comps)
    if image.GetNumberOfComponentsPerPixel() > 1:
        arr = np.moveaxis(arr, -1, 0).transpose(0, 3, 2, 1)
    else:
        arr = arr.transpose(2, 1, 0)[None]
    return Volume(np.ascontiguousarray(arr), affine_from_sitk(image))


def check_writable(path: str) -> None:
    """Fail early (before any inference) when ``path`` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise OutputError(f"Output path is a folder: {path}", "Give a file name, e.g. result.seg.nrrd.")
    if not os.path.isdir(folder):
        raise OutputError(f"Output folder does not exist: {folder}", "Create it first or choose another --output.")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise OutputError(
            f"Cannot write to {path} (permission denied)", "Choose a folder you can write to with --output."
        )


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary name beside ``path`` (same extension); it replaces ``path`` only when the
    write succeeded, so a failed write (disk full, killed process) never leaves a half-written file."""
    check_writable(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.getpid()}.partial.{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(
            f"Cannot write {path}: {exc.strerror or exc}", "Check free disk space and permissions."
        ) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_image(array_ijk: np.ndarray, affine: np.ndarray, path: str, compress: bool = True) -> None:
    """Write an ``(I, J, K)`` array with the given geometry (any SimpleITK format by extension), atomically."""
    with atomic_output(path) as tmp:
        try:
            sitk.WriteImage(array_to_sitk(array_ijk, affine), tmp, compress)
        except RuntimeError as exc:
            raise OutputError(
                f"Cannot write {path}: {str(exc).strip().splitlines()[-1]}",
                "Check free disk space and the file extension.",
            ) from None


def same_geometry(a: np.ndarray, b: np.ndarray, atol: float = 1e-4) -> bool:
    """True when two voxel→RAS affines agree within ``atol``."""
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), atol=atol))
