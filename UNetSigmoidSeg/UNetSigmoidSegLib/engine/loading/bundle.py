"""Reading MONAI bundles: their configs as bounded plain data, and what inference needs from them.

A bundle config may hold ``$`` Python expressions, ``_target_`` of any importable object and special keys
that MONAI's ``ConfigParser`` would run. Untrusted (the default), ``configreader`` reads ``network_def``,
``preprocessing`` and ``inferer`` with the allow-list and nothing else is interpreted; ``postprocessing`` and
``metadata.json`` are only read as data (activation, threshold, argmax, label names). ``parse_trusted``
(``--trust-bundle``) parses the whole config with MONAI's ``ConfigParser``, i.e. runs its code.
"""

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...errors import ModelError
from ..safety import allowlist
from ..safety.safeload import read_data_file

CONFIG_EXTENSIONS = (".json", ".yaml", ".yml")
LOADERS = ("LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureChannelFirst")


def is_bundle_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "configs", "metadata.json"))


def config_name(folder: str, stem: str) -> str:
    """``configs/<stem>.json`` / ``.yaml`` / ``.yml``: the one the bundle has (``.json`` when none)."""
    for ext in CONFIG_EXTENSIONS:
        if os.path.isfile(os.path.join(folder, "configs", stem + ext)):
            return f"configs/{stem}{ext}"
    return f"configs/{stem}.json"


def _read_config_file(folder: str, stem: str) -> Optional[Any]:
    name = config_name(folder, stem)
    path = os.path.join(folder, *name.split("/"))
    if os.path.isfile(path):
        return read_data_file(path, name, "Fix the bundle's config file (plain JSON/YAML).")
    return None


def weights_file(folder: str, inference: Dict[str, Any], origin: str) -> Optional[str]:
    """The weights file the config's ``CheckpointLoader`` names (``load_path``), inside the bundle, or None when the
    config names none. ``@bundle_root`` is the bundle folder; a relative path is taken from it; a path that leaves
    the bundle (``..``, an absolute path, a link out) or names no file is a ``ModelError`` naming it."""
    from ..safety.configreader import BUNDLE_ROOT, checkpoint_path

    named = checkpoint_path(inference, origin)
    if named is None:
        return None
    shown = named.replace(BUNDLE_ROOT, "<bundle>")
    root = os.path.realpath(folder)
    outside = ModelError(
        f"{origin}: the CheckpointLoader's load_path {shown!r} lies outside the bundle",
        "A bundle's weights must be inside its folder (e.g. models/model.pt).",
    )
    if named.startswith(BUNDLE_ROOT):
        relative = named[len(BUNDLE_ROOT) :].lstrip("/\\")
    elif os.path.isabs(named):
        raise outside
    else:
        relative = named
    path = os.path.realpath(os.path.join(root, relative))
    if not path.startswith(root + os.sep):
        raise outside
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(root, "models", "model.ts")):
            return None  # the TorchScript release of the bundle: its network and weights are in model.ts
        raise ModelError(
            f"{origin}: the CheckpointLoader's load_path names {shown}, which is not a file in the bundle",
            "Put the trained weights there, or fix load_path.",
        )
    return path


def read_bundle_configs(folder: str) -> Dict[str, Any]:
    """``{"metadata": dict, "inference": dict, "origin": "configs/inference.<ext>"}`` of a bundle folder, read within
    the size and depth limits."""
    metadata = _read_config_file(folder, "metadata")
    inference = _read_config_file(folder, "inference")
    if inference is None:
        raise ModelError(
            f"Bundle {folder} has no configs/inference.json",
            "A MONAI bundle needs configs/inference.json with network_def.",
        )
    for name, value in (("inference", inference), ("metadata", metadata)):
        if value is not None and not isinstance(value, dict):
            raise ModelError(
                f"Bundle {folder}: configs/{name} must hold a mapping (a JSON object), not a {type(value).__name__}",
                "Fix the bundle's config file.",
            )
    if "network_def" not in inference:
        raise ModelError(
            f"Bundle {folder}: configs/inference has no 'network_def'",
            "Add the network definition under 'network_def'.",
        )
    return {"metadata": metadata or {}, "inference": inference, "origin": config_name(folder, "inference")}


