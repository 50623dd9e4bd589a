"""A bundle ``.zip``: checked as a whole before a byte is written, extracted within limits, always removed.

``check_archive`` refuses more than ``MAX_ENTRIES`` entries, more than ``MAX_TOTAL_BYTES`` uncompressed, a
compression ratio above ``MAX_RATIO`` (a "zip bomb"), encrypted entries, absolute or ``..`` paths, duplicate
names, and symbolic links, devices, pipes or sockets. ``extracted_bundle`` then writes only the members it
needs (untrusted: ``configs/`` and ``models/model.pt|ts``) into a private ``unetseg-bundle-*`` folder,
counting bytes as it goes; the folder is removed when the ``with`` block ends — normally, on any error, and on
Ctrl-C / SIGTERM / SIGHUP (the command line turns those into exceptions, see ``exits``).
"""

import contextlib
import os
import posixpath
import shutil
import stat
import tempfile
import zipfile
from typing import Iterator, List, Optional, Tuple

from ...errors import ModelError

MAX_ENTRIES = 2000
MAX_TOTAL_BYTES = 4 * 2**30
MAX_RATIO = 100  # uncompressed / compressed: weights ~1.1, JSON ~5-10, a zip bomb ~1000
RATIO_FLOOR = 2**20  # entries (and archives) below this size may compress better without harm
TEMP_PREFIX = "unetseg-bundle-"
NEEDED_UNTRUSTED = ("configs/", "models/model.pt", "models/model.ts")
_SPECIAL = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
}
FIX = "Re-create the bundle zip from its folder (e.g. python -m zipfile -c bundle.zip bundle/), or use the folder."


def bundle_root(names: List[str]) -> Optional[str]:
    """The folder prefix (``""`` or ``"name/"``) of the shallowest ``configs/metadata.json``, or None."""
    roots = [n[: -len("configs/metadata.json")] for n in names if posixpath.basename(n) == "metadata.json"]
    roots = [r for r in roots if (r + "configs/metadata.json") in names]
    return min(roots, key=lambda r: (r.count("/"), r)) if roots else None


def _refuse(path: str, why: str) -> ModelError:
    return ModelError(f"Refused bundle zip {os.path.basename(path)}: {why}. Nothing was extracted.", FIX)


def check_archive(path: str, zf: zipfile.ZipFile) -> List[zipfile.ZipInfo]:
    """Every entry checked (see the module docstring); returns the file entries."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise _refuse(path, f"it has {len(infos):,} entries (at most {MAX_ENTRIES:,})")
    seen = set()
    files: List[zipfile.ZipInfo] = []
    total = 0
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or "\\" in name or "\x00" in name:
            raise _refuse(path, f"the entry {name[:80]!r} has an unsafe path (it points outside the bundle folder)")
        if name in seen:
            raise _refuse(path, f"the entry {name[:80]!r} appears twice")
        seen.add(name)
        kind = _SPECIAL.get(stat.S_IFMT(info.external_attr >> 16))
        if kind is not None:
            raise _refuse(path, f"the entry {name[:80]!r} is {kind}")
        if info.flag_bits & 0x1:
            raise _refuse(path, f"the entry {name[:80]!r} is encrypted")
        if info.is_dir():
            continue
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(1, info.compress_size):
            ratio = info.file_size / max(1, info.compress_size)
            raise _refuse(path, f"the entry {name[:80]!r} expands {ratio:,.0f}× (at most {MAX_RATIO}×): a zip bomb?")
        total += info.file_size
        files.append(info)
    if total > MAX_TOTAL_BYTES:
        raise _refuse(path, f"it expands to {total / 2**30:.1f} GiB (at most {MAX_TOTAL_BYTES / 2**30:.0f} GiB)")
    size = os.path.getsize(path)
    if total > RATIO_FLOOR and total > MAX_RATIO * max(1, size):
        raise _refuse(path, f"it expands {total / max(1, size):,.0f}× (at most {MAX_RATIO}×): a zip bomb?")
    return files


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: str) -> None:
    """Stream one member to ``target`` (a new file, never followed through a link), at most its declared size."""
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    written = 0
    with zf.open(info) as src, os.fdopen(os.open(target, flags, 0o600), "wb") as out:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            written += len(chunk)
            if written > info.file_size:
                raise zipfile.BadZipFile(f"{info.filename} is longer than its header says")
            out.write(chunk)


@contextlib.contextmanager
def extracted_bundle(path: str, everything: bool = False) -> Iterator[str]:
    """Yield the folder of the bundle inside zip ``path``, extracted to a private temp folder removed afterwards.

    ``everything``: extract every entry (a trusted bundle may read any of its files); else only what the
    untrusted reader needs."""
    tmp, folder = _extract(path, everything)
    try:
        yield folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract(path: str, everything: bool) -> Tuple[str, str]:
    """(temp folder, bundle folder inside it); nothing is left behind when this raises (or is interrupted)."""
    try:
        with zipfile.ZipFile(path) as zf:
            files = check_archive(path, zf)
            root = bundle_root([i.filename for i in files])
            if root is None:
                raise _refuse(path, "it holds no configs/metadata.json")
            files = [i for i in files if i.filename.startswith(root)]
            if not everything:
                files = [i for i in files if i.filename[len(root) :].startswith(NEEDED_UNTRUSTED)]
            _check_free_space(path, sum(i.file_size for i in files))
            tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX)
            try:
                base = os.path.realpath(tmp)
                for info in files:
                    target = os.path.realpath(os.path.join(base, *info.filename.split("/")))
                    if not target.startswith(base + os.sep):
                        raise _refuse(path, f"the entry {info.filename[:80]!r} has an unsafe path")
                    _copy(zf, info, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return tmp, os.path.join(base, *root.split("/"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise ModelError(
            f"Bundle zip {os.path.basename(path)} is corrupt or uses an unsupported feature: {str(exc)[:200]}", FIX
        ) from None
    except FileExistsError as exc:
        raise _refuse(path, f"an entry would overwrite another ({exc.filename})") from None
    except OSError as exc:
        raise ModelError(
            f"Cannot extract bundle zip {os.path.basename(path)}: {exc.strerror or exc}",
            "Check free disk space and permissions of the temp folder, or unzip the bundle yourself.",
        ) from None


def _check_free_space(path: str, needed: int) -> None:
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    if needed + 64 * 2**20 > free:
        raise ModelError(
            f"Extracting bundle zip {os.path.basename(path)} needs {needed / 2**20:.0f} MB in {folder}, "
            f"which has {free / 2**20:.0f} MB free",
            "Free disk space there, or unzip the bundle yourself and give its folder.",
        )
