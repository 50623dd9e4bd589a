"""Array hand-off between client and worker without image-file round trips, and temp-folder hygiene.

Arrays are raw ``.npy`` files (header + C-order bytes, written with one ``write``) in a private
folder per client (``tempfile.mkdtemp``: mode 0700). The worker maps the input read-only with
``np.load(mmap_mode="r")`` — no parse, no copy until the engine makes its float32 tensor; the
client reads results back with one ``read``. Each folder holds ``owner.pid`` (the client) and
``worker-<pid>.pid`` files; ``sweep_stale`` removes folders whose processes are all gone (a crashed
Slicer, a killed CLI).
"""

import json
import os
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

DIR_PREFIX = "unetseg-worker-"
OWNER_FILE = "owner.pid"


def _create_time(pid: int) -> Optional[float]:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - psutil missing or the process is gone
        return None


def write_pid_file(path: str, pid: int) -> None:
    """Record ``pid`` (and its start time, to tell a reused pid apart) in ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"pid": int(pid), "create_time": _create_time(pid)}, f)


def pid_alive(pid: int, create_time: Optional[float] = None) -> bool:
    """Whether process ``pid`` (started at ``create_time`` when known) still runs."""
    try:
        import psutil

        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            return create_time is None or abs(proc.create_time() - create_time) < 1.0
        except psutil.NoSuchProcess:
            return False
    except ImportError:
        pass
    if os.name != "posix":
        return True  # cannot tell without psutil: keep the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_private_dir(root: Optional[str] = None) -> str:
    """A new private folder ``<root>/unetseg-worker-XXXX`` (0700) with this process's pid file."""
    folder = tempfile.mkdtemp(prefix=DIR_PREFIX, dir=root)
    write_pid_file(os.path.join(folder, OWNER_FILE), os.getpid())
    return folder


def remove_dir(folder: Optional[str]) -> bool:
    """Remove ``folder`` and everything in it; True when it is gone."""
    if not folder:
        return True
    for attempt in range(3):
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.exists(folder):
            return True
        time.sleep(0.05 * (attempt + 1))  # Windows: a mapping may be closing
    return not os.path.exists(folder)


def _folder_pids(folder: str) -> List[Tuple[int, Optional[float]]]:
    pids = []
    for name in os.listdir(folder):
        if name.endswith(".pid"):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    data = json.load(f)
                pids.append((int(data["pid"]), data.get("create_time")))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return pids


def sweep_stale(root: Optional[str] = None, grace_s: float = 600.0, prefix: str = DIR_PREFIX) -> List[str]:
    """Remove ``prefix*`` folders in ``root`` (worker clients' by default; a server's: ``unetseg-remote-``) whose
    owner and workers are all dead. A folder without any pid file is only removed once older than ``grace_s`` (it
    may be being created right now). Returns the removed folders."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        names = [n for n in os.listdir(root) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        folder = os.path.join(root, name)
        try:
            if not os.path.isdir(folder) or os.path.islink(folder):
                continue
            pids = _folder_pids(folder)
            if not pids and time.time() - os.path.getmtime(folder) < grace_s:
                continue
        except OSError:
            continue
        if not any(pid_alive(pid, ctime) for pid, ctime in pids) and remove_dir(folder):
            removed.append(folder)
    return removed


def write_array(folder: str, name: str, array: np.ndarray) -> Dict[str, Any]:
    """Save ``array`` as ``<folder>/<name>.npy``; returns its descriptor for a message."""
    path = os.path.join(folder, name + ".npy")
    array = np.ascontiguousarray(array)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, allow_pickle=False)
    return {"path": path, "dtype": array.dtype.str, "shape": [int(s) for s in array.shape]}


def _check(array: np.ndarray, desc: Dict[str, Any]) -> np.ndarray:
    if list(array.shape) != list(desc.get("shape", array.shape)) or array.dtype.str != desc.get(
        "dtype", array.dtype.str
    ):
        raise ValueError(
            f"{desc['path']}: holds {array.dtype.str}{list(array.shape)}, "
            f"expected {desc.get('dtype')}{desc.get('shape')}"
        )
    return array


def map_array(desc: Dict[str, Any]) -> np.ndarray:
    """Read-only memory map of a hand-off file (no copy)."""
    return _check(np.load(desc["path"], mmap_mode="r", allow_pickle=False), desc)


def read_array(desc: Dict[str, Any]) -> np.ndarray:
    """A hand-off file read into memory (one ``read``; independent of the file afterwards)."""
    return _check(np.load(desc["path"], allow_pickle=False), desc)
