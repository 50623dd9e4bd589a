"""The untrusted network at run time: whatever its forward does, the run ends in a clear error, never a traceback."""

import torch

from ...errors import CancelledError, ModelError, UserError
from ..backends.check import BackendMismatch

NETWORK_FIX = "The model file may be damaged or not made for this kind of input; try another model."


class CheckedNetwork(torch.nn.Module):
    """Wraps an untrusted network: its failures are ``ModelError``s (memory and shape errors pass through for the
    fallbacks and messages of ``_infer``) and each window's output must be a tensor of the window's size."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor):
        try:
            y = self.network(x)
        except (torch.cuda.OutOfMemoryError, UserError, CancelledError, BackendMismatch):
            raise
        except Exception as exc:  # noqa: BLE001 - the network is the model's code (TorchScript raises its own type)
            text = str(exc)
            if isinstance(exc, RuntimeError) and (
                "memory" in text.lower() or any(k in text for k in ("channels", "Sizes of tensors must match"))
            ):
                raise  # out of memory (fallbacks) and input mismatches get their own messages in the pipeline
            reason = _first_line(text).replace("builtins.", "") or type(exc).__name__
            raise ModelError(f"The network failed on a window of {tuple(x.shape[2:])}: {reason}", NETWORK_FIX) from None
        out = y[0] if isinstance(y, (list, tuple)) and y else y
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"The network returned {type(y).__name__}, not an image tensor", NETWORK_FIX)
        if out.ndim != x.ndim or out.shape[0] != x.shape[0] or tuple(out.shape[2:]) != tuple(x.shape[2:]):
            raise ModelError(
                f"The network returned an output of shape {tuple(out.shape)} for a window of shape {tuple(x.shape)}; "
                "a segmentation network must keep the window's size",
                NETWORK_FIX,
            )
        return y


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:200]
