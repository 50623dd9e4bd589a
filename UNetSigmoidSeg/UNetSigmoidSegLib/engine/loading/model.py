"""Model loading: MONAI bundle (folder or .zip), TorchScript, or a plain checkpoint.

``load_model`` tells the formats apart and returns the network on the CPU in eval mode together
with a ``ModelInfo`` describing what was detected and the defaults the model brings.
"""

import os
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch

from ...contract.model import ModelInfo, ModelSpec
from ...errors import ModelError
from ..safety import configreader
from ..safety.safeload import DataLimitError, check_plain
from . import bundle as bundle_mod
from .bundlezip import bundle_root, extracted_bundle
from .checkpoint import (
    checkpoint_config,
    find_network_weights,
    find_unet_weights,
    is_torchscript,
    load_strict,
    safe_torch_load,
)
from .sidecar import auto3dseg_defaults, read_sidecar
from .unet import build_unet, check_strides, detect_unet, size_divisor, torchscript_unet

TRUSTED_NOTE = "trusted (--trust-bundle): MONAI's ConfigParser ran the model's config as it is, code included"


@dataclass
class LoadedModel:
    """A network on the CPU in eval mode and what was found in it. ``spec_key``: its ``ModelSpec.cache_key()``
    (None for a network built in code); ``backends``: CPU backends prepared for it (``engine.backends``), kept
    warm with the model by the runners' model cache."""

    network: torch.nn.Module
    info: ModelInfo
    bundle_preprocessing: Any = None  # MONAI Compose of dict transforms (bundle only), minus image loading
    spec_key: Any = None
    backends: Dict[Any, Any] = field(default_factory=dict)


def default_activation(out_channels: Optional[int]) -> str:
    return "sigmoid" if out_channels in (None, 1) else "softmax"


def _first_conv(net: torch.nn.Module) -> Optional[torch.Tensor]:
    for _, p in net.named_parameters():
        if p.ndim >= 4:
            return p
    return None


def network_divisor(net: torch.nn.Module, spatial_dims: int) -> Optional[List[int]]:
    """Per spatial axis, what window sizes must be multiples of: a MONAI UNet's / DynUNet's stride products (also
    read from a TorchScript UNet's convolutions), a network's own ``shape_factor()`` (SegResNetDS); None if unknown."""
    if isinstance(net, torch.jit.ScriptModule):
        found = torchscript_unet(net)
        return size_divisor(found[0]["strides"], spatial_dims) if found else None
    patch = getattr(net, "patch_size", None)
    if type(net).__name__ == "SwinUNETR" and isinstance(patch, int):  # its _check_input_size: patch_size**5
        return [patch**5] * spatial_dims
    shape_factor = getattr(net, "shape_factor", None)
    if callable(shape_factor):
        try:
            return [int(v) for v in shape_factor()]
        except Exception:  # noqa: BLE001 - a network whose shape_factor needs arguments: fall through
            pass
    strides = getattr(net, "strides", None)
    if isinstance(strides, (list, tuple)) and strides:
        return size_divisor(strides, spatial_dims)
    return None


def _sidecar_path(path: str, spec: ModelSpec) -> str:
    return spec.network_config or os.path.splitext(path)[0] + ".json"


