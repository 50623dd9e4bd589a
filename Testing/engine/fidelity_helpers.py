"""Helpers for the fidelity tests: UNets built as MONAI's tutorials build them, saved the way training frameworks
save them (plain, DataParallel, Lightning, Ignite, TorchScript), and the script a researcher writes with MONAI."""

import numpy as np
import torch

from conftest import randomise_norm_stats

CT = ("totalsegmentator", "example_ct_sm.nii.gz")  # 122×101×30, 3 mm, int16 HU
MR = ("totalsegmentator", "example_mr_sm.nii.gz")  # 117×91×20, 3 mm
T1 = ("itk-t1", "KmeansTest_T1UCharRaw.nii.gz")  # 128×128×62, 2×2×3 mm, a permuted direction
NORMALIZATION = {CT: ["--normalization", "ct", "--ct-window", "-57", "164"], MR: ["--normalization", "zscore"]}
NORMALIZATION[T1] = NORMALIZATION[MR]


def random_unet(
    spatial_dims=3,
    out_channels=1,
    channels=(4, 8, 16),
    strides=None,
    res_units=1,
    kernel_size=3,
    up_kernel_size=3,
    norm="batch",
    seed=0,
):
    """``monai.networks.nets.UNet`` as the tutorials build it, random weights, batch-norm statistics randomised."""
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    net = UNet(
        spatial_dims=spatial_dims,
        in_channels=1,
        out_channels=out_channels,
        channels=channels,
        strides=strides or [2] * (len(channels) - 1),
        kernel_size=kernel_size,
        up_kernel_size=up_kernel_size,
        num_res_units=res_units,
        norm=norm,
    )
    return randomise_norm_stats(net)


class LightningModule(torch.nn.Module):
    """What ``pytorch_lightning.LightningModule.state_dict()`` holds (it is ``nn.Module.state_dict``): the UNet
    under the attribute the user chose (MONAI's spleen Lightning tutorial: ``self._model = UNet(...)``) and a loss
    with a buffer."""

    def __init__(self, attribute, net):
        super().__init__()
        setattr(self, attribute, net)
        self.loss_function = torch.nn.BCEWithLogitsLoss(pos_weight=torch.ones(1))


def _optimizer_state(net):
    """A real Adam state after one step (tensors under integer keys, as optimizers save them)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    net.train()
    out = net(torch.randn((2, 1) + (16,) * (net.dimensions if hasattr(net, "dimensions") else 3)))
    out.mean().backward()
    optimizer.step()
    net.eval()
    return optimizer.state_dict()


def save_layout(net, path, layout):
    """Save ``net`` the way a training framework does; returns the path."""
    if layout == "plain":
        obj = net.state_dict()
    elif layout == "dataparallel":  # torch.nn.DataParallel(net).state_dict()
        obj = {"module." + k: v for k, v in net.state_dict().items()}
    elif layout.startswith("lightning"):
        module = LightningModule(layout.split(":")[1], net)
        if layout.startswith("lightning-ema"):  # self.ema = AveragedModel(self.unet): an average beside the weights
            module.ema = torch.optim.swa_utils.AveragedModel(net)
            with torch.no_grad():
                for p in module.ema.parameters():
                    p.add_(0.5)
        saved = {k: v.clone() for k, v in module.state_dict().items()}
        obj = {
            "epoch": 12,
            "global_step": 480,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": saved,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 12}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_dice'}": {"best_model_score": torch.tensor(0.91)}},
            "optimizer_states": [_optimizer_state(net)],
            "lr_schedulers": [{"last_epoch": 12, "_last_lr": [1e-4]}],
            "hparams_name": "kwargs",
            "hyper_parameters": {"lr": 1e-4},
        }
        attribute = layout.split(":")[1] + "."
        net.load_state_dict({k[len(attribute) :]: v for k, v in saved.items() if k.startswith(attribute)})
    elif layout == "ignite":  # ignite.handlers.Checkpoint({"net": net, "opt": opt}) saves each state_dict by name
        saved = {k: v.clone() for k, v in net.state_dict().items()}
        obj = {"net": saved, "opt": _optimizer_state(net), "trainer": {"epoch": 4, "iteration": 400}}
        net.load_state_dict(saved)
    else:
        raise AssertionError(layout)
    torch.save(obj, path)
    return str(path)


def save_torchscript(net, path, how, spatial_dims=3):
    if how == "script":
        ts = torch.jit.script(net)
    else:
        ts = torch.jit.trace(net, torch.zeros((1, 1) + (32,) * spatial_dims))
    torch.jit.save(ts, str(path))
    return str(path)


# ---------------------------------------------------------------- the researcher's own MONAI script


def monai_reference(image_path, net, data, window, activation, threshold=0.5):
    """LoadImage → the same normalisation → sliding_window_inference (2-D: SliceInferer) → Activations →
    AsDiscrete. Returns ``(probabilities (C, I, J, K), masks (S, I, J, K) bool)``."""
    from monai.inferers import SliceInferer, sliding_window_inference
    from monai.transforms import Activations, AsDiscrete, LoadImage, NormalizeIntensity, ScaleIntensityRange

    image = LoadImage(image_only=True, ensure_channel_first=True)(str(image_path))
    if data == CT:
        image = ScaleIntensityRange(a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True)(image)
    else:
        image = NormalizeIntensity(channel_wise=True)(image)
    inputs = image.as_tensor()[None].float()
    roi, batch, overlap, mode = window["roi_size"], window["sw_batch_size"], window["overlap"], window["blend_mode"]
    with torch.no_grad():
        if window["slice_axis"] is None:
            logits = sliding_window_inference(inputs, roi, batch, net, overlap, mode)
        else:
            inferer = SliceInferer(
                roi_size=roi, sw_batch_size=batch, spatial_dim=window["slice_axis"], overlap=overlap, mode=mode
            )
            logits = inferer(inputs, net)
    logits = logits[0]
    if activation == "softmax":
        probabilities = Activations(softmax=True)(logits)
        labels = AsDiscrete(argmax=True)(probabilities)[0]
        masks = np.stack([(labels == c).numpy() for c in range(1, probabilities.shape[0])])
    else:
        probabilities = Activations(sigmoid=activation == "sigmoid")(logits)
        masks = AsDiscrete(threshold=threshold)(probabilities).numpy().astype(bool)
    return probabilities.numpy(), masks


def dice(a, b):
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
