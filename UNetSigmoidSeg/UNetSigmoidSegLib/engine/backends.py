"""Which backend runs a run's windows (``SegmentOptions.backend``), prepared once and checked against PyTorch.

``prepare`` returns a *forward* for ``run_sliding_window`` (None: the network itself), so every backend sits behind
the same predictor of MONAI's inferers: windows, blending, 2-D slices, cancel and progress are unchanged.

- CUDA / MPS runs: PyTorch (with AMP on CUDA). ``torch``: PyTorch.
- ``onednn`` / ``openvino`` (``engine.runtimes``): prepared for this model and window shape ``(N, C, *roi)``,
  validated on a probe window cut from the run's own image (its centre, batch filled with flips) against PyTorch
  (the ONNX export is traced with other data: a value of the trace input baked into the graph cannot pass).
  Tolerance: ``max |Δlogit| ≤ min(1e-4 · max(1, max |logit|), 1/255)`` and the decision (sign / argmax) of ≥ 99.9 %
  of the probe's voxels unchanged. Why: float32 runtimes differ from PyTorch by summation order only — measured
  ≤ 5e-5 at logit scales 8–32, i.e. ≤ 6e-6 relative — while a reduced precision (OpenVINO's bf16 default) gives
  1e-2; and since a probability moves by at most ½·|Δlogit| (softmax; ¼ for sigmoid), the 1/255 cap keeps every
  probability within 1/510, half a step of the uint8 probability cache, so masks can change only for voxels within
  that distance of the threshold (Dice ≥ 0.999 on real CT and MR in the tests).
- ``openvino``'s export is cached on disk (``engine.backend_cache``) keyed by the model (``ModelSpec.cache_key()``,
  class, network arguments, a SHA-256 of its weights), the window shape and the PyTorch version; its validation by
  runtime version. A bad entry is exported again. An export or validation failure is remembered there too.
- ``auto`` on the CPU: a run whose windows take under ``AUTO_MIN_SECONDS`` (``$UNETSEG_AUTO_MIN_SECONDS``) on
  PyTorch (the probe's faster of two calls × the run's windows) stays on PyTorch (no export for it); otherwise
  every usable backend is validated and timed on the probe (interleaved, best of two) and the fastest one that
  takes ≤ 0.9× PyTorch's time runs — PyTorch if none does. The measurement is recorded with the export and reused
  while the runtimes and the thread count are the same.

Every fallback to PyTorch comes with its reason (the run's ``backend:`` line; a warning when the backend was asked
for explicitly). What was prepared is kept in ``LoadedModel.backends``: warm for the next run of the same model.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..contract.result import BackendChoice, Window
from ..errors import CancelledError
from ..sysinfo import package_version
from . import runtimes
from .backend_cache import open_cache

AUTO_MIN_SECONDS = 1.0  # auto: runs shorter than this on PyTorch do not pay for an export (env override below)
AUTO_MIN_ENV = "UNETSEG_AUTO_MIN_SECONDS"
RELATIVE_TOLERANCE = 1e-4
TOLERANCE_CAP = 1.0 / 255
AGREEMENT = 0.999
FASTER = 0.9  # auto: a backend must take at most this fraction of PyTorch's time on the probe
CANDIDATES = ("openvino", "onednn")
KEY_FORMAT = 1

export_count = 0  # ONNX exports made by this process (tests and benchmarks read it)

Step = Callable[[str], None]  # progress message; raises CancelledError when the run is cancelled


@dataclass
class Prepared:
    backend: str
    forward: Optional[runtimes.Forward]  # None: the network itself
    reason: str
    runtime: str
    source: str = ""
    fallback: str = ""  # why the asked-for backend did not run (explicit requests: a warning)
    decided: bool = True  # False: auto's choice for this run only (a short run), not kept for the next


def auto_min_seconds() -> float:
    """``AUTO_MIN_SECONDS``, or ``$UNETSEG_AUTO_MIN_SECONDS`` (e.g. ``0``: always measure; ``inf``: never)."""
    try:
        return float(os.environ.get(AUTO_MIN_ENV, AUTO_MIN_SECONDS))
    except ValueError:
        return AUTO_MIN_SECONDS


def input_shape(image: torch.Tensor, window: Window) -> List[int]:
    """``(N, C, *roi)`` of the windows the network gets (2-D: in-plane roi)."""
    return [int(window.sw_batch_size), int(image.shape[1])] + [int(r) for r in window.roi_size]


def probe_batch(image: torch.Tensor, window: Window) -> torch.Tensor:
    """A realistic batch of windows ``(N, C, *roi)`` from ``image`` ``(1, C, I, J, K)``: its centre (2-D: the
    central slice along the slice axis), zero-padded where the image is smaller (as MONAI pads), the batch filled
    with flipped copies."""
    data = image[0].detach().float()
    if window.slice_axis is not None:
        data = data.select(window.slice_axis + 1, int(data.shape[window.slice_axis + 1]) // 2)
    pads: List[int] = []
    for axis, size in enumerate(window.roi_size):
        n = int(data.shape[axis + 1])
        if n >= size:
            data = data.narrow(axis + 1, (n - size) // 2, int(size))
            pads = [0, 0] + pads
        else:
            pads = [(size - n) // 2, size - n - (size - n) // 2] + pads
    crop = torch.nn.functional.pad(data, pads) if any(pads) else data
    dims = list(range(1, crop.ndim))
    batch = [
        crop.flip([d for b, d in enumerate(dims) if i >> b & 1]) if i else crop for i in range(window.sw_batch_size)
    ]
    return torch.stack(batch).contiguous()


def trace_input(shape: List[int]) -> torch.Tensor:
    """What the exporter traces the network with: seeded noise, deliberately not the probe the export is validated on
    (a forward that bakes a value of its input into the graph passes on the input it was traced with only)."""
    return torch.randn([int(s) for s in shape], generator=torch.Generator().manual_seed(0))


def backend_key(model: Any, shape: List[int]) -> Tuple[str, Dict[str, Any]]:
    """(SHA-256 hex, the fields it hashes) of an export: the model, its weights, the window shape, PyTorch."""
    weights = hashlib.sha256()
    for name, tensor in sorted(model.network.state_dict().items()):
        weights.update(name.encode("utf-8"))
        weights.update(str(tuple(tensor.shape)).encode("ascii"))
        weights.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    net = model.network
    fields = {
        "format": KEY_FORMAT,
        "model": list(model.spec_key) if model.spec_key else None,
        "class": getattr(net, "original_name", None) or f"{type(net).__module__}.{type(net).__qualname__}",
        "network_args": json.loads(json.dumps(model.info.network_args, sort_keys=True, default=str)),
        "weights": weights.hexdigest(),
        "input": [int(s) for s in shape],
        "torch": torch.__version__,
        "opset": runtimes.OPSET,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest(), fields


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class _Preparation:
    """One preparation: the probe, PyTorch's answer on it, the cache entry, and each backend on demand."""

    def __init__(self, model: Any, image: torch.Tensor, window: Window, step: Step, say: Callable[[str], None]):
        self.model, self.network = model, model.network
        self.step, self.say = step, say
        self.shape = input_shape(image, window)
        self.probe = probe_batch(image, window)
        self.threads = torch.get_num_threads()
        self.key, self.key_fields = backend_key(model, self.shape)
        self.cache, self.cache_note = open_cache()
        found = self.cache.manifest(self.key, self.key_fields) if self.cache is not None else None
        self.entry: Dict[str, Any] = found or {"key": self.key_fields}
        self.ref: Optional[torch.Tensor] = None
        self.torch_s = 0.0
        self.openvino_source = ""

    def reference(self) -> torch.Tensor:
        """PyTorch's output on the probe (its time: ``torch_s``)."""
        if self.ref is None:
            t0 = time.perf_counter()
            with torch.inference_mode():
                self.ref = runtimes.run_forward(self.network, self.probe).float()
            self.torch_s = time.perf_counter() - t0
        return self.ref

    def validate(self, forward: runtimes.Forward) -> Tuple[bool, str, Dict[str, float]]:
        ref = self.reference()
        with torch.inference_mode():
            out = runtimes.run_forward(forward, self.probe).float()
        if tuple(out.shape) != tuple(ref.shape):
            return False, f"output {list(out.shape)} where PyTorch gives {list(ref.shape)}", {}
        if not bool(torch.isfinite(ref).all()):
            return False, "PyTorch's own output on the probe window is not finite", {}
        if not bool(torch.isfinite(out).all()):
            return False, "non-finite outputs on the probe window", {}
        scale = float(ref.abs().max())
        tolerance = min(RELATIVE_TOLERANCE * max(1.0, scale), TOLERANCE_CAP)
        diff = float((out - ref).abs().max())
        if ref.shape[1] == 1:
            agreement = float(((out > 0) == (ref > 0)).float().mean())
        else:
            agreement = float((out.argmax(1) == ref.argmax(1)).float().mean())
        details = {"max_abs_diff": diff, "tolerance": tolerance, "logit_scale": scale, "agreement": agreement}
        if diff > tolerance:
            return (
                False,
                f"max logit difference {diff:.2g} > tolerance {tolerance:.2g} (logit scale {scale:.3g})",
                details,
            )
        if agreement < AGREEMENT:
            return False, f"only {agreement:.2%} of the probe's decisions agree with PyTorch", details
        return True, "", details

    def save(self, data: Optional[bytes] = None) -> None:
        if self.cache is not None:
            why = self.cache.store(self.key, self.entry, data)
            if why:
                self.say(f"note: {why}")

    # ---------------------------------------------------------------- backends
    def onednn(self) -> Tuple[Optional[runtimes.Forward], str]:
        why = runtimes.onednn_unavailable(self.network)
        if why:
            return None, why
        self.step("checking oneDNN against PyTorch on a probe window")
        forward = runtimes.onednn_forward(self.network)
        ok, why, _details = self.validate(forward)
        return (forward, "") if ok else (None, f"validation against PyTorch failed: {why}")

    def openvino(self) -> Tuple[Optional[runtimes.Forward], str]:
        global export_count
        why = runtimes.unavailable("openvino")
        if why:
            return None, why
        runtime = runtimes.openvino_runtime()
        if self.entry.get("export_error"):
            return None, f"ONNX export failed on an earlier run (remembered): {self.entry['export_error']}"
        data = None
        if self.cache is not None and self.entry.get("onnx"):
            data, bad = self.cache.exported(self.key, self.entry)
            if data is None:
                self.say(f"note: the cached export of this model and window is unusable ({bad}): exporting again")
                self.entry = {"key": self.key_fields}
        if data is None:
            why = runtimes.unavailable("onnx")
            if why:
                return None, why
            self.step("exporting the network to ONNX (first use of this model and window)")
            t0 = time.perf_counter()
            try:
                data = runtimes.export_onnx(self.network, trace_input(self.shape))
            except Exception as exc:  # noqa: BLE001 - any exporter failure: PyTorch runs, the reason is said
                self.entry["export_error"] = _short(exc)
                self.save()
                return None, f"ONNX export failed: {_short(exc)}"
            export_count += 1
            self.entry.update(export_s=round(time.perf_counter() - t0, 3), validated={})
            self.openvino_source = "exported"
        else:
            self.openvino_source = "disk cache"
        record = self.entry.setdefault("validated", {}).get(runtime)
        if record is not None and not record.get("ok"):
            return None, f"{record.get('why')} (on an earlier run; remembered)"
        self.step("compiling the network with OpenVINO")
        try:
            forward = runtimes.OpenVINOForward(data, self.shape, self.threads)
        except Exception as exc:  # noqa: BLE001
            self.entry["validated"][runtime] = {"ok": False, "why": f"OpenVINO cannot compile it: {_short(exc)}"}
            self.save(data if self.openvino_source == "exported" else None)
            return None, self.entry["validated"][runtime]["why"]
        if record is None:
            self.step("checking OpenVINO against PyTorch on a probe window")
            ok, why, details = self.validate(forward)
            why = f"validation against PyTorch failed: {why}" if not ok else ""
            self.entry["validated"][runtime] = dict(details, ok=ok, why=why)
            self.save(data if self.openvino_source == "exported" else None)
            if not ok:
                return None, why
        elif self.cache is not None:
            self.cache.touch(self.key)
        return forward, ""

    # ---------------------------------------------------------------- auto
    def runtimes_now(self) -> Dict[str, Any]:
        """What auto's measurement depends on, read without importing the runtimes."""
        versions = {name: runtimes.installed(name) and package_version(name) for name in ("openvino", "onnx")}
        return dict(versions, onednn=runtimes.onednn_unavailable(self.network) is None, threads=self.threads)

    def measure(self, forwards: Dict[str, Any], rounds: int = 2) -> Dict[str, float]:
        """Best-of-``rounds`` seconds per probe batch, interleaved (each has run once already)."""
        times: Dict[str, List[float]] = {name: [] for name in forwards}
        with torch.inference_mode():
            for _ in range(rounds):
                for name, forward in forwards.items():
                    self.step(f"timing {name} on a probe window")
                    t0 = time.perf_counter()
                    runtimes.run_forward(forward, self.probe)
                    times[name].append(time.perf_counter() - t0)
        return {name: min(values) for name, values in times.items()}

    def auto(self, total_windows: int) -> Prepared:
        record = self.entry.get("auto")
        if isinstance(record, dict) and record.get("runtimes") == self.runtimes_now():
            choice, summary = str(record.get("choice")), str(record.get("summary"))
            if choice == "torch":
                return self.prepared("torch", None, f"auto: {summary} (measured on an earlier run)")
            forward, why = getattr(self, choice)() if choice in CANDIDATES else (None, "unknown backend")
            if forward is not None:
                return self.prepared(choice, forward, f"auto: {summary} (measured on an earlier run)")
            return self.prepared("torch", None, f"auto: {choice} was the fastest on an earlier run but {why}")
        self.reference()
        estimate = self.torch_s * max(1, total_windows)
        least = auto_min_seconds()
        if estimate >= least:  # the first call pays one-time costs: time a second one before deciding
            t0 = time.perf_counter()
            with torch.inference_mode():
                runtimes.run_forward(self.network, self.probe)
            estimate = min(estimate, (time.perf_counter() - t0) * max(1, total_windows))
        if estimate < least:
            why = f"about {estimate:.1f} s of windows; faster backends are prepared for runs over {least:g} s"
            return self.prepared("torch", None, f"auto: {why}", decided=False)
        forwards: Dict[str, Any] = {"torch": self.network}
        notes = []
        for name in CANDIDATES:
            forward, why = getattr(self, name)()
            if forward is None:
                notes.append(f"{name} not used: {why}")
            else:
                forwards[name] = forward
        if len(forwards) == 1:
            return self.prepared("torch", None, "auto: " + "; ".join(notes), decided=False)
        times = self.measure(forwards)
        best = min((n for n in times if n != "torch"), key=lambda n: times[n])
        choice = best if times[best] <= FASTER * times["torch"] else "torch"
        ranked = sorted(times, key=lambda n: times[n])
        summary = "fastest on a probe window: " + ", ".join(f"{n} {times[n]:.3g} s" for n in ranked)
        summary += "".join(f"; {note}" for note in notes)
        self.entry["auto"] = {"choice": choice, "summary": summary, "seconds": times, "runtimes": self.runtimes_now()}
        self.save()
        return self.prepared(choice, forwards[choice] if choice != "torch" else None, f"auto: {summary}")

    def prepared(self, backend: str, forward: Any, reason: str, decided: bool = True) -> Prepared:
        runtime = runtimes.openvino_runtime() if backend == "openvino" else runtimes.torch_runtime()
        source = self.openvino_source if backend == "openvino" else ""
        return Prepared(backend, forward, reason, runtime, source, decided=decided)