def _without_loading(node: Any) -> Any:
    """``node`` with every image-loading step of a list disabled (``"_disabled_": true``): the product holds the image
    already, and building a loader may need a reader that is not installed (``LoadImaged(reader="ITKReader")``)."""
    if isinstance(node, dict):
        return {k: _without_loading(v) for k, v in node.items()}
    if isinstance(node, list):
        return [
            dict(v, _disabled_=True)
            if isinstance(v, dict) and str(v.get("_target_", "")).endswith(LOADERS[:2])
            else _without_loading(v)
            for v in node
        ]
    return node


def parse_trusted(folder: str, inference: Dict[str, Any]) -> Dict[str, Any]:
    """``{"network", "preprocessing", "inferer"}`` instantiated by MONAI's ``ConfigParser`` — runs the config's code.

    Only for ``--trust-bundle``. As MONAI's runner does, the bundle folder is importable meanwhile (its ``scripts``
    package); image loaders are not built (the image is given)."""
    import sys

    from monai.bundle import ConfigParser

    parser = ConfigParser(_without_loading(dict(inference)))
    parser["bundle_root"] = folder
    out: Dict[str, Any] = {}
    sys.path.insert(0, folder)
    try:
        out["network"] = parser.get_parsed_content("network_def")
        out["preprocessing"] = parser.get_parsed_content("preprocessing") if "preprocessing" in parser.config else None
        out["inferer"] = parser.get_parsed_content("inferer") if "inferer" in parser.config else None
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure inside MONAI's instantiation
        raise ModelError(
            f"Cannot instantiate the bundle's config: {type(exc).__name__}: {str(exc)[:300]}",
            f"Check network_def / preprocessing in {config_name(folder, 'inference')}.",
        ) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
        inside = (
            os.path.realpath(folder) + os.sep
        )  # its modules go too: another bundle's ``scripts`` is another package
        for name, module in list(sys.modules.items()):
            if os.path.realpath(getattr(module, "__file__", None) or os.sep).startswith(inside):
                del sys.modules[name]
    return out


def without_loaders(preprocessing: Any) -> Any:
    """The bundle's preprocessing ``Compose`` minus image loading / channel-first steps (the caller
    already holds the image in MONAI's convention). Runs on the data key ``"image"``."""
    from monai.transforms import Compose

    steps = getattr(preprocessing, "transforms", [preprocessing])
    return Compose([t for t in steps if type(t).__name__ not in LOADERS])


def _targets(node: Any) -> List[dict]:
    """All dicts with a ``_target_`` below ``node`` (depth first; the data was depth-checked when read)."""
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


def _postprocessing_name(target: Any) -> Optional[str]:
    """``Activationsd`` / ``AsDiscreted`` (and array forms) for their exact MONAI spellings, else None."""
    if not isinstance(target, str):
        return None
    short = target[len("monai.transforms.") :] if target.startswith("monai.transforms.") else target
    for prefix in ("post.dictionary.", "post.array."):
        short = short[len(prefix) :] if short.startswith(prefix) else short
    return short if short in allowlist.POSTPROCESSING_READ else None


def bundle_activation(postprocessing: Any) -> Dict[str, Any]:
    """Activation, threshold and argmax read as data from the bundle's postprocessing (nothing is built):
    only literal ``true`` flags and numeric thresholds of ``Activations(d)`` / ``AsDiscrete(d)`` count."""
    result: Dict[str, Any] = {"activation": None, "threshold": None, "argmax": False}
    for node in _targets(postprocessing):
        name = _postprocessing_name(node["_target_"])
        if name in ("Activationsd", "Activations"):
            if node.get("sigmoid") is True:
                result["activation"] = "sigmoid"
            elif node.get("softmax") is True:
                result["activation"] = "softmax"
        if name in ("AsDiscreted", "AsDiscrete"):
            threshold = node.get("threshold")
            if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold):
                result["threshold"] = float(threshold)
            if node.get("argmax") is True:
                result["argmax"] = True
    if result["argmax"]:
        result["threshold"] = None  # after argmax a threshold binarises labels; it is not a confidence
        if result["activation"] is None:
            result["activation"] = "softmax"
    elif result["activation"] is None and result["threshold"] is not None:
        result["activation"] = "none"  # thresholded without an activation: the network outputs probabilities
    return result


