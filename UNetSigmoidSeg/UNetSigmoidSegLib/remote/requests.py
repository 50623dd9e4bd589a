"""A server request, validated from its header alone before anything is decoded: the model (a name in the models
folder, or an allowed upload), the ``RunRequest`` (options, affine) and the sizes of its arrays. Nothing in it becomes
a path; every problem is a ``UserError`` the server answers with a 4xx."""

from typing import Any, Dict

from ..contract.model import ModelSpec
from ..contract.options import SegmentOptions
from ..contract.request import RunRequest
from ..errors import OptionError, UserError
from .store import UPLOAD_SUFFIXES, ModelStore


def job_request(
    fields: Dict[str, Any], descriptors: Any, store: ModelStore, config: Any, max_decoded: int
) -> Dict[str, Any]:
    """Validate a run request from its header alone: the model (a name in the folder, or an allowed upload), the
    options, the affine and the arrays' sizes. Nothing in it becomes a path."""
    arrays = {d["name"]: d for d in descriptors}
    if set(arrays) - {"volume", "model", "sidecar"}:
        raise OptionError(
            f"Unexpected arrays: {sorted(set(arrays) - {'volume', 'model', 'sidecar'})}",
            "A run carries 'volume' (and, with an uploaded model, 'model' and 'sidecar'): use RemoteRunner.submit.",
        )
    if fields.get("upload") is None and set(arrays) - {"volume"}:  # refused before a byte of them is decompressed
        raise OptionError(
            f"Arrays {sorted(set(arrays) - {'volume'})} travel only with an uploaded model",
            "Send the volume alone to run a server model by name.",
        )
    volume = arrays.get("volume")
    if volume is None or len(volume["shape"]) != 4 or volume["dtype"] == "|b1":
        raise OptionError("The request needs a numeric (C, I, J, K) 'volume' array", "Use RemoteRunner.submit.")
    if volume["nbytes"] > config.max_volume_bytes or sum(d["nbytes"] for d in descriptors) > max_decoded:
        raise TooLarge(volume["nbytes"], config.max_volume_bytes)
    upload = None
    spec = ModelSpec(name="upload")  # an upload's network is loaded from the body
    if fields.get("upload") is not None:
        if not config.allow_upload:
            raise UploadRefused(store)
        upload = upload_fields(fields["upload"], arrays)
    else:
        model = fields.get("model")
        if not isinstance(model, dict) or model.get("path") or model.get("name") is None:
            raise OptionError(
                "This server runs its own models, by name: it never opens a path a client sends",
                f"Pick one of: {', '.join(sorted(store.entries())) or 'none'}.",
            )
        requested = ModelSpec.from_dict(model)
        spec = store.spec(requested.name, requested.strides)
    request = RunRequest.from_wire(fields, spec)
    if request.options.device == "auto" and config.device != "auto":  # "auto" means the server's --device
        request.options = SegmentOptions.from_dict(dict(request.options.to_dict(), device=config.device))
    return {"run": request, "upload": upload}


def upload_fields(upload: Any, arrays: Dict[str, Any]) -> Dict[str, Any]:
    if not isinstance(upload, dict) or upload.get("suffix") not in UPLOAD_SUFFIXES or "model" not in arrays:
        raise OptionError("An upload needs a 'model' array and a known file suffix", f"One of {UPLOAD_SUFFIXES}.")
    model = arrays["model"]
    if (model["dtype"] if isinstance(model, dict) else model.dtype.str) != "|u1":
        raise OptionError("An uploaded model travels as bytes (uint8)", "Use RemoteRunner.")
    strides = upload.get("strides")
    return {"suffix": upload["suffix"], "strides": ModelSpec(name="upload", strides=strides).strides}


class TooLarge(UserError):
    kind = "remote"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"The volume of {size} bytes is over this server's limit of {limit} bytes",
            "Crop or downsample it, or start the server with a larger --max-volume-mb.",
        )
        self.status, self.reason = 413, "too_large"


class UploadRefused(UserError):
    kind = "remote"

    def __init__(self, store: ModelStore) -> None:
        super().__init__(
            "This server runs only its own models: it does not accept model files from clients",
            f"Pick one of its models ({', '.join(sorted(store.entries())) or 'none'}), or ask its administrator "
            "to start it with --allow-upload.",
        )
        self.status, self.reason = 403, "refused"
