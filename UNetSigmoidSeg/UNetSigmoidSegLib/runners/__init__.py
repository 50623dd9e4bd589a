"""Runner implementations and the one place that picks one.

``InProcessRunner`` (``runners.inprocess``) runs the engine in this process; ``WorkerRunner``
(``worker.client``) in a warm background process. Both implement ``contract.runner.Runner``.
"""

from typing import Any, Optional


def make_runner(worker: bool = False, worker_python: Optional[str] = None, **worker_options: Any):
    """The runner the CLI and scripts use: a background ``WorkerRunner`` with ``worker``, else in-process."""
    if worker:
        import sys

        from ..worker.client import WorkerRunner

        return WorkerRunner(python_executable=worker_python or sys.executable, **worker_options)
    from .inprocess import InProcessRunner

    return InProcessRunner()
