"""Shared fixtures: tiny real MONAI UNets, oblique anisotropic volumes, the shared real data."""

import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO / "Testing" / "Data"  # real CT / MR shipped with the repository (provenance: its README.md)
sys.path.insert(0, str(REPO / "UNetSigmoidSeg"))  # also works without `pip install -e .`

# Nothing leaves the machine: every connection or name lookup off this computer, in this process and in every Python
# subprocess the tests start (this folder's sitecustomize, through PYTHONPATH), is recorded; the session fails on any.
HOOKS = REPO / "Testing" / "subprocess_hooks"
sys.path.append(str(HOOKS))
import netaudit  # noqa: E402

NET_AUDIT = os.path.join(tempfile.mkdtemp(prefix="unetseg-netaudit-"), "attempts.jsonl")
os.environ["UNETSEG_NET_AUDIT"] = NET_AUDIT
os.environ["PYTHONPATH"] = os.pathsep.join([str(HOOKS)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
netaudit.install(NET_AUDIT)


def pytest_sessionfinish(session, exitstatus):
    """Fail the session on any network attempt off this computer, naming each."""
    attempts = netaudit.read(NET_AUDIT)
    if attempts:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for attempt in attempts[:20]:
            reporter.write_line(f"network attempt off this computer: {attempt}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True, scope="session")
def private_backend_cache(tmp_path_factory):
    """Tests never write into the user's cache folder (exported networks go to a session folder, inherited by the
    workers the tests start), and ``auto`` stays on PyTorch unless a test asks for its measurement
    (``UNETSEG_AUTO_MIN_SECONDS``): runs in the rest of the suite do not depend on the machine's speed."""
    import os

    saved = {k: os.environ.get(k) for k in ("UNETSEG_CACHE_DIR", "UNETSEG_AUTO_MIN_SECONDS")}
    os.environ["UNETSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("backend-cache"))
    os.environ["UNETSEG_AUTO_MIN_SECONDS"] = "inf"
    yield os.environ["UNETSEG_CACHE_DIR"]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def worker_fault_env(fault: str) -> dict:
    """The environment that makes a worker process carry out ``fault`` (``KIND@STAGE``, see
    ``Testing/subprocess_hooks/sitecustomize.py``): the fault, and that folder first on its ``PYTHONPATH``."""
    path = [str(HOOKS)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {"UNETSEG_WORKER_FAULT": fault, "PYTHONPATH": os.pathsep.join(path)}


def shared_data(*parts: str) -> Path:
    """A file of the real test data in ``Testing/Data``; a missing file fails loudly (never a silent skip)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"Test data missing: {path}. It is part of the repository: see Testing/Data/README.md.")
    return path


def tiny_unet(in_channels=1, out_channels=1, channels=(4, 8, 16), res_units=1, seed=0, norm="batch", act="prelu"):
    """A real MONAI UNet with deterministic random weights (batch norm stats randomised so outputs vary)."""
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    net = UNet(
        3, in_channels, out_channels, channels, [2] * (len(channels) - 1), num_res_units=res_units, norm=norm, act=act
    )
    return randomise_norm_stats(net)


def randomise_norm_stats(net):
    """``net`` in eval mode with its batch-norm running statistics drawn at random (fresh ones are 0 and 1, which
    would hide a mix-up of mean and variance); the global torch generator draws them."""
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-0.2, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return net.eval()


# ``tiny_unet()``'s network as a bundle's ``network_def``
TINY_UNET_DEF = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 1,
    "norm": "batch",
}


class OutOfMemoryOnce(torch.nn.Module):
    """Wraps a network: its first call raises CUDA's out-of-memory error, later calls run the network."""

    def __init__(self, network):
        super().__init__()
        self.network, self.calls = network, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return self.network(x)


@contextlib.contextmanager
def injected_out_of_memory(model):
    """A fault injected from outside the product: ``model``'s network runs out of memory once, and the placement
    chain gets a retry on this device (as CUDA has one), so the fallback path runs without a GPU."""
    from UNetSigmoidSegLib.engine.running import inference

    network, chain = model.network, inference.placements
    model.network = OutOfMemoryOnce(network)
    inference.placements = lambda device: [(device, device, "first try"), (device, device, "retry")]
    try:
        yield
    finally:
        model.network, inference.placements = network, chain


def oblique_direction(angle_deg: float = 20.0, flip: bool = False):
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(a / 2), -math.sin(a / 2)], [0, math.sin(a / 2), math.cos(a / 2)]])
    d = rz @ rx
    if flip:
        d = d @ np.diag([1, 1, -1])  # left-handed
    return d


def write_volume(path, array_ijk, spacing=(1.5, 0.8, 2.5), origin=(12.0, -30.0, 5.5), direction=None, components=False):
    """Write ``(I, J, K)`` (or ``(I, J, K, C)`` with components=True) with an oblique, anisotropic geometry."""
    arr = np.asarray(array_ijk)
    if components:
        image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0, 3)), isVector=True)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple((oblique_direction() if direction is None else np.asarray(direction)).ravel()))
    sitk.WriteImage(image, str(path))
    return str(path)


def blob_volume(shape=(40, 36, 24), seed=0):
    """A smooth float32 volume with a bright ellipsoid, so networks produce spatially varying outputs. Its values are
    those of a normalised image (about 0 outside, 1 inside): a model that does not record its normalisation runs on
    it as given (raw intensities are refused, see ``engine.running.plausibility``)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = sum((g / w) ** 2 for g, w in zip(grid, (0.6, 0.5, 0.7)))
    return (1.0 * (r < 1) + rng.normal(0, 0.1, shape)).astype(np.float32)


@pytest.fixture
def unet_ckpt(tmp_path):
    """Factory: save a tiny UNet's state_dict (optionally wrapped) and return (path, net)."""

    def make(name="unet.pt", wrap=None, **kwargs):
        net = tiny_unet(**kwargs)
        state = net.state_dict()
        if wrap == "module":
            state = {"module." + k: v for k, v in state.items()}
        elif wrap:
            state = {wrap: state, "epoch": 3}
        path = tmp_path / name
        torch.save(state, path)
        return str(path), net

    return make


@pytest.fixture
def volume_file(tmp_path):
    def make(name="vol.nii.gz", shape=(40, 36, 24), **kwargs):
        return write_volume(tmp_path / name, blob_volume(shape), **kwargs)

    return make


def write_json(path, data):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1))
    return str(path)


# ---------------------------------------------------------------- Slicer core (mrml layer)


@pytest.fixture
def scene():
    from UNetSigmoidSegLib.mrml.scene import create_headless_scene

    return create_headless_scene()


@pytest.fixture
def model_file(tmp_path):
    def make(out_channels=1, seed=0, name="model.pt", **kwargs):
        path = tmp_path / name
        torch.save(tiny_unet(out_channels=out_channels, seed=seed, **kwargs).state_dict(), path)
        return str(path)

    return make


@pytest.fixture
def exports(monkeypatch):
    """The ONNX exports this test makes: the exporter wrapped by the test (the product keeps no count)."""
    made = []
    from UNetSigmoidSegLib.engine.backends import runtimes

    real = runtimes.export_onnx

    def counted(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runtimes, "export_onnx", counted)
    return made
