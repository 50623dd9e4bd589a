"""Which backend runs a run's windows (``SegmentOptions.backend``), prepared once and checked against PyTorch.

``prepare`` returns a *forward* for ``run_sliding_window`` (None: the network itself), so every backend sits behind
the same predictor of MONAI's inferers: windows, blending, 2-D slices, cancel and progress are unchanged.

- CUDA / MPS runs: PyTorch (with AMP on CUDA). ``torch``: PyTorch.
- ``onednn`` / ``openvino`` (``backends.runtimes``): prepared for this model and window shape ``(N, C, *roi)``,
  validated against PyTorch on a probe window cut from the run's own image (the ONNX export is traced with other
  data: a value of the trace input baked into the graph cannot pass), then held to PyTorch's answer on the run's
  own windows by a ``GuardedForward`` (constant windows on PyTorch, a sample compared; ``mismatch`` redoes a run
  that disagreed). Tolerance, probe and guard: ``backends.check``.
- ``openvino``'s export is cached on disk (``backends.cache``) keyed by the model (``ModelSpec.cache_key()``,
  class, network arguments, a SHA-256 of its weights), the window shape and the PyTorch version; validations and
  auto's measurement per runtime version and preprocessing (``context``). A bad entry is exported again. An export
  or validation failure is remembered there too.
- ``auto`` on the CPU: a run whose windows take under ``AUTO_MIN_SECONDS`` (``$UNETSEG_AUTO_MIN_SECONDS``) on
  PyTorch (the probe's faster of two calls × the run's windows) stays on PyTorch (no export for it); otherwise
  every usable backend is validated and timed on the probe (interleaved, best of two) and the fastest one that
  takes ≤ 0.9× PyTorch's time runs — PyTorch if none does. The measurement is recorded with the export and reused
  while the runtimes and the thread count are the same.

Every fallback to PyTorch comes with its reason (the run's ``backend:`` line; a warning when the backend was asked
for explicitly). What was prepared is kept in ``LoadedModel.backends``: warm for the next run of the same model.
"""

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ...contract.result import BackendChoice, Window
from ...errors import CancelledError
from ...sysinfo import package_version
from . import runtimes
from .cache import backend_key, open_cache
from .check import BackendMismatch, compare, guard, input_shape, probe_batch, trace_input