def _load_checkpoint(spec: ModelSpec) -> LoadedModel:
    path = spec.path
    obj = safe_torch_load(path)
    config = checkpoint_config(obj)
    sidecar = read_sidecar(path, spec.network_config)
    notes: List[str] = []
    warnings: List[str] = []
    info_extra: Dict[str, Any] = {}
    if config and isinstance(config.get("network"), dict) and "_target_" in config["network"]:
        net, args, arch = _network_from_config(config["network"], obj, path, spec.trust_bundle)
        notes += [TRUSTED_NOTE] if spec.trust_bundle else []
        info_extra.update(auto3dseg_defaults(config))
        conv = _first_conv(net)
        spatial_dims = int(conv.ndim - 2) if conv is not None else 3
        divisor = network_divisor(net, spatial_dims) or 1
    else:
        state, notes = find_unet_weights(obj, path)
        args, detected = detect_unet(state)
        args.update(sidecar.get("network", {}))
        if spec.strides:
            args["strides"] = list(spec.strides)
        if spec.strides or "strides" in sidecar.get("network", {}):
            source = "--strides" if spec.strides else f"'strides' in {os.path.basename(_sidecar_path(path, spec))}"
            check_strides(args["strides"], state, args, source)
            detected = [n for n in detected if not n.startswith("strides")]
        warnings = [n for n in detected if n.startswith("strides")]  # a result may be wrong: said with every run
        notes += [n for n in detected if not n.startswith("strides")]
        net = build_unet(args, state)
        arch = "UNet(channels={channels}, strides={strides}, res_units={num_res_units}, norm={norm})".format(**args)
        spatial_dims = int(args.get("spatial_dims", 3))
        divisor = size_divisor(args["strides"], spatial_dims)
    out_channels = int(args.get("out_channels", 0)) or None
    activation = sidecar.get("activation") or info_extra.pop("activation", None)
    info = ModelInfo(
        path=path,
        format="checkpoint",
        architecture=arch,
        in_channels=args.get("in_channels"),
        out_channels=out_channels,
        activation=activation or default_activation(out_channels),
        activation_source="model config" if activation else f"{out_channels or 1} output channel(s)",
        threshold=sidecar.get("threshold"),
        labels=list(sidecar.get("labels") or info_extra.pop("labels", [])),
        network_args=args,
        roi_size=sidecar.get("roi_size") or info_extra.pop("roi_size", None),
        size_divisor=divisor,
        spatial_dims=spatial_dims,
        preprocessing={k: sidecar[k] for k in ("normalization", "spacing", "orientation", "ct_window") if k in sidecar}
        or info_extra.pop("preprocessing", {}),
        notes=notes,
        warnings=warnings,
    )
    return LoadedModel(net.eval(), info)


def _network_object(value: Any, where: str) -> torch.nn.Module:
    """What a trusted config built for its network must be: a torch module."""
    if not isinstance(value, torch.nn.Module):
        raise ModelError(
            f"The model's {where} made a {type(value).__name__}, not a network", "The config's network is broken."
        )
    return value


def _network_from_config(network: Any, obj: Any, path: str, trust: bool):
    """(network holding its weights, its arguments, architecture text) from the ``config.network`` of a
    MONAIAuto3DSeg checkpoint: untrusted through ``configreader``, trusted through MONAI's ``ConfigParser``."""
    where = "the checkpoint's config (config.network)"
    try:
        check_plain(network)
    except DataLimitError as exc:
        raise ModelError(f"Refused {where}: {exc}", "The checkpoint's config is damaged or hostile.") from None
    if not trust:
        component = configreader.read_network(network, where)
        probe = configreader.build_probe(component)
        what = f"{component.name} of the checkpoint's config"
        net = configreader.build_network(component, find_network_weights(obj, probe, path), what, probe)
        return net, dict(component.args), f"{component.name} (from checkpoint config)"
    from monai.bundle import ConfigParser

    try:
        net = _network_object(ConfigParser({"network": network}).get_parsed_content("network"), "config.network")
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - trusted: anything MONAI raises
        raise ModelError(
            f"Cannot build the network from the checkpoint's config: {exc}",
            "The checkpoint needs a MONAI network target.",
        ) from None
    load_strict(net, find_network_weights(obj, net, path), type(net).__name__)
    args = {k: v for k, v in network.items() if k != "_target_"}
    return net, args, f"{type(net).__name__} (from checkpoint config)"


def _probe_out_channels(net: Any, in_channels: int, divisor: Optional[List[int]], spatial_dims: int) -> Optional[int]:
    """Output channels of a network that is not a recognisable UNet, from one run on a small zero input."""
    size = [max(int(d), 16) for d in (divisor or [32] * spatial_dims)]
    try:
        with torch.inference_mode():
            out = net(torch.zeros([1, in_channels] + size))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.ndim == spatial_dims + 2 else None
    except Exception:  # noqa: BLE001 - any failure: the output channels stay unknown until the run
        return None


