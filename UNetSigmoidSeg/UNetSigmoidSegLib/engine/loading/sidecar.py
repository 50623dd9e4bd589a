"""The settings that travel with a plain checkpoint, checked as untrusted data.

Two sources: the JSON next to the checkpoint (``model.pt`` → ``model.json``, or ``--network-config``) and
the ``config`` inside a MONAIAuto3DSeg checkpoint. Every field is checked by type and range (the option
fields with the very checks of ``SegmentOptions``, the UNet settings with the allow-list's ``UNet`` entry);
an unknown field or a wrong type is a ``ModelError`` naming it, never a traceback or a silently ignored value.
"""

import os
from typing import Any, Dict, Optional

from ...contract.options import SegmentOptions
from ...errors import ModelError, OptionError
from ..safety.allowlist import NETWORK_ARGS
from ..safety.kinds import Refused
from ..safety.safeload import read_data_file

SIDECAR_FIELDS = (
    "network",
    "labels",
    "activation",
    "threshold",
    "roi_size",
    "normalization",
    "ct_window",
    "orientation",
    "spacing",
)
EXAMPLE = '{"network": {"strides": [2, 2, 1]}, "labels": ["liver"], "activation": "sigmoid", "threshold": 0.4}'


def read_sidecar(checkpoint: str, explicit: Optional[str]) -> Dict[str, Any]:
    """The checked JSON next to ``checkpoint`` (or ``explicit``); ``{}`` when there is none."""
    path = explicit or os.path.splitext(checkpoint)[0] + ".json"
    if not os.path.isfile(path):
        if explicit:
            raise ModelError(f"Network config not found: {explicit}", "Check the --network-config path.")
        return {}
    name = os.path.basename(path)
    data = read_data_file(path, name, "Fix the JSON next to the checkpoint, e.g. " + EXAMPLE)
    return check_sidecar(data, name)


def check_sidecar(data: Any, name: str) -> Dict[str, Any]:
    """``data`` with every field checked and normalised (see the module docstring)."""
    if not isinstance(data, dict):
        raise ModelError(f"{name} must hold a JSON object, not a {type(data).__name__}", "e.g. " + EXAMPLE)
    unknown = sorted(set(data) - set(SIDECAR_FIELDS))
    if unknown:
        raise ModelError(
            f"{name} has unknown field(s): {', '.join(map(str, unknown))}", f"Known: {', '.join(SIDECAR_FIELDS)}."
        )
    out: Dict[str, Any] = {}
    if "network" in data:
        out["network"] = check_unet_settings(data["network"], f"{name}: network")
    options = {k: data[k] for k in SIDECAR_FIELDS[1:] if k in data and data[k] is not None}
    checked = _as_options(options, name)
    out.update({k: getattr(checked, k) for k in options})
    if "activation" in out and out["activation"] == "auto":
        del out["activation"]
    return out


def _as_options(values: Dict[str, Any], name: str) -> SegmentOptions:
    try:
        if isinstance(values.get("labels"), str):
            raise OptionError(f"Labels must be a list of names, got {values['labels']!r}", 'e.g. ["liver", "tumour"]')
        return SegmentOptions(**values)
    except OptionError as exc:
        raise ModelError(f"{name} is invalid: {exc.message}", exc.hint) from None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{name} is invalid: {exc}", "e.g. " + EXAMPLE) from None


def check_unet_settings(network: Any, where: str) -> Dict[str, Any]:
    """UNet keyword arguments from untrusted data, each checked with the allow-list's ``UNet`` entry."""
    if not isinstance(network, dict):
        raise ModelError(f"{where} must be a JSON object of UNet settings", "e.g. " + EXAMPLE)
    table = NETWORK_ARGS["UNet"]
    out = {}
    for key, value in network.items():
        if key not in table:
            raise ModelError(f"{where}.{key} is not a UNet setting", f"Known: {', '.join(table)}.")
        try:
            out[key] = table[key].check(value, f"{where}.{key}")
        except Refused as exc:
            raise ModelError(f"{exc}", f"Fix it in the JSON next to the checkpoint, e.g. {EXAMPLE}") from None
    return out


def auto3dseg_defaults(config: Dict[str, Any], name: str = "the checkpoint's config") -> Dict[str, Any]:
    """Defaults from the ``config`` of a MONAIAuto3DSeg-style checkpoint, each field checked."""
    out: Dict[str, Any] = {}
    if "sigmoid" in config:
        if not isinstance(config["sigmoid"], bool):
            raise ModelError(f"{name}: sigmoid must be true or false", "The checkpoint's config is damaged.")
        out["activation"] = "sigmoid" if config["sigmoid"] else "softmax"
    names = config.get("class_names")
    if names:
        if not isinstance(names, list):
            raise ModelError(f"{name}: class_names must be a list", "The checkpoint's config is damaged.")
        out["labels"] = [_class_name(n, name) for n in names]
    pre: Dict[str, Any] = {}
    mode = config.get("normalize_mode")
    values: Dict[str, Any] = {}
    if config.get("roi_size"):
        values["roi_size"] = config["roi_size"]
    if config.get("resample_resolution"):  # MONAIAuto3DSeg resamples whenever a resolution is given
        values["spacing"] = config["resample_resolution"]
    if mode in ("range", "ct") and config.get("intensity_bounds"):
        values["ct_window"] = config["intensity_bounds"]
    checked = _as_options(values, name)
    if "roi_size" in values:
        out["roi_size"] = checked.roi_size
    if "spacing" in values:
        pre["spacing"] = checked.spacing
    if config.get("orientation_ras") is True:
        pre["orientation"] = "RAS"
    if mode in ("meanstd", "mri"):
        pre["normalization"] = "zscore-nonzero"
    elif "ct_window" in values:
        pre["normalization"], pre["ct_window"] = "range-sigmoid", checked.ct_window
    out["preprocessing"] = pre
    return out


def _class_name(entry: Any, name: str) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("name"), (str, int)):
        return str(entry["name"])
    if isinstance(entry, (str, int)) and not isinstance(entry, bool):
        return str(entry)
    raise ModelError(f"{name}: class_names holds {entry!r:.40}, not a name", "The checkpoint's config is damaged.")
