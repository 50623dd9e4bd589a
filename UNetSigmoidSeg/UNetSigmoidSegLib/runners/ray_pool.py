"""Ray as one more transport over the engine host: a pool of warm model actors on a Ray cluster.

Each ``EngineActor`` holds one ``EngineHost`` (its model cache) and runs ``RunRequest``s exactly as the in-process
runner does; its ``Progress`` / ``Log`` messages are read by the caller while it runs and a cancel reaches it
between windows (``segment`` one at a time, ``messages`` / ``cancel`` in a concurrency group of their own). Ray itself
does what Ray does: placement (``num_gpus`` / ``num_cpus``), moving arrays through its object store, restarting an
actor whose process or node died and re-running its unfinished call (``max_restarts`` / ``max_task_retries``).
``RayRunner`` is the ``Runner`` of a pool (console, tests, ``serve --ray``); ``cli_ray`` runs a cohort on it.
Ray is optional: imported only here, only when asked for (``import_ray``); its usage statistics stay off.
"""

import os
import queue
import socket
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..contract.messages import Error, Message, message_for
from ..contract.model import ModelSpec
from ..contract.options import SegmentOptions
from ..contract.request import RunRequest
from ..contract.volume import Volume
from ..errors import OptionError
from .job import QueueJob

RAY_FIX = 'Install it in this Python: pip install "ray>=2.9" (or pip install ".[ray]" in the repository).'
POLL_S = 0.1  # how often a caller reads a running actor's messages
CONTROL = "control"  # the actor's concurrency group of messages() and cancel(), beside its one run
NO_WHERE = "http://127.0.0.1:9"  # the discard port on this computer: nothing listens


def import_ray() -> Any:
    """The ``ray`` module (usage statistics off before it is first imported), or an ``OptionError`` naming the
    install command."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing leaves the machine unless the user asked
    # a cluster not started by ray.init (`ray start`) tells https://usage-stats.ray.io that its statistics are off
    os.environ.setdefault("RAY_USAGE_STATS_REPORT_URL", NO_WHERE + "/")
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"  # a failed case is reported once, in its row
    try:
        import ray
    except ImportError:
        raise OptionError("--ray needs the ray package, which this Python does not have", RAY_FIX) from None
    return ray


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None) -> Any:
    """Join the cluster at ``address`` (``auto``: the one ``ray start`` made on this machine; ``host:port``) or
    start a private local one (``None`` / ``local``; ``num_cpus``: its size). The workers import this very copy of
    the product (its folder is on their code search path). Returns ``ray``."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    job_config = ray.job_config.JobConfig(code_search_path=[package_root])
    try:
        if address in (None, "", "local"):
            # Ray's dashboard asks the cloud metadata address (169.254.169.254, metadata.google.internal) which
            # cloud it runs in even with usage statistics off; the processes of a cluster started here send such
            # plain-http requests to a proxy that does not exist on this computer, so they fail here (no packet out)
            before = os.environ.get("HTTP_PROXY")
            os.environ["HTTP_PROXY"] = NO_WHERE
            try:
                ray.init(
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    job_config=job_config,
                    _node_ip_address="127.0.0.1",
                )
            finally:
                if before is None:
                    del os.environ["HTTP_PROXY"]
                else:
                    os.environ["HTTP_PROXY"] = before
        else:
            ray.init(address=address, log_to_driver=False, job_config=job_config)
    except ConnectionError as exc:
        raise OptionError(
            f"Cannot reach the Ray cluster at {address}: {exc}",
            "Start it first (ray start --head on the head node), give its address as --ray HOST:6379, or --ray "
            "without an address for a cluster on this computer.",
        ) from None
    return ray


