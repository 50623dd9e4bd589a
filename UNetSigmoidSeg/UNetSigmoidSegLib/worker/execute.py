"""One command inside the worker: ``load`` a model or ``run`` a segmentation, given a ``JobContext``.

The options arrive as ``ModelSpec`` / ``SegmentOptions`` dicts and are read with their ``from_dict``; the
input is mapped from its hand-off file; the engine's progress / log / cancel are wired to messages; the
result leaves through ``SegmentResult.to_wire`` as hand-off files. ``Server`` is the ``JobContext``.
"""

import os
import time
from typing import Any, Deque, Dict, Optional, Tuple

import numpy as np

from ..contract.model import ModelSpec
from ..contract.options import SegmentOptions
from ..contract.runner import Protocol
from ..sysinfo import peak_rss_bytes
from .handoff import map_array, write_array
from .protocol import make

PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress messages per second (stage changes always go out)


class JobContext(Protocol):
    """What a job needs from the worker that runs it."""

    tail: Deque[str]
    load_count: int

    def send(self, message: Dict[str, Any]) -> None: ...

    def log(self, text: str, job: Optional[str] = None) -> None: ...

    def should_cancel(self) -> bool: ...

    def fire(self, stage: str, job: Optional[str] = None) -> None:
        """Test hook: carry out the fault named in the environment when ``stage`` is reached."""

    def model(self, spec: ModelSpec, job: str) -> Tuple[Any, bool, float]:
        """(loaded network, whether it came from the cache, seconds spent loading)."""


class Reporter:
    """Engine ``progress`` callback → throttled ``progress`` messages with an ETA; fires stage faults."""

    def __init__(self, context: JobContext, job: str) -> None:
        self.context, self.job = context, job
        self.stage = ""
        self.stage_start = time.perf_counter()
        self.last_sent = 0.0
        self.fired: set = set()

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        now = time.perf_counter()
        changed = stage != self.stage
        if changed:
            self.stage, self.stage_start = stage, now
        trigger = stage if stage != "inference" or fraction > 0 else ""
        if trigger and trigger not in self.fired:
            self.fired.add(trigger)
            self.context.fire(trigger, self.job)
        if not changed and 0 < fraction < 1.0 and now - self.last_sent < PROGRESS_INTERVAL_S:
            return
        self.last_sent = now
        elapsed = now - self.stage_start
        eta = elapsed / fraction * (1.0 - fraction) if 0 < fraction < 1 else (0.0 if fraction >= 1 else None)
        self.context.send(
            make(
                "progress",
                job=self.job,
                stage=stage,
                fraction=float(fraction),
                message=message,
                eta=None if eta is None else round(eta, 2),
            )
        )


def load_job(context: JobContext, item: Dict[str, Any]) -> Dict[str, Any]:
    """Load (and cache) the model of a ``load`` command; return its ``result`` message with the ``ModelInfo``."""
    job = item["job"]
    model, hit, load_s = context.model(ModelSpec.from_dict(item["model"]), job)
    return make(
        "result",
        job=job,
        info=model.info.to_dict(),
        cache_hit=hit,
        load_count=context.load_count,
        load_s=load_s,
        pid=os.getpid(),
    )


def run_job(context: JobContext, item: Dict[str, Any]) -> Dict[str, Any]:
    """Segment the hand-off input of a ``run`` command; write the outputs next to it; return the ``result``."""
    from ..engine.pipeline import segment
    from ..engine.volume import Volume
    from ..errors import CancelledError, InputError

    job = item["job"]
    spec, options = ModelSpec.from_dict(item["model"]), SegmentOptions.from_dict(item["options"])
    context.fire("load", job)
    model, hit, load_s = context.model(spec, job)
    if context.should_cancel():
        raise CancelledError("cancelled after loading the model")
    t0 = time.perf_counter()
    affine = np.asarray(item["affine"], dtype=float)
    if affine.shape != (4, 4):
        raise InputError(f"The affine must be 4×4, got {affine.shape}", "Give the voxel→RAS (IJKToRAS) matrix.")
    volume = Volume(map_array(item["input"]), affine)
    read_s = time.perf_counter() - t0

    def log(text: str) -> None:
        if text.startswith("warning: "):
            context.tail.append(text)
            context.send(make("warning", job=job, message=text[len("warning: ") :]))
        else:
            context.log(text, job)

    result = segment(
        volume, model, options, progress=Reporter(context, job), should_cancel=context.should_cancel, log=log
    )
    del volume  # release the input mapping before the client removes the file
    context.fire("output", job)
    t1 = time.perf_counter()
    fields, arrays = result.to_wire()
    outputs = {name: write_array(item["output_dir"], name, array) for name, array in arrays.items()}
    write_s = time.perf_counter() - t1
    return make(
        "result",
        job=job,
        result=fields,
        outputs=outputs,
        cache_hit=hit,
        load_count=context.load_count,
        pid=os.getpid(),
        worker_timings={"load_s": load_s, "map_input_s": read_s, "write_output_s": write_s},
        peak_rss_bytes=peak_rss_bytes(),
    )
