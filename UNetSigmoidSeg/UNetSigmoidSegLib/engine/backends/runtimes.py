"""The CPU runtimes behind ``engine.backends``: each turns a network into a *forward*, a callable
``(N, C, *roi) float32 tensor → (N, C_out, *roi) float32 tensor`` for exactly the windows it is given (one
sliding-window batch per call), so MONAI's inferers, cancel checks and progress stay as they are.

- ``onednn``: the network itself with every convolution sent straight to oneDNN (``torch.mkldnn_convolution``,
  ``mkldnn._convolution_transpose_pointwise``). Why: ``aten::_convolution`` picks oneDNN for a float32 CPU
  convolution only when ``N > 1`` or ``N·C·D·H > 20480`` (a 2-D heuristic), so with one window per call most UNet
  layers fall to ``slow_conv3d_forward`` (im2col + GEMM), several times slower. Same kernels PyTorch uses for large
  inputs; no extra package. A structural copy shares the weights: the loaded network is never modified.
- ``openvino``: the network exported to ONNX by PyTorch's TorchScript-based exporter (it takes eager, scripted and
  traced networks alike, in seconds), read by OpenVINO from memory and compiled for the window's static shape with
  f32 precision (its default bf16 hint on CPUs with AVX512-BF16/AMX gives logit errors of 1e-2). OpenVINO's own
  compiled-blob cache is not used: it has no integrity check.
"""

import contextlib
import copy
import importlib.util
import io
import os
import sys
import tempfile
import types
import warnings
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
OPSET = 17


def torch_runtime() -> str:
    return f"torch {torch.__version__}"


# ---------------------------------------------------------------- oneDNN through PyTorch


def onednn_unavailable(network: torch.nn.Module) -> Optional[str]:
    """Why the ``onednn`` backend cannot run ``network`` (None: it can)."""
    if not torch.backends.mkldnn.is_available():
        return f"this PyTorch build has no oneDNN (torch {torch.__version__})"
    if isinstance(network, torch.jit.ScriptModule):
        return "the network is TorchScript: its convolutions cannot be redirected (openvino can run it)"
    if not hasattr(torch.ops.mkldnn, "_convolution_transpose_pointwise"):
        return f"torch {torch.__version__} lacks oneDNN's transposed convolution"
    convs = [m for m in network.modules() if type(m) in _CONVS]
    if not convs:
        return "the network has no plain Conv2d/Conv3d layer"
    return None


def _conv_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if self.padding_mode != "zeros" or isinstance(self.padding, str) or x.device.type != "cpu":
        return type(self).forward(self, x)
    if x.dtype != torch.float32 or self.weight.dtype != torch.float32:
        return type(self).forward(self, x)
    return torch.mkldnn_convolution(
        x.contiguous(), self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
    )


def _conv_transpose_forward(
    self: torch.nn.Module, x: torch.Tensor, output_size: Optional[Sequence[int]] = None
) -> torch.Tensor:
    if output_size is not None or self.padding_mode != "zeros" or x.device.type != "cpu":
        return type(self).forward(self, x, output_size)
    if x.dtype != torch.float32 or self.weight.dtype != torch.float32:
        return type(self).forward(self, x, output_size)
    return torch.ops.mkldnn._convolution_transpose_pointwise(
        x.contiguous(),
        self.weight,
        self.bias,
        list(self.padding),
        list(self.output_padding),
        list(self.stride),
        list(self.dilation),
        self.groups,
        "none",
        [],
        "",
    )


_CONVS = {
    torch.nn.Conv2d: _conv_forward,
    torch.nn.Conv3d: _conv_forward,
    torch.nn.ConvTranspose2d: _conv_transpose_forward,
    torch.nn.ConvTranspose3d: _conv_transpose_forward,
}


def onednn_forward(network: torch.nn.Module) -> Forward:
    """``network`` with its convolutions on oneDNN: a copy of its module structure sharing every weight and buffer
    (no extra memory for weights; the loaded network itself is left untouched)."""
    shared = {id(t): t for t in list(network.parameters()) + list(network.buffers())}
    twin = copy.deepcopy(network, shared)
    for module in twin.modules():
        patch = _CONVS.get(type(module))
        if patch is not None:
            module.forward = types.MethodType(patch, module)
    return twin


