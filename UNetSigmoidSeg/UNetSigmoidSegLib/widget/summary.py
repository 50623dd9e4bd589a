"""The one-line model summary under the model path: read by the panel's runner (the worker: non-blocking,
and the model stays loaded for the run), cached per (path, mtime, trust).
"""

from typing import Any, Optional, Tuple

from ..contract.model import ModelInfo, ModelSpec
from ..errors import UserError
from .rules import model_key

Key = Tuple[str, int, str]


class ModelSummaries:
    """``request`` returns the label text at once; while ``inspecting``, ``poll`` from a timer until it returns True."""

    def __init__(self) -> None:
        self.cache: dict = {}  # key -> (ModelInfo or None, error or None)
        self.job: Any = None
        self.job_key: Optional[Key] = None
        self.info: Optional[ModelInfo] = None  # of the path last requested, once known
        self.error = ""  # actionable text when that model cannot be used

    @property
    def inspecting(self) -> bool:
        return self.job is not None

    def request(self, path: str, trust_bundle: bool, runner: Any = None, busy: bool = False) -> str:
        """Label text for ``path``. ``runner``: the panel's ``Runner`` (None until the dependencies are installed);
        ``busy``: a run is going on (ask again after it)."""
        self.info, self.error = None, ""
        key = model_key(path, trust_bundle) if path else None
        if key is None:
            return f"Not found: {path}" if path else ""
        if key in self.cache:
            return self._show(key)
        if busy or self.job is not None:
            return "Reading the model after the current job…"
        if runner is None:
            return "Install the dependencies to read the model."
        self.job, self.job_key = runner.inspect(ModelSpec(path, trust_bundle=bool(trust_bundle))), key
        return self._show(key) if self.poll() else "Reading the model…"  # an in-process runner answers at once

    def poll(self) -> bool:
        """True once the runner's answer is in the cache (then ``request`` again for the current path)."""
        if self.job is None:
            return False
        self.job.poll()
        if not self.job.done:
            return False
        job, self.job = self.job, None
        try:
            self.cache[self.job_key] = (job.wait(timeout=0), None)
        except UserError as exc:  # ModelError, WorkerError …
            self.cache[self.job_key] = (None, exc)
        return True

    def _show(self, key: Key) -> str:
        info, error = self.cache[key]
        self.info, self.error = info, str(error) if error is not None else ""
        return self.error or info.summary()
