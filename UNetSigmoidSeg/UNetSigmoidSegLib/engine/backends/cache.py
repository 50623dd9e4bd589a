"""The on-disk cache of exported networks: a private folder of this user, an integrity check on every read.

Where: ``$UNETSEG_CACHE_DIR`` if set, else the user's cache folder as platformdirs names it —
``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows —
then ``unetsigmoidseg/backends``. Both folders are created ``0700`` and checked before use: a folder that is a link,
belongs to another user or (POSIX) is not private — and cannot be made private — is not used (the run exports in
memory only and says so).

One entry per key (its SHA-256 hex): ``<key>.json`` (the manifest: the key itself, the SHA-256 and size of the
exported file, validation results per runtime version, auto's measurement) and ``<key>.onnx``. Every file is
written to a temporary name and renamed into place. A read checks the manifest's key and the file's hash; any
mismatch (truncated by a crash, altered by someone) is a miss: the caller exports again. The exported bytes are
handed to the runtime from memory after the check, never as a path (nothing else is read).
"""

import hashlib
import json
import os
import stat
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

CACHE_ENV = "UNETSEG_CACHE_DIR"
APP = "unetsigmoidseg"
MAX_ENTRIES = 12  # least recently used entries beyond this are removed
FORMAT = 1
KEY_FORMAT = 3  # 2: records per preprocessing (``context``); 3: keyed by content, not by the model's path


def backend_key(model: Any, shape: List[int]) -> Tuple[str, Dict[str, Any]]:
    """(SHA-256 hex, the fields it hashes) of an export: what the network computes — its class and arguments, its
    weights, a TorchScript network's code, the window shape, PyTorch and MONAI — not where its file lies, so a copy
    or a moved file reuses the export. A class from outside MONAI and PyTorch (a trusted bundle's own code) is
    keyed by its file too: its code is not in the weights."""
    import monai
    import torch

    from . import runtimes

    net = model.network
    weights = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        weights.update(name.encode("utf-8"))
        weights.update(str(tuple(tensor.shape)).encode("ascii"))
        weights.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for name, module in net.named_modules():  # TorchScript: the code of each scripted module
        code = getattr(module, "code", None) if isinstance(module, torch.jit.ScriptModule) else None
        if code:
            weights.update(f"{name}\n{code}".encode())
    origin = type(net).__module__.split(".")[0]
    scripted = isinstance(net, torch.jit.ScriptModule)
    fields = {
        "format": KEY_FORMAT,
        "model": None if scripted or origin in ("monai", "torch") or not model.spec_key else list(model.spec_key),
        "monai": monai.__version__,
        "class": getattr(net, "original_name", None) or f"{type(net).__module__}.{type(net).__qualname__}",
        "network_args": json.loads(json.dumps(model.info.network_args, sort_keys=True, default=str)),
        "weights": weights.hexdigest(),
        "input": [int(s) for s in shape],
        "torch": torch.__version__,
        "opset": runtimes.OPSET,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest(), fields


def cache_root() -> str:
    """The product's cache folder (not created here)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return os.path.abspath(os.path.expanduser(override))
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
        return os.path.join(base, APP, "Cache")
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~"), "Library", "Caches", APP)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, APP)


def _private(path: str) -> Optional[str]:
    """Create ``path`` (0700) if needed; why it is not a private folder of this user (None: it is)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror or exc}"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a plain folder"
    if os.name != "posix":
        return None  # Windows: the folder lies in the user's own profile
    if info.st_uid != os.geteuid():
        return f"{path} belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            return f"{path} is not private and cannot be made so: {exc.strerror or exc}"
    return None


def open_cache() -> Tuple[Optional["BackendCache"], str]:
    """The cache, or ``(None, why not)``."""
    root = cache_root()
    for folder in (root, os.path.join(root, "backends")):
        why = _private(folder)
        if why:
            return None, why
    return BackendCache(os.path.join(root, "backends")), ""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str) -> Optional[bytes]:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


class BackendCache:
    """Entries in ``folder`` (private, see the module doc)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _path(self, key: str, suffix: str) -> str:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return os.path.join(self.folder, key + suffix)

    def manifest(self, key: str, key_fields: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The entry's manifest, or None (absent, unreadable, or for another key)."""
        raw = _read(self._path(key, ".json"))
        if raw is None:
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != key_fields:
            return None
        return data

    def exported(self, key: str, manifest: Dict[str, Any]) -> Tuple[Optional[bytes], str]:
        """The exported file's bytes if they are what the manifest recorded at export, else ``(None, why)``."""
        record = manifest.get("onnx")
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            return None, "no exported file recorded"
        data = _read(self._path(key, ".onnx"))
        if data is None:
            return None, "the exported file is missing"
        if len(data) != record.get("bytes") or digest(data) != record["sha256"]:
            return None, f"the exported file does not match its recorded hash ({len(data)} bytes)"
        return data, ""

    def store(self, key: str, manifest: Dict[str, Any], data: Optional[bytes] = None) -> Optional[str]:
        """Write the manifest (and the exported bytes, recording their hash in ``manifest["onnx"]``); returns why it
        failed, or None."""
        try:
            if data is not None:
                manifest["onnx"] = {"sha256": digest(data), "bytes": len(data)}
                self._write(self._path(key, ".onnx"), data)
            text = json.dumps(dict(manifest, format=FORMAT), indent=1, sort_keys=True)
            self._write(self._path(key, ".json"), text.encode("utf-8"))
        except OSError as exc:
            return f"cannot write the cache in {self.folder}: {exc.strerror or exc}"
        self._evict()
        return None

    def touch(self, key: str) -> None:
        """Mark an entry as used (eviction removes the least recently used)."""
        try:
            os.utime(self._path(key, ".json"))
        except OSError:
            pass

    def _write(self, path: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=os.path.basename(path)[-8:])
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp: 0600, this user's
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _evict(self) -> None:
        """Least recently used entries beyond ``MAX_ENTRIES``, and temporary files a killed process left (> 1 h)."""
        try:
            stale = time.time() - 3600
            for name in os.listdir(self.folder):
                path = os.path.join(self.folder, name)
                if name.startswith(".tmp-") and os.stat(path).st_mtime < stale:
                    os.unlink(path)
            names = [n for n in os.listdir(self.folder) if n.endswith(".json") and not n.startswith(".")]
            entries = sorted(names, key=lambda n: os.stat(os.path.join(self.folder, n)).st_mtime, reverse=True)
            for name in entries[MAX_ENTRIES:]:
                for suffix in (".json", ".onnx"):
                    path = os.path.join(self.folder, name[: -len(".json")] + suffix)
                    if os.path.exists(path):
                        os.unlink(path)
        except OSError:
            pass  # another process evicted at the same time