# ---------------------------------------------------------------- ONNX export and OpenVINO


def unavailable(*names: str) -> Optional[str]:
    """Why the packages ``names`` cannot be imported here (None: they can): ``openvino`` to run an export, ``onnx``
    as well to make one (PyTorch's exporter needs it)."""
    block_telemetry()
    missing = []
    for name in names:
        try:
            __import__(name)
        except ImportError as exc:
            missing.append(f"{name} ({str(exc).splitlines()[0][:80]})")
    if missing:
        return f"not installed: {', '.join(missing)}; pip install openvino onnx"
    return None


def installed(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (import blocked)
        return False


def block_telemetry() -> None:
    """Turn OpenVINO's usage telemetry off before anything here imports OpenVINO. Its model-conversion tools (imported
    by ``import openvino``) send usage events to Google Analytics through ``openvino_telemetry``; this product never
    asks its users for that, so the package is blocked for this process (an import of it fails and OpenVINO uses its
    own no-op stub). Nothing leaves the machine."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


def import_openvino() -> Any:
    """``openvino``, with its usage telemetry off (``block_telemetry``)."""
    block_telemetry()
    import openvino

    return openvino


def openvino_runtime() -> str:
    return f"openvino {import_openvino().__version__.split('-')[0]}"


def export_onnx(network: torch.nn.Module, probe: torch.Tensor) -> bytes:
    """ONNX bytes of ``network`` for inputs shaped exactly like ``probe`` ``(N, C, *roi)`` (static shapes: what
    the tracer specialised is what is validated). The exporter's warnings (tracer notes, its deprecation) are
    kept from the user: the validation against PyTorch decides."""
    import onnx  # noqa: F401 - PyTorch's exporter needs it; imported first for a clear ImportError

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _silenced():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (probe,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            do_constant_folding=True,
        )
    return buffer.getvalue()


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """File descriptors 1 and 2 (and ``sys.stdout`` / ``sys.stderr``) into a discarded file for the duration: the
    exporter's C++ side prints whole graphs to stdout when it fails, which would corrupt ``--json`` output."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink, contextlib.redirect_stdout(io.StringIO()):
            with contextlib.redirect_stderr(io.StringIO()):
                os.dup2(sink.fileno(), 1)
                os.dup2(sink.fileno(), 2)
                yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "bad_alloc" in text or "allocat" in text


class OpenVINOForward:
    """A compiled OpenVINO model for one static input shape ``(N, C, *roi)``; a smaller last batch of windows is
    padded to ``N`` with zeros (each window is computed on its own: the padding cannot change the others)."""

    def __init__(self, onnx_bytes: bytes, input_shape: Sequence[int], threads: int) -> None:
        ov = import_openvino()

        core = ov.Core()
        model = core.read_model(onnx_bytes)  # from memory: the bytes whose hash was checked, nothing else is read
        model.reshape({0: [int(s) for s in input_shape]})
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": max(1, int(threads)),
        }
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.shape: Tuple[int, ...] = tuple(int(s) for s in input_shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        n = a.shape[0]
        if a.shape != self.shape:
            if a.shape[1:] != self.shape[1:] or n > self.shape[0]:
                raise RuntimeError(f"openvino: compiled for windows {list(self.shape)}, got {list(a.shape)}")
            padded = np.zeros(self.shape, np.float32)
            padded[:n] = a
            a = padded
        try:
            out = self.request.infer({0: a}, share_inputs=True, share_outputs=True)[0]
            return torch.from_numpy(np.array(out[:n], dtype=np.float32, copy=True))
        except Exception as exc:  # noqa: BLE001 - the runtime's errors, said as the engine says PyTorch's
            if _out_of_memory(exc):
                raise RuntimeError(f"not enough memory (openvino: {str(exc).splitlines()[0][:160]})") from None
            raise RuntimeError(f"openvino: {str(exc).splitlines()[0][:300]}") from None


def run_forward(forward: Any, x: torch.Tensor) -> torch.Tensor:
    """One call of a forward (or of the network itself); deep-supervision heads: the full-resolution one."""
    y = forward(x)
    if isinstance(y, (list, tuple)):
        y = y[0]
    return y
