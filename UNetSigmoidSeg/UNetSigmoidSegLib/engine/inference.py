"""Device choice and sliding-window inference with progress, cancel and CUDA out-of-memory fallback."""

import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..contract.options import DEFAULT_ROI, DEVICES, check_choice
from ..contract.result import DeviceChoice
from ..contract.runner import CancelFn, ProgressFn
from ..errors import CancelledError, OptionError


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


def effective_roi(
    image_size: Sequence[int], roi_size: Optional[Sequence[int]], divisor: int, default: int = DEFAULT_ROI
) -> List[int]:
    """ROI per axis: the requested one rounded up to a multiple of the network's size divisor
    (2^depth for a UNet), and never larger than needed to cover the image (also rounded up)."""
    nd = len(image_size)
    roi = (
        [default] * nd if not roi_size else [int(r) for r in (list(roi_size) * nd if len(roi_size) == 1 else roi_size)]
    )
    if len(roi) != nd or any(r <= 0 for r in roi):
        raise OptionError(f"Invalid roi size {roi_size}", f"Give {nd} positive integers, e.g. --roi-size 96 96 96.")
    d = max(1, int(divisor))
    up = lambda v: int(np.ceil(v / d) * d)  # noqa: E731
    return [up(min(r, up(s))) for r, s in zip(roi, image_size)]


class _Predictor:
    """Wraps the network for ``sliding_window_inference``: AMP, cancel checks, progress."""

    def __init__(
        self,
        network,
        device: str,
        amp: bool,
        total: int,
        progress: Optional[ProgressFn],
        should_cancel: Optional[CancelFn],
    ) -> None:
        self.network = network
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
            message = f"window {self.done}/{self.total}, ETA {eta:.0f} s"
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
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Tuple[torch.Tensor, str]:
    """``(1, C, *spatial)`` image → ``(1, C_out, *spatial)`` float32 logits on the CPU, and the placement used.

    On CUDA, an out-of-memory error retries with the next of ``placements(device)``; each step is announced
    through ``log``.
    """
    from monai.inferers import sliding_window_inference

    chain = placements(device)
    total = count_windows(image.shape[2:], roi_size, overlap, sw_batch_size)
    for i, (sw_device, out_device, label) in enumerate(chain):
        network.to(sw_device)
        predictor = _Predictor(network, sw_device, amp and sw_device == "cuda", total, progress, should_cancel)
        try:
            with torch.inference_mode():
                out = sliding_window_inference(
                    image,
                    list(roi_size),
                    sw_batch_size,
                    predictor,
                    overlap=overlap,
                    mode=blend_mode,
                    sw_device=sw_device,
                    device=out_device,
                )
            return out.float().cpu(), label
        except torch.cuda.OutOfMemoryError:
            if sw_device == "cuda":
                torch.cuda.empty_cache()
            if i + 1 == len(chain):
                raise
            if log is not None:
                log(f"Out of memory on {label}: retrying with {chain[i + 1][2]}")
    raise AssertionError("unreachable")
