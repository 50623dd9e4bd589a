"""How a CPU backend's answer is held to PyTorch's: the tolerance, the probe it is first validated on, and the guard
that keeps checking it on the run's own windows.

Why a probe is not enough (issue #23): a window whose input is constant (CT air clipped to 0, an MR background, the
zero padding MONAI adds around an image smaller than the window) gives every instance / group normalisation a
variance of exactly 0, so ``(x - mean) / sqrt(var + eps)`` divides float32 rounding noise by ``sqrt(eps)`` and the
layers after it amplify it further. The output on such a window is decided by *how* each runtime rounds — PyTorch
accumulates the statistics in double, OpenVINO's MVN in float32 — not by the network: on a 4-8-16 instance-norm
UNet an all-air CT window gave logits differing by 2.5 between OpenVINO and PyTorch (decisions on 26 % of its
voxels flipped), while windows with body in them agreed to 1e-4. No export option or formulation makes two float32
runtimes round alike, so such windows are not given to the backend at all: ``GuardedForward`` runs every window
batch holding a constant window on PyTorch (once per distinct constant: the answer is the same), and compares the
backend with PyTorch on a sample of the other windows chosen to include the least and most varied inputs it meets.
A disagreement stops the run (``BackendMismatch``): the pipeline redoes it on PyTorch and says so.
"""

import math
import time
from typing import Any, Dict, List, Optional, Tuple

import torch

from ...contract.result import Window
from . import runtimes

RELATIVE_TOLERANCE = 5e-4
TOLERANCE_CAP = 1.0 / 255
AGREEMENT = 0.999
CONSTANT_RTOL = 1e-6  # a window channel whose max - min is within this of its magnitude is constant
CHECK_FRACTION = 1.0 / 16  # in-run checks: at most this share of the run's window batches (at least MIN_CHECKS)
MIN_CHECKS = 2
EXTREME = 2.0  # a batch whose least (most) varied window is this much below (above) every checked one is checked
MEMO_SIZE = 4  # constant batches remembered per run


class BackendMismatch(Exception):
    """A backend's output on one of the run's windows is not PyTorch's (the pipeline redoes the run on PyTorch)."""


def tolerance(scale: float) -> float:
    """``min(5e-4 · max(1, scale), 1/255)``. The cap is the guarantee: a probability moves by at most ½·|Δlogit|
    (softmax; ¼ for sigmoid), so it keeps every probability within 1/510, half a step of the uint8 probability
    cache. The relative part catches a reduced precision at small logit scales, where the cap alone would not:
    float32 runtimes differ from PyTorch by summation order — ≤ 6e-6 relative on batch-norm UNets, up to 1.6e-4 on
    instance-norm UNets under OpenVINO, whose normalisation statistics are accumulated in float32 where PyTorch
    uses double (measured on real CT and MR windows: 3× below the bound) — while bf16 (OpenVINO's default hint on
    recent CPUs) gives ≥ 1e-3 relative (1e-2 at logit scales 8–32)."""
    return min(RELATIVE_TOLERANCE * max(1.0, scale), TOLERANCE_CAP)


def compare(out: torch.Tensor, ref: torch.Tensor) -> Tuple[bool, str, Dict[str, float]]:
    """Whether a backend's ``out`` is PyTorch's ``ref`` (both ``(N, C, *roi)`` logits) within ``tolerance`` and with
    ≥ 99.9 % of the decisions (sign / argmax) equal; why not; and the figures."""
    out, ref = plain(out).float(), plain(ref).float()
    if tuple(out.shape) != tuple(ref.shape):
        return False, f"output {list(out.shape)} where PyTorch gives {list(ref.shape)}", {}
    if not bool(torch.isfinite(ref).all()):
        return False, "PyTorch's own output is not finite", {}
    if not bool(torch.isfinite(out).all()):
        return False, "non-finite outputs", {}
    scale = float(ref.abs().max())
    limit = tolerance(scale)
    diff = float((out - ref).abs().max())
    if ref.shape[1] == 1:
        agreement = float(((out > 0) == (ref > 0)).float().mean())
    else:
        agreement = float((_argmax(out) == _argmax(ref)).float().mean())
    details = {"max_abs_diff": diff, "tolerance": limit, "logit_scale": scale, "agreement": agreement}
    if diff > limit:
        return False, f"max logit difference {diff:.2g} > tolerance {limit:.2g} (logit scale {scale:.3g})", details
    if agreement < AGREEMENT:
        return False, f"only {agreement:.2%} of the decisions agree with PyTorch", details
    return True, "", details


