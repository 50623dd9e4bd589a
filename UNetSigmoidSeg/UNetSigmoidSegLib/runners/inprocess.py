"""The in-process runner: the engine host runs in this process, behind the same ``Job`` as every other runner.

A job runs synchronously in the caller's thread on its first ``poll()`` or ``wait()`` (so a caller polling from a
timer gets its messages at once, and tests drive it step by step). Used by the CLI without ``--worker``, by tests,
and by console users who choose to run in Slicer's own process. The last loaded network is kept between runs.
"""

from typing import Any, Dict, Optional

from ..contract.model import ModelSpec
from ..contract.options import SegmentOptions
from ..contract.request import RunRequest
from ..contract.volume import Volume
from .host import EngineHost
from .job import QueueJob


class InProcessRunner:
    """Runs the engine host in this process; keeps the last loaded network with its prepared CPU backends."""

    runs_here = True

    def __init__(self) -> None:
        self.host = EngineHost(cache_size=1)
        self._keep = True

    @property
    def load_count(self) -> int:
        return self.host.models.load_count

    def model(self, spec: ModelSpec) -> Any:
        """The loaded network of ``spec`` (an ``engine.loading.model.LoadedModel``), loading it on a miss."""
        return self.host.models.get(spec)[0]

    def submit(self, volume: Volume, model: ModelSpec, options: SegmentOptions) -> QueueJob:
        request = RunRequest(model, options, volume.affine)

        def work(job: QueueJob) -> Any:
            try:
                result, info = self.host.run(request, volume.array, job.put, job.should_cancel)
            finally:
                if not self._keep:
                    self.host.models.clear()
            job.info.update(info)
            return result

        return QueueJob("local", _no_op).run_here(work)

    def inspect(self, model: ModelSpec) -> QueueJob:
        def work(job: QueueJob) -> Any:
            info, how = self.host.inspect(model)
            job.info.update(how)
            return info

        return QueueJob("local", _no_op).run_here(work)

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
            "runner": "in-process",
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
            self.host.models.clear()

    def close(self) -> None:
        self.host.models.clear()


def _no_op(_job: QueueJob) -> None:
    """A run in the caller's thread sees its cancel request through ``job.should_cancel``: nothing else to do."""