AUTO_MIN_SECONDS = 1.0  # auto: runs shorter than this on PyTorch do not pay for an export (env override below)
AUTO_MIN_ENV = "UNETSEG_AUTO_MIN_SECONDS"
FASTER = 0.9  # auto: a backend must take at most this fraction of PyTorch's time on the probe
CANDIDATES = ("openvino", "onednn")

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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class _Preparation:
    """One preparation: the probe, PyTorch's answer on it, the cache entry, and each backend on demand."""

    def __init__(
        self, model: Any, image: torch.Tensor, window: Window, context: str, step: Step, say: Callable[[str], None]
    ):
        self.model, self.network = model, model.network
        self.context = context
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

    def records(self) -> Dict[str, Any]:
        """This preprocessing's validation results and auto's measurement in the cache entry (a decision is reused
        only for the model, window shape and preprocessing it was made with)."""
        return self.entry.setdefault("contexts", {}).setdefault(self.context, {})

    def failed(self, runtime: str) -> Optional[str]:
        """Why ``runtime`` failed for this model, window and preprocessing on an earlier run (None: it did not)."""
        record = self.records().get("validated", {}).get(runtime)
        if record is None or record.get("ok"):
            return None
        return f"{record.get('why')} (on an earlier run of this model, window and preprocessing; remembered)"

    def forget_export(self) -> None:
        """A new export: what was recorded of the old one (OpenVINO's validations, auto's measurement) goes; what
        was recorded of the other backends stays."""
        for key in ("onnx", "export_s", "export_error"):
            self.entry.pop(key, None)
        for records in self.entry.get("contexts", {}).values():
            records.pop("auto", None)
            validated = records.get("validated", {})
            records["validated"] = {k: v for k, v in validated.items() if not k.startswith("openvino")}

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
        ok, why, details = compare(out, ref)
        return ok, (f"{why} on the probe window" if why else ""), details

    def save(self, data: Optional[bytes] = None) -> None:
        if self.cache is not None:
            why = self.cache.store(self.key, self.entry, data)
            if why:
                self.say(f"note: {why}")

    # ---------------------------------------------------------------- backends
    def onednn(self) -> Tuple[Optional[runtimes.Forward], str]:
        why = runtimes.onednn_unavailable(self.network) or self.failed(onednn_runtime())
        if why:
            return None, why
        self.step("checking oneDNN against PyTorch on a probe window")
        forward = runtimes.onednn_forward(self.network)
        ok, why, _details = self.validate(forward)
        return (forward, "") if ok else (None, f"validation against PyTorch failed: {why}")

    def openvino(self) -> Tuple[Optional[runtimes.Forward], str]:
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
                self.forget_export()
        if data is None:
            why = runtimes.unavailable("onnx")
            if why:
                return None, why
            self.say(
                "note: preparing the fast CPU backend for this model (first use of this network and window: "
                "exporting it to ONNX once; later runs, copies and moved files of the model reuse it)"
            )
            self.step("exporting the network to ONNX (first use of this model and window)")
            t0 = time.perf_counter()
            try:
                data = runtimes.export_onnx(self.network, trace_input(self.shape))
            except Exception as exc:  # noqa: BLE001 - any exporter failure: PyTorch runs, the reason is said
                self.entry["export_error"] = _short(exc)
                self.save()
                return None, f"ONNX export failed: {_short(exc)}"
            self.forget_export()
            self.entry["export_s"] = round(time.perf_counter() - t0, 3)
            self.openvino_source = "exported"
        else:
            self.openvino_source = "disk cache"
        validated = self.records().setdefault("validated", {})
        record = validated.get(runtime)
        if record is not None and not record.get("ok"):
            return None, str(self.failed(runtime))
        self.step("compiling the network with OpenVINO")
        try:
            forward = runtimes.OpenVINOForward(data, self.shape, self.threads)
        except Exception as exc:  # noqa: BLE001
            validated[runtime] = {"ok": False, "why": f"OpenVINO cannot compile it: {_short(exc)}"}
            self.save(data if self.openvino_source == "exported" else None)
            return None, validated[runtime]["why"]
        if record is None:
            self.step("checking OpenVINO against PyTorch on a probe window")
            ok, why, details = self.validate(forward)
            why = f"validation against PyTorch failed: {why}" if not ok else ""
            validated[runtime] = dict(details, ok=ok, why=why)
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
        record = self.records().get("auto")
        if isinstance(record, dict) and record.get("runtimes") == self.runtimes_now():
            choice, summary = str(record.get("choice")), str(record.get("summary"))
            if choice == "torch":
                return self.prepared("torch", None, f"auto: {summary} (measured on an earlier run)")
            forward, why = getattr(self, choice)() if choice in CANDIDATES else (None, "unknown backend")
            if forward is not None:
                return self.prepared(choice, forward, f"auto: {summary} (measured on an earlier run)")
            self.records().pop("auto", None)
            self.say(f"note: auto: {choice} was the fastest on an earlier run but {why}: measuring again")
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
        self.records()["auto"] = {
            "choice": choice,
            "summary": summary,
            "seconds": times,
            "runtimes": self.runtimes_now(),
        }
        self.save()
        return self.prepared(choice, forwards[choice] if choice != "torch" else None, f"auto: {summary}")

    def prepared(self, backend: str, forward: Any, reason: str, decided: bool = True) -> Prepared:
        runtime = runtimes.openvino_runtime() if backend == "openvino" else runtimes.torch_runtime()
        source = self.openvino_source if backend == "openvino" else ""
        return Prepared(backend, forward, reason, runtime, source, decided=decided)


def onednn_runtime() -> str:
    """The name under which oneDNN's validation results are recorded (it is PyTorch's own oneDNN)."""
    return f"onednn ({runtimes.torch_runtime()})"


