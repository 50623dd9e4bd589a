"""The reliability matrix: faults and bad inputs across the layers, each with the message it must give.

Every case is run by ``test_matrix.py`` with the same checks afterwards: the user-facing message matches,
the input (file bytes, volume node voxels and geometry) is unchanged, no user segment was overwritten, no
temporary files are left, and the next normal run works. ``docs/RELIABILITY.md`` is generated from this
table (``python Testing/reliability/matrix_cases.py``) and a test keeps it in sync.
"""

import os
import sys
from dataclasses import dataclass
from typing import Callable, List

import numpy as np
import SimpleITK as sitk
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from conftest import blob_volume, tiny_unet, write_volume  # noqa: E402


@dataclass
class Case:
    id: str
    layer: str  # engine | cli | logic | worker
    what: str
    expect: str  # regex the message must match ("ok" cases: a phrase of the success check)
    run: Callable  # run(env) -> message (str)


CASES: List[Case] = []


def case(id: str, layer: str, what: str, expect: str):
    def register(fn):
        CASES.append(Case(id, layer, what, expect, fn))
        return fn

    return register


# ------------------------------------------------------------------ checkpoints (CLI, exit 2)


def _ckpt_case(env, data: bytes = b"", obj=None, name="bad.pt"):
    path = env.tmp / name
    if obj is not None:
        torch.save(obj, path)
    else:
        path.write_bytes(data)
    return env.cli_error("segment", env.input, "--model", str(path))


@case("C1", "cli", "corrupt checkpoint (random bytes)", r"not a readable PyTorch checkpoint")
def _(env):
    return _ckpt_case(env, os.urandom(3000))


@case("C2", "cli", "truncated checkpoint", r"not a readable PyTorch checkpoint.*corrupt, truncated")
def _(env):
    return _ckpt_case(env, open(env.model, "rb").read()[:5000])


@case("C3", "cli", "empty checkpoint file", r"empty \(0 bytes\)")
def _(env):
    return _ckpt_case(env, b"")


@case("C4", "cli", "pickled whole model", r"pickled Python object.*state_dict\(\)")
def _(env):
    return _ckpt_case(env, obj=tiny_unet())


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@case("C5", "cli", "checkpoint whose pickle carries code (must not run)", r"references code.*Nothing in it was run")
def _(env):
    marker = env.tmp / "pwned"
    message = _ckpt_case(env, obj={"state_dict": _Evil(marker)})
    assert not marker.exists(), "the pickle's code ran"
    return message


@case("C6", "cli", "state_dict with wrong / missing keys", r"missing keys.*unexpected keys")
def _(env):
    state = tiny_unet().state_dict()
    state.pop("model.1.submodule.0.residual.weight")
    state["model.7.extra"] = torch.zeros(2)
    return _ckpt_case(env, obj=state)


@case("C7", "cli", "model in_channels ≠ image channels", r"expects 2 input channel.*1-channel model")
def _(env):
    return _ckpt_case(env, obj=tiny_unet(in_channels=2).state_dict())


# ------------------------------------------------------------------ images (CLI, exit 2 unless handled)


def _image_case(env, array, name="img.nrrd", components=False, **geometry):
    path = write_volume(env.tmp / name, array, components=components, **geometry)
    return env.cli_error("segment", path, "--model", env.model)


@case("I1", "cli", "2-D image", r"2-D image")
def _(env):
    path = str(env.tmp / "flat.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(30, 30).astype(np.float32)), path)
    return env.cli_error("segment", path, "--model", env.model)


@case("I2", "cli", "4-D image (3 time points) for a 1-channel model", r"multi-component / 4-D image with 3")
def _(env):
    arr = np.stack([blob_volume((16, 16, 8), seed=s) for s in range(3)])
    path = str(env.tmp / "four_d.nii.gz")
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(a.transpose(2, 1, 0)) for a in arr]), path)
    return env.cli_error("segment", path, "--model", env.model)


@case("I3", "cli", "multi-component (RGB-like) image for a 1-channel model", r"multi-component / 4-D image with 3")
def _(env):
    return _image_case(env, np.stack([blob_volume((16, 16, 8), seed=s) for s in range(3)], axis=-1), components=True)