def _load_torchscript(path: str) -> LoadedModel:
    try:
        net = torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ModelError(
            f"Cannot load TorchScript file {os.path.basename(path)}: {str(exc).splitlines()[0][:200]}",
            "Export it again with torch.jit.script/trace and torch.jit.save.",
        ) from None
    net.eval()
    conv = _first_conv(net)
    spatial_dims = int(conv.ndim - 2) if conv is not None else 3
    in_ch = int(conv.shape[1]) if conv is not None else None
    found = torchscript_unet(net)
    unet = found[0] if found else None
    notes: List[str] = []
    if found is not None:  # a MONAI UNet, scripted or traced: its settings and strides are in the archive
        spatial_dims, in_ch = unet["spatial_dims"], unet["in_channels"]
        divisor: Optional[List[int]] = size_divisor(unet["strides"], spatial_dims)
        # wrapped in another module (e.g. followed by a Sigmoid): what comes out is only known by running it
        out_ch = _probe_out_channels(net, in_ch, divisor, spatial_dims) if found[1] else unet["out_channels"]
        arch = "TorchScript UNet(channels={channels}, strides={strides}, res_units={num_res_units})".format(**unet)
        if found[1]:
            arch += f" inside {getattr(net, 'original_name', 'a module')}"
    else:
        divisor = network_divisor(net, spatial_dims)
        out_ch = _probe_out_channels(net, in_ch or 1, divisor, spatial_dims)
        arch = f"TorchScript {getattr(net, 'original_name', 'module')}"
        if divisor is None:
            notes.append(
                "the sizes this network accepts are unknown: windows are used exactly as given "
                "(if it needs sizes divisible by 2^depth, give such a --roi-size)"
            )
    info = ModelInfo(
        path=path,
        format="torchscript",
        architecture=arch,
        in_channels=in_ch,
        out_channels=out_ch,
        activation=default_activation(out_ch) if out_ch else "auto",
        activation_source=f"{out_ch} output channel(s)"
        if out_ch
        else "sigmoid for 1 output channel, softmax for more: the output channels are known after the run",
        spatial_dims=spatial_dims,
        size_divisor=divisor or 1,
        network_args=unet,
        notes=notes,
    )
    return LoadedModel(net, info)


def _load_bundle_dir(folder: str, trust: bool) -> LoadedModel:
    configs = bundle_mod.read_bundle_configs(folder)
    inference, origin = configs["inference"], configs["origin"]
    plan = None if trust else configreader.read_bundle(inference, origin)  # the config first: every refusal, at once
    named = bundle_mod.weights_file(folder, inference, origin)
    pt = named or os.path.join(folder, "models", "model.pt")
    ts = os.path.join(folder, "models", "model.ts")
    if not os.path.isfile(pt) and not os.path.isfile(ts):
        raise ModelError(
            f"Bundle {folder} has no models/model.pt or models/model.ts", "Put the trained weights in models/model.pt."
        )
    weights = safe_torch_load(pt) if os.path.isfile(pt) else None
    own = named and os.path.relpath(pt, folder) != os.path.join("models", "model.pt")
    notes: List[str] = (
        [f"weights: {os.path.relpath(pt, folder)} (named by the CheckpointLoader of the config)"] if own else []
    )
    if trust:
        parsed = bundle_mod.parse_trusted(folder, inference)
        net, inferer = _network_object(parsed["network"], "network_def"), parsed["inferer"]
        pre = parsed["preprocessing"]
        kept = bundle_mod.without_loaders(pre) if pre is not None else None
        nd = inference["network_def"]
        network_args = {k: v for k, v in nd.items() if k != "_target_"} if isinstance(nd, dict) else {}
        if weights is not None:
            load_strict(net, find_network_weights(weights, net, pt), f"bundle network {type(net).__name__}")
        notes.append(TRUSTED_NOTE)
    else:
        notes += plan.notes
        network_args = dict(plan.network.args)
        net = None
        if weights is not None:
            probe = configreader.build_probe(plan.network)
            what = f"bundle network {plan.network.name}"
            net = configreader.build_network(plan.network, find_network_weights(weights, probe, pt), what, probe)
        kept = configreader.build_preprocessing(plan.preprocessing) if plan.preprocessing is not None else None
        inferer = configreader.build(plan.inferer, "inferer") if plan.inferer is not None else None
    fmt = "bundle"
    if weights is None:
        net = _load_torchscript(ts).network
        fmt = "bundle (TorchScript)"
    post = bundle_mod.bundle_activation(inference.get("postprocessing"))
    labels = bundle_mod.bundle_labels(configs["metadata"])
    conv = _first_conv(net)
    out_ch = network_args.get("out_channels")
    out_ch = out_ch if isinstance(out_ch, int) and not isinstance(out_ch, bool) else None
    dims = int(conv.ndim - 2) if conv is not None else 3
    cleanup, honoured = bundle_mod.bundle_cleanup(inference.get("postprocessing"), out_ch, dims, post["argmax"])
    steps = bundle_mod.postprocessing_steps(inference.get("postprocessing"), honoured)
    largest = [f"{name} ({origin}: {where})" for name, where, _applied in steps if where in honoured]
    notes += [f"the bundle's {step} is applied: the largest component of every segment" for step in largest]
    info = ModelInfo(
        path=folder,
        format=fmt,
        architecture=type(net).__name__,
        in_channels=int(conv.shape[1]) if conv is not None else None,
        out_channels=out_ch,
        activation=post["activation"] or default_activation(out_ch),
        activation_source="bundle postprocessing" if post["activation"] else f"{out_ch or 1} output channel(s)",
        threshold=post["threshold"],
        labels=labels[1:] if post["activation"] == "softmax" and len(labels) == (out_ch or 0) else labels,
        network_args=network_args,
        roi_size=list(getattr(inferer, "roi_size", []) or []) or None,
        sw_batch_size=getattr(inferer, "sw_batch_size", None),
        overlap=_scalar(getattr(inferer, "overlap", None)),
        blend_mode=str(getattr(getattr(inferer, "mode", None), "value", getattr(inferer, "mode", None)) or "") or None,
        slice_axis=getattr(inferer, "spatial_dim", None),  # a SliceInferer's
        inferer=type(inferer).__name__ if inferer is not None else None,
        inferer_args=inferer_extra(inferer),
        size_divisor=network_divisor(net, dims) or 1,
        spatial_dims=dims,
        preprocessing={"bundle": [type(t).__name__ for t in kept.transforms] if kept is not None else []},
        notes=notes,
        warnings=bundle_mod.postprocessing_warnings(steps, origin) + bundle_mod.grid_order_warning(inference, origin),
        postprocessing=[name + ("" if applied else " (not applied)") for name, _where, applied in steps],
        cleanup=cleanup,
        skipped=bundle_mod.skipped_loaders(inference),
    )
    return LoadedModel(net.eval(), info, bundle_preprocessing=kept)


