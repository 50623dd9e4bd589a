"""The in-process runner: the engine runs in this process, behind the same ``Job`` interface as the worker.

A job runs synchronously on its first ``poll()`` or ``wait()`` (so a caller polling from a timer gets its
messages at once, and tests drive it step by step). Used by the CLI without ``--worker``, by tests, and by
console users who choose to run in Slicer's own process. Loaded networks are kept between runs.
"""

import itertools
from typing import Any, Callable, Dict, List, Optional

from ..contract.model import ModelSpec
from ..contract.options import SegmentOptions
from ..contract.runner import LogFn, Message, ProgressFn
from ..contract.volume import Volume
from ..errors import CancelledError

_IDS = itertools.count(1)


class InProcessJob:
    """One run (or inspection) executed by ``work(progress, log, should_cancel)`` on the first ``poll`` / ``wait``."""

    def __init__(self, work: Callable[[ProgressFn, LogFn, Callable[[], bool]], Any]) -> None:
        self.id = f"local-{next(_IDS)}"
        self.info: Dict[str, Any] = {}
        self._work = work
        self._cancel = False
        self._messages: List[Message] = []
        self._done = False
        self._value: Any = None
        self._error: Optional[BaseException] = None

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        self._cancel = True

    def _run(self, progress: Optional[ProgressFn] = None, log: Optional[LogFn] = None) -> None:
        def on_progress(stage: str, fraction: float, message: str) -> None:
            self._messages.append({"type": "progress", "stage": stage, "fraction": fraction, "message": message})
            if progress is not None:
                progress(stage, fraction, message)

        def on_log(text: str) -> None:
            warning = text.startswith("warning: ")
            body = text[len("warning: ") :] if warning else text
            self._messages.append({"type": "warning" if warning else "log", "message": body})
            if log is not None:
                log(text)

        try:
            self._value = self._work(on_progress, on_log, lambda: self._cancel)
            self._messages.append({"type": "result"})
        except CancelledError as exc:
            self._error = exc
            self._messages.append({"type": "cancelled", "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - reported as a message and re-raised by wait()
            self._error = exc
            self._messages.append({"type": "error", "kind": getattr(exc, "kind", "internal"), "message": str(exc)})
        self._done = True

    def poll(self) -> List[Message]:
        if not self._done:
            self._run()
        messages, self._messages = self._messages, []
        return messages

    def wait(
        self, timeout: Optional[float] = None, progress: Optional[ProgressFn] = None, log: Optional[LogFn] = None
    ) -> Any:
        if not self._done:
            self._run(progress, log)
        if self._error is not None:
            raise self._error
        return self._value


class InProcessRunner:
    """Runs the engine in this process; keeps the last loaded network (keyed by ``ModelSpec.cache_key``) with the
    CPU backends prepared for it (``LoadedModel.backends``)."""

    kind = "in-process"

    def __init__(self) -> None:
        self._models: Dict[Any, Any] = {}
        self._keep = True
        self.load_count = 0

    def model(self, spec: ModelSpec) -> Any:
        """The loaded network of ``spec`` (an ``engine.model.LoadedModel``), loading it on a miss."""
        from ..engine.model import load_model

        key = spec.cache_key()
        if key not in self._models:
            loaded = load_model(spec)
            loaded.spec_key = key  # the disk cache of exported backends is keyed by it too
            self._models = {key: loaded}
            self.load_count += 1
        return self._models[key]

    def submit(self, volume: Volume, model: ModelSpec, options: SegmentOptions) -> InProcessJob:
        def work(progress: ProgressFn, log: LogFn, should_cancel: Callable[[], bool]) -> Any:
            from ..engine.pipeline import segment

            loaded = self.model(model)
            try:
                return segment(volume, loaded, options, progress=progress, should_cancel=should_cancel, log=log)
            finally:
                if not self._keep:
                    self._models.clear()

        return InProcessJob(work)

    def inspect(self, model: ModelSpec) -> InProcessJob:
        return InProcessJob(lambda progress, log, should_cancel: self.model(model).info)

    def describe(self) -> Optional[Dict[str, Any]]:
        """The versions this process runs with. Never imports torch: until a run did, CUDA is ``None`` (unknown)."""
        import platform
        import sys

        from ..sysinfo import package_version

        described: Dict[str, Any] = {
            "python": platform.python_version(),
            "executable": sys.executable,
            "torch": package_version("torch"),
            "monai": package_version("monai"),
            "cuda": None,
            "cuda_devices": 0,
            "runner": self.kind,
        }
        torch = sys.modules.get("torch")
        if torch is not None and hasattr(torch, "cuda"):
            described["torch"] = torch.__version__
            described["cuda"] = bool(torch.cuda.is_available())
            described["cuda_devices"] = int(torch.cuda.device_count()) if described["cuda"] else 0
        return described

    def keep_warm(self, keep: bool) -> None:
        """Keep the last loaded network between runs, or free it after each run (and now)."""
        self._keep = bool(keep)
        if not keep:
            self._models.clear()

    def close(self) -> None:
        self._models.clear()
