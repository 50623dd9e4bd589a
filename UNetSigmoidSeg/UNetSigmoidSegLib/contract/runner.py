"""The run contract's protocols: a ``Runner`` takes runs and model inspections and returns ``Job`` handles.

Implementations, all in ``runners``: ``InProcessRunner`` (this process), ``WorkerRunner`` (a warm background
process) and ``RemoteRunner`` (a GPU server), each a thin transport over the one engine host (``runners.host``). The
CLI, the Slicer logic and the panel get one from ``make_runner`` and never ask which one. A job's messages are typed
(``contract.messages``): ``Progress``, ``Log``, then one terminal ``Result``, ``Error`` or ``Cancelled``.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

try:  # Python ≥ 3.8
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore[assignment]

from .messages import Log, Message, Progress
from .model import ModelInfo, ModelSpec
from .options import SegmentOptions
from .volume import Volume

ProgressFn = Callable[[str, float, str], None]  # (stage, fraction 0..1, message)
LogFn = Callable[[str], None]
CancelFn = Callable[[], bool]


def deliver(message: Message, progress: Optional[ProgressFn], log: Optional[LogFn]) -> None:
    """Hand one ``Progress`` / ``Log`` message to the caller's callbacks (a log line as ``Log.line()``); terminal
    messages are left alone."""
    if isinstance(message, Progress) and progress is not None:
        progress(message.stage, message.fraction, message.message)
    elif isinstance(message, Log) and log is not None:
        log(message.line())


@dataclass
class JobInfo:
    """What a runner knows about how a job ran. ``section``: the key under which a summary reports it (``worker``,
    ``server``; empty: nothing to report). ``timings``: seconds of the transport's own steps (``write_input_s``,
    ``map_input_s``, ``write_output_s``, ``read_output_s``, ``compress_s``, ``upload_s``, ``download_s``)."""

    section: str = ""
    cache_hit: Optional[bool] = None
    load_count: Optional[int] = None
    load_s: Optional[float] = None
    pid: Optional[int] = None  # the worker process (a Ray actor's)
    node: Optional[str] = None  # the Ray node (host name) that ran it
    peak_rss_bytes: Optional[int] = None
    timings: Dict[str, float] = field(default_factory=dict)
    url: Optional[str] = None  # the server, and what it said
    server_job: Optional[str] = None
    ahead: Optional[int] = None
    max_ahead: Optional[int] = None
    request_bytes: Optional[int] = None
    result_bytes: Optional[int] = None
    bytes_sent: Optional[int] = None
    bytes_received: Optional[int] = None
    requests: Optional[int] = None
    server_s: Optional[float] = None
    REPORTED = {
        "worker": ("pid", "cache_hit", "load_count", "peak_rss_bytes"),
        "ray": ("node", "pid", "cache_hit", "load_count"),
        "server": ("server_job", "max_ahead", "cache_hit", "request_bytes", "result_bytes", "server_s", "url"),
    }

    def update(self, fields: Dict[str, Any]) -> None:
        """Take the known fields of ``fields`` (a result message's); timings are merged."""
        for name, value in fields.items():
            if name == "timings" and isinstance(value, dict):
                self.timings.update({str(k): float(v) for k, v in value.items()})
            elif name in self.__dataclass_fields__ and name != "section":
                setattr(self, name, value)

    def summary(self) -> Dict[str, Any]:
        """``{section: {field: value}}`` for a run summary (the CLI's ``--json``), ``{}`` when nothing to report."""
        names = self.REPORTED.get(self.section)
        if not names:
            return {}
        out = {name: getattr(self, name) for name in names}
        if self.section == "server":
            out["upload_s"] = self.timings.get("upload_s")
        return {self.section: out}


@runtime_checkable
class Job(Protocol):
    """One run or model inspection. ``poll`` from a timer, or ``wait``; ``cancel`` stops it."""

    id: str
    info: JobInfo  # what the runner knows about how it ran (pid, cache_hit, load_count, timings …)

    @property
    def done(self) -> bool:
        """True once the job ended (result, error or cancelled) and its temporary files are gone."""

    def poll(self) -> List[Message]:
        """New messages without blocking: progress, log and warning, then the terminal one."""

    def wait(
        self, timeout: Optional[float] = None, progress: Optional[ProgressFn] = None, log: Optional[LogFn] = None
    ) -> Any:
        """Block until the job ends and return its value (a ``SegmentResult``, or a ``ModelInfo`` for an
        inspection); raise its ``UserError`` / ``WorkerError`` / ``CancelledError``, or ``TimeoutError``."""

    def cancel(self) -> None:
        """Ask the job to stop; nothing partial is returned."""


@runtime_checkable
class Runner(Protocol):
    """Runs segmentations and model inspections somewhere (this process, a worker process, …)."""

    runs_here: bool  # the network runs on this computer (torch and MONAI must be installed here)

    def submit(self, volume: Volume, model: ModelSpec, options: SegmentOptions) -> Job:
        """Start segmenting ``volume`` with ``model``; returns at once."""

    def inspect(self, model: ModelSpec) -> Job:
        """Start loading ``model`` (it stays loaded for the next run); the job's value is its ``ModelInfo``."""

    def describe(self) -> Optional[Dict[str, Any]]:
        """What the runner runs with once known (Python, torch, MONAI versions, CUDA devices), else None."""

    def keep_warm(self, keep: bool) -> None:
        """Keep loaded networks (and a worker process) ready between runs, or free them after each run."""

    def close(self) -> None:
        """Stop background work and free what the runner holds."""


__all__ = ["CancelFn", "Job", "JobInfo", "LogFn", "Message", "ModelInfo", "ProgressFn", "Runner"]