@case("I4", "cli", "constant image", r"constant")
def _(env):
    return _image_case(env, np.full((16, 16, 8), 42.0, np.float32))


@case("I5", "cli", "NaN voxels", r"NaN/Inf voxel")
def _(env):
    a = blob_volume((16, 16, 8))
    a[3, 3, 3] = np.nan
    return _image_case(env, a)


@case("I6", "cli", "Inf voxels", r"NaN/Inf voxel")
def _(env):
    a = blob_volume((16, 16, 8))
    a[1, 2, 3] = np.inf
    return _image_case(env, a)


@case("I7", "cli", "single-slice volume", r"single slice")
def _(env):
    return _image_case(env, blob_volume((16, 16, 1)))


@case("I8", "engine", "very large volume (memory guard instead of swapping)", r"needs about .* of memory.*free")
def _(env):
    import UNetSigmoidSegLib.engine.running.pipeline as pipeline

    real = pipeline.available_memory_bytes
    pipeline.available_memory_bytes = lambda: 64 * 2**20  # as if 64 MiB were free
    try:
        from UNetSigmoidSegLib.engine.files.volume import Volume

        return env.engine_error(
            Volume(np.ones((1, 256, 256, 200), np.float32) * np.arange(200, dtype=np.float32), np.eye(4))
        )
    finally:
        pipeline.available_memory_bytes = real


@case("I9", "cli", "tiny 3×3×2 volume (smaller than the network's depth) is segmented", r"ok: on the input grid")
def _(env):
    return env.cli_ok(write_volume(env.tmp / "tiny.nrrd", blob_volume((3, 3, 2))), shape=(3, 3, 2))


@case(
    "I10", "cli", "oblique, anisotropic, left-handed direction is segmented on the exact grid", r"ok: on the input grid"
)
def _(env):
    from conftest import oblique_direction

    path = write_volume(
        env.tmp / "lh.nii.gz",
        blob_volume((20, 18, 9)),
        spacing=(0.6, 1.7, 3.3),
        direction=oblique_direction(33, flip=True),
    )
    return env.cli_ok(path, shape=(20, 18, 9))


@case("I11", "cli", "unicode and spaces in every path", r"ok: on the input grid")
def _(env):
    folder = env.tmp / "dossier é ü 数据"
    folder.mkdir()
    path = write_volume(folder / "scan ä.nii.gz", blob_volume((16, 16, 8)))
    model = folder / "modèle 1.pt"
    model.write_bytes(open(env.model, "rb").read())
    return env.cli_ok(path, shape=(16, 16, 8), model=str(model), out=str(folder / "résultat.seg.nrrd"))


# ------------------------------------------------------------------ options and outputs


@case("O1", "cli", "threshold outside [0, 1]", r"outside \[0, 1\]")
def _(env):
    return env.cli_error("segment", env.input, "--model", env.model, "--threshold", "1.3")


@case("O2", "cli", "unknown activation", r"invalid choice: 'relu'")
def _(env):
    return env.cli_error("segment", env.input, "--model", env.model, "--activation", "relu")


@case("O3", "cli", "unwritable output folder (checked before inference)", r"(permission denied|does not exist)")
def _(env):
    blocker = env.tmp / "a_file"
    blocker.write_text("x")
    return env.cli_error("segment", env.input, "--model", env.model, "-o", str(blocker / "out.seg.nrrd"))


@case(
    "O4",
    "cli",
    "disk full while writing the output (size-limited file writes)",
    r"Cannot write .*(too large|File too large|space)",
)
def _(env):
    out = env.tmp / "full" / "big.seg.nrrd"
    out.parent.mkdir()
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200)); "
        "from UNetSigmoidSegLib.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    message = env.cli_error_subprocess(code, "segment", env.input, "--model", env.model, "-o", str(out))
    assert os.listdir(out.parent) == [], f"half-written files left: {os.listdir(out.parent)}"
    return message


