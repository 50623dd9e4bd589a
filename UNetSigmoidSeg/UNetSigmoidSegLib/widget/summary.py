"""The one-line model summary under the model path: read by the worker (non-blocking, and the model
stays loaded for the run) or in this process when there is no worker; cached per (path, mtime, trust).
"""

from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import UserError
from .rules import model_key, summary_text

Loader = Callable[[str, bool], Dict[str, Any]]  # (path, trust_bundle) → ModelInfo as a dict


class ModelSummaries:
    """``request`` returns the label text at once; with a worker, ``poll`` from a timer until it returns True."""

    def __init__(self) -> None:
        self.cache: Dict[Tuple[str, int, bool], Tuple[Optional[Dict[str, Any]], Optional[BaseException]]] = {}
        self.job: Any = None
        self.job_key: Optional[Tuple[str, int, bool]] = None
        self.info: Optional[Dict[str, Any]] = None  # of the path last requested, once known
        self.error = ""  # actionable text when that model cannot be used

    @property
    def inspecting(self) -> bool:
        return self.job is not None

    def request(self, path: str, trust_bundle: bool, worker: Any = None, busy: bool = False, loader: Optional[Loader] = None) -> str:
        """Label text for ``path``. ``worker`` has ``submit_load``; ``busy``: a run is going on (ask again after it);
        ``loader`` reads the model in this process when there is no worker."""
        self.info, self.error = None, ""
        key = model_key(path, trust_bundle) if path else None
        if key is None:
            return f"Not found: {path}" if path else ""
        if key in self.cache:
            return self._show(key)
        if busy or self.job is not None:
            return "Reading the model after the current job…"
        if worker is not None:
            self.job, self.job_key = worker.submit_load(path, {"trust_bundle": bool(trust_bundle)}), key
            return "Reading the model…"
        if loader is None:
            return "Install the dependencies to read the model."
        try:
            self.cache[key] = (loader(path, trust_bundle), None)
        except UserError as exc:
            self.cache[key] = (None, exc)
        return self._show(key)

    def poll(self) -> bool:
        """True once the worker's answer is in the cache (then ``request`` again for the current path)."""
        if self.job is None or not self.job.done:
            return False
        job, self.job = self.job, None
        try:
            self.cache[self.job_key] = (job.wait(timeout=0), None)
        except UserError as exc:  # ModelError, WorkerError …
            self.cache[self.job_key] = (None, exc)
        return True

    def _show(self, key: Tuple[str, int, bool]) -> str:
        info, error = self.cache[key]
        self.info, self.error = info, str(error) if error is not None else ""
        return self.error or summary_text(info)  # type: ignore[arg-type]


def load_info(path: str, trust_bundle: bool) -> Dict[str, Any]:
    """``ModelInfo`` as a dict, loading the model in this process (the panel's fallback without a worker)."""
    from ..engine.model import load_model

    return load_model(path, trust_bundle=trust_bundle).info.to_dict()
