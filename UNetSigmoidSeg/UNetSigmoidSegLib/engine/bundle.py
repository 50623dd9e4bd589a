"""Reading MONAI bundles without running their code.

A bundle config may contain ``$`` Python expressions and ``_target_`` of any importable class;
MONAI's ``ConfigParser`` would run them. Untrusted (the default), only the parts this product
needs (``network_def``, ``preprocessing``, ``inferer`` and what they reference with ``@``) are copied
into a fresh parser, after checking that they hold no ``$`` / ``%``
strings and only MONAI targets; ``postprocessing`` is only read as data (activation, threshold).
``trust=True`` parses the whole config as MONAI would.
"""

import json
import os
import re
from typing import Any, Dict, List, Optional, Set

from ..errors import ModelError

NEEDED = ("network_def", "preprocessing", "inferer")  # postprocessing is only read as data, never instantiated
TRUST_HINT = "Inspect the config; if you trust its author, pass --trust-bundle (panel: Advanced → Trust bundle code)."


def is_bundle_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "configs", "metadata.json"))


def _read_config_file(folder: str, stem: str) -> Optional[dict]:
    for ext in (".json", ".yaml", ".yml"):
        path = os.path.join(folder, "configs", stem + ext)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                if ext == ".json":
                    return json.load(f)
                import yaml  # MONAI reads YAML configs with PyYAML too

                return yaml.safe_load(f)
        except ImportError:
            raise ModelError(f"{path} is YAML and PyYAML is not installed.", "pip install pyyaml") from None
        except ValueError as exc:
            raise ModelError(
                f"Cannot parse {path}: {exc}", "Fix the bundle's config file (it must be valid JSON/YAML)."
            ) from None
    return None


def read_bundle_configs(folder: str) -> Dict[str, Any]:
    """``{"metadata": …, "inference": …}`` of a bundle folder."""
    metadata = _read_config_file(folder, "metadata")
    inference = _read_config_file(folder, "inference")
    if inference is None:
        raise ModelError(
            f"Bundle {folder} has no configs/inference.json",
            "A MONAI bundle needs configs/inference.json with network_def.",
        )
    if "network_def" not in inference:
        raise ModelError(
            f"Bundle {folder}: configs/inference has no 'network_def'",
            "Add the network definition under 'network_def'.",
        )
    return {"metadata": metadata or {}, "inference": inference}


_REF = re.compile(r"^@([\w:#]+)$")


def _walk(node: Any, where: str, refs: Set[str], problems: List[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                if value.startswith(("$", "%", "@")) or ("." in value and not value.startswith("monai.")):
                    problems.append(f"{where}._target_ = {value!r} is not a MONAI class")
            _walk(value, f"{where}.{key}", refs, problems)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk(value, f"{where}[{i}]", refs, problems)
    elif isinstance(node, str):
        if node.startswith(("$", "%")):
            problems.append(f"{where} = {node[:60]!r} is a Python expression / file macro")
        else:
            m = _REF.match(node)
            if m:
                refs.add(re.split(r"::|#", m.group(1))[0])


def safe_subconfig(config: Dict[str, Any], needed=NEEDED) -> Dict[str, Any]:
    """The needed top-level ids and everything they reference, checked free of code."""
    todo = [k for k in needed if k in config]
    chosen: Dict[str, Any] = {}
    problems: List[str] = []
    while todo:
        key = todo.pop()
        if key in chosen:
            continue
        if key not in config:
            problems.append(f"@{key} is referenced but not defined")
            continue
        chosen[key] = config[key]
        refs: Set[str] = set()
        _walk(config[key], key, refs, problems)
        todo.extend(r for r in refs if r not in chosen)
    if problems:
        raise ModelError(
            "The bundle config would run code, which is off for untrusted bundles: "
            + "; ".join(problems[:3])
            + ("…" if len(problems) > 3 else "")
            + ". Nothing was run.",
            TRUST_HINT,
        )
    return chosen


def parse_bundle(folder: str, trust: bool = False) -> Dict[str, Any]:
    """Instantiate the needed parts of a bundle's inference config.

    Returns ``{"network": nn.Module, "preprocessing": Compose | None, "inferer": object | None,
    "postprocessing_config": raw dict | None, "inference": raw config, "metadata": dict}``.
    """
    from monai.bundle import ConfigParser

    configs = read_bundle_configs(folder)
    inference = configs["inference"]
    if trust:
        parser = ConfigParser(dict(inference))
        parser["bundle_root"] = folder
    else:
        parser = ConfigParser(safe_subconfig(inference))
    out: Dict[str, Any] = {"inference": inference, "metadata": configs["metadata"]}
    try:
        out["network"] = parser.get_parsed_content("network_def")
        out["preprocessing"] = parser.get_parsed_content("preprocessing") if "preprocessing" in parser.config else None
        out["inferer"] = parser.get_parsed_content("inferer") if "inferer" in parser.config else None
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure inside MONAI's instantiation
        raise ModelError(
            f"Cannot instantiate the bundle's config: {type(exc).__name__}: {str(exc)[:300]}",
            "Check network_def / preprocessing in configs/inference.json.",
        ) from None
    out["postprocessing_config"] = inference.get("postprocessing")
    return out


LOADERS = ("LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureChannelFirst")


def without_loaders(preprocessing: Any) -> Any:
    """The bundle's preprocessing ``Compose`` minus image loading / channel-first steps (the caller
    already holds the image in MONAI's convention). Runs on the data key ``"image"``."""
    from monai.transforms import Compose

    steps = getattr(preprocessing, "transforms", [preprocessing])
    return Compose([t for t in steps if type(t).__name__ not in LOADERS])


def _targets(node: Any) -> List[dict]:
    """All dicts with a ``_target_`` below ``node`` (depth first)."""
    found: List[dict] = []
    if isinstance(node, dict):
        if "_target_" in node:
            found.append(node)
        for v in node.values():
            found.extend(_targets(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(_targets(v))
    return found


def _short(target: str) -> str:
    return target.split(".")[-1]


def bundle_activation(postprocessing: Any) -> Dict[str, Any]:
    """Activation, threshold and argmax read from the bundle's postprocessing transforms."""
    result: Dict[str, Any] = {"activation": None, "threshold": None, "argmax": False}
    for node in _targets(postprocessing):
        name = _short(str(node["_target_"]))
        if name in ("Activationsd", "Activations"):
            if node.get("sigmoid") is True:
                result["activation"] = "sigmoid"
            elif node.get("softmax") is True:
                result["activation"] = "softmax"
        if name in ("AsDiscreted", "AsDiscrete"):
            if isinstance(node.get("threshold"), (int, float)) and not isinstance(node.get("threshold"), bool):
                result["threshold"] = float(node["threshold"])
            if node.get("argmax") is True:
                result["argmax"] = True
    if result["argmax"]:
        result["threshold"] = None  # after argmax a threshold binarises labels; it is not a confidence
        if result["activation"] is None:
            result["activation"] = "softmax"
    elif result["activation"] is None and result["threshold"] is not None:
        result["activation"] = "none"  # thresholded without an activation: the network outputs probabilities
    return result


def bundle_labels(metadata: Dict[str, Any]) -> List[str]:
    """Output channel names from ``network_data_format.outputs.pred.channel_def``."""
    try:
        channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError):
        return []
    items = sorted(((int(k), str(v)) for k, v in channel_def.items()), key=lambda kv: kv[0])
    return [v for _, v in items]
