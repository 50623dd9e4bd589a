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

from ...errors import ModelError

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


Group = Tuple[str, Dict[str, torch.Tensor]]  # (where in the checkpoint, its tensor entries)
MAX_DEPTH = 6  # how deep dicts / lists are searched for weights
MAX_GROUPS = 10000
UNET_FIRST_KEYS = ("model.0.conv.unit0.conv.weight", "model.0.conv.weight")  # MONAI UNet, with / without res units
_AVERAGED = {"ema", "swa", "averaged"}  # weight averages kept beside the trained weights: used only if nothing else


def tensor_groups(obj: Any) -> List[Group]:
    """Every dict inside a loaded checkpoint that holds tensors (only its tensor entries), with where it was found:
    a plain state_dict, Lightning's ``state_dict``, Ignite's ``{"net": …, "opt": …}``, nested dicts, lists."""
    out: List[Group] = []

    def walk(node: Any, where: str, depth: int) -> None:
        if depth > MAX_DEPTH or len(out) >= MAX_GROUPS:
            return
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            tensors = {k: v for k, v in items if isinstance(k, str) and isinstance(v, torch.Tensor)}
            if tensors:
                out.append((where, tensors))
        for key, value in items:
            if isinstance(value, (dict, list, tuple)):
                walk(value, f"{where}/{key}" if where else str(key), depth + 1)

    if isinstance(obj, (dict, list, tuple)):
        walk(obj, "", 0)
    return out


def _averaged(text: str) -> bool:
    return bool(_AVERAGED & set(re.split(r"[^a-z0-9]+", text.lower())))


def _where(group: str, prefix: str) -> str:
    return "/".join(p for p in (group, prefix.rstrip(".")) if p) or "the top level"


def _pick(
    found: List[Tuple[str, str, Dict[str, torch.Tensor]]], what: str
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The trained weights among several matches: not an average (EMA / SWA) if there is a choice, then the
    shortest prefix, then the first found. A note names what else was there."""
    ordered = sorted(found, key=lambda f: (_averaged(f[0] + "/" + f[1]), len(f[1])))
    group, prefix, state = ordered[0]
    others = sorted({_where(g, p) for g, p, _ in ordered[1:]} - {_where(group, prefix)})
    notes = [f"{what} weights read from {_where(group, prefix)}; also found at: {', '.join(others)}"] if others else []
    return state, notes


def unet_candidates(groups: List[Group]) -> List[Tuple[str, str, Dict[str, torch.Tensor]]]:
    """``(where, prefix, state_dict)`` of every MONAI UNet found by its key structure in ``groups`` (the prefix
    stripped: the state_dict's keys start with ``model.``)."""
    found = []
    for where, group in groups:
        for key in group:
            for first in UNET_FIRST_KEYS:
                if key == first or key.endswith("." + first):
                    prefix = key[: len(key) - len(first)]
                    state = {k[len(prefix) :]: v for k, v in group.items() if k.startswith(prefix + "model.")}
                    if any(k.startswith("model.2.") for k in state) and any(
                        k.startswith("model.1.submodule.") for k in state
                    ):
                        found.append((where, prefix, state))
    return found


def find_unet_weights(obj: Any, path: str = "") -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """A MONAI ``UNet`` state_dict found by its key structure anywhere in a loaded checkpoint, the prefix stripped.

    A UNet's keys all start with ``model.``: ``model.0`` (first block: ``model.0.conv.unit0.conv.weight`` with
    residual units, ``model.0.conv.weight`` without), ``model.1.submodule…`` (inner levels) and ``model.2…`` (last
    block). Any prefix (``module.``, ``_model.``, ``model.``, ``net.``, ``_orig_mod.`` …) and any nesting (Lightning,
    Ignite, ``{"model": …}``) is accepted; other entries (optimizer, scheduler, loss weights, EMA copies) are ignored.
    Returns the state_dict and notes (where it came from, when there was a choice)."""
    groups = tensor_groups(obj)
    if not groups:
        keys = list(obj.keys())[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ModelError(
            f"No weights found in {os.path.basename(path)} (top level: {keys}).",
            "Expected a MONAI UNet state_dict (plain, or inside a Lightning / Ignite / {'model': …} checkpoint).",
        )
    found = unet_candidates(groups)
    if not found:
        where, group = max(groups, key=lambda g: len(g[1]))
        sample = ", ".join(list(group)[:5])
        raise ModelError(
            f"The weights do not look like a MONAI UNet (first keys{' under ' + where if where else ''}: {sample}).",
            "For another architecture give a MONAI bundle or a TorchScript file.",
        )
    return _pick(found, "UNet")


def find_network_weights(obj: Any, network: torch.nn.Module, path: str = "") -> Dict[str, torch.Tensor]:
    """The state_dict of a known ``network`` (bundle, checkpoint config) found by its key structure anywhere in a
    loaded checkpoint, any prefix stripped. Without a full match, the largest group (``load_strict`` then names
    what is missing)."""
    own = list(network.state_dict())
    groups = tensor_groups(obj)
    if not groups:
        raise ModelError(f"No weights found in {os.path.basename(path)}.", "Export the trained weights again.")
    if not own:
        return {}
    found = []
    for where, group in groups:
        for key in group:
            if key == own[0] or key.endswith("." + own[0]):
                prefix = key[: len(key) - len(own[0])]
                if all(prefix + k in group for k in own):
                    found.append(
                        (where, prefix, {k[len(prefix) :]: v for k, v in group.items() if k.startswith(prefix)})
                    )
    if found:
        return _pick(found, type(network).__name__)[0]
    return dict(max(groups, key=lambda g: len(g[1]))[1])


def checkpoint_config(obj: Any) -> Optional[dict]:
    """The ``config`` dict of a MONAIAuto3DSeg-style checkpoint (``{"config": …, "state_dict": …}``), if any."""
    return obj.get("config") if isinstance(obj, dict) and isinstance(obj.get("config"), dict) else None


def check_weights_fit(net: torch.nn.Module, state: Dict[str, torch.Tensor], what: str) -> None:
    """A ``ModelError`` naming missing / unexpected keys, shape mismatches and the likely cause when ``state`` does
    not fit ``net`` (which may live on the ``meta`` device: only names and shapes are compared)."""
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
        offending = missing + unexpected + [w.split(" ")[0] for w in wrong]
        if all(".residual." in k for k in offending):  # only residual paths differ: their shape is set by the stride
            hint = (
                "The strides differ from training: the residual units' shapes show which levels downsample. "
                "Fix --strides (or 'strides' in the JSON next to the checkpoint), or leave them out to read them "
                "from the weights."
            )
        else:
            hint = (
                "Likely the network settings differ from training (channels, strides, res units, kernel size, norm, "
                "act): fix them in the JSON next to the checkpoint, or give the matching bundle."
            )
        raise ModelError(f"The weights do not fit the {what}: " + "; ".join(parts) + ".", hint)


def load_strict(net: torch.nn.Module, state: Dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error naming missing/unexpected keys and the likely cause."""
    check_weights_fit(net, state, what)
    net.load_state_dict(state, strict=True)
