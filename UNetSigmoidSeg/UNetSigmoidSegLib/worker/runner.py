"""One ``run`` command in the worker: options from JSON, input mapped from the hand-off file,
the engine's ``segment`` with progress / cancel / log wired to messages, outputs written back."""

import dataclasses
import os
import time
from typing import Any, Dict, Optional

import numpy as np

from . import faults
from .handoff import map_array, pack_masks, write_array
from .protocol import make

PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress messages per second (stage changes always go out)


def segment_options(values: Dict[str, Any]):
    """A JSON dict (``dataclasses.asdict`` of ``SegmentOptions``) → ``SegmentOptions``; unknown keys are errors."""
    from ..engine.pipeline import SegmentOptions
    from ..engine.postprocess import Cleanup
    from ..errors import OptionError

    names = {f.name for f in dataclasses.fields(SegmentOptions)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise OptionError(f"Unknown segment option(s): {', '.join(unknown)}", f"Use: {', '.join(sorted(names))}.")
    values = dict(values)
    cleanup = values.pop("cleanup", None)
    if isinstance(cleanup, dict):
        keys = {f.name for f in dataclasses.fields(Cleanup)}
        if set(cleanup) - keys:
            raise OptionError(f"Unknown clean-up option(s): {', '.join(sorted(set(cleanup) - keys))}", f"Use: {', '.join(sorted(keys))}.")
        values["cleanup"] = Cleanup(**cleanup)
    elif cleanup is not None:
        values["cleanup"] = cleanup
    return SegmentOptions(**values)


class Reporter:
    """Engine ``progress`` callback → throttled ``progress`` messages with an ETA; fires stage faults."""

    def __init__(self, server: Any, job: str, fault: Optional[str]) -> None:
        self.server, self.job, self.fault = server, job, fault
        self.stage, self.stage_start, self.last_sent = "", time.perf_counter(), 0.0
        self.fired: set = set()

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        now = time.perf_counter()
        changed = stage != self.stage
        if changed:
            self.stage, self.stage_start = stage, now
        trigger = stage if stage != "inference" or fraction > 0 else ""
        if trigger and trigger not in self.fired:
            self.fired.add(trigger)
            self.server.fire(self.fault, trigger, self.job)
        if not changed and 0 < fraction < 1.0 and now - self.last_sent < PROGRESS_INTERVAL_S:
            return
        self.last_sent = now
        elapsed = now - self.stage_start
        eta = elapsed / fraction * (1.0 - fraction) if 0 < fraction < 1 else (0.0 if fraction >= 1 else None)
        self.server.send(make("progress", job=self.job, stage=stage, fraction=float(fraction), message=message,
                              eta=None if eta is None else round(eta, 2)))


def run_job(server: Any, item: Dict[str, Any]) -> Dict[str, Any]:
    """Segment the hand-off input of ``item``; write the outputs next to it; return the ``result`` message."""
    from ..engine.pipeline import segment
    from ..engine.volume import Volume
    from ..errors import CancelledError, InputError, OptionError
    from .server import peak_rss_bytes

    job = item["job"]
    values = dict(item.get("segment_options") or {})
    fault = values.pop("fault", None) if faults.is_worker_fault(values.get("fault")) else None
    if fault is not None:
        try:
            faults.parse(fault)
        except ValueError as exc:
            raise OptionError(str(exc), "Test hook: e.g. fault='hang@inference'.") from None
    server.fire(fault, "load", job)
    model, hit, load_s = server.model_for(item, job)
    if server.should_cancel():
        raise CancelledError("cancelled after loading the model")
    options = segment_options(values)
    t0 = time.perf_counter()
    affine = np.asarray(item["affine"], dtype=float)
    if affine.shape != (4, 4):
        raise InputError(f"The affine must be 4×4, got {affine.shape}", "Give the voxel→RAS (IJKToRAS) matrix.")
    volume = Volume(map_array(item["input"]), affine)
    read_s = time.perf_counter() - t0

    def log(text: str) -> None:
        if text.startswith("warning: "):
            server.tail.append(text)
            server.send(make("warning", job=job, message=text[len("warning: "):]))
        else:
            server.log(text, job)

    result = segment(volume, model, options, progress=Reporter(server, job, fault), should_cancel=server.should_cancel, log=log)
    del volume  # release the input mapping before the client removes the file
    server.fire(fault, "output", job)
    t1 = time.perf_counter()
    folder = item["output_dir"]
    pm = result.probabilities
    outputs = {"values": write_array(folder, "values", pm.values),
               "labels": write_array(folder, "labels", pm.labels) if pm.labels is not None else None,
               "masks": dict(write_array(folder, "masks", pack_masks(result.masks)), unpacked_shape=list(result.masks.shape))}
    write_s = time.perf_counter() - t1
    return make("result", job=job, mode=pm.mode, n_classes=int(pm.n_classes), names=list(result.names),
                colors=[list(c) for c in result.colors], thresholds=[float(t) for t in result.thresholds],
                activation=result.activation, affine=np.asarray(result.affine).tolist(),
                spacing=np.asarray(result.spacing).tolist(),
                device={"device": result.device.device, "reason": result.device.reason}, plan=result.plan,
                cleanup=dataclasses.asdict(result.cleanup), timings=dict(result.timings), warnings=list(result.warnings),
                outputs=outputs, cache_hit=hit, load_count=server.load_count, pid=os.getpid(),
                worker_timings={"load_s": load_s, "map_input_s": read_s, "write_output_s": write_s},
                peak_rss_bytes=peak_rss_bytes())
