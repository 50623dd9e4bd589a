"""Runner implementations and the one place that picks one.

``InProcessRunner`` (``runners.inprocess``) runs the engine in this process; ``WorkerRunner``
(``worker.client``) in a warm background process; ``RemoteRunner`` (``remote.client``) on a remote server.
All implement ``contract.runner.Runner``.
"""

from typing import Any, Optional

from ..errors import OptionError


def make_runner(
    worker: bool = False,
    worker_python: Optional[str] = None,
    server: Optional[str] = None,
    token: Optional[str] = None,
    token_file: Optional[str] = None,
    **options: Any,
):
    """The runner the CLI and scripts use: a ``RemoteRunner`` for ``server`` (URL; ``token`` or ``token_file``,
    ``options`` such as ``cafile`` / ``allow_http``), a background ``WorkerRunner`` with ``worker`` (``options``:
    its settings), else in-process."""
    if server:
        if worker:
            raise OptionError("--worker and --server exclude each other", "Run on the server or in a local worker.")
        from ..remote.client import RemoteRunner

        return RemoteRunner(server, token=token, token_file=token_file, **options)
    worker_options = options
    if worker:
        import sys

        from ..worker.client import WorkerRunner

        return WorkerRunner(python_executable=worker_python or sys.executable, **worker_options)
    from .inprocess import InProcessRunner

    return InProcessRunner()
