#!/usr/bin/env python
"""Train the demo brain-mask UNet (``Resources/Models/BrainT1UNet``) on the bundled T1 head MRI.

One image, one mask (``Resources/Data``): this is a *demo* model that shows the product working,
not a general brain extractor. The network and the image preprocessing are built from the
bundle's own ``configs/inference.json`` by the product's bundle reader, so training sees exactly
what inference will; the result is evaluated through the product's engine (``load_model`` →
``segment``) on the training image (seen) and, when ``nilearn`` is installed, on the MNI152
2 mm template with its brain mask (unseen; nilearn ships both inside its wheel).

Usage (from the repository root)::

    python Resources/Training/train_brain_unet.py                      # rebuilds the shipped model.pt
    python Resources/Training/train_brain_unet.py --steps 3 --output /tmp/x --eval none   # smoke test

Writes ``<output>/models/model.pt`` (state_dict only) and ``<output>/docs/training_log.json``;
copies ``configs/`` into ``<output>`` when it is not the shipped bundle, so it is a loadable bundle.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RESOURCES = os.path.dirname(HERE)
REPO = os.path.dirname(RESOURCES)
BUNDLE = os.path.join(RESOURCES, "Models", "BrainT1UNet")
DATA = os.path.join(RESOURCES, "Data")
sys.path.insert(0, os.path.join(REPO, "UNetSigmoidSeg"))  # the product, also without `pip install -e .`

from UNetSigmoidSegLib.engine.files.volume import Volume, read_volume  # noqa: E402
from UNetSigmoidSegLib.engine.loading import bundle as bundle_mod  # noqa: E402
from UNetSigmoidSegLib.engine.running import preprocess  # noqa: E402
from UNetSigmoidSegLib.engine.safety import configreader  # noqa: E402

PATCH = (64, 64, 64)  # training patch (voxels at the bundle's 2 mm spacing)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=900, help="optimizer steps (default 900; 3 for a smoke test)")
    p.add_argument("--batch", type=int, default=2, help="patches per step (default 2)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate (cosine decay to 1%%)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--output", default=BUNDLE, help="bundle folder to write (default: the shipped bundle)")
    p.add_argument(
        "--eval",
        choices=("all", "train", "none"),
        default="all",
        help="evaluate through the product's engine: training image and unseen MNI152 (all), "
        "training image only, or none",
    )
    return p.parse_args(argv)


def prepare_output(output: str) -> str:
    """Make ``output`` a bundle folder: copy ``configs/`` there unless it is the shipped bundle."""
    output = os.path.abspath(output)
    os.makedirs(os.path.join(output, "models"), exist_ok=True)
    os.makedirs(os.path.join(output, "docs"), exist_ok=True)
    if os.path.realpath(output) != os.path.realpath(BUNDLE):
        shutil.copytree(os.path.join(BUNDLE, "configs"), os.path.join(output, "configs"), dirs_exist_ok=True)
    return output


def build_from_bundle(folder: str) -> Tuple[torch.nn.Module, Any]:
    """Network and image preprocessing (minus loading) instantiated from the bundle's config,
    by the same untrusted reader (the allow-list) the product uses at inference."""
    plan = configreader.read_bundle(bundle_mod.read_bundle_configs(folder)["inference"])
    return configreader.build(plan.network, "network_def"), configreader.build_preprocessing(plan.preprocessing)


def preprocessed_pair(pre, image: Volume, mask: Volume) -> Tuple[torch.Tensor, torch.Tensor]:
    """Image ``(1, X, Y, Z)`` float32 after the bundle preprocessing, and the mask ``(1, X, Y, Z)``
    {0, 1} on the same grid.

    The mask goes through the *same* Compose (so the geometry cannot differ): resampling is
    bilinear and the normalisation an increasing affine map, so the resampled mask is the voxels
    above the midpoint of its two extreme values (= linear interpolation thresholded at 0.5).
    """
    img = preprocess.apply(pre, preprocess.to_meta(image.array, image.affine))["image"]
    lab = preprocess.apply(pre, preprocess.to_meta(mask.array.astype(np.float32), mask.affine))["image"]
    lo, hi = float(lab.min()), float(lab.max())
    if not hi > lo or img.shape != lab.shape:
        raise RuntimeError(f"mask preprocessing failed: range [{lo}, {hi}], shapes {img.shape} vs {lab.shape}")
    lab = (lab > 0.5 * (lo + hi)).float()
    before = float(mask.array.astype(bool).sum()) * mask.voxel_volume_ml
    after = float(lab.sum()) * float(abs(np.linalg.det(np.asarray(img.affine)[:3, :3]))) / 1000.0
    if abs(after - before) > 0.03 * before:
        raise RuntimeError(f"mask volume changed in preprocessing: {before:.1f} mL → {after:.1f} mL")
    return img.as_tensor().float(), lab.as_tensor().float()


def augmentation():
    """Random 64³ patches: rotation ±15°, scale ±15 %, left-right flip, intensity scale/shift/gamma, noise."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ("image", "label")
    return Compose(
        [
            RandAffined(
                keys,
                prob=1.0,
                spatial_size=PATCH,
                rotate_range=(0.26, 0.26, 0.26),
                scale_range=(0.15, 0.15, 0.15),
                translate_range=(36, 28, 36),
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandScaleIntensityd("image", factors=0.25, prob=0.8),
            RandShiftIntensityd("image", offsets=0.5, prob=0.8),
            RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
            RandGaussianNoised("image", prob=0.2, std=0.05),
        ]
    )


def batches(image: torch.Tensor, label: torch.Tensor, batch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(B, 1, *PATCH)`` image / label batches."""
    aug = augmentation()
    while True:
        items = [aug({"image": image, "label": label}) for _ in range(batch)]
        yield (
            torch.stack([torch.as_tensor(d["image"]) for d in items]).float(),
            torch.stack([torch.as_tensor(d["label"]) for d in items]).float(),
        )


def train(
    net: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, steps: int, batch: int, lr: float
) -> Dict[str, Any]:
    """Adam + cosine decay on BCE-with-logits + Dice (the network outputs logits)."""
    from monai.losses import DiceLoss

    bce, dice = torch.nn.BCEWithLogitsLoss(), DiceLoss(sigmoid=True)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=lr * 0.01)
    net.train()
    losses = []
    t0 = time.perf_counter()
    data = batches(image, label, batch)
    for step in range(1, steps + 1):
        x, y = next(data)
        logits = net(x)
        loss = bce(logits, y) + dice(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step == 1 or step % 50 == 0 or step == steps:
            print(
                f"step {step:4d}/{steps}  loss {np.mean(losses[-50:]):.4f}  {time.perf_counter() - t0:6.1f} s",
                flush=True,
            )
    net.eval()
    return {
        "train_seconds": round(time.perf_counter() - t0, 1),
        "final_loss_mean_last_50": round(float(np.mean(losses[-50:])), 4),
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean arrays of the same shape."""
    a, b = a.astype(bool), b.astype(bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def evaluate(bundle: str, image_path: str, mask: np.ndarray) -> Dict[str, Any]:
    """Segment ``image_path`` with the written bundle through the product (untrusted bundle, CPU)
    and compare with ``mask`` ``(I, J, K)`` on the image's own grid."""
    from UNetSigmoidSegLib.engine.loading.model import load_model
    from UNetSigmoidSegLib.engine.running.pipeline import SegmentOptions, segment

    model = load_model(bundle, trust_bundle=False)
    volume = read_volume(image_path)
    t0 = time.perf_counter()
    result = segment(volume, model, SegmentOptions(device="cpu"))
    pred = result.masks[0]
    image = volume.array[0]
    return {
        "dice": round(dice(pred, mask), 4),
        "predicted_ml": round(float(pred.sum()) * volume.voxel_volume_ml, 1),
        "reference_ml": round(float(mask.astype(bool).sum()) * volume.voxel_volume_ml, 1),
        "segment_seconds": round(time.perf_counter() - t0, 1),
        # context: what a trivial "every non-background voxel" mask scores on the same image
        "baseline_nonbackground_dice": round(dice(image > 1e-3 * float(image.max()), mask), 4),
    }


def unseen_mni152(bundle: str) -> Optional[Dict[str, Any]]:
    """Dice on nilearn's MNI152 2 mm T1 template vs its brain mask (never used in training)."""
    try:
        import nibabel as nib
        from nilearn import __version__ as nilearn_version
        from nilearn.datasets import load_mni152_brain_mask, load_mni152_template
    except ImportError as exc:
        print(f"unseen evaluation skipped: {exc} (pip install nilearn)")
        return None
    template, brain = load_mni152_template(resolution=2), load_mni152_brain_mask(resolution=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mni152_t1_2mm.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(template.get_fdata(), dtype=np.float32), template.affine), path)
        out = evaluate(bundle, path, np.asarray(brain.get_fdata()) > 0.5)
    out["source"] = (
        f"nilearn {nilearn_version} load_mni152_template(resolution=2) / load_mni152_brain_mask(resolution=2)"
    )
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from monai.utils import set_determinism

    set_determinism(seed=args.seed)
    output = prepare_output(args.output)
    net, pre = build_from_bundle(output)
    image_path = os.path.join(DATA, "T1_head.nii.gz")
    mask_vol = read_volume(os.path.join(DATA, "T1_head_brainmask.nii.gz"))
    image, label = preprocessed_pair(pre, read_volume(image_path), mask_vol)
    print(
        f"training image {tuple(image.shape[1:])} voxels after preprocessing, "
        f"brain fraction {float(label.mean()):.3f}; "
        f"{args.steps} steps × {args.batch} patches {PATCH}, {args.threads} thread(s)"
    )
    log: Dict[str, Any] = {
        "steps": args.steps,
        "batch": args.batch,
        "patch": list(PATCH),
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
    }
    import monai

    log["monai"] = monai.__version__
    log.update(train(net, image, label, args.steps, args.batch, args.lr))
    weights = os.path.join(output, "models", "model.pt")
    torch.save(net.state_dict(), weights)
    log["model_bytes"] = os.path.getsize(weights)
    print(f"wrote {weights} ({log['model_bytes'] / 1e6:.2f} MB) after {log['train_seconds']} s of training")
    if args.eval != "none":
        log["train_image"] = evaluate(output, image_path, mask_vol.array[0])
        print(f"Dice on the TRAINING image (seen in training): {log['train_image']['dice']:.4f}  {log['train_image']}")
    if args.eval == "all":
        log["unseen_mni152"] = unseen_mni152(output)
        if log["unseen_mni152"]:
            print(f"Dice on the UNSEEN MNI152 template: {log['unseen_mni152']['dice']:.4f}  {log['unseen_mni152']}")
    with open(os.path.join(output, "docs", "training_log.json"), "w", encoding="utf-8") as f:
        json.dump(log, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
