"""One command inside the worker: ``load`` a model or ``run`` a segmentation, through the worker's ``EngineHost``.

The request arrives as ``RunRequest.to_wire()`` fields of the ``run`` message, the voxels are mapped from their
hand-off file, the host's typed messages leave as protocol messages, and the result leaves through
``SegmentResult.to_wire`` as hand-off files. ``Server`` is the ``JobContext``.
"""

import os
import time
from typing import Any, Dict, Optional

from ..contract.messages import Log, Message
from ..contract.model import ModelSpec
from ..contract.request import RunRequest
from ..contract.runner import Protocol
from ..sysinfo import peak_rss_bytes
from .handoff import map_array, write_array
from .protocol import make


class JobContext(Protocol):
    """What a job needs from the worker that runs it."""

    host: Any  # runners.host.EngineHost

    def send(self, message: Dict[str, Any]) -> None: ...

    def remember(self, line: str) -> None:
        """Keep ``line`` in the log tail that errors carry."""

    def should_cancel(self) -> bool: ...

    def on_stage(self, stage: str, job: Optional[str] = None) -> None:
        """Called when a job reaches ``stage`` (an observer's hook)."""


def emitter(context: JobContext, job: str):
    """The host's messages → this job's protocol messages (log lines also into the log tail)."""

    def emit(message: Message) -> None:
        fields = message.to_dict()
        if isinstance(message, Log):
            context.remember(message.line())
        context.send(make(fields.pop("type"), job=job, **fields))

    return emit


def stage_hook(context: JobContext, job: str):
    """Tell ``on_stage`` once per stage of the run (``inference``: after its first window)."""
    fired: set = set()

    def on_progress(stage: str, fraction: float) -> None:
        trigger = stage if stage != "inference" or fraction > 0 else ""
        if trigger and trigger not in fired:
            fired.add(trigger)
            context.on_stage(trigger, job)

    return on_progress


def load_job(context: JobContext, item: Dict[str, Any]) -> Dict[str, Any]:
    """Load (and cache) the model of a ``load`` command; return its ``result`` message with the ``ModelInfo``."""
    info, how = context.host.inspect(ModelSpec.from_dict(item["model"]))
    return make("result", job=item["job"], info=info.to_dict(), pid=os.getpid(), **how)


def run_job(context: JobContext, item: Dict[str, Any]) -> Dict[str, Any]:
    """Segment the hand-off input of a ``run`` command; write the outputs next to it; return the ``result``."""
    job = item["job"]
    request = RunRequest.from_wire(item)
    context.on_stage("load", job)
    loaded = context.host.models.get(request.model)
    t0 = time.perf_counter()
    array = map_array(item["input"])
    read_s = time.perf_counter() - t0
    result, how = context.host.run(
        request, array, emitter(context, job), context.should_cancel, loaded, stage_hook(context, job)
    )
    del array  # release the input mapping before the client removes the file
    context.on_stage("output", job)
    t1 = time.perf_counter()
    fields, arrays = result.to_wire()
    outputs = {name: write_array(item["output_dir"], name, array) for name, array in arrays.items()}
    write_s = time.perf_counter() - t1
    timings = {"map_input_s": read_s, "write_output_s": write_s}  # the load's seconds are in ``how``
    return make(
        "result",
        job=job,
        result=fields,
        outputs=outputs,
        pid=os.getpid(),
        timings=timings,
        peak_rss_bytes=peak_rss_bytes(),
        **how,
    )