# Postprocessing steps this product does itself (activation, threshold / argmax, inversion to the input grid) or
# that do not change the mask (types, copies, saving): an allow-list; any other step is named in a warning.
POST_HONOURED = (
    "Activations AsDiscrete Invert SaveImage EnsureType ToTensor ToNumpy ToDevice CopyItems DeleteItems "
    "Compose CastToType SqueezeDim Identity"
).split()
POST_NEAREST = {
    "KeepLargestConnectedComponent": "--largest-component (panel: Largest component)",
    "FillHoles": "--fill-holes (panel: Fill holes)",
    "RemoveSmallObjects": "--min-island-mm3 (panel: Remove islands)",
}


def _steps(section: Any, root: str = "postprocessing") -> List[Tuple[str, str, dict]]:
    """``(class name, key path, node)`` of each ``_target_`` in the config section ``root``, depth first (at most
    50)."""
    out: List[Tuple[str, str, dict]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str):
                out.append((target.rsplit(".", 1)[-1], where, node))
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(section, root)
    return out[:50]


def postprocessing_steps(postprocessing: Any, honoured: Sequence[str] = ()) -> List[Tuple[str, str, bool]]:
    """``(name, key path, applied)`` of each step of the bundle's postprocessing (read as data, nothing built):
    applied when this product does it itself or it does not change the mask (``POST_HONOURED``), or its key path is
    in ``honoured`` (``bundle_cleanup``)."""
    out = []
    for short, where, _node in _steps(postprocessing):
        base = short[:-1] if short.endswith("d") and short[:-1] in POST_HONOURED + list(POST_NEAREST) else short
        out.append((short, where, base in POST_HONOURED or where in honoured))
    return out


KEEP_LARGEST_KEYS = {"_target_", "keys", "allow_missing_keys", "applied_labels", "is_onehot", "independent"}
KEEP_LARGEST_KEYS |= {"connectivity", "num_components"}


def bundle_cleanup(
    postprocessing: Any, out_channels: Optional[int], spatial_dims: int, argmax: bool
) -> Tuple[Dict[str, Any], List[str]]:
    """The clean-up the bundle's postprocessing asks for that this product gives exactly, and the key paths of those
    steps: a ``KeepLargestConnectedComponent(d)`` after the ``AsDiscrete`` that makes the masks, with MONAI's
    defaults (independent, one component, full connectivity) over every segment — the labels 1… of an argmax label
    map, label 1 of a one-channel mask, every channel of a multi-channel one — is ``Cleanup.largest_component``
    (``engine.running.postprocess.keep_largest``, MONAI's rule). Any other form keeps its warning. ``argmax``: the
    postprocessing makes a label map (``bundle_activation``)."""
    steps = _steps(postprocessing)
    discrete = [i for i, (short, _w, _n) in enumerate(steps) if short in ("AsDiscrete", "AsDiscreted")]
    if out_channels is None or not discrete:
        return {}, []
    label_map = argmax or out_channels == 1
    expected = set(range(1, out_channels)) if argmax else set(range(out_channels))
    expected = {1} if out_channels == 1 else expected
    honoured = []
    for i, (short, where, node) in enumerate(steps):
        if short not in ("KeepLargestConnectedComponent", "KeepLargestConnectedComponentd") or i < discrete[0]:
            continue
        labels = node.get("applied_labels")
        labels = [labels] if isinstance(labels, int) else labels
        plain = isinstance(labels, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in labels)
        covers = plain and expected <= set(labels) and (label_map or set(labels) <= expected)
        if (
            set(node) <= KEEP_LARGEST_KEYS
            and node.get("independent", True) is True
            and node.get("num_components", 1) == 1
            and node.get("connectivity") in (None, spatial_dims)
            and node.get("is_onehot") is None
            and (covers or (labels is None and label_map))
        ):
            honoured.append(where)
    return ({"largest_component": True} if honoured else {}), honoured