class EngineActor:
    """One warm model replica (made a Ray actor by ``actor_class``). ``threads``: torch's threads in it;
    ``cache_size``: networks it keeps loaded."""

    def __init__(self, threads: int = 1, cache_size: int = 1) -> None:
        import torch

        from .host import EngineHost

        if threads > 0:
            torch.set_num_threads(int(threads))
        self.host = EngineHost(cache_size=cache_size)
        self._messages: List[Message] = []
        self._cancel = threading.Event()

    def where(self) -> Dict[str, Any]:
        import ray

        return {"node": f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}", "pid": os.getpid()}

    def segment_volume(self, request: Dict[str, Any], volume: Volume) -> Tuple[str, Any, Dict[str, Any]]:
        """``segment`` of a ``Volume`` (a cohort's, read by a task): ``request`` without its affine."""
        return self.segment(dict(request, affine=volume.affine.tolist()), volume.array)

    def segment(self, request: Dict[str, Any], array: Any) -> Tuple[str, Any, Dict[str, Any]]:
        """Run one request (``RunRequest.to_wire`` fields, its voxels beside it): ``("result", SegmentResult,
        how)`` or ``("error", Error | Cancelled, how)`` — errors travel as the contract's typed messages."""
        self._messages = []
        self._cancel.clear()
        how = self.where()
        try:
            result, info = self.host.run(
                RunRequest.from_wire(request), array, self._messages.append, self._cancel.is_set
            )
        except Exception as exc:  # noqa: BLE001 - every failure is a typed message for the caller
            return "error", _message(exc), how
        return "result", result, dict(how, **info)

    def inspect(self, model: Dict[str, Any]) -> Tuple[str, Any, Dict[str, Any]]:
        try:
            info, how = self.host.inspect(ModelSpec.from_dict(model))
        except Exception as exc:  # noqa: BLE001
            return "error", _message(exc), self.where()
        return "result", info, dict(self.where(), **how)

    def messages(self, after: int) -> List[Message]:
        return self._messages[after:]

    def cancel(self) -> None:
        self._cancel.set()


def _message(exc: BaseException) -> Any:
    """The terminal message of ``exc``; a bug's carries its traceback (the actor's log is on another node)."""
    message = message_for(exc)
    if isinstance(message, Error) and message.kind == "internal":
        message.log_tail = traceback.format_exc().splitlines()[-40:]
    return message


def actor_class(ray: Any, threads: int, gpus: float, retries: int) -> Any:
    """``EngineActor`` as a Ray actor class: ``threads`` CPUs (and ``gpus``) reserved, restarted on any node when
    its process or node dies, its unfinished call run again at most ``retries`` times."""
    return ray.remote(
        num_cpus=max(1, threads),
        num_gpus=gpus,
        max_restarts=-1,
        max_task_retries=retries,
        max_concurrency=1,  # one run at a time: a second call waits, it never shares the threads
        concurrency_groups={CONTROL: 2},  # messages() and cancel() while a run goes on
    )(EngineActor)


def lost(exc: BaseException, what: str) -> Error:
    """The message of a call whose actor died more often than it was retried."""
    return Error(
        "worker",
        f"The Ray worker running {what} was lost ({type(exc).__name__}) and its retry too",
        "Check the Ray cluster (ray status, the node's memory); the run can be submitted again.",
        reason="ray-actor-lost",
    )


