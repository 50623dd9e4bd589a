"""One segmentation run: validate → preprocess → sliding window → activation → invert → cache → threshold → clean-up."""

import json
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ...contract.model import ModelInfo
from ...contract.options import DEFAULT_BLEND_MODE, DEFAULT_OVERLAP, SegmentOptions, check_thresholds, default_threshold
from ...contract.result import SegmentResult, Window, make_probabilities
from ...contract.runner import CancelFn, ProgressFn
from ...contract.terminology import segment_colors
from ...errors import CancelledError, InputError, ModelError, OptionError
from ...sysinfo import available_memory_bytes
from ..backends import choose as backends
from ..backends.check import BackendMismatch
from ..files.volume import Volume
from ..loading.model import LoadedModel
from ..safety.netguard import CheckedNetwork
from . import plausibility, preprocess
from .inference import count_windows, default_slice_axis, run_sliding_window, select_device, window_roi
from .memory import check_memory, network_width, predicted_spatial_shape
from .postprocess import clean_mask, with_model_cleanup
from .probabilities import activate, activation_warnings, threshold_float

BACKGROUND_NAMES = ("background", "bg", "0")  # a first label that names channel 0, the background
NORMALIZATION_HINT = {  # how to say what a model's input normalisation is (a plain checkpoint can record it)
    False: "--normalization ct --ct-window LOW HIGH for CT or --normalization zscore for MR on the command line, "
    "normalization=... in the Python API",
    True: 'record it once in the JSON next to the checkpoint, e.g. {"normalization": "ct", "ct_window": [-57, 164]} '
    'for CT or {"normalization": "zscore"} for MR; or per run: --normalization on the command line',
}

MEMORY_HINT = "Reduce --roi-size / --sw-batch-size, crop or downsample the volume."


FLOAT32_MAX = float(np.finfo(np.float32).max)


