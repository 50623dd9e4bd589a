"""The allow-list of an untrusted config: which MONAI classes each section may name, and which plain-data
arguments each class takes.

A ``_target_`` is looked up as an exact string in this table (short name ``UNet``, package path
``monai.networks.nets.UNet`` or defining module ``monai.networks.nets.unet.UNet``); the class comes from
this module's own imports — no config string is ever imported, located or evaluated. Every argument is
checked by name and by kind (``kinds.Kind``); an argument not listed (MONAI's callables, classes, file
paths, ``**kwargs``) refuses the config. Numbers are finite and bounded; layer names come from MONAI's
factories. ``configreader`` applies the table; the JSON next to a checkpoint reuses the UNet entry.
"""

from typing import Dict, Tuple

from .kinds import (
    AXCODES,
    DEVICE,
    DTYPE,
    INTENSITY,
    INTERP,
    KEYS,
    NOTHING,
    PAD,
    SIZE,
    AnyOf,
    Bool,
    Choice,
    Const,
    Ignored,
    Int,
    ListOf,
    Num,
    Text,
    one_or_list,
)
from .networks import NETWORK_ARGS, Args  # the networks' table, and check() for limits over several arguments

_COMMON = {"keys": KEYS, "allow_missing_keys": Bool()}
_LAZY = {"lazy": Const(False)}


# Preprocessing: dictionary transforms on the image. Loaders are checked but never built (the product already
# holds the image, channel first); the array spellings are read as their dictionary transform on the image.
LOADERS = ("LoadImaged", "EnsureChannelFirstd")
TRANSFORM_ARGS: Dict[str, Args] = {
    "Compose": {
        "transforms": ListOf(Const(None), 0, 64),  # the list itself is read component by component
        "map_items": Bool(),
        "unpack_items": Bool(),
        "log_stats": Const(False),
        "lazy": AnyOf(Const(False), NOTHING),
    },
    "LoadImaged": {
        **_COMMON,
        "reader": AnyOf(
            Choice("ITKReader", "NibabelReader", "NumpyReader", "PILReader", "PydicomReader", "NrrdReader"), NOTHING
        ),
        "dtype": AnyOf(DTYPE, NOTHING),
        "meta_keys": AnyOf(KEYS, NOTHING),
        "meta_key_postfix": Text(),
        "overwriting": Bool(),
        "image_only": Bool(),
        "ensure_channel_first": Bool(),
        "simple_keys": Bool(),
        "expanduser": Bool(),
    },
    "EnsureChannelFirstd": {
        **_COMMON,
        "strict_check": Bool(),
        "channel_dim": AnyOf(Int(-4, 3), Choice("no_channel"), NOTHING),
    },
    "Orientationd": {
        **_COMMON,
        **_LAZY,
        "axcodes": AXCODES,
        "as_closest_canonical": Bool(),
        "labels": AnyOf(NOTHING, ListOf(ListOf(Choice(*"LRAPSI"), 2, 2), 3, 3)),
    },
    "Spacingd": {
        **_COMMON,
        **_LAZY,
        "pixdim": one_or_list(Num(0.01, 100), 3),
        "diagonal": Bool(),
        "mode": one_or_list(AnyOf(Choice("nearest", "bilinear", "bicubic"), Int(0, 5)), 4),
        "padding_mode": one_or_list(Choice("zeros", "border", "reflection"), 4),
        "align_corners": one_or_list(Bool(), 4),
        "dtype": AnyOf(one_or_list(DTYPE, 4), NOTHING),
        "scale_extent": Bool(),
        "recompute_affine": Bool(),
        "min_pixdim": AnyOf(one_or_list(AnyOf(Num(0.01, 100), NOTHING), 3), NOTHING),
        "max_pixdim": AnyOf(one_or_list(AnyOf(Num(0.01, 100), NOTHING), 3), NOTHING),
        "ensure_same_shape": Bool(),
    },
    "Resized": {
        **_COMMON,
        **_LAZY,
        "spatial_size": one_or_list(SIZE, 3),
        "size_mode": Choice("all", "longest"),
        "mode": one_or_list(INTERP, 4),
        "align_corners": one_or_list(AnyOf(Bool(), NOTHING), 4),
        "anti_aliasing": one_or_list(Bool(), 4),
        "anti_aliasing_sigma": AnyOf(one_or_list(AnyOf(Num(0, 100), NOTHING), 3), NOTHING),
        "dtype": AnyOf(one_or_list(DTYPE, 4), NOTHING),
    },
    "CropForegroundd": {
        **_COMMON,
        **_LAZY,
        "source_key": Text(),
        "channel_indices": AnyOf(one_or_list(Int(0, 63), 8), NOTHING),
        "margin": one_or_list(Int(0, 2048), 3),
        "allow_smaller": Bool(),
        "k_divisible": one_or_list(Int(1, 2048), 3),
        "mode": one_or_list(PAD, 4),
        "value": INTENSITY,
        "constant_values": INTENSITY,
    },
    "SpatialPadd": {
        **_COMMON,
        **_LAZY,
        "spatial_size": one_or_list(SIZE, 3),
        "method": Choice("symmetric", "end"),
        "mode": one_or_list(PAD, 4),
        "value": INTENSITY,
        "constant_values": INTENSITY,
    },
    "DivisiblePadd": {
        **_COMMON,
        **_LAZY,
        "k": one_or_list(Int(1, 2048), 3),
        "method": Choice("symmetric", "end"),
        "mode": one_or_list(PAD, 4),
        "value": INTENSITY,
        "constant_values": INTENSITY,
    },
    "CenterSpatialCropd": {**_COMMON, **_LAZY, "roi_size": one_or_list(SIZE, 3)},
    "ScaleIntensityRanged": {
        **_COMMON,
        "a_min": INTENSITY,
        "a_max": INTENSITY,
        "b_min": AnyOf(INTENSITY, NOTHING),
        "b_max": AnyOf(INTENSITY, NOTHING),
        "clip": Bool(),
        "dtype": AnyOf(DTYPE, NOTHING),
    },
    "ScaleIntensityRangePercentilesd": {
        **_COMMON,
        "lower": Num(0, 100),
        "upper": Num(0, 100),
        "b_min": AnyOf(INTENSITY, NOTHING),
        "b_max": AnyOf(INTENSITY, NOTHING),
        "clip": Bool(),
        "relative": Bool(),
        "channel_wise": Bool(),
        "dtype": AnyOf(DTYPE, NOTHING),
    },
    "ScaleIntensityd": {
        **_COMMON,
        "minv": AnyOf(INTENSITY, NOTHING),
        "maxv": AnyOf(INTENSITY, NOTHING),
        "factor": AnyOf(Num(-1e3, 1e3), NOTHING),
        "channel_wise": Bool(),
        "dtype": AnyOf(DTYPE, NOTHING),
    },
    "NormalizeIntensityd": {
        **_COMMON,
        "subtrahend": AnyOf(one_or_list(INTENSITY, 64), NOTHING),
        "divisor": AnyOf(one_or_list(INTENSITY, 64), NOTHING),
        "nonzero": Bool(),
        "channel_wise": Bool(),
        "dtype": AnyOf(DTYPE, NOTHING),
    },
    "ClipIntensityPercentilesd": {
        **_COMMON,
        "lower": AnyOf(Num(0, 100), NOTHING),
        "upper": AnyOf(Num(0, 100), NOTHING),
        "sharpness_factor": AnyOf(Num(0, 1e3), NOTHING),
        "channel_wise": Bool(),
        "dtype": AnyOf(DTYPE, NOTHING),
    },
    "ThresholdIntensityd": {**_COMMON, "threshold": INTENSITY, "above": Bool(), "cval": INTENSITY},
    "EnsureTyped": {
        **_COMMON,
        "data_type": Choice("tensor"),
        "dtype": AnyOf(DTYPE, NOTHING),
        "device": DEVICE,
        "wrap_sequence": Bool(),
        "track_meta": AnyOf(Const(True), NOTHING),  # false would drop the geometry Invertd needs
    },
    "CastToTyped": {**_COMMON, "dtype": one_or_list(DTYPE, 4)},
    "ToTensord": {
        **_COMMON,
        "dtype": AnyOf(DTYPE, NOTHING),
        "device": DEVICE,
        "wrap_sequence": Bool(),
        "track_meta": AnyOf(Const(True), NOTHING),
    },
    "Identityd": dict(_COMMON),
}
ARRAY_SPELLINGS = {name[:-1]: name for name in TRANSFORM_ARGS if name.endswith("d")}  # "Spacing" → "Spacingd"

