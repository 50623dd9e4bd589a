"""MONAI ``UNet`` hyper-parameters read from its weights, its strides, and the window sizes it accepts.

Key structure of ``monai.networks.nets.UNet`` (``spatial_dims`` 2 or 3): ``model.0`` is the first down block,
``model.1.submodule.0`` the second, ``model.1.submodule.1.submodule.0`` the third …, the innermost
``….submodule`` the bottom block (stride 1) and ``model.2`` the last up block. With ``num_res_units > 0`` a down
block is a ``ResidualUnit`` whose ``residual`` path tells its stride: a k×k convolution (the block's kernel size)
when it downsamples, a 1×1 convolution when it only changes channels (stride 1), no convolution at all for stride 1
with equal channels. Without residual units nothing in the weights tells the strides.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...errors import ModelError
from .checkpoint import check_weights_fit, unet_candidates

STRIDES_UNKNOWN = (
    "strides are not stored in the weights of a UNet without residual units: assumed 2 per level. "
    "If the network was trained with other strides the result is wrong: give --strides or the JSON next to the "
    "checkpoint"
)


def _unit_prefix(state: Dict[str, torch.Tensor], block: str) -> Optional[str]:
    """The key prefix of the first convolution of a UNet block (plain or residual)."""
    for candidate in (f"{block}.conv.unit0.conv", f"{block}.conv", f"{block}.0.conv"):
        if f"{candidate}.weight" in state and state[f"{candidate}.weight"].ndim >= 3:
            return candidate
    return None


def down_blocks(n_down: int) -> List[str]:
    """Key prefixes of the down blocks, outermost first: ``model.0``, ``model.1.submodule.0``, …"""
    return ["model.0"] + [f"model.1{'.submodule.1' * (i - 1)}.submodule.0" for i in range(1, n_down)]


def downsampling(state: Dict[str, torch.Tensor], n_down: int, kernel: Sequence[int], res_units: int) -> List[Any]:
    """Per down block: True (it downsamples: stride ≠ 1), False (stride 1) or None (the weights do not tell)."""
    if res_units == 0 or all(int(k) == 1 for k in kernel):
        return [None] * n_down
    out: List[Any] = []
    for block in down_blocks(n_down):
        residual = state.get(f"{block}.residual.weight")
        conv = state.get(f"{block}.conv.unit0.conv.weight")
        if residual is None:  # an Identity residual: stride 1 with equal in / out channels
            out.append(False if conv is not None and conv.shape[0] == conv.shape[1] else None)
        elif all(int(s) == 1 for s in residual.shape[2:]):
            out.append(False)
        elif [int(s) for s in residual.shape[2:]] == [int(k) for k in kernel]:
            out.append(True)
        else:
            out.append(None)
    return out


def detect_unet(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, Any], List[str]]:
    """MONAI ``UNet`` keyword arguments read from a state_dict (keys starting ``model.``), and notes on what was
    assumed.

    Detected: spatial_dims, in/out channels, channels, kernel_size, up_kernel_size, num_res_units, norm (batch vs
    instance), act (PReLU when its weight is present), bias, and with residual units which levels downsample (a
    downsampling stride is taken as MONAI's 2). Not in the weights: dropout, and the strides of a UNet without
    residual units (assumed 2; the note starting with "strides" says so).
    """
    first = _unit_prefix(state, "model.0")
    if first is None:
        sample = ", ".join(list(state)[:5])
        raise ModelError(
            f"The weights do not look like a MONAI UNet (first keys: {sample}).",
            "For another architecture give a MONAI bundle or a TorchScript file.",
        )
    w0 = state[f"{first}.weight"]
    spatial_dims = w0.ndim - 2
    res_units = len({k.split(".")[3] for k in state if k.startswith("model.0.conv.unit")})
    channels = [int(w0.shape[0])]
    block = "model.1.submodule"
    while any(k.startswith(f"{block}.1.submodule.") for k in state):  # an inner level
        down = _unit_prefix(state, f"{block}.0")
        if down is None:
            raise ModelError(
                "Cannot follow the UNet's levels in the weights.", "Give a MONAI bundle or a TorchScript file instead."
            )
        channels.append(int(state[f"{down}.weight"].shape[0]))
        block = f"{block}.1.submodule"
    bottom = _unit_prefix(state, block)
    if bottom is None:
        raise ModelError(
            "Cannot follow the UNet's levels in the weights.", "Give a MONAI bundle or a TorchScript file instead."
        )
    channels.append(int(state[f"{bottom}.weight"].shape[0]))
    top = "model.2.conv.weight" if "model.2.conv.weight" in state else "model.2.0.conv.weight"
    if top not in state:
        raise ModelError(
            "The UNet's last layer (model.2) is missing from the weights.",
            "The checkpoint is incomplete; export it again.",
        )
    up = state[top]  # ConvTranspose weight: (in, out, *k)
    norm_keys = [k for k in state if ".adn.N." in k]
    if any(k.endswith("running_mean") for k in norm_keys):
        norm: Any = "batch"
    elif norm_keys:
        norm = ("instance", {"affine": True})
    else:
        norm = "instance"
    notes = []
    if any(".adn.A.weight" in k for k in state):
        act: Any = "prelu"
    else:
        act = "relu"
        notes.append(
            "activation layers have no weights: assumed ReLU inside the network "
            "(set 'act' in the JSON next to the checkpoint if not)"
        )
    kernel = [int(s) for s in w0.shape[2:]]
    up_kernel = [int(s) for s in up.shape[2:]]
    evidence = downsampling(state, len(channels) - 1, kernel, res_units)
    if any(e is None for e in evidence):
        notes.append(STRIDES_UNKNOWN)
    args = {
        "spatial_dims": spatial_dims,
        "in_channels": int(w0.shape[1]),
        "out_channels": int(up.shape[1]),
        "channels": channels,
        "strides": [1 if e is False else 2 for e in evidence],
        "kernel_size": kernel[0] if len(set(kernel)) == 1 else kernel,
        "up_kernel_size": up_kernel[0] if len(set(up_kernel)) == 1 else up_kernel,
        "num_res_units": res_units,
        "norm": norm,
        "act": act,
        "bias": f"{first}.bias" in state,
    }
    return args, notes


def _stride_product(stride: Any) -> int:
    return int(np.prod(stride)) if isinstance(stride, (list, tuple)) else int(stride)


def check_strides(strides: Sequence[Any], state: Dict[str, torch.Tensor], args: Dict[str, Any], source: str) -> None:
    """Strides given by the user (``source``: where from) against the levels and the residual units' evidence:
    a mismatch is a ``ModelError`` that says "strides" and which strides the weights show."""
    n_down = len(args["channels"]) - 1
    if len(strides) != n_down:
        raise ModelError(
            f"{len(strides)} strides given ({source}) for a UNet with {n_down} downsampling level(s) "
            f"(channels {args['channels']})",
            f"Give {n_down} strides, one per level, e.g. --strides {' '.join(['2'] * n_down)}.",
        )
    kernel = args["kernel_size"] if isinstance(args["kernel_size"], list) else [args["kernel_size"]] * 3
    evidence = downsampling(state, n_down, kernel[: args["spatial_dims"]], args["num_res_units"])
    wrong = [
        i + 1 for i, (s, e) in enumerate(zip(strides, evidence)) if e is not None and (_stride_product(s) != 1) != e
    ]
    if wrong:
        shown = ["2" if e else ("1" if e is False else "?") for e in evidence]
        raise ModelError(
            f"The weights do not fit strides {list(strides)} ({source}): the residual units show that level(s) "
            f"{wrong} {'do not ' if evidence[wrong[0] - 1] is False else ''}downsample — strides "
            f"[{', '.join(shown)}] (1: no downsampling; a downsampling stride is 2 unless you know otherwise)",
            f"Fix the strides: e.g. --strides {' '.join(shown)} (or in the JSON next to the checkpoint).",
        )


def size_divisor(strides: Sequence[Any], spatial_dims: int) -> List[int]:
    """Per spatial axis, the product of the strides: window sizes must be multiples of it."""
    out = [1] * spatial_dims
    for stride in strides:
        per_axis = list(stride) if isinstance(stride, (list, tuple)) else [stride] * spatial_dims
        out = [o * int(s) for o, s in zip(out, per_axis)]
    return out


def build_unet(args: Dict[str, Any], state: Dict[str, torch.Tensor]) -> torch.nn.Module:
    """``monai.networks.nets.UNet(**args)`` holding ``state``: sized first on the ``meta`` device (no memory), so
    settings that do not fit the weights are refused before anything is allocated."""
    from monai.networks.nets import UNet

    try:
        with torch.device("meta"):
            probe = UNet(**args)
    except (TypeError, ValueError, AssertionError, IndexError) as exc:
        raise ModelError(
            f"Cannot build UNet({args}): {exc}", "Check the network settings in the JSON next to the checkpoint."
        ) from None
    check_weights_fit(probe, state, "UNet")
    net = UNet(**args)
    net.load_state_dict(state, strict=True)
    return net


# ---------------------------------------------------------------------------- TorchScript


def _module_stride(module: Any) -> Optional[List[int]]:
    """The stride of a scripted (an attribute) or traced (a constant in its graph) convolution, if readable."""
    stride = getattr(module, "stride", None)
    if isinstance(stride, (list, tuple)) and stride:
        return [int(s) for s in stride]
    graph = getattr(module, "graph", None)
    if graph is None:
        return None
    for node in graph.nodes():
        if node.kind() in ("aten::_convolution", "aten::conv3d", "aten::conv2d"):
            value = list(node.inputs())[3]
            producer = value.node()
            try:
                if producer.kind() == "prim::ListConstruct":
                    return [int(v.toIValue()) for v in producer.inputs()]
                return [int(s) for s in value.toIValue()]
            except (RuntimeError, TypeError, ValueError):
                return None
    return None


def torchscript_unet(network: Any) -> Optional[Tuple[Dict[str, Any], str]]:
    """The UNet settings of a TorchScript (scripted or traced) MONAI UNet, also one wrapped in another module (e.g.
    followed by a Sigmoid): detected from its weights like a state_dict, strides read from its down blocks'
    convolutions. Returns ``(UNet keyword arguments, the UNet's module prefix: "" unless wrapped)``, or None when
    it holds no MONAI UNet or a stride cannot be read."""
    found = unet_candidates([("", dict(network.state_dict()))])
    if not found:
        return None
    _where, prefix, state = min(found, key=lambda f: len(f[1]))
    try:
        args, _notes = detect_unet(state)
    except ModelError:
        return None
    modules = dict(network.named_modules())
    strides = []
    for block in down_blocks(len(args["channels"]) - 1):
        conv = modules.get(prefix + (f"{block}.conv.unit0.conv" if args["num_res_units"] else f"{block}.conv"))
        stride = _module_stride(conv) if conv is not None else None
        if stride is None:
            return None
        strides.append(stride[0] if len(set(stride)) == 1 else stride)
    args["strides"] = strides
    return args, prefix
