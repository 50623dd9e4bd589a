"""The server's models: the entries of its ``--models`` folder, by name, loaded and kept warm through the engine.

A name maps to a file or bundle folder directly inside the folder (``brain.pt`` → ``brain``, ``BrainT1UNet/`` →
``BrainT1UNet``) whose real path (symbolic links resolved) is inside the folder's real path; nothing a client sends
is ever joined into a path. Models load with the engine's ``load_model`` — untrusted (``trust_bundle=False``),
always. Uploaded models (``--allow-upload`` only) are written under server-chosen names in the job's private temp
folder, loaded the same untrusted way, and removed at once; they stay warm keyed by their content hash.
"""

import hashlib
import os
import re
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..contract.model import MODEL_SUFFIXES, ModelInfo, ModelSpec, check_model_name
from ..engine.loading.bundle import is_bundle_dir
from ..engine.loading.checkpoint import is_torchscript
from ..errors import ModelError, OptionError
from ..runners.host import EngineHost

CACHE_SIZE = 2  # networks kept warm (as the local worker)
UPLOAD_SUFFIXES = MODEL_SUFFIXES  # the only file names an upload gets: "model" + one of these


class UnknownModel(ModelError):
    """No model of that name in the server's folder."""


def carries_code(path: str) -> bool:
    """Whether an uploaded file would run a network's own code when loaded: a TorchScript archive, or a bundle
    ``.zip`` whose only network is ``models/model.ts`` (a bundle with ``models/model.pt`` loads the weights)."""
    if is_torchscript(path):
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = [n.replace("\\", "/") for n in zf.namelist()]
    return any(n.endswith("models/model.ts") for n in names) and not any(n.endswith("models/model.pt") for n in names)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root and path != root


