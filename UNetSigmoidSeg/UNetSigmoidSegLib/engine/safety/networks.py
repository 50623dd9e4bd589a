"""The allow-list's networks: the MONAI segmentation networks an untrusted config may build (``network_def``), each
with the kind of every argument it may set (``allowlist.SECTIONS["network_def"]``), and the limits that span
several arguments (``check``), so that no config asks for a network whose memory the run cannot bound."""

import math
from typing import Any, Dict

from .kinds import (
    CHANNELS,
    DIMS,
    INTERP,
    KERNEL,
    NOTHING,
    SIZE,
    STRIDE,
    UPSAMPLE,
    AnyOf,
    Bool,
    Choice,
    Const,
    Ignored,
    Int,
    Kind,
    Layer,
    ListOf,
    Num,
    Record,
    Refused,
    Text,
)

Args = Dict[str, Kind]
UNETR_MAX_PATCHES = 4096  # UNETR attends over every 16-voxel patch of its img_size at once (256³: 4,096 patches)

_STRIDED: Args = {  # MONAI's UNet and AttentionUnet: channels per level, a stride between levels
    "spatial_dims": DIMS,
    "in_channels": Int(1, 64),
    "out_channels": Int(1, 1024),
    "channels": ListOf(CHANNELS, 2, 16),
    "strides": ListOf(STRIDE, 1, 15),
    "kernel_size": KERNEL,
    "up_kernel_size": KERNEL,
}
NETWORK_ARGS: Dict[str, Args] = {
    "UNet": {
        **_STRIDED,
        "num_res_units": Int(0, 16),
        "act": Layer(),
        "norm": Layer(),
        "dropout": AnyOf(Num(0, 1), Layer()),
        "bias": Bool(),
        "adn_ordering": Text(r"[NDA]{1,3}", "a string of N, D, A such as NDA"),
    },
    "BasicUNet": {
        "spatial_dims": DIMS,
        "in_channels": Int(1, 64),
        "out_channels": Int(1, 1024),
        "features": ListOf(CHANNELS, 6, 6),
        "act": Layer(),
        "norm": Layer(),
        "bias": Bool(),
        "dropout": AnyOf(Num(0, 1), Layer()),
        "upsample": UPSAMPLE,
    },
    "AttentionUnet": {
        **_STRIDED,
        "dropout": Num(0, 1),
    },
    "DynUNet": {
        "spatial_dims": DIMS,
        "in_channels": Int(1, 64),
        "out_channels": Int(1, 1024),
        "kernel_size": ListOf(KERNEL, 2, 16),
        "strides": ListOf(STRIDE, 2, 16),
        "upsample_kernel_size": ListOf(KERNEL, 1, 15),
        "filters": AnyOf(ListOf(CHANNELS, 2, 16), NOTHING),
        "dropout": AnyOf(Num(0, 1), Layer(), NOTHING),
        "norm_name": Layer(),
        "act_name": Layer(),
        "deep_supervision": Bool(),
        "deep_supr_num": Int(1, 8),
        "res_block": Bool(),
        "trans_bias": Bool(),
    },
    "SegResNet": {
        "spatial_dims": DIMS,
        "init_filters": CHANNELS,
        "in_channels": Int(1, 64),
        "out_channels": Int(1, 1024),
        "dropout_prob": AnyOf(Num(0, 1), NOTHING),
        "act": Layer(),
        "norm": Layer(),
        "norm_name": Text(),
        "num_groups": Int(1, 1024),
        "use_conv_final": Bool(),
        "blocks_down": ListOf(Int(0, 16), 1, 12),
        "blocks_up": ListOf(Int(0, 16), 1, 12),
        "upsample_mode": UPSAMPLE,
    },
    "FlexibleUNet": {  # endoscopic_tool_segmentation; pretrained=True would download the backbone's weights
        "in_channels": Int(1, 64),
        "out_channels": Int(1, 1024),
        "backbone": Choice(
            *[f"efficientnet-b{i}" for i in range(9)],
            "efficientnet-l2",
            "resnet10",
            "resnet18",
            "resnet34",
            "resnet50",
            "resnet101",
            "resnet152",
            "resnet200",
        ),
        "pretrained": Const(False),
        "decoder_channels": ListOf(CHANNELS, 1, 8),
        "spatial_dims": DIMS,
        "norm": Layer(),
        "act": Layer(),
        "dropout": AnyOf(Num(0, 1), Layer()),
        "decoder_bias": Bool(),
        "upsample": UPSAMPLE,
        "pre_conv": AnyOf(Choice("default"), NOTHING),
        "interp_mode": INTERP,
        "is_pad": Bool(),
    },
    "SwinUNETR": {  # windowed attention: its memory grows with the window (≤ 16), not the image
        "in_channels": Int(1, 64),
        "out_channels": Int(1, 1024),
        "img_size": Ignored(AnyOf(SIZE, ListOf(SIZE, 2, 3))),  # MONAI < 1.5 only checked the input with it
        "patch_size": Int(1, 4),
        "depths": ListOf(Int(1, 32), 1, 8),
        "num_heads": ListOf(Int(1, 64), 1, 8),
        "window_size": AnyOf(Int(1, 16), ListOf(Int(1, 16), 2, 3)),
        "qkv_bias": Bool(),
        "mlp_ratio": Num(0.25, 16),
        "feature_size": Int(12, 1024),
        "norm_name": Layer(),
        "drop_rate": Num(0, 1),
        "attn_drop_rate": Num(0, 1),
        "dropout_path_rate": Num(0, 1),
        "normalize": Bool(),
        "patch_norm": Bool(),
        "use_checkpoint": Bool(),
        "spatial_dims": DIMS,
        "downsample": Choice("merging", "mergingv2"),
        "use_v2": Bool(),
    },
    "UNETR": {  # global attention over (img_size / 16) patches: at most 4,096 of them (checked on building)
        "in_channels": Int(1, 64),
        "out_channels": Int(1, 1024),
        "img_size": AnyOf(Int(16, 1024), ListOf(Int(16, 1024), 2, 3)),
        "feature_size": Int(1, 1024),
        "hidden_size": Int(1, 4096),
        "mlp_dim": Int(1, 16384),
        "num_heads": Int(1, 64),
        "proj_type": Choice("conv", "perceptron"),
        "norm_name": Layer(),
        "conv_block": Bool(),
        "res_block": Bool(),
        "dropout_rate": Num(0, 1),
        "spatial_dims": DIMS,
        "qkv_bias": Bool(),
    },
    "SegResNetDS": {
        "spatial_dims": DIMS,
        "init_filters": CHANNELS,
        "in_channels": Int(1, 64),
        "out_channels": Int(1, 1024),
        "act": Layer(),
        "norm": Layer(),
        "blocks_down": ListOf(Int(0, 16), 1, 12),
        "blocks_up": AnyOf(ListOf(Int(0, 16), 1, 12), NOTHING),
        "dsdepth": Int(1, 8),
        "upsample_mode": UPSAMPLE,
        "resolution": AnyOf(ListOf(Num(0.01, 100), 3, 3), NOTHING),
    },
    "VNet": {
        "spatial_dims": DIMS,
        "in_channels": Int(1, 64),
        "out_channels": Int(1, 1024),
        "act": Layer(),
        "dropout_prob": AnyOf(Num(0, 1), NOTHING),
        "dropout_prob_down": AnyOf(Num(0, 1), NOTHING),
        "dropout_prob_up": ListOf(AnyOf(Num(0, 1), NOTHING), 1, 4),
        "dropout_dim": Int(1, 3),
        "bias": Bool(),
    },
    "HighResNet": {
        "spatial_dims": DIMS,
        "in_channels": Int(1, 64),
        "out_channels": Int(1, 1024),
        "norm_type": Layer(),
        "acti_type": Layer(),
        "dropout_prob": AnyOf(Num(0, 1), Layer(), NOTHING),
        "bias": Bool(),
        "layer_params": ListOf(
            Record(
                {
                    "name": Text(),
                    "n_features": CHANNELS,
                    "kernel_size": Int(1, 15),
                    "kernels": ListOf(Int(1, 15), 1, 4),
                    "repeat": Int(1, 16),
                }
            ),
            1,
            16,
        ),
        "channel_matching": Choice("pad", "project"),
    },
}


def check(name: str, args: Dict[str, Any], where: str) -> None:
    """Limits over several arguments of network ``name`` (its arguments already checked one by one)."""
    if name == "UNETR" and "img_size" in args:
        size = args["img_size"]
        dims = int(args.get("spatial_dims", 3))
        sizes = [int(size)] * dims if isinstance(size, int) else [int(v) for v in size]
        patches = math.prod(max(1, v // 16) for v in sizes)
        if patches > UNETR_MAX_PATCHES:
            raise Refused(
                f"{where}.img_size",
                f"= {size} makes {patches} patches for UNETR's attention, which holds them all at once "
                f"(at most {UNETR_MAX_PATCHES}: 256×256×256)",
            )