def _section(inference: Dict[str, Any], key: str) -> Any:
    """``inference[key]``, an alias (``"$@transforms"``) followed one level, also as a ``Compose``'s transforms."""

    def alias(value: Any) -> Any:
        if isinstance(value, str) and value.lstrip("$").startswith("@"):
            return inference.get(value.lstrip("$")[1:])
        return value

    value = alias(inference.get(key))
    if isinstance(value, dict) and "transforms" in value:
        value = {**value, "transforms": alias(value["transforms"])}
    return value


def skipped_loaders(inference: Dict[str, Any]) -> List[str]:
    """The bundle's image loading steps, which this product leaves out (it is given the image)."""
    return [
        short for short, _w, _n in _steps(_section(inference, "preprocessing"), "preprocessing") if short in LOADERS
    ]


RESAMPLING = {"Spacing", "Spacingd", "Resize", "Resized", "Zoom", "Zoomd", "ResampleToMatch", "ResampleToMatchd"}


def grid_order_warning(inference: Dict[str, Any], origin: str) -> List[str]:
    """The bundle makes its masks (``AsDiscrete``) before ``Invertd`` after a resampling preprocessing: it thresholds
    and cleans on its own grid, this product on the input grid (it inverts the probabilities first), so borders can
    differ from ``monai.bundle run`` by a voxel. Said, never silent."""
    names = [short for short, _where, _node in _steps(inference.get("postprocessing"))]
    pre = _steps(_section(inference, "preprocessing"), "preprocessing")
    resampled = [short for short, _w, _n in pre if short in RESAMPLING]
    inverted = [i for i, short in enumerate(names) if short in ("Invertd", "Invert")]
    discrete = [i for i, short in enumerate(names) if short in ("AsDiscrete", "AsDiscreted")]
    if not (resampled and inverted and discrete and discrete[0] < inverted[0]):
        return []
    return [
        f"the bundle's postprocessing ({origin}) makes its masks before Invertd, on the grid of its {resampled[0]}; "
        "here the probabilities are inverted to the input grid first and thresholded and cleaned there: mask "
        "borders can differ from `monai.bundle run` by a voxel"
    ]


def postprocessing_warnings(steps: List[Tuple[str, str, bool]], origin: str) -> List[str]:
    """One warning per step (``postprocessing_steps``) that this product does not apply."""
    out = []
    for short, where, applied in steps:
        if not applied:
            nearest = POST_NEAREST.get(short[:-1] if short.endswith("d") else short)
            out.append(
                f"the bundle's postprocessing step {short} ({origin}: {where}) is not applied: the masks can "
                "differ from `monai.bundle run`" + (f"; the nearest here is {nearest}" if nearest else "")
            )
    return out[:20]


def bundle_labels(metadata: Dict[str, Any]) -> List[str]:
    """Output channel names from ``network_data_format.outputs.pred.channel_def`` (keys "0", "1", …)."""
    try:
        channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError):
        return []
    where = "configs/metadata.json: network_data_format.outputs.pred.channel_def"
    fix = 'channel_def maps output channel numbers to names, e.g. {"0": "background", "1": "liver"}.'
    if not isinstance(channel_def, dict):
        raise ModelError(f"{where} must be a mapping, got {type(channel_def).__name__}", fix)
    items = []
    for key, name in channel_def.items():
        if not str(key).strip().isdigit() or int(key) > 4096:
            raise ModelError(f"{where} has the key {key!r:.40}, which is not an output channel number", fix)
        if not isinstance(name, (str, int, float)) or isinstance(name, bool):
            raise ModelError(f"{where}[{key!r}] must be a name, got {type(name).__name__}", fix)
        items.append((int(key), str(name)))
    return [v for _, v in sorted(items)]
