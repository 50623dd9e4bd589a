"""Volumes in MONAI's convention and their geometry; reading and writing with SimpleITK.

Convention (the one ``LoadImage`` + ``EnsureChannelFirst`` give): ``array`` is channel first,
shape ``(C, I, J, K)`` in voxel index order, and ``affine`` maps (i, j, k, 1) to RAS millimetres.
SimpleITK images are LPS; ``LPS_TO_RAS`` converts.
"""

import contextlib
import gzip
import os
import struct
import zlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ...contract.volume import Volume
from ...errors import InputError, OutputError
from .paths import check_output_paths

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


READ_FIX = "The file is truncated, corrupt or not an image: export it again (NIfTI, NRRD, MHA or a DICOM folder)."
SERIES_FIX = "Pick one with --series UID (the command line), or move each series into its own folder."


def _nifti_expected_bytes(header: bytes) -> Optional[int]:
    """Header + voxel bytes a single-file NIfTI-1 (either byte order) announces, or None when it is not one."""
    for order in ("<", ">"):
        if len(header) < 348 or struct.unpack(order + "i", header[:4])[0] != 348 or header[344:347] != b"n+1":
            continue
        dims = struct.unpack(order + "8h", header[40:56])
        bitpix = struct.unpack(order + "h", header[72:74])[0]
        offset = max(352, int(struct.unpack(order + "f", header[108:112])[0]))
        if not 1 <= dims[0] <= 7 or bitpix <= 0:
            return None
        voxels = 1
        for d in dims[1 : dims[0] + 1]:
            voxels *= max(1, int(d))
        return offset + voxels * bitpix // 8
    return None


def check_complete_nifti(path: str) -> None:
    """SimpleITK fills the missing voxels of a truncated NIfTI (``.nii`` / ``.nii.gz``) with zeros: refuse such a file
    by comparing the (decompressed) length with what its header announces. Other formats raise on their own."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
            header = f.read(348)
            expected = _nifti_expected_bytes(header)
            if expected is None:
                return  # not a NIfTI header: SimpleITK decides
            got = len(header) if compressed else os.path.getsize(path)
            while compressed:  # to the end: a gzip stream is verified (length, CRC) only there
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                got += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(
            f"Cannot read image {path}: its compressed data is cut short or corrupt ({exc})", READ_FIX
        ) from None
    if got < expected:
        raise InputError(
            f"Cannot read image {path}: it is truncated ({got:,} of the {expected:,} bytes its header announces)",
            READ_FIX,
        )


def dicom_series(folder: str) -> List[Dict[str, Any]]:
    """The DICOM series in ``folder``: ``{"uid", "description", "slices", "files"}`` each."""
    reader = sitk.ImageSeriesReader()
    out = []
    for uid in reader.GetGDCMSeriesIDs(folder):
        files = list(reader.GetGDCMSeriesFileNames(folder, uid))
        description = ""
        try:
            info = sitk.ImageFileReader()
            info.SetFileName(files[0])
            info.ReadImageInformation()
            if info.HasMetaDataKey("0008|103e"):
                description = info.GetMetaData("0008|103e").strip()
        except RuntimeError:
            pass
        out.append({"uid": uid, "description": description, "slices": len(files), "files": files})
    return out


def _pick_series(folder: str, series: Optional[str]) -> List[str]:
    found = dicom_series(folder)
    if not found:
        raise InputError(
            f"No DICOM series in folder {folder}", "Point to a folder of DICOM files or to one image file."
        )
    listing = "; ".join(f"{s['uid']} ({s['description'] or 'no description'}, {s['slices']} slices)" for s in found)
    if series is not None:
        chosen = [s for s in found if s["uid"] == series]
        if not chosen:
            raise InputError(f"Folder {folder} has no DICOM series {series}; it holds: {listing}", SERIES_FIX)
        return chosen[0]["files"]
    if len(found) > 1:
        raise InputError(f"Folder {folder} holds {len(found)} DICOM series: {listing}", SERIES_FIX)
    return found[0]["files"]


PERMISSION_FIX = "Make it readable for you (e.g. chmod u+r), or copy it to a folder of yours."


def _read_sitk(path: str, series: Optional[str] = None) -> sitk.Image:
    try:
        os.stat(path)
    except PermissionError:  # a folder on the way this user may not enter
        raise InputError(f"Cannot reach {path}: permission denied on a folder above it", PERMISSION_FIX) from None
    except OSError:
        raise InputError(f"Input not found: {path}", "Check the path (quote paths with spaces).") from None
    if series is not None and not os.path.isdir(path):
        raise InputError(f"--series {series} was given, but {path} is a file, not a DICOM folder", SERIES_FIX)
    try:  # a file (or folder) this user may not read: said as such, before any reader guesses at it
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb"):
                pass
    except PermissionError:
        raise InputError(f"Cannot read {path}: permission denied", PERMISSION_FIX) from None
    try:
        if os.path.isdir(path):
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_pick_series(path, series))
            return reader.Execute()
        if path.lower().endswith((".nii", ".nii.gz")):
            check_complete_nifti(path)
        return sitk.ReadImage(path)
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"Cannot read image {path}: {first}", READ_FIX) from exc


def read_volume(path: str, series: Optional[str] = None) -> Volume:
    """Read NIfTI / NRRD / MHA / PNG / JPEG / TIFF / a DICOM series folder into a ``Volume`` (channel first); a 2-D
    image becomes a one-slice volume (its colour components: channels).

    A folder with several DICOM series is an error listing them unless ``series`` (a series instance UID) picks
    one; a truncated or corrupt file is an error, never an image with missing voxels."""
    image = _read_sitk(path, series)
    dim = image.GetDimension()
    if dim == 2:  # a PNG / JPEG / TIFF frame or a 2-D NIfTI: a one-slice volume (a 2-D network runs on it)
        image = sitk.JoinSeries(image)
        dim = 3
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
def atomic_output(path: str, protected: Sequence[str] = ()) -> Iterator[str]:
    """Yield a temporary name beside ``path`` (same extension); it replaces ``path`` only when the
    write succeeded, so a failed write (disk full, killed process) never leaves a half-written file.
    ``path`` must not resolve to any of the ``protected`` files (checked before and again just before replacing)."""
    check_writable(path)
    check_output_paths([("output", path)], protected)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.getpid()}.partial.{name}")
    try:
        yield tmp
        check_output_paths([("output", path)], protected)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(
            f"Cannot write {path}: {exc.strerror or exc}", "Check free disk space and permissions."
        ) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_image(
    array_ijk: np.ndarray,
    affine: np.ndarray,
    path: str,
    compress: bool = True,
    protected: Sequence[str] = (),
    metadata: Optional[Dict[str, str]] = None,
) -> None:
    """Write an ``(I, J, K)`` array (or ``(C, I, J, K)``: components) with the given geometry (any SimpleITK format
    by extension) and header ``metadata``, atomically, never onto one of the ``protected`` files."""
    image = array_to_sitk(array_ijk, affine)
    for key, value in (metadata or {}).items():
        image.SetMetaData(key, value)
    with atomic_output(path, protected) as tmp:
        try:
            sitk.WriteImage(image, tmp, compress)
        except RuntimeError as exc:
            raise OutputError(
                f"Cannot write {path}: {str(exc).strip().splitlines()[-1]}",
                "Check free disk space and the file extension.",
            ) from None


def same_geometry(a: np.ndarray, b: np.ndarray, atol: float = 1e-4) -> bool:
    """True when two voxel→RAS affines agree within ``atol``."""
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), atol=atol))
