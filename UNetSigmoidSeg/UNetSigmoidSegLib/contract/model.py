"""Which network a run uses (``ModelSpec``: a path and how to load it) and what was found in it (``ModelInfo``).

A ``ModelSpec`` names a model file on this computer (``path``) or one of a remote server's models (``name``,
see ``remote/``): a name is never a path on either side. Plain Python: the Slicer panel imports this before
torch is installed.
"""

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import OptionError
from .options import _from_dict, check_number

MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".ts", ".zip")  # model files; a bundle is a folder or a .zip
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")
NAME_HINT = "A model name is letters, digits, '-', '_' and inner dots (no path, no '..', no model-file suffix)."


def check_model_name(name: Any) -> str:
    """``name`` as a server model name, or an ``OptionError``: a name can never be read as a path."""
    text = name if isinstance(name, str) else ""
    if (
        not text
        or len(text) > 128
        or not NAME_PATTERN.fullmatch(text)
        or text.lower().endswith(MODEL_SUFFIXES + (".json",))
    ):
        raise OptionError(f"{name!r} is not a model name", NAME_HINT)
    return text


def looks_like_path(text: str) -> bool:
    """Whether ``text`` (a ``--model`` value) is meant as a file or folder here rather than a server model name:
    it holds a path separator or ends with a model-file suffix, or is not a valid model name."""
    if os.sep in text or "/" in text or (os.altsep and os.altsep in text):
        return True
    try:
        check_model_name(text)
    except OptionError:
        return True
    return False


@dataclass
class ModelSpec:
    """A model to load: a checkpoint (.pt/.pth/.ckpt), a TorchScript file or a MONAI bundle folder / .zip.

    path: the model file or bundle folder on this computer; or else
    name: one of a remote server's models (``RemoteRunner``); the server maps it to a file in its own folder.
    trust_bundle: run the bundle's own code with MONAI's ConfigParser (only for models whose author you trust).
    network_config: JSON with UNet settings / labels for a plain checkpoint (default: the JSON next to it).
    strides: UNet strides per level for a plain state_dict whose strides are not 2.
    """

    path: str = ""
    trust_bundle: bool = False
    network_config: Optional[str] = None
    strides: Optional[List[int]] = None
    name: Optional[str] = None

    def __post_init__(self) -> None:
        if self.name is not None:
            self.name = check_model_name(self.name)
            if self.path:
                raise OptionError("Give a model path or a server model name, not both", NAME_HINT)
            if self.trust_bundle or self.network_config is not None:
                raise OptionError(
                    f"Server model {self.name!r}: trust and network config are the server's to decide",
                    "Leave trust_bundle and network_config unset for a server model.",
                )
        elif not isinstance(self.path, str) or not self.path:
            raise OptionError(
                f"Model path {self.path!r} is not a path", "Give a checkpoint, TorchScript file or bundle."
            )
        else:
            self.path = os.path.abspath(os.path.expanduser(self.path))
        self.trust_bundle = bool(self.trust_bundle)
        if self.network_config is not None:
            self.network_config = os.path.abspath(os.path.expanduser(str(self.network_config)))
        if self.strides is not None:
            values = [self.strides] if isinstance(self.strides, (int, float)) else list(self.strides)
            hint = "Give one stride per UNet level, each ≥ 1, e.g. --strides 2 2 1."
            if not values:
                raise OptionError("Strides are empty", hint)
            self.strides = [int(check_number("strides", v, integer=True, lo=1, hi=16, hint=hint)) for v in values]

    @property
    def reference(self) -> str:
        """The path, or the server model name: what messages and node names show."""
        return self.name if self.name is not None else self.path

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelSpec":
        return _from_dict(cls, data, "model option")

    def cache_key(self) -> Tuple[str, int, str]:
        """Key for caching the loaded network: the path, the newest modification time (the file and the JSON
        next to it, or any file in a bundle folder) and the load options. Editing any of them means a reload.
        A server model name keys as ``name:<name>`` (it is loaded on the server, never here)."""
        if self.name is not None:
            options = {k: v for k, v in self.to_dict().items() if k not in ("path", "name")}
            return f"name:{self.name}", 0, json.dumps(options, sort_keys=True)
        candidates = [self.path, os.path.splitext(self.path)[0] + ".json", self.network_config or ""]
        if os.path.isdir(self.path):
            candidates = [os.path.join(root, name) for root, _dirs, files in os.walk(self.path) for name in files]
        mtime = max([os.stat(c).st_mtime_ns for c in candidates if c and os.path.isfile(c)] or [0])
        options = {k: v for k, v in self.to_dict().items() if k not in ("path", "name")}
        return self.path, mtime, json.dumps(options, sort_keys=True)