@case("O5", "engine", "CUDA out-of-memory (injected) falls back and is announced", r"Out of memory.*retrying")
def _(env):
    from UNetSigmoidSegLib.contract.options import SegmentOptions

    logs: List[str] = []
    env.engine_run(SegmentOptions(device="cpu"), log=logs.append, inject_out_of_memory=True)
    return " | ".join(logs)


# ------------------------------------------------------------------ bundles


@case(
    "B1",
    "cli",
    "bundle with a `$` expression, untrusted (must not run)",
    r"would run code.*Nothing was run.*--trust-bundle",
)
def _(env):
    marker = env.tmp / "bundle-ran"
    root = env.bundle(
        extra_transform={
            "_target_": "Lambdad",
            "keys": "image",
            "func": f"$lambda x: __import__('pathlib').Path({str(marker)!r}).touch() or x",
        }
    )
    message = env.cli_error("segment", env.input, "--model", root)
    assert not marker.exists(), "bundle code ran without trust"
    return message


@case("B2", "cli", "bundle with a non-MONAI `_target_`", r"not a MONAI class")
def _(env):
    return env.cli_error("segment", env.input, "--model", env.bundle(target="os.system"))


# ------------------------------------------------------------------ cancel at each stage (engine)

for _stage in ("preprocess", "inference", "postprocess"):

    def _cancel(env, stage=_stage):
        return env.engine_cancel_at(stage)

    case(
        f"K{('preprocess', 'inference', 'postprocess').index(_stage) + 1}",
        "engine",
        f"cancel during {_stage}: nothing partial returned",
        r"cancelled",
    )(_cancel)


# ------------------------------------------------------------------ Slicer logic (real slicer-core scene)


