"""The user's files are never overwritten: no output may resolve to an input, the model or another output.

Paths are compared by what they resolve to, not by their spelling: ``os.path.realpath`` (``./``, ``..``,
symbolic links in any part of the path), the same file on disk (``os.path.samefile``: hard links, and a
different case on a case-insensitive file system, where both spellings open the same file), and, between
outputs that do not exist yet, case-insensitively (two names that differ only in case are one file on
macOS and Windows).
"""

import os
from typing import Iterable, List, Sequence, Tuple

from ...errors import OutputError

MAX_PROTECTED_FILES = 20_000  # files of a bundle / DICOM folder looked at


def protected_files(paths: Iterable[str]) -> List[str]:
    """Every existing file among ``paths``; a folder (bundle, DICOM series) contributes the files inside it."""
    out: List[str] = []
    for path in paths:
        if not path:
            continue
        if os.path.isdir(path):
            for root, _dirs, names in os.walk(path):
                out.extend(os.path.join(root, n) for n in names)
                if len(out) > MAX_PROTECTED_FILES:
                    break
        elif os.path.exists(path):
            out.append(path)
    return out


def _same(a: str, b: str) -> bool:
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_paths(outputs: Sequence[Tuple[str, str]], protected: Sequence[str]) -> None:
    """Refuse (``OutputError``) any ``(what, path)`` output that resolves to a ``protected`` file (inputs, the
    model's files) or to another output. Call it before anything runs; the writers call it again just before
    they replace a file."""
    resolved = []
    for what, path in outputs:
        for other in protected:
            if _same(path, other):
                raise OutputError(
                    f"The {what} output {path} is the same file as {other}, which this run reads: "
                    "it would be overwritten",
                    "Write the result elsewhere (e.g. -o result.seg.nrrd); inputs and the model are never replaced.",
                )
        key = os.path.normcase(os.path.realpath(path)).casefold()
        for other_what, other_path, other_key in resolved:
            if key == other_key or _same(path, other_path):
                raise OutputError(
                    f"The {what} output {path} and the {other_what} output {other_path} are the same file "
                    "(paths that differ only in case are one file on macOS and Windows)",
                    "Give the two outputs different file names.",
                )
        resolved.append((what, path, key))
