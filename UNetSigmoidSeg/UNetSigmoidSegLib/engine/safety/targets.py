"""Where the allow-list's names lead: the MONAI classes a config section may build, imported here from MONAI's own
modules (never from a config string), and the exact ``_target_`` spellings that name them."""

from typing import Any, Callable, Dict, List, Optional

from .allowlist import ARRAY_SPELLINGS, SECTIONS


def classes(section: str) -> Dict[str, Callable[..., Any]]:
    """The classes a section may build, imported here (never from a config string)."""
    if section == "network_def":
        from monai.networks import nets

        return {
            "UNet": nets.UNet,
            "BasicUNet": nets.BasicUNet,
            "AttentionUnet": nets.AttentionUnet,
            "DynUNet": nets.DynUNet,
            "SegResNet": nets.SegResNet,
            "SegResNetDS": nets.SegResNetDS,
            "FlexibleUNet": nets.FlexibleUNet,
            "SwinUNETR": nets.SwinUNETR,
            "UNETR": nets.UNETR,
            "VNet": nets.VNet,
            "HighResNet": nets.HighResNet,
        }
    if section == "preprocessing":
        from monai import transforms as t

        return {
            "Compose": t.Compose,
            "Orientationd": t.Orientationd,
            "Spacingd": t.Spacingd,
            "Resized": t.Resized,
            "CropForegroundd": t.CropForegroundd,
            "SpatialPadd": t.SpatialPadd,
            "DivisiblePadd": t.DivisiblePadd,
            "CenterSpatialCropd": t.CenterSpatialCropd,
            "ScaleIntensityRanged": t.ScaleIntensityRanged,
            "ScaleIntensityRangePercentilesd": t.ScaleIntensityRangePercentilesd,
            "ScaleIntensityd": t.ScaleIntensityd,
            "NormalizeIntensityd": t.NormalizeIntensityd,
            "ClipIntensityPercentilesd": t.ClipIntensityPercentilesd,
            "ThresholdIntensityd": t.ThresholdIntensityd,
            "EnsureTyped": t.EnsureTyped,
            "CastToTyped": t.CastToTyped,
            "ToTensord": t.ToTensord,
            "Identityd": t.Identityd,
        }
    from monai import inferers

    return {
        "SimpleInferer": inferers.SimpleInferer,
        "SlidingWindowInferer": inferers.SlidingWindowInferer,
        "SlidingWindowInfererAdapt": inferers.SlidingWindowInfererAdapt,
        "SliceInferer": inferers.SliceInferer,
    }


_PACKAGES = {"network_def": "monai.networks.nets", "preprocessing": "monai.transforms", "inferer": "monai.inferers"}
_MODULES = {  # where MONAI defines them: "monai.networks.nets.unet.UNet" is accepted too
    "UNet": "unet",
    "BasicUNet": "basic_unet",
    "AttentionUnet": "attentionunet",
    "DynUNet": "dynunet",
    "SegResNet": "segresnet",
    "SegResNetDS": "segresnet_ds",
    "FlexibleUNet": "flexible_unet",
    "SwinUNETR": "swin_unetr",
    "UNETR": "unetr",
    "VNet": "vnet",
    "HighResNet": "highresnet",
    "SimpleInferer": "inferer",
    "SlidingWindowInferer": "inferer",
    "SlidingWindowInfererAdapt": "inferer",
    "SliceInferer": "inferer",
}


def target_name(section: str, target: str) -> Optional[str]:
    """The table name an exact ``_target_`` spelling stands for in ``section``, or None (not allowed)."""
    table = SECTIONS[section]
    package = _PACKAGES[section]
    for name in table:
        module = _MODULES.get(name)
        spellings = {name, f"{package}.{name}"} | ({f"{package}.{module}.{name}"} if module else set())
        if target in spellings:
            return name
    if section == "preprocessing":
        short = target[len(package) + 1 :] if target.startswith(package + ".") else target
        if short in ARRAY_SPELLINGS:
            return ARRAY_SPELLINGS[short]
    return None


def allowed_names(section: str) -> List[str]:
    return sorted(SECTIONS[section])