@dataclass
class ModelInfo:
    """What was detected in a model file, and the inference defaults it brings."""

    path: str
    format: str  # "bundle" | "bundle (TorchScript)" | "torchscript" | "checkpoint"
    architecture: str
    in_channels: Optional[int]
    out_channels: Optional[int]
    activation: str  # applied when the user asks for "auto": sigmoid | softmax | none | auto (by the output channels)
    activation_source: str
    threshold: Optional[float] = None
    labels: List[str] = field(default_factory=list)  # segment names
    network_args: Optional[Dict[str, Any]] = None
    roi_size: Optional[List[int]] = None
    sw_batch_size: Optional[int] = None
    overlap: Optional[float] = None
    blend_mode: Optional[str] = None
    size_divisor: Union[int, List[int]] = 1  # window sizes must be multiples of this (one value, or one per axis)
    spatial_dims: int = 3  # 2: a 2-D network, run slice by slice with MONAI's SliceInferer
    slice_axis: Optional[int] = None  # 2-D: the slice axis the model brings (a bundle's SliceInferer spatial_dim)
    inferer: Optional[str] = None  # a bundle's inferer class (SimpleInferer: the whole image in one window)
    inferer_args: Dict[str, Any] = field(default_factory=dict)  # a bundle's padding_mode / sigma_scale / cval
    postprocessing: List[str] = field(default_factory=list)  # a bundle's steps, "(not applied)" where so
    cleanup: Dict[str, Any] = field(default_factory=dict)  # Cleanup fields the model brings (a bundle's steps)
    skipped: List[str] = field(default_factory=list)  # a bundle's steps left out: it is given the image (loaders)
    preprocessing: Dict[str, Any] = field(default_factory=dict)  # normalization / spacing / orientation / ct_window
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # what may make a result wrong: repeated with every run

    def divisors(self, n: int) -> List[int]:
        """``size_divisor`` as one value per spatial axis (``n`` axes)."""
        d = self.size_divisor
        values = [int(d)] * n if isinstance(d, (int, float)) else [int(v) for v in d]
        return values if len(values) == n else [max(values)] * n

    @property
    def activation_recorded(self) -> bool:
        """The activation comes from the model (a bundle's postprocessing, the JSON beside a checkpoint), not from
        counting its output channels."""
        return not self.activation_source.endswith("output channel(s)")

    def sigmoid_unconfirmed(self, activation: str) -> bool:
        """``activation`` is sigmoid on several output channels the model does not record as sigmoid: a
        softmax-trained model's channel 0 is the background, so the run needs ``multi_label`` to confirm it."""
        recorded_sigmoid = self.activation_recorded and self.activation == "sigmoid"
        return activation == "sigmoid" and (self.out_channels or 0) > 1 and not recorded_sigmoid

    def summary(self) -> str:
        """One line for the panel and the CLI."""
        n_in = self.in_channels if self.in_channels is not None else "?"
        n_out = self.out_channels if self.out_channels is not None else "?"
        labels = f", labels: {', '.join(self.labels)}" if self.labels else ""
        dims = "2-D " if self.spatial_dims == 2 else ""
        return (
            f"{self.format}: {dims}{self.architecture}, {n_in}→{n_out} channels, "
            f"activation {self.activation} ({self.activation_source}){labels}"
        )

    def to_dict(self) -> Dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelInfo":
        """From ``to_dict`` (keys this version does not know are ignored: a newer worker may send more)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
