"""Runs the engine in this process, behind the same job interface as the background worker's client.

Used by tests (driven synchronously) and by console users who opt out of the worker. In the Slicer
panel the worker client (``UNetSigmoidSegLib.worker.client.WorkerClient``) is used instead.
"""

from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..engine.model import LoadedModel, load_model, model_cache_key
from ..engine.pipeline import SegmentOptions, SegmentResult, segment
from ..engine.volume import Volume
from ..errors import CancelledError

ProgressCb = Optional[Callable[[str, float, str], None]]


class InProcessJob:
    """One run; it executes on the first ``poll()`` / ``wait()``."""

    def __init__(self, runner: "InProcessRunner", volume: Volume, model_path: str, model_options: Dict[str, Any],
                 segment_options: Dict[str, Any]) -> None:
        self._runner, self._volume = runner, volume
        self._model_path, self._model_options, self._segment_options = model_path, model_options, segment_options
        self._cancel = False
        self._messages: List[Dict[str, Any]] = []
        self.done = False
        self.result: Optional[SegmentResult] = None
        self.error: Optional[BaseException] = None

    def cancel(self) -> None:
        self._cancel = True

    def _run(self, progress: ProgressCb = None, log: Optional[Callable[[str], None]] = None) -> None:
        def on_progress(stage: str, fraction: float, message: str) -> None:
            self._messages.append({"type": "progress", "stage": stage, "fraction": fraction, "message": message})
            if progress is not None:
                progress(stage, fraction, message)

        def on_log(message: str) -> None:
            self._messages.append({"type": "log", "message": message})
            if log is not None:
                log(message)

        try:
            model = self._runner.model(self._model_path, self._model_options)
            opts = SegmentOptions.from_dict(self._segment_options)
            self.result = segment(self._volume, model, opts, progress=on_progress, should_cancel=lambda: self._cancel, log=on_log)
            self._messages.append({"type": "result"})
        except CancelledError as exc:
            self.error = exc
            self._messages.append({"type": "cancelled"})
        except Exception as exc:  # noqa: BLE001 - reported to the caller as a message and re-raised by wait()
            self.error = exc
            self._messages.append({"type": "error", "kind": getattr(exc, "kind", "internal"), "message": str(exc)})
        self.done = True

    def poll(self) -> List[Dict[str, Any]]:
        if not self.done:
            self._run()
        messages, self._messages = self._messages, []
        return messages

    def wait(self, timeout: Optional[float] = None, progress: ProgressCb = None,
             log: Optional[Callable[[str], None]] = None) -> SegmentResult:
        if not self.done:
            self._run(progress, log)
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class InProcessRunner:
    """Keeps loaded models (keyed by path, modification time and load options) between runs."""

    def __init__(self) -> None:
        self._models: Dict[Any, LoadedModel] = {}
        self.load_count = 0

    def model(self, path: str, options: Dict[str, Any]) -> LoadedModel:
        key = model_cache_key(path, options)
        if key not in self._models:
            self._models = {key: load_model(path, **options)}
            self.load_count += 1
        return self._models[key]

    def submit(self, volume_array: np.ndarray, affine: np.ndarray, model_path: str, model_options: Dict[str, Any],
               segment_options: Dict[str, Any]) -> InProcessJob:
        return InProcessJob(self, Volume(volume_array, affine), model_path, model_options, segment_options)

    def shutdown(self) -> None:
        self._models.clear()