def inferer_extra(inferer: Any) -> Dict[str, Any]:
    """A bundle inferer's window settings beyond roi / overlap / batch / blend, where they differ from MONAI's
    defaults (``sliding_window_inference(padding_mode="constant", sigma_scale=0.125, cval=0.0)``)."""
    defaults = {"padding_mode": "constant", "sigma_scale": 0.125, "cval": 0.0}
    out: Dict[str, Any] = {}
    for key, default in defaults.items():
        value = getattr(inferer, key, default)
        value = getattr(value, "value", value)  # an enum's value
        if isinstance(value, (list, tuple)):
            value = [float(v) for v in value]
        if value != default and not (isinstance(value, list) and all(v == default for v in value)):
            out[key] = value if isinstance(value, (str, list)) else float(value)
    return out


def _scalar(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return float(value[0])
    return float(value)


def load_model(
    model: Union[str, ModelSpec],
    trust_bundle: bool = False,
    network_config: Optional[str] = None,
    strides: Optional[List[int]] = None,
) -> LoadedModel:
    """Load a bundle folder/.zip, TorchScript file or checkpoint (.pt/.pth/.ckpt) onto the CPU.

    ``model`` is a ``ModelSpec``, or a path with the spec's options as keywords."""
    spec = model if isinstance(model, ModelSpec) else ModelSpec(str(model), trust_bundle, network_config, strides)
    if spec.name is not None:
        raise ModelError(
            f"{spec.name!r} is a server model name, and this computer runs model files",
            "Run on the server that has it (RemoteRunner / --server), or give the path of a checkpoint, TorchScript "
            "file or MONAI bundle.",
        )
    path, trust_bundle = spec.path, spec.trust_bundle
    if not os.path.exists(path):
        raise ModelError(
            f"Model not found: {path}",
            "Give a checkpoint file (.pt/.pth/.ckpt), a TorchScript file or a MONAI bundle folder/.zip.",
        )
    if os.path.isdir(path):
        if not bundle_mod.is_bundle_dir(path):
            raise ModelError(
                f"{path} is a folder but not a MONAI bundle (no configs/metadata.json)",
                "Point --model to the bundle's root folder or to a checkpoint file.",
            )
        return _load_bundle_dir(path, trust_bundle)
    if zipfile.is_zipfile(path) and not is_torchscript(path):
        with zipfile.ZipFile(path) as zf:
            is_bundle = bundle_root(zf.namelist()) is not None
        if is_bundle:
            with extracted_bundle(path, everything=trust_bundle) as folder:
                loaded = _load_bundle_dir(folder, trust_bundle)
            loaded.info.path = path
            return loaded
    if is_torchscript(path):
        return _load_torchscript(path)
    return _load_checkpoint(spec)
