"""Safe reading of PyTorch checkpoints and MONAI ``UNet`` hyper-parameter detection.

Checkpoints are always read with ``torch.load(..., weights_only=True)``: a pickled whole model or
a pickle that references code is refused, and nothing in it runs.
"""

import os
import pickle
import re
import warnings
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..errors import ModelError

NESTED_KEYS = ("state_dict", "model", "network", "net", "model_state_dict", "network_weights")
PREFIXES = ("module.", "_orig_mod.", "net.", "network.", "model_ema.")
_CODE_MODULES = (
    "builtins",
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "shutil",
    "socket",
    "runpy",
    "importlib",
    "pty",
    "code",
)

RESAVE_HINT = (
    "Re-save only the weights in the environment that made it: "
    "torch.save(model.state_dict(), 'model.pt'), or export a MONAI bundle / TorchScript file."
)


def is_torchscript(path: str) -> bool:
    """True for a TorchScript archive (a zip with ``code/`` and ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def safe_torch_load(path: str) -> Any:
    """``torch.load`` with ``weights_only=True``; every failure becomes a ``ModelError``."""
    if not os.path.isfile(path):
        raise ModelError(f"Model file not found: {path}", "Check the --model path.")
    if os.path.getsize(path) == 0:
        raise ModelError(f"Model file is empty (0 bytes): {path}", "The download or copy failed; fetch the file again.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol N" on non-checkpoints
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        match = re.search(r"GLOBAL ([\w\.]+)", text)
        if match:
            name = match.group(1)
            root = name.split(".")[0]
            if root in _CODE_MODULES or name.startswith(("torch._C", "torch.ops")):
                raise ModelError(
                    f"Refused {os.path.basename(path)}: its pickle references code ({name}). Nothing in it was run.",
                    "Only load checkpoints from people you trust. " + RESAVE_HINT,
                ) from None
            raise ModelError(
                f"{os.path.basename(path)} is a pickled Python object ({name}), not a weights file; "
                "loading it would run arbitrary code, so it was refused and nothing in it was run.",
                RESAVE_HINT,
            ) from None
        raise ModelError(
            f"{os.path.basename(path)} is not a readable PyTorch checkpoint ({_first_line(text)}).",
            "The file is corrupt, truncated or not a checkpoint; download or export it again.",
        ) from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes surface as IndexError, KeyError, EOFError, RuntimeError...
        raise ModelError(
            f"{os.path.basename(path)} is not a readable PyTorch checkpoint "
            f"({_first_line(str(exc)) or type(exc).__name__}).",
            "The file is corrupt, truncated or not a checkpoint; download or export it again.",
        ) from None


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, path: str = "") -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """The weights inside a loaded checkpoint plus its ``config`` dict (MONAIAuto3DSeg layout), if any.

    Accepts a plain state_dict, one nested under ``state_dict``/``model``/``network``/``net``, and
    DataParallel / torch.compile prefixes.
    """
    config = obj.get("config") if isinstance(obj, dict) and isinstance(obj.get("config"), dict) else None
    state = None
    if _is_tensor_dict(obj):
        state = obj
    elif isinstance(obj, dict):
        for key in NESTED_KEYS:
            if _is_tensor_dict(obj.get(key)):
                state = obj[key]
                break
    if state is None:
        keys = list(obj.keys())[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ModelError(
            f"No weights found in {os.path.basename(path)} (top level: {keys}).",
            "Expected a state_dict, or one under 'state_dict', 'model', 'network' or 'net'.",
        )
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if all(k.startswith("model.model.") for k in state):  # Lightning: self.model = UNet(...)
        state = {k[len("model.") :]: v for k, v in state.items()}
    return dict(state), config


# ---------------------------------------------------------------------------- UNet detection


def _unit_prefix(state: Dict[str, torch.Tensor], block: str) -> Optional[str]:
    """The key prefix of the first convolution of a UNet block (plain or residual)."""
    for candidate in (f"{block}.conv.unit0.conv", f"{block}.conv", f"{block}.0.conv"):
        if f"{candidate}.weight" in state and state[f"{candidate}.weight"].ndim >= 3:
            return candidate
    return None


def detect_unet(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, Any], List[str]]:
    """MONAI ``UNet`` keyword arguments read from a state_dict, and notes on what was assumed.

    Detected: spatial_dims, in/out channels, channels, kernel_size, up_kernel_size,
    num_res_units, norm (batch vs instance), act (PReLU when its weight is present), bias.
    Not in the weights: strides (default 2 per level) and dropout.
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
    args = {
        "spatial_dims": spatial_dims,
        "in_channels": int(w0.shape[1]),
        "out_channels": int(up.shape[1]),
        "channels": channels,
        "strides": [2] * (len(channels) - 1),
        "kernel_size": kernel[0] if len(set(kernel)) == 1 else kernel,
        "up_kernel_size": up_kernel[0] if len(set(up_kernel)) == 1 else up_kernel,
        "num_res_units": res_units,
        "norm": norm,
        "act": act,
        "bias": f"{first}.bias" in state,
    }
    notes.append(
        "strides are not stored in the weights: assumed 2 per level "
        "(override with --strides or the JSON next to the checkpoint)"
    )
    return args, notes


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


def check_weights_fit(net: torch.nn.Module, state: Dict[str, torch.Tensor], what: str) -> None:
    """A ``ModelError`` naming missing / unexpected keys and shape mismatches when ``state`` does not fit ``net``
    (which may live on the ``meta`` device: only names and shapes are compared)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)}≠{tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:4]}{'…' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:4]}{'…' if len(unexpected) > 4 else ''}")
        if wrong:
            parts.append(f"shape mismatches {wrong[:3]}")
        raise ModelError(
            f"The weights do not fit the {what}: " + "; ".join(parts) + ".",
            "Likely the network settings differ from training (channels, res units, norm, act): "
            "fix them in the JSON next to the checkpoint, or give the matching bundle.",
        )


def load_strict(net: torch.nn.Module, state: Dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error naming missing/unexpected keys and the likely cause."""
    check_weights_fit(net, state, what)
    net.load_state_dict(state, strict=True)
