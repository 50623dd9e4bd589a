"""Device choice and sliding-window inference with progress, cancel and CUDA out-of-memory fallback."""

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...contract.options import DEFAULT_ROI, DEVICES, check_choice
from ...contract.result import DeviceChoice
from ...contract.runner import CancelFn, ProgressFn
from ...errors import CancelledError, OptionError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def cuda_unavailable_reason() -> str:
    if torch.version.cuda is None:
        return f"CUDA not available in this Python: torch CPU build ({torch.__version__})"
    return (
        f"CUDA not available: torch {torch.__version__} was built for CUDA {torch.version.cuda} but sees no GPU "
        "(driver or CUDA_VISIBLE_DEVICES?)"
    )


def select_device(requested: str = "auto") -> DeviceChoice:
    """The device to run on and why. An explicit request that cannot be met is an error, never a silent fallback."""
    requested = check_choice("device", requested, DEVICES)
    if requested == "cpu":
        return DeviceChoice("cpu", "CPU requested")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(
                cuda_unavailable_reason(), "Use --device cpu (or auto), or install a CUDA build of torch."
            )
        return DeviceChoice("cuda", f"CUDA requested: {torch.cuda.get_device_name(0)}")
    if requested == "mps":
        if not _mps_available():
            raise OptionError("Apple GPU (MPS) not available in this Python", "Use --device cpu (or auto).")
        return DeviceChoice("mps", "Apple GPU requested")
    if torch.cuda.is_available():
        return DeviceChoice("cuda", f"auto: CUDA GPU {torch.cuda.get_device_name(0)}")
    if _mps_available():
        return DeviceChoice("mps", "auto: Apple GPU (MPS)")
    return DeviceChoice("cpu", "auto: " + cuda_unavailable_reason())