_WINDOW = {
    "roi_size": one_or_list(Int(1, 2048), 3),
    "sw_batch_size": Int(1, 64),
    "overlap": one_or_list(Num(0, 0.95), 3),
    "mode": Choice("constant", "gaussian"),
    "sigma_scale": one_or_list(Num(0.01, 10), 3),
    "padding_mode": Choice("constant", "reflect", "replicate", "circular"),
    "cval": INTENSITY,
    "sw_device": DEVICE,
    "device": DEVICE,
    "progress": Ignored(Bool()),
    "cache_roi_weight_map": Bool(),
    "cpu_thresh": AnyOf(Int(0, 1 << 40), NOTHING),
    "buffer_steps": AnyOf(Int(1, 1 << 16), NOTHING),
    "buffer_dim": Int(-3, 2),
    "with_coord": Const(False),  # window coordinates would be passed to the network
}
INFERER_ARGS: Dict[str, Args] = {
    "SimpleInferer": {},
    "SlidingWindowInferer": _WINDOW,
    "SlidingWindowInfererAdapt": _WINDOW,
    "SliceInferer": {**_WINDOW, "spatial_dim": Int(0, 2)},  # a 2-D network over the slices of a volume
}

# Postprocessing is read as data, never built: only these literal settings are looked at.
POSTPROCESSING_READ: Dict[str, Tuple[str, ...]] = {
    "Activationsd": ("sigmoid", "softmax"),
    "Activations": ("sigmoid", "softmax"),
    "AsDiscreted": ("argmax", "threshold"),
    "AsDiscrete": ("argmax", "threshold"),
}

SECTIONS: Dict[str, Dict[str, Args]] = {
    "network_def": NETWORK_ARGS,
    "preprocessing": TRANSFORM_ARGS,
    "inferer": INFERER_ARGS,
}
