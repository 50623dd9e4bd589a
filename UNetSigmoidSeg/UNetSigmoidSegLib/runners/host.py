"""The one engine host behind every transport: the model cache, the run, its progress and its messages.

The in-process runner, the worker process and the remote server each hold one ``EngineHost`` and only move what it
takes and gives: a ``RunRequest`` with its voxels in, typed messages (``Progress``, ``Log``) out while it runs, then
the ``SegmentResult`` or the exception that ``contract.messages.message_for`` turns into the terminal message.
The engine (torch, MONAI) is imported on the first load, never by importing this module.
"""

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..contract.messages import Log, Message, Progress
from ..contract.model import ModelSpec
from ..contract.request import RunRequest
from ..errors import CancelledError

PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress messages a second within a stage (changes and ends always go out)
Emit = Callable[[Message], None]


class ModelCache:
    """The last ``size`` loaded networks (``engine.loading.model.LoadedModel``, with the CPU backends prepared for
    them), least recently used first out, keyed by ``ModelSpec.cache_key()`` (or a key the host chose: an upload's
    content hash) which each loaded model keeps as its ``spec_key`` (the disk cache of exported backends is keyed by
    it too). One load at a time. ``log(line)``: the host's log."""

    def __init__(self, size: int = 2, log: Optional[Callable[[str], None]] = None) -> None:
        self.size = int(size)
        self.log = log
        self.load_count = 0
        self._cache: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: ModelSpec, key: Any = None) -> Tuple[Any, bool, float]:
        """(loaded network, whether it came from the cache, seconds spent loading)."""
        from ..engine.loading.model import load_model

        key = spec.cache_key() if key is None else key
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key], True, 0.0
            t0 = time.perf_counter()
            loaded = load_model(spec)
            loaded.spec_key = key
            self.load_count += 1
            if self.size > 0:
                self._cache[key] = loaded
            while len(self._cache) > max(0, self.size):
                self._cache.popitem(last=False)
            seconds = time.perf_counter() - t0
        if self.log is not None:
            self.log(f"model loaded in {seconds:.1f} s ({self.load_count} load(s) so far): {loaded.info.summary()}")
        return loaded, False, seconds

    def cached(self, key: Any) -> Optional[Any]:
        """The warm network of ``key`` (now the most recently used), else None."""
        with self._lock:
            if key not in self._cache:
                return None
            self._cache.move_to_end(key)
            return self._cache[key]

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


class Throttle:
    """The engine's ``progress(stage, fraction, message)`` → ``Progress`` messages with the stage's ETA: within a stage
    at most one per ``interval_s``; a new stage, its start and its end always go out. ``on_progress(stage, fraction)``
    sees every call (a test's hook)."""

    def __init__(
        self,
        emit: Emit,
        interval_s: float = PROGRESS_INTERVAL_S,
        on_progress: Optional[Callable[[str, float], None]] = None,
    ) -> None:
        self.emit = emit
        self.interval_s = interval_s
        self.on_progress = on_progress
        self.stage = ""
        self.stage_start = time.perf_counter()
        self.last_sent = 0.0

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if self.on_progress is not None:
            self.on_progress(stage, fraction)
        now = time.perf_counter()
        changed = stage != self.stage
        if changed:
            self.stage, self.stage_start = stage, now
        if not changed and 0 < fraction < 1.0 and now - self.last_sent < self.interval_s:
            return
        self.last_sent = now
        elapsed = now - self.stage_start
        eta = elapsed / fraction * (1.0 - fraction) if 0 < fraction < 1 else (0.0 if fraction >= 1 else None)
        self.emit(Progress(stage, float(fraction), message, None if eta is None else round(eta, 2)))


class EngineHost:
    """Loads models and runs requests for one transport. ``cache_size``: networks kept warm. ``log``: the host's own
    log (a model loaded); a run's lines go to its ``emit``."""

    def __init__(self, cache_size: int = 2, log: Optional[Callable[[str], None]] = None) -> None:
        self.models = ModelCache(cache_size, log)

    def run(
        self,
        request: RunRequest,
        array: np.ndarray,
        emit: Emit,
        should_cancel: Callable[[], bool],
        loaded: Optional[Tuple[Any, bool, float]] = None,
        on_progress: Optional[Callable[[str, float], None]] = None,
    ) -> Tuple[Any, Dict[str, Any]]:
        """Segment ``array`` (the request's voxels) with the request's model (``loaded``: a network the transport
        loaded itself, e.g. an upload); returns the ``SegmentResult`` and the ``JobInfo`` fields of how it ran.
        Raises ``CancelledError`` when ``should_cancel()`` turns true, and what the engine raises."""
        from ..engine.running.pipeline import segment

        model, hit, load_s = loaded if loaded is not None else self.models.get(request.model)
        if should_cancel():
            raise CancelledError("cancelled after loading the model")
        result = segment(
            request.volume(array),
            model,
            request.options,
            progress=Throttle(emit, on_progress=on_progress),
            should_cancel=should_cancel,
            log=lambda line: emit(Log(line)),
            warn=lambda text: emit(Log(text, "warning")),
        )
        return result, {"cache_hit": hit, "load_count": self.models.load_count, "load_s": round(load_s, 3)}

    def inspect(self, spec: ModelSpec) -> Tuple[Any, Dict[str, Any]]:
        """The ``ModelInfo`` of ``spec`` (the network stays loaded) and the ``JobInfo`` fields of its load."""
        model, hit, load_s = self.models.get(spec)
        return model.info, {"cache_hit": hit, "load_count": self.models.load_count, "load_s": round(load_s, 3)}