@case("L1", "logic", "vector (RGB) volume node", r"not a scalar volume")
def _(env):
    return env.logic_error(env.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb"))


@case("L2", "logic", "volume under a non-hardened transform", r"not hardened.*Harden transform")
def _(env):
    tr = env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t")
    env.volume_node.SetAndObserveTransformNodeID(tr.GetID())
    try:
        return env.logic_error(env.volume_node)
    finally:
        env.volume_node.SetAndObserveTransformNodeID(None)


@case("L3", "logic", "volume node without voxels", r"no voxels")
def _(env):
    return env.logic_error(env.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"))


@case("L4", "logic", "double Segment click while running", r"already running")
def _(env):
    handle = env.logic.segmentAsync(env.volume_node, env.model, device="cpu", outputSegmentation=env.user_seg)
    try:
        env.logic.segmentAsync(env.volume_node, env.model, device="cpu")
        raise AssertionError("second run was accepted")
    except Exception as exc:  # noqa: BLE001
        message = str(exc)
    handle.wait()
    return message


@case("L5", "logic", "threshold move while a new run is running", r"ok: previous result re-thresholded")
def _(env):
    seg = env.logic.segment(env.volume_node, env.model, device="cpu", outputSegmentation=env.user_seg)
    handle = env.logic.segmentAsync(env.volume_node, env.model, device="cpu", outputSegmentation=env.user_seg)
    env.logic.setThreshold(seg, 0.2)
    handle.wait()
    return "ok: previous result re-thresholded"


@case("L6", "logic", "input volume deleted mid-run", r"cancelled: the input volume was removed")
def _(env):
    vol = env.add_volume("doomed")
    handle = env.logic.segmentAsync(
        vol,
        env.model,
        device="cpu",
        roiSize=[8, 8, 8],
        onProgress=lambda s, f, m: (
            env.scene.RemoveNode(vol) if s == "inference" and env.scene.IsNodePresent(vol) else None
        ),
    )
    return env.expect_cancel(handle)


@case("L7", "logic", "scene closed mid-run", r"cancelled: the scene was closed")
def _(env):
    scene, logic, vol = env.second_scene()  # closing the shared scene would remove the nodes the checks compare
    handle = logic.segmentAsync(
        vol,
        env.model,
        device="cpu",
        roiSize=[8, 8, 8],
        onProgress=lambda s, f, m: scene.Clear(0) if s == "inference" and f > 0 else None,
    )
    message = env.expect_cancel(handle)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    return message


# ------------------------------------------------------------------ background worker (driven through the Slicer logic)


def _worker_run(env, fault=None, on_stage=None, stage="inference", overlap=None, **client):
    """Run the logic through a real worker; ``on_stage(handle, client)`` fires at the first progress of ``stage``
    (``overlap``: more windows, so the run outlasts a slow poll on a busy machine)."""
    logic, c = env.worker_logic(fault=fault, **client)
    try:
        fired = []

        def progress(s, f, m):
            if on_stage is not None and s == stage and not fired:
                fired.append(1)
                on_stage(handle, c)

        try:
            handle = logic.segmentAsync(
                env.volume_node,
                env.model,
                device="cpu",
                roiSize=[8, 8, 8],
                overlap=overlap,
                outputSegmentation=env.user_seg,
                onProgress=progress,
            )
        except Exception as exc:  # noqa: BLE001 - e.g. no interpreter: refused at once, before any job exists
            return str(exc)
        return env.poll_until_error(handle)
    finally:
        logic.cleanup()


@case("W1", "worker", "worker killed (SIGKILL) mid-run", r"SIGKILL.*next run starts a fresh worker")
def _(env):
    import signal as sig

    return _worker_run(env, on_stage=lambda h, c: os.kill(c.pid, sig.SIGKILL), overlap=0.75)


@case("W2", "worker", "worker hangs (no heartbeat)", r"stopped responding.*no heartbeat")
def _(env):
    return _worker_run(env, fault="hang@inference", heartbeat_timeout_s=2.0)


@case("W3", "worker", "worker crashes on start (segfault)", r"could not start.*SIGSEGV")
def _(env):
    return _worker_run(env, fault="segfault@start")


@case("W4", "worker", "worker interpreter without torch / MONAI", r"torch, monai.*pip install")
def _(env):
    import subprocess

    bare = env.tmp / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    return _worker_run(env, python_executable=str(bare / "bin" / "python"))


@case("W5", "worker", "worker interpreter missing", r"not found.*torch and MONAI")
def _(env):
    return _worker_run(env, python_executable=str(env.tmp / "no" / "python3"))


@case(
    "W6",
    "worker",
    "disk full for the worker's temp data (size-limited writes)",
    r"Cannot write the input for the worker",
)
def _(env):
    code = (
        "import resource, signal, sys, numpy as np; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "from UNetSigmoidSegLib.runners.worker import WorkerRunner\n"
        "from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, Volume\n"
        "c = WorkerRunner()\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))\n"
        "try:\n"
        "    c.submit(Volume(np.ones((1, 64, 64, 64), np.float32), np.eye(4)), ModelSpec(sys.argv[1]),\n"
        "             SegmentOptions(device='cpu')).wait(60)\n"
        "except Exception as e:\n"
        "    print(e)\n"
        "finally:\n"
        "    c.close()\n"
    )
    return env.python_output(code, env.model)


@case("W7", "worker", "cancel before the worker has started (load stage)", r"cancelled by the user")
def _(env):
    logic, c = env.worker_logic()
    try:
        handle = logic.segmentAsync(env.volume_node, env.model, device="cpu", outputSegmentation=env.user_seg)
        handle.cancel()
        return env.poll_until_error(handle)
    finally:
        logic.cleanup()


@case("W8", "worker", "cancel during inference in the worker", r"cancelled by the user")
def _(env):
    return _worker_run(env, on_stage=lambda h, c: h.cancel())


@case("W9", "worker", "cancel during post-processing in the worker", r"cancelled by the user")
def _(env):
    return _worker_run(env, on_stage=lambda h, c: h.cancel(), stage="postprocess")


@case("W10", "worker", "unexpected exception inside the worker's engine", r"injected fault")
def _(env):
    return _worker_run(env, fault="raise@inference")


import matrix_security  # noqa: E402,F401 - registers the security rows (S1…)


def markdown() -> str:
    rows = ["| id | layer | fault or bad input | what the user is told (pattern) |", "|---|---|---|---|"]
    for c in CASES:
        rows.append(f"| {c.id} | {c.layer} | {c.what} | `{c.expect}` |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import matrix_cases  # the module (this file runs as __main__): its CASES hold every row, security rows too

    print(matrix_cases.markdown(), end="")