def _prepare(
    model: Any,
    image: torch.Tensor,
    window: Window,
    requested: str,
    total_windows: int,
    context: str,
    step: Step,
    say: Callable[[str], None],
) -> Prepared:
    work = _Preparation(model, image, window, context, step, say)
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
    context: str = "",
) -> Tuple[Optional[runtimes.Forward], BackendChoice, List[str]]:
    """The forward for this run's windows (None: the network itself), what runs and why, and warnings (an explicit
    backend that could not be used). ``image``: the network's input ``(1, C, I, J, K)``; ``context``: its
    preprocessing (what a remembered decision must have been made with). A backend's forward comes wrapped in a
    ``backend_check.GuardedForward`` for this run: constant windows on PyTorch, a sample checked against PyTorch
    (``BackendMismatch``: redo the run with ``mismatch``); after the run, ``finish`` puts what it saw in the choice."""
    t0 = time.perf_counter()
    if device != "cpu":
        reason = f"PyTorch on {device}" + (": CPU backends apply to CPU runs" if requested != "auto" else "")
        warnings = [f"backend {requested} runs on the CPU; this run is on {device}: PyTorch ran"]
        choice = BackendChoice(requested, "torch", reason, runtimes.torch_runtime())
        return None, choice, warnings if requested not in ("auto", "torch") else []
    if requested == "torch":
        return None, BackendChoice("torch", "torch", "asked for", runtimes.torch_runtime()), []
    memo_key = (requested, tuple(input_shape(image, window)), context)
    prepared = model.backends.get(memo_key)
    source = "warm"
    model.network.to("cpu")  # where the run puts it anyway (an earlier CUDA run of the same model left it there)
    if prepared is None:
        if requested == "auto" and auto_min_seconds() == float("inf"):
            reason = f"auto: PyTorch (${AUTO_MIN_ENV} is inf: no other backend is tried)"
            prepared = Prepared("torch", None, reason, runtimes.torch_runtime(), decided=False)
        else:
            try:
                prepared = _prepare(model, image, window, requested, total_windows, context, step, say)
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
    forward = guard(prepared.backend, prepared.forward, model.network, total_windows)
    return forward, choice, [prepared.fallback] if prepared.fallback else []


def finish(choice: BackendChoice, forward: Any) -> None:
    """What the run's ``GuardedForward`` saw, into ``choice`` (agreement with PyTorch, windows run on PyTorch)."""
    if forward is not None:
        for name, value in forward.report().items():
            setattr(choice, name, value)


def mismatch(
    model: Any, image: torch.Tensor, window: Window, choice: BackendChoice, context: str, exc: BackendMismatch
) -> BackendChoice:
    """After a ``BackendMismatch``: the backend is refused for this model, window shape and preprocessing (in this
    process and, through the cache, in later ones), and the choice says the run was redone on PyTorch."""
    why = f"{exc} (a whole run's window; the run was redone on PyTorch)"
    shape = tuple(input_shape(image, window))
    reason = f"{choice.backend} not used: {why}"
    for requested in {choice.requested, choice.backend}:
        refused = Prepared("torch", None, reason, runtimes.torch_runtime())
        if requested != "auto":  # as any backend asked for that does not run: a warning with every run
            refused.fallback = f"backend {reason}; PyTorch ran"
        model.backends[(requested, shape, context)] = refused
    runtime = onednn_runtime() if choice.backend == "onednn" else choice.runtime
    cache, _note = open_cache()
    if cache is not None:
        key, fields = backend_key(model, list(shape))
        entry = cache.manifest(key, fields) or {"key": fields}
        records = entry.setdefault("contexts", {}).setdefault(context, {})
        records.setdefault("validated", {})[runtime] = {"ok": False, "why": str(exc)}
        records.pop("auto", None)
        cache.store(key, entry, None)
    return BackendChoice(
        choice.requested, "torch", reason, runtimes.torch_runtime(), "", choice.prepare_s, redone=str(exc)
    )