def validate_volume(
    volume: Volume, in_channels: Optional[int], out_channels: Optional[int], spatial_dims: int = 3
) -> None:
    """Clear errors for inputs the network cannot segment meaningfully (a 2-D network also takes a single slice)."""
    arr = volume.array
    if arr.ndim != 4:
        raise InputError(
            f"Expected a channel-first 3-D volume (C, I, J, K), got shape {arr.shape}", "Give a 3-D volume."
        )
    if arr.size == 0:
        raise InputError("The volume is empty (0 voxels)", "Load an image with voxel data.")
    if min(arr.shape[1:]) < 2 and spatial_dims != 2:
        raise InputError(
            f"The volume is {arr.shape[1:]} voxels: a single slice is a 2-D image",
            "The UNet needs a 3-D volume with several slices.",
        )
    if in_channels is not None and arr.shape[0] != in_channels:
        what = "a multi-component / 4-D image with" if arr.shape[0] > 1 else "a single-channel volume with"
        raise InputError(
            f"The model expects {in_channels} input channel(s); the input is {what} {arr.shape[0]}",
            f"Pick a {arr.shape[0]}-channel model, or give a volume with {in_channels} channel(s).",
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(
            f"The volume has {bad} NaN/Inf voxel(s)", "Replace them first (e.g. with 0 or the background value)."
        )
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and (hi > FLOAT32_MAX or lo < -FLOAT32_MAX):
        raise InputError(
            f"The volume has values up to {max(abs(float(lo)), abs(float(hi))):.3g}, beyond the float32 range "
            f"(±{FLOAT32_MAX:.3g}) the network computes in: they would become infinite",
            "Rescale or clip the image to a physical range first (e.g. HU for CT).",
        )
    if lo == hi:
        raise InputError(
            f"The volume is constant (every voxel is {lo})",
            "Nothing to segment: check that the right image was loaded.",
        )


def _guard_memory(volume: Volume, info, pre_shape, roi, sw_batch: int) -> None:
    """The memory guard for the grid after preprocessing, the window and the batch (``memory.check_memory``)."""
    width = network_width(info.network_args)
    channels = volume.array.shape[0]
    check_memory(
        volume.spatial_shape, pre_shape, channels, info.out_channels, roi, sw_batch, width, available_memory_bytes()
    )


def segment(
    volume: Volume,
    model: LoadedModel,
    options: Optional[SegmentOptions] = None,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
    log: Optional[Callable[[str], None]] = None,
    warn: Optional[Callable[[str], None]] = None,
) -> SegmentResult:
    """Segment ``volume`` with ``model``; the result is on the input grid exactly. ``log(line)`` gets what the run
    decided, ``warn(text)`` each of the result's warnings as it is found (without ``warn``: ``log("warning: …")``)."""
    opts = options or SegmentOptions()
    info = model.info
    timings: Dict[str, float] = {}
    warnings: List[str] = []
    say = log or (lambda _m: None)

    def step(stage: str, fraction: float, message: str = "") -> None:
        if should_cancel is not None and should_cancel():
            raise CancelledError(f"cancelled during {stage}")
        if progress is not None:
            progress(stage, fraction, message)

    activation = info.activation if opts.activation == "auto" else opts.activation  # "auto": by the output channels
    warnings += info.warnings
    check_before_run(opts, info, activation)
    choice = select_device(opts.device)
    say(f"device: {choice.device} ({choice.reason})")
    validate_volume(volume, info.in_channels, info.out_channels, info.spatial_dims)
    t0 = time.perf_counter()
    step("preprocess", 0.0)
    transforms = model.bundle_preprocessing
    context = "the bundle's preprocessing"  # what the network's input is: backend decisions are kept per context
    normalization_known = (
        transforms is not None or opts.normalization is not None or "normalization" in info.preprocessing
    )
    if transforms is None:
        pre = info.preprocessing
        resolved = dict(
            normalization=opts.normalization or pre.get("normalization", "none"),
            ct_window=opts.ct_window or pre.get("ct_window"),
            orientation=opts.orientation or pre.get("orientation", "keep"),
            spacing=opts.spacing or pre.get("spacing"),
        )
        transforms = preprocess.build_transforms(**resolved)
        context = json.dumps(resolved, sort_keys=True, default=str)
    predicted = predicted_spatial_shape(transforms, volume.spatial_shape, volume.affine)
    asked = window_roi(opts.roi_size or info.roi_size, info.spatial_dims, info.divisors(info.spatial_dims))[0]
    _guard_memory(volume, info, predicted, asked, int(opts.sw_batch_size or info.sw_batch_size or 1))
    flat = info.spatial_dims == 2 and model.bundle_preprocessing is not None and volume.spatial_shape[2] == 1
    data = preprocess.apply_volume(transforms, volume.array, volume.affine, flat)
    image = data["image"]
    timings["preprocess_s"] = time.perf_counter() - t0
    plausibility.check_input(image, normalization_known, NORMALIZATION_HINT[info.format == "checkpoint"])
    slice_axis = None
    if info.spatial_dims == 2:
        spacing = image.pixdim.tolist() if hasattr(image, "pixdim") else [1.0] * 3
        slice_axis = next(
            (a for a in (opts.slice_axis, info.slice_axis) if a is not None),
            default_slice_axis(image.shape[1:], spacing),
        )
    elif opts.slice_axis is not None:
        warnings.append(f"the slice axis applies to 2-D networks; this one is {info.spatial_dims}-D: not used")
    whole = info.inferer == "SimpleInferer" and not opts.roi_size  # the bundle runs the whole image at once
    if whole:
        say("note: the bundle's SimpleInferer: the whole image in one window (no sliding, no blending)")
    roi, requested, notes = window_roi(
        list(image.shape[1:]) if whole else (opts.roi_size or info.roi_size),
        info.spatial_dims,
        info.divisors(info.spatial_dims),
        slice_axis,
    )
    for note in notes + overridden(opts, info):
        say("note: " + note)
    overlap = (
        opts.overlap if opts.overlap is not None else (info.overlap if info.overlap is not None else DEFAULT_OVERLAP)
    )
    if not 0.0 <= overlap < 1.0:
        raise OptionError(f"Overlap {overlap} is outside [0, 1)", "e.g. --overlap 0.25")
    sw_batch = int(opts.sw_batch_size or info.sw_batch_size or 1)
    blend_mode = opts.blend_mode or info.blend_mode or ("constant" if whole else DEFAULT_BLEND_MODE)
    _guard_memory(volume, info, image.shape[1:], roi, sw_batch)
    window = Window(roi, overlap, sw_batch, blend_mode, slice_axis, requested, dict(info.inferer_args))
    step("inference", 0.0, f"{window.describe()} on {choice.device}")
    tensor = image.as_tensor()[None] if hasattr(image, "as_tensor") else image[None]
    forward, backend, backend_warnings = _backend(
        model, tensor, window, opts.backend, choice.device, context, step, say
    )
    say(f"backend: {backend.describe()}" + (f" [{backend.source}]" if backend.source else ""))
    warnings += backend_warnings
    timings["backend_s"] = backend.prepare_s
    t1 = time.perf_counter()
    infer = (model.network, tensor, window, choice.device, opts.amp, progress, should_cancel, say)
    try:
        logits, placement = _infer(*infer, forward)
        backends.finish(backend, forward)
    except BackendMismatch as exc:  # the backend's answer on one of this run's windows is not PyTorch's
        backend = backends.mismatch(model, tensor, window, backend, context, exc)
        say(f"backend: {exc}: redoing the run on PyTorch")
        if opts.backend != "auto":  # as for any backend asked for that did not run: a warning (auto: the line above)
            warnings.append(f"backend {opts.backend}: {exc}; the run was redone on PyTorch")
        logits, placement = _infer(*infer)
    timings["inference_s"] = time.perf_counter() - t1
    if not bool(torch.isfinite(logits).all()):
        raise ModelError(
            "The network produced NaN/Inf values on this input", "The model file may be damaged; try another model."
        )
    if placement not in ("CUDA", choice.device.upper()):
        warnings.append(f"Ran with fallback: {placement}")
    t2 = time.perf_counter()
    step("postprocess", 0.0, "activation")
    logits = logits[0]
    n_out = int(logits.shape[0])
    if activation == "auto":  # a network whose output channels were unknown until now
        activation = "sigmoid" if n_out == 1 else "softmax"
        say(f"activation: {activation} ({n_out} output channel(s))")
    check_softmax(activation, n_out)
    warnings += plausibility.output_warnings(logits, activation)
    if activation == "none":
        warnings += activation_warnings(logits, "none")
    probs = activate(logits, activation)
    if activation == "sigmoid":
        warnings += activation_warnings(probs, "sigmoid")
    del logits
    step("postprocess", 0.3, "inverting preprocessing")
    probs = preprocess.invert(transforms, data, probs, volume.affine, volume.spatial_shape)
    probs_np = np.asarray(probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else probs, dtype=np.float32)
    if tuple(probs_np.shape[1:]) != volume.spatial_shape:
        raise RuntimeError(
            f"internal: inverted output {probs_np.shape[1:]} is not on the input grid {volume.spatial_shape}"
        )
    n_seg = n_out - 1 if activation == "softmax" else n_out
    default = default_threshold(activation, info.threshold)
    thresholds = check_thresholds(opts.threshold if opts.threshold is not None else default, n_seg)
    step("postprocess", 0.6, "threshold and clean-up")
    probabilities = make_probabilities(probs_np, activation, keep=opts.keep_probabilities)
    masks = threshold_float(probs_np, thresholds, activation)
    del probs_np, probs
    cleanup = with_model_cleanup(opts.cleanup, info.cleanup)  # a bundle's KeepLargestConnectedComponent
    if cleanup.active:
        masks = np.stack([clean_mask(m, volume.spacing, cleanup) for m in masks])
    labels = segment_labels(opts.labels or info.labels, n_seg, warnings, softmax=activation == "softmax")
    warnings += plausibility.mask_warnings(masks, labels, activation, n_out)
    timings["postprocess_s"] = time.perf_counter() - t2
    step("postprocess", 1.0, "done")
    for w in warnings:
        if warn is not None:
            warn(w)
        else:
            say("warning: " + w)
    colors = segment_colors(labels)
    return SegmentResult(
        probabilities,
        masks,
        labels,
        colors,
        thresholds,
        activation,
        np.asarray(volume.affine, dtype=float),
        volume.spacing,
        choice,
        placement,
        cleanup,
        timings,
        warnings,
        window,
        backend,
    )


def overridden(opts: SegmentOptions, info: ModelInfo) -> List[str]:
    """One line per window setting the run was told that replaces the one the model brings."""
    out = []
    for label, asked, own in (
        ("roi", opts.roi_size, info.roi_size),
        ("overlap", opts.overlap, info.overlap),
        ("windows per batch", opts.sw_batch_size, info.sw_batch_size),
        ("blend mode", opts.blend_mode, info.blend_mode),
    ):
        if label == "roi" and asked is not None and own is not None and len(asked) == 1:
            asked_all = list(asked) * len(own)  # one size for every axis
        else:
            asked_all = asked
        if asked is not None and own is not None and asked_all != own:
            out.append(f"{label} {asked} (asked) replaces the model's {own}")
    return out


def _backend(model: LoadedModel, tensor, window: Window, requested: str, device: str, context: str, step, say):
    """``backends.choose.prepare`` for this run's windows (its steps are progress messages that can be cancelled)."""
    roi_3d = list(window.roi_size)
    if window.slice_axis is not None:
        roi_3d.insert(window.slice_axis, 1)
    total = count_windows(tensor.shape[2:], roi_3d, window.overlap, window.sw_batch_size)
    return backends.prepare(
        model,
        tensor,
        window,
        requested,
        device,
        total,
        lambda message: step("inference", 0.0, message),
        say,
        context,
    )


def _infer(network, tensor, window: Window, device, amp, progress, should_cancel, say, forward=None):
    """``run_sliding_window`` with its failures turned into clear errors."""
    try:
        return run_sliding_window(
            CheckedNetwork(network),
            tensor,
            window.roi_size,
            sw_batch_size=window.sw_batch_size,
            overlap=window.overlap,
            blend_mode=window.blend_mode,
            slice_axis=window.slice_axis,
            extra=window.extra,
            device=device,
            amp=amp,
            progress=progress,
            should_cancel=should_cancel,
            log=say,
            forward=CheckedNetwork(forward) if forward is not None else None,  # a CPU backend: the same checks
        )
    except torch.cuda.OutOfMemoryError:
        raise InputError("Out of memory even on the CPU", MEMORY_HINT) from None
    except RuntimeError as exc:
        text = str(exc)
        if "can't allocate memory" in text or "not enough memory" in text.lower():
            raise InputError("Out of memory on the CPU", MEMORY_HINT) from None
        if (
            any(k in text for k in ("channels", "Sizes of tensors must match", "shape"))
            or "size mismatch" in text.lower()
        ):
            raise InputError(
                f"The network cannot process this input with window {window.describe()}: {text.splitlines()[0][:200]}",
                "Check the model's input channels, and give a --roi-size the network accepts "
                "(sizes divisible by 2^depth, e.g. 96 or 128).",
            ) from None
        raise


def check_before_run(opts: SegmentOptions, info: ModelInfo, activation: str) -> None:
    """Mistakes the model's known output channels reveal before any window runs (``OptionError``): a threshold or
    ``labels`` count that fits no segment count, softmax on one channel."""
    n_out = info.out_channels
    if n_out is None:
        return
    n_seg = n_out - (1 if activation == "softmax" else 0)
    if opts.threshold is not None:
        check_thresholds(opts.threshold, n_seg)
    if activation == "auto":
        return
    check_softmax(activation, n_out)
    check_multi_label(opts, info, activation)
    if opts.labels and fit_labels(opts.labels, n_seg, activation == "softmax") is None:
        raise OptionError(
            f"{len(opts.labels)} label(s) given for {n_seg} segment(s): this model has {n_out} output channel(s) "
            f"and activation {activation}" + (" (channel 0 is the background)" if activation == "softmax" else ""),
            f"Give {n_seg} name(s) with --labels, or leave them out to use the model's.",
        )


def check_multi_label(opts: SegmentOptions, info: ModelInfo, activation: str) -> None:
    """Sigmoid asked for a model with several output channels that does not record sigmoid needs ``multi_label``:
    a softmax-trained model's channel 0 is the background, which sigmoid would make a segment."""
    if opts.multi_label or not info.sigmoid_unconfirmed(activation):
        return
    said = (
        f"records {info.activation} ({info.activation_source})"
        if info.activation_recorded
        else "does not record its activation"
    )
    raise OptionError(
        f"Sigmoid asked for a model with {info.out_channels} output channels that {said}: trained with softmax "
        "(as MONAI's tutorials do), its channel 0 is the background, and sigmoid would make the background a segment",
        "Use activation softmax (or auto). If the channels are independent labels (multi-label, BCEWithLogitsLoss), "
        'confirm with --multi-label (multiLabel=True), or record {"activation": "sigmoid"} in the JSON next to the '
        "checkpoint.",
    )


def check_softmax(activation: str, n_out: int) -> None:
    """Softmax on one output channel is an ``OptionError`` (before the run when the channels are known, else after)."""
    if activation == "softmax" and n_out < 2:
        raise OptionError(
            "Softmax needs at least 2 output channels; this network has 1",
            "Use activation sigmoid for a 1-channel model.",
        )


def fit_labels(labels: Sequence[str], n: int, softmax: bool) -> Optional[List[str]]:
    """``labels`` as the names of ``n`` segments (one more, naming the background first, loses it: always so for
    softmax, whose channel 0 is the background); None when the count fits neither way."""
    labels = [str(x) for x in labels]
    if len(labels) == n + 1 and (softmax or labels[0].lower() in BACKGROUND_NAMES):
        labels = labels[1:]
    return labels if len(labels) == n else None


def segment_labels(labels: Sequence[str], n: int, warnings: List[str], softmax: bool = False) -> List[str]:
    """One label (segment name) per segment: the given ones (softmax: without the background's), else defaults."""
    fitted = fit_labels(labels, n, softmax) if labels else []
    if fitted is None:
        warnings.append(f"{len(labels)} label(s) for {n} segment(s): using default names")
    return fitted or ([f"Segment_{i + 1}" for i in range(n)] if n > 1 else ["Segment_1"])