class ModelStore:
    """Lists, resolves and loads the models of ``models_dir``; keeps the last ``CACHE_SIZE`` loaded networks."""

    def __init__(self, models_dir: str, log: Callable[[str], None] = lambda _m: None) -> None:
        self.root = os.path.realpath(os.path.expanduser(models_dir))
        if not os.path.isdir(self.root):
            raise OptionError(f"Models folder not found: {models_dir}", "Give --models DIR, a folder of models.")
        self.log = log
        self.host = EngineHost(CACHE_SIZE, log)  # the warm networks, one load at a time
        self._infos: Dict[Any, ModelInfo] = {}  # cache key -> ModelInfo (kept after the network is evicted)
        self.temp_roots: List[str] = []  # scrubbed from messages, as the models folder

    # ---------------------------------------------------------------- names
    def entries(self) -> Dict[str, str]:
        """Model name → real path of every model directly in the folder (ambiguous names left out)."""
        found: Dict[str, List[str]] = {}
        for entry in sorted(os.listdir(self.root)):
            if entry.startswith("."):
                continue
            real = os.path.realpath(os.path.join(self.root, entry))
            if not _inside(real, self.root):
                continue  # a link out of the folder is not served
            if os.path.isdir(real):
                if not is_bundle_dir(real):
                    continue
                name = entry
            elif os.path.isfile(real) and entry.lower().endswith(MODEL_SUFFIXES):
                name = entry[: entry.rindex(".")]
            else:
                continue
            try:
                found.setdefault(check_model_name(name), []).append(real)
            except OptionError:
                continue
        return {name: paths[0] for name, paths in found.items() if len(paths) == 1}

    def resolve(self, name: str) -> str:
        """The real path of model ``name``; ``OptionError`` for a malformed name, ``UnknownModel`` for no such model."""
        name = check_model_name(name)
        entries = self.entries()
        if name not in entries:
            listed = ", ".join(sorted(entries)) or "none"
            raise UnknownModel(f"The server has no model {name!r}", f"Its models: {listed}.")
        path = entries[name]
        if not _inside(os.path.realpath(path), self.root):  # re-checked at use
            raise UnknownModel(f"The server has no model {name!r}", "Ask the server's administrator.")
        return path

    def spec(self, name: str, strides: Optional[List[int]] = None) -> ModelSpec:
        """The server-side ``ModelSpec`` of model ``name``: its own path, untrusted, the client's strides only."""
        return ModelSpec(self.resolve(name), trust_bundle=False, strides=strides)

    # ---------------------------------------------------------------- loading
    @property
    def load_count(self) -> int:
        return self.host.models.load_count

    def model(self, spec: ModelSpec, key: Any = None) -> Tuple[Any, bool, float]:
        """(loaded network, whether it came warm from the cache, seconds spent loading) — always untrusted."""
        key = key if key is not None else spec.cache_key()
        loaded = self.host.models.get(ModelSpec(spec.path, trust_bundle=False, strides=spec.strides), key)
        self._infos[key] = loaded[0].info
        return loaded

    def info(self, name: str) -> ModelInfo:
        """The ``ModelInfo`` of model ``name`` as clients see it (``path`` is the name); loads it when unknown."""
        spec = self.spec(name)
        key = spec.cache_key()
        info = self._infos.get(key)
        if info is None:
            info = self.model(spec, key)[0].info
        return self.public_info(info, name)

    def listing(self) -> List[Dict[str, Any]]:
        """Every model: ``{"name", "summary", "info"}``, or ``{"name", "error"}`` when it cannot be loaded."""
        out = []
        for name in sorted(self.entries()):
            try:
                info = self.info(name)
                out.append({"name": name, "summary": info.summary(), "info": info.to_dict()})
            except Exception as exc:  # noqa: BLE001 - a broken model is listed with its error, the others still serve
                out.append({"name": name, "error": self.scrub(str(exc))})
        return out

    def public_info(self, info: ModelInfo, name: str) -> ModelInfo:
        data = info.to_dict()
        data["path"] = name
        data["notes"] = [self.scrub(str(n)) for n in data.get("notes") or []]
        return ModelInfo.from_dict(data)

    # ---------------------------------------------------------------- uploads (--allow-upload)
    def upload(self, folder: str, suffix: str, model_bytes: Any, sidecar: Optional[bytes], strides: Any):
        """Load an uploaded model (untrusted) from ``folder``/model<suffix>; returns ``model()``'s triple. The files
        are removed before this returns; the network stays warm keyed by the SHA-256 of what was sent.
        ``model_bytes``: bytes or a buffer of them (a memoryview: hashed and written without a copy)."""
        if suffix not in UPLOAD_SUFFIXES:
            raise OptionError(f"Uploaded model type {suffix!r} is not accepted", f"Send one of {UPLOAD_SUFFIXES}.")
        digest = hashlib.sha256(model_bytes)
        digest.update(b"\0" + (sidecar or b""))
        spec_strides = ModelSpec(name="upload", strides=strides).strides
        key = (f"upload:{digest.hexdigest()}", 0, repr(spec_strides))
        warm = self.host.models.cached(key)
        if warm is not None:
            return warm, True, 0.0
        path = os.path.join(folder, "model" + suffix)
        try:
            with open(path, "wb") as f:
                f.write(model_bytes)
            if sidecar is not None:
                with open(os.path.join(folder, "model.json"), "wb") as f:
                    f.write(sidecar)
            if carries_code(path):
                raise ModelError(
                    "This server does not load TorchScript from clients: a TorchScript network is code, and one sent "
                    "to the server could hold it (a forward that never ends) for every other user",
                    "Send the weights instead (torch.save(net.state_dict()) with the JSON of its settings, or a bundle "
                    "with models/model.pt), or ask the server's administrator to put the model in its models folder.",
                )
            return self.model(ModelSpec(path, trust_bundle=False, strides=spec_strides), key)
        finally:
            for name in ("model" + suffix, "model.json"):
                try:
                    os.remove(os.path.join(folder, name))
                except OSError:
                    pass

    def scrub(self, text: str) -> str:
        """``text`` without the server's own paths (the models folder, temp folders): clients see names only."""
        for root, label in [(self.root, "<models>")] + [(t, "<server temp>") for t in self.temp_roots]:
            text = re.sub(re.escape(root) + r"[^\s'\"]*", label, text)
        return text
