"""Every runner, the one engine host they share and the one place that picks a runner.

``host``: ``EngineHost`` (model cache, progress throttle, typed messages) — held by the in-process runner, by the
worker process (``worker.server``) and by the remote server (``remote.store``). ``job``: ``QueueJob``, the one ``Job``
of every runner. Runners (``contract.runner.Runner``): ``inprocess.InProcessRunner`` (this process),
``worker.WorkerRunner`` (a warm background process), ``remote.RemoteRunner`` (a server; with ``remote_run``, a run's
network steps, and ``http``, the standard-library transport).
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
    ``options`` such as ``cafile`` / ``allow_http`` / ``client_cert`` / ``client_key``), a background
    ``WorkerRunner`` with ``worker`` (``options``: its settings), else in-process."""
    if server:
        if worker:
            raise OptionError("--worker and --server exclude each other", "Run on the server or in a local worker.")
        from .remote import RemoteRunner

        return RemoteRunner(server, token=token, token_file=token_file, **options)
    worker_options = options
    if worker:
        import sys

        from .worker import WorkerRunner

        return WorkerRunner(python_executable=worker_python or sys.executable, **worker_options)
    from .inprocess import InProcessRunner

    return InProcessRunner()