def _prepare(
    model: Any,
    image: torch.Tensor,
    window: Window,
    requested: str,
    total_windows: int,
    step: Step,
    say: Callable[[str], None],
) -> Prepared:
    work = _Preparation(model, image, window, step, say)
    if requested == "auto":
        prepared = work.auto(total_windows)
    else:
        forward, why = getattr(work, requested)()
        if forward is not None:
            prepared = work.prepared(requested, forward, "asked for")
        else:
            prepared = work.prepared("torch", None, f"{requested} not used: {why}")
            prepared.fallback = f"backend {requested} not used: {why}; PyTorch ran"
    if work.cache is None and prepared.backend == "openvino":
        prepared.reason += f"; not cached on disk: {work.cache_note}"
    return prepared


def prepare(
    model: Any,
    image: torch.Tensor,
    window: Window,
    requested: str,
    device: str,
    total_windows: int,
    step: Step,
    say: Callable[[str], None],
) -> Tuple[Optional[runtimes.Forward], BackendChoice, List[str]]:
    """The forward for this run's windows (None: the network itself), what runs and why, and warnings (an explicit
    backend that could not be used). ``image``: the network's input ``(1, C, I, J, K)``."""
    t0 = time.perf_counter()
    if device != "cpu":
        reason = f"PyTorch on {device}" + (": CPU backends apply to CPU runs" if requested != "auto" else "")
        warnings = [f"backend {requested} runs on the CPU; this run is on {device}: PyTorch ran"]
        choice = BackendChoice(requested, "torch", reason, runtimes.torch_runtime())
        return None, choice, warnings if requested not in ("auto", "torch") else []
    if requested == "torch":
        return None, BackendChoice("torch", "torch", "asked for", runtimes.torch_runtime()), []
    memo_key = (requested, tuple(input_shape(image, window)))
    prepared = model.backends.get(memo_key)
    source = "warm"
    model.network.to("cpu")  # where the run puts it anyway (an earlier CUDA run of the same model left it there)
    if prepared is None:
        if requested == "auto" and auto_min_seconds() == float("inf"):
            reason = f"auto: PyTorch (${AUTO_MIN_ENV} is inf: no other backend is tried)"
            prepared = Prepared("torch", None, reason, runtimes.torch_runtime(), decided=False)
        else:
            try:
                prepared = _prepare(model, image, window, requested, total_windows, step, say)
            except CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. PyTorch itself failing on the probe: the run says why
                why = f"{requested} not prepared: {_short(exc)}"
                prepared = Prepared("torch", None, why, runtimes.torch_runtime(), decided=False)
                if requested != "auto":
                    prepared.fallback = f"backend {why}; PyTorch ran"
        if prepared.decided:
            model.backends[memo_key] = prepared
        source = prepared.source
    choice = BackendChoice(
        requested, prepared.backend, prepared.reason, prepared.runtime, source, time.perf_counter() - t0
    )
    return prepared.forward, choice, [prepared.fallback] if prepared.fallback else []