def count_windows(image_size: Sequence[int], roi_size: Sequence[int], overlap: float, sw_batch_size: int) -> int:
    """Number of predictor calls ``sliding_window_inference`` will make (for progress)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    size = [max(int(i), int(r)) for i, r in zip(image_size, roi_size)]
    interval = _get_scan_interval(size, list(roi_size), len(size), (overlap,) * len(size))
    n = len(dense_patch_slices(size, list(roi_size), interval))
    return int(np.ceil(n / max(1, sw_batch_size)))


def window_roi(
    request: Optional[Sequence[int]],
    spatial_dims: int,
    divisors: Sequence[int],
    slice_axis: Optional[int] = None,
    default: int = DEFAULT_ROI,
) -> Tuple[List[int], Optional[List[int]], List[str]]:
    """The roi MONAI's inferer gets, as asked (user, else model, else ``default``), never shrunk to the image:
    ``sliding_window_inference`` pads a smaller image itself. Only where the network needs sizes divisible by its
    downsampling (``divisors``, one per network axis) is a size rounded up to the next multiple.

    3-D networks: one size for every axis or one per axis (i, j, k). 2-D networks (``slice_axis`` given): one or two
    in-plane sizes; of three, the two in-plane ones. Returns ``(roi, requested, notes)``: ``requested`` is the roi
    asked for when it had to change (else None), ``notes`` one line per change.
    """
    values = [int(default)] if not request else [int(r) for r in request]
    if any(r <= 0 for r in values):
        raise OptionError(f"Invalid roi size {list(request or [])}", "Give positive integers, e.g. --roi-size 96.")
    notes: List[str] = []
    if spatial_dims == 2:
        if len(values) == 3:
            axis = 2 if slice_axis is None else slice_axis
            if values[axis] != 1:
                notes.append(
                    f"the network is 2-D: its window is the in-plane part of roi {values} (slices along axis {axis})"
                )
            values = [v for a, v in enumerate(values) if a != axis]
        elif len(values) not in (1, 2):
            raise OptionError(f"Invalid roi size {values} for a 2-D network", "Give one or two in-plane sizes.")
    elif len(values) not in (1, spatial_dims):
        raise OptionError(
            f"Invalid roi size {values} for a {spatial_dims}-D network",
            f"Give one size or {spatial_dims} sizes, e.g. --roi-size 96 96 64.",
        )
    asked = values * spatial_dims if len(values) == 1 else values
    steps = [max(1, int(d)) for d in divisors]
    roi = [int(np.ceil(r / d) * d) for r, d in zip(asked, steps)]
    if roi != asked:
        notes.append(
            f"window {'×'.join(map(str, asked))} rounded up to {'×'.join(map(str, roi))}: the network needs sizes "
            f"divisible by {'×'.join(map(str, steps))}"
        )
    return roi, (asked if roi != asked else None), notes


def default_slice_axis(shape: Sequence[int], spacing: Sequence[float]) -> int:
    """The axis a 2-D network slides along by default: the one with a single voxel if there is exactly one, else
    the axis of largest spacing (ties: the later axis, so isotropic CT is sliced axially along k)."""
    singles = [axis for axis, n in enumerate(shape) if int(n) == 1]
    if len(singles) == 1:
        return singles[0]
    top = max(float(s) for s in spacing)
    return max(axis for axis, s in enumerate(spacing) if float(s) >= top * (1 - 1e-6))


class _Predictor:
    """Wraps the network (or a CPU backend's forward) for ``sliding_window_inference``: AMP, cancel checks,
    progress."""

    def __init__(
        self,
        network,
        device: str,
        amp: bool,
        total: int,
        progress: Optional[ProgressFn],
        should_cancel: Optional[CancelFn],
        unit: str = "window",
    ) -> None:
        self.network = network
        self.unit = unit
        self.device = device
        self.amp = amp
        self.total = max(1, total)
        self.progress, self.should_cancel = progress, should_cancel
        self.done = 0
        self.started = time.perf_counter()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.should_cancel is not None and self.should_cancel():
            raise CancelledError("cancelled during inference")
        if self.amp and self.device == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                y = self.network(x)
        else:
            y = self.network(x)
        if isinstance(y, (list, tuple)):  # deep supervision heads: the first is the full-resolution output
            y = y[0]
        self.done += 1
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            eta = elapsed / self.done * (self.total - self.done)
            message = f"{self.unit} {self.done}/{self.total}, ETA {eta:.0f} s"
            self.progress("inference", min(1.0, self.done / self.total), message)
        return y.float()


Placement = Tuple[str, str, str]  # (device of the windows, device where they are stitched, label)


def placements(device: str) -> List[Placement]:
    """Where to run, in order of preference: on CUDA, an out-of-memory error moves the stitching to the
    CPU, then everything to the CPU. Other devices have one placement."""
    if device == "cuda":
        return [("cuda", "cuda", "CUDA"), ("cuda", "cpu", "CUDA windows, CPU stitching"), ("cpu", "cpu", "CPU")]
    return [(device, device, device.upper())]


def run_sliding_window(
    network: torch.nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    *,
    sw_batch_size: int = 1,
    overlap: float = 0.25,
    blend_mode: str = "gaussian",
    device: str = "cpu",
    amp: bool = True,
    slice_axis: Optional[int] = None,
    extra: Optional[Dict[str, Any]] = None,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
    log: Optional[Callable[[str], None]] = None,
    forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Tuple[torch.Tensor, str]:
    """``(1, C, I, J, K)`` image → ``(1, C_out, I, J, K)`` float32 logits on the CPU, and the placement used.

    3-D networks: MONAI's ``sliding_window_inference(image, roi_size, sw_batch_size, network, overlap, blend_mode)``.
    2-D networks (``slice_axis`` 0, 1 or 2): MONAI's ``SliceInferer(roi_size, sw_batch_size, spatial_dim=slice_axis,
    overlap, blend_mode)``, ``roi_size`` in-plane. Progress and cancel come with every window (2-D: batch of slices).
    On CUDA, an out-of-memory error retries with the next of ``placements(device)``; each step is announced
    through ``log``. ``forward``: what runs the windows on the CPU instead of ``network`` itself (a CPU backend of
    ``engine.backends``), behind the same predictor.
    """
    from monai.inferers import SliceInferer, sliding_window_inference

    chain = placements(device)
    roi_3d = list(roi_size)
    if slice_axis is not None:
        roi_3d.insert(slice_axis, 1)
    total = count_windows(image.shape[2:], roi_3d, overlap, sw_batch_size)
    unit = "window" if slice_axis is None else "slice batch"
    for i, (sw_device, out_device, label) in enumerate(chain):
        network.to(sw_device)
        runs = forward if forward is not None and sw_device == "cpu" else network
        predictor = _Predictor(runs, sw_device, amp and sw_device == "cuda", total, progress, should_cancel, unit)
        try:
            with torch.inference_mode():
                if slice_axis is None:
                    out = sliding_window_inference(
                        image,
                        list(roi_size),
                        sw_batch_size,
                        predictor,
                        overlap=overlap,
                        mode=blend_mode,
                        sw_device=sw_device,
                        device=out_device,
                        **(extra or {}),
                    )
                else:
                    inferer = SliceInferer(
                        spatial_dim=slice_axis,
                        roi_size=list(roi_size),
                        sw_batch_size=sw_batch_size,
                        overlap=overlap,
                        mode=blend_mode,
                        sw_device=sw_device,
                        device=out_device,
                        **(extra or {}),
                    )
                    out = inferer(image, predictor)
            return out.float().cpu(), label
        except torch.cuda.OutOfMemoryError:
            if sw_device == "cuda":
                torch.cuda.empty_cache()
            if i + 1 == len(chain):
                raise
            if log is not None:
                log(f"Out of memory on {label}: retrying with {chain[i + 1][2]}")
    raise AssertionError("unreachable")