class RayPool:
    """A pool of ``replicas`` warm model actors with the engine host's ``run`` / ``inspect``: the server's executors
    (``serve --ray``) and ``RayRunner`` call it as they call an ``EngineHost``; a call waits for a free actor.
    ``address``: see ``connect``. ``threads``: CPU threads per actor; ``gpus``: GPUs per actor (0: CPU);
    ``replicas`` 0: one per GPU, or the cluster's CPUs / ``threads``. ``retries``: times an actor's lost call is run
    again (on the restarted actor) before it fails. ``cache_size``: networks each actor keeps loaded."""

    def __init__(
        self,
        address: Optional[str] = None,
        replicas: int = 1,
        threads: int = 1,
        gpus: float = 0.0,
        retries: int = 1,
        num_cpus: Optional[int] = None,
        cache_size: int = 1,
    ) -> None:
        self._started = not import_ray().is_initialized()  # then close() ends the cluster it started
        self.ray = connect(address, num_cpus)
        cls = actor_class(self.ray, threads, gpus, retries)
        if replicas <= 0:  # one per GPU, or as many as the cluster's CPUs hold
            total = self.ray.cluster_resources()
            replicas = int(total.get("GPU", 0) // gpus) if gpus else int(total.get("CPU", 1) // max(1, threads))
        self.actors = [cls.remote(threads, cache_size) for _ in range(max(1, int(replicas)))]
        self._idle: queue.Queue[Any] = queue.Queue()
        for actor in self.actors:
            self._idle.put(actor)

    def run(
        self,
        request: RunRequest,
        array: Any,
        emit: Callable[[Message], None],
        should_cancel: Callable[[], bool],
        loaded: Any = None,
    ) -> Tuple[Any, Dict[str, Any]]:
        """``EngineHost.run`` on a free actor: (``SegmentResult``, how it ran). ``loaded`` (a network the caller
        loaded itself) cannot travel: the caller runs those on its own host."""
        if loaded is not None:
            raise ValueError("a network loaded by the caller runs on the caller's own host")
        wire = request.to_wire()
        return self._call(lambda actor: actor.segment.remote(wire, array), emit, should_cancel, "this run")

    def inspect(self, spec: ModelSpec) -> Tuple[Any, Dict[str, Any]]:
        return self._call(lambda actor: actor.inspect.remote(spec.to_dict()), None, lambda: False, "this inspection")

    def _call(self, call: Any, emit: Any, should_cancel: Callable[[], bool], what: str) -> Tuple[Any, Dict[str, Any]]:
        actor = self._idle.get()
        try:
            ref = call(actor)
            seen = 0
            cancelled = False
            while True:
                ready, _ = self.ray.wait([ref], timeout=POLL_S)
                if should_cancel() and not cancelled:
                    cancelled = True
                    actor.cancel.options(concurrency_group=CONTROL).remote()
                try:
                    news = self.ray.get(actor.messages.options(concurrency_group=CONTROL).remote(seen)) if emit else []
                except self.ray.exceptions.RayActorError:
                    news = []  # restarting: its call is run again, its messages start anew
                for message in news:
                    emit(message)
                seen += len(news)
                if ready:
                    break
            try:
                kind, value, how = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as exc:
                raise lost(exc, what).exception() from None
        finally:
            self._idle.put(actor)
        if kind == "error":
            raise value.exception()
        return value, how

    def describe(self) -> Dict[str, Any]:
        resources = self.ray.cluster_resources()
        return {
            "runner": "ray",
            "replicas": len(self.actors),
            "nodes": len([n for n in self.ray.nodes() if n.get("Alive")]),
            "cpus": resources.get("CPU", 0),
            "gpus": resources.get("GPU", 0),
        }

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()


class RayRunner:
    """The ``Runner`` of a ``RayPool`` (the console, the conformance tests): each job a thread that waits on the
    pool. Keywords: ``RayPool``'s."""

    runs_here = False

    def __init__(self, address: Optional[str] = None, **pool: Any) -> None:
        self.pool = RayPool(address, **pool)

    def submit(self, volume: Volume, model: ModelSpec, options: SegmentOptions) -> QueueJob:
        request = RunRequest(model, options, volume.affine)
        return self._start(lambda job: self.pool.run(request, volume.array, job.put, job.should_cancel))

    def inspect(self, model: ModelSpec) -> QueueJob:
        return self._start(lambda job: self.pool.inspect(model))

    def _start(self, call: Callable[[QueueJob], Tuple[Any, Dict[str, Any]]]) -> QueueJob:
        def work(job: QueueJob) -> Any:
            value, how = call(job)
            job.info.update(how)
            return value

        return QueueJob("ray", _no_op, section="ray").start_thread(work, "unetsigmoidseg-ray-job")

    def describe(self) -> Optional[Dict[str, Any]]:
        return self.pool.describe()

    def keep_warm(self, keep: bool) -> None:
        """Actors keep their model; a pool is warm by design."""

    def close(self) -> None:
        self.pool.close()


def _no_op(_job: QueueJob) -> None:
    """A job's cancel request reaches its actor through ``job.should_cancel`` (``RayPool`` polls it)."""