def plain(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain tensor (MONAI hands windows over as ``MetaTensor``s, whose every operation also carries
    metadata: ~100× slower for these statistics)."""
    return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x


def _argmax(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(1)``, with the channels moved last first (PyTorch's CPU argmax over a leading small axis is ~15×
    slower: it would be most of a check's cost)."""
    return x.movedim(1, -1).contiguous().argmax(-1)


def constant_windows(x: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: which windows of ``x`` ``(N, C, *roi)`` are constant in every channel."""
    flat = plain(x).detach().reshape(x.shape[0], x.shape[1], -1).float()
    lo, hi = flat.amin(-1), flat.amax(-1)
    scale = torch.maximum(lo.abs(), hi.abs()).clamp(min=1.0)
    return ((hi - lo) <= CONSTANT_RTOL * scale).all(dim=1)


# ---------------------------------------------------------------- the probe a backend is first validated on


def input_shape(image: torch.Tensor, window: Window) -> List[int]:
    """``(N, C, *roi)`` of the windows the network gets (2-D: in-plane roi)."""
    return [int(window.sw_batch_size), int(image.shape[1])] + [int(r) for r in window.roi_size]


def _crop(data: torch.Tensor, roi: List[int], fractions: Tuple[float, ...]) -> torch.Tensor:
    """The window of ``data`` ``(C, *spatial)`` at ``fractions`` of the free range per axis, zero-padded where the
    image is smaller than the window (MONAI pads centred, with zeros)."""
    pads: List[int] = []
    for axis, size in enumerate(roi):
        n = int(data.shape[axis + 1])
        if n >= size:
            data = data.narrow(axis + 1, int(round((n - size) * fractions[axis])), int(size))
            pads = [0, 0] + pads
        else:
            pads = [(size - n) // 2, size - n - (size - n) // 2] + pads
    return torch.nn.functional.pad(data, pads) if any(pads) else data


def probe_batch(image: torch.Tensor, window: Window) -> torch.Tensor:
    """A realistic batch of windows ``(N, C, *roi)`` from ``image`` ``(1, C, I, J, K)``: its centre (2-D: the
    central slice along the slice axis) — or, where that window is constant (air), the most varied window at the
    start, centre or end of each axis: a constant window proves nothing (``GuardedForward`` never gives one to a
    backend) —, the batch filled with flipped copies."""
    data = image[0].detach().float()
    if window.slice_axis is not None:
        data = data.select(window.slice_axis + 1, int(data.shape[window.slice_axis + 1]) // 2)
    roi = [int(r) for r in window.roi_size]
    crop = _crop(data, roi, (0.5,) * len(roi))
    if bool(constant_windows(crop[None])[0]):
        grid = [tuple(p // 3**a % 3 / 2 for a in range(len(roi))) for p in range(3 ** len(roi))]
        crop = max((_crop(data, roi, f) for f in grid), key=lambda c: float(c.std()))
    dims = list(range(1, crop.ndim))
    batch = [
        crop.flip([d for b, d in enumerate(dims) if i >> b & 1]) if i else crop for i in range(window.sw_batch_size)
    ]
    return torch.stack(batch).contiguous()


def trace_input(shape: List[int]) -> torch.Tensor:
    """What the exporter traces the network with: seeded noise, deliberately not the probe the export is validated on
    (a forward that bakes a value of its input into the graph passes on the input it was traced with only)."""
    return torch.randn([int(s) for s in shape], generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- the guard over a run's windows


class GuardedForward:
    """A CPU backend's forward for one run, held to PyTorch's answer window by window.

    - A batch holding a constant window runs on PyTorch (``network``), as the PyTorch path would run it; a batch of
      constant windows only is computed once per distinct value and shape.
    - Other batches run on the backend; some are also run on PyTorch and compared (``compare``): the first, every
      batch whose least (most) varied window is ``EXTREME``× below (above) every batch checked so far, and one every
      ``period`` batches — at most ``max_checks`` (``CHECK_FRACTION`` of the run's batches, at least ``MIN_CHECKS``).
      A disagreement raises ``BackendMismatch``.
    ``report()`` says what ran where and what was measured.
    """

    def __init__(self, backend: str, forward: Any, network: Any, total: int) -> None:
        self.backend = backend
        self.forward, self.network = forward, network
        self.total = max(1, int(total))
        self.max_checks = min(self.total, max(MIN_CHECKS, math.ceil(CHECK_FRACTION * self.total)))
        self.period = max(1, self.total // self.max_checks)
        self.calls = 0  # window batches given to this forward
        self.pytorch_calls = 0  # ... of which PyTorch ran (a constant window)
        self.checked = 0  # ... of which PyTorch also ran, to compare
        self.last_check = 0
        self.low = math.inf
        self.high = 0.0
        self.max_abs_diff = 0.0
        self.limit = math.inf
        self.check_s = 0.0
        self.memo: Dict[Any, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        constant = constant_windows(x)
        if bool(constant.any()):
            return self._pytorch(x, constant)
        y = runtimes.run_forward(self.forward, x)
        spread = plain(x).detach().reshape(x.shape[0], -1).float().std(dim=1)
        low, high = float(spread.min()), float(spread.max())
        if self._due(low, high):
            t0 = time.perf_counter()
            ref = runtimes.run_forward(self.network, plain(x))  # the same numbers; a MetaTensor's ops are slower
            ok, why, details = compare(y, ref)
            self.check_s += time.perf_counter() - t0
            self.checked += 1
            self.last_check = self.calls
            self.low, self.high = min(self.low, low), max(self.high, high)
            diff, limit = details.get("max_abs_diff", math.inf), details.get("tolerance", 0.0)
            if self.checked == 1 or diff * self.limit > self.max_abs_diff * limit:  # the check closest to failing
                self.max_abs_diff, self.limit = diff, limit
            if not ok:
                raise BackendMismatch(
                    f"{self.backend} disagreed with PyTorch on window batch {self.calls} of {self.total}: {why}"
                )
            return ref  # PyTorch's own answer for the windows it checked
        return y

    def _due(self, low: float, high: float) -> bool:
        if self.checked >= self.max_checks:
            return False
        if self.checked == 0 or low * EXTREME < self.low or high > EXTREME * self.high:
            return True
        return self.calls - self.last_check >= self.period

    def _pytorch(self, x: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        self.pytorch_calls += 1
        key = None
        if bool(constant.all()):
            values = plain(x).detach().reshape(x.shape[0], x.shape[1], -1)[:, :, 0].float()
            key = (tuple(x.shape), values.numpy().tobytes())
            if key in self.memo:
                return self.memo[key].clone()
        y = runtimes.run_forward(self.network, plain(x))
        if key is not None and len(self.memo) < MEMO_SIZE:
            self.memo[key] = y.detach().clone()
        return y

    def report(self) -> Dict[str, Any]:
        """What ran where: window batches in all, on PyTorch (constant windows), checked against PyTorch, the logit
        difference of the check closest to failing and the tolerance it was held to, and the seconds the checks
        took."""
        return {
            "windows": self.calls,
            "pytorch_windows": self.pytorch_calls,
            "checked": self.checked,
            "max_abs_diff": self.max_abs_diff if self.checked else None,
            "tolerance": self.limit if self.checked else None,
            "check_s": self.check_s,
        }


def guard(backend: str, forward: Optional[Any], network: Any, total: int) -> Optional[GuardedForward]:
    """The run's guarded forward (None where PyTorch runs the windows itself)."""
    return None if forward is None else GuardedForward(backend, forward, network, total)
