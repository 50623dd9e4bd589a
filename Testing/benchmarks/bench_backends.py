"""CPU backends (issue #13), measured side by side in one run (ratios, not timed assertions).

BW  one 96³ window: each backend's prepared forward vs PyTorch's, same input, interleaved (ONNX Runtime too, as a
    reference: not a product backend)
BE  a whole 256×256×128 volume end to end through ``segment()`` per backend (prepared, warm) vs bare MONAI
    ``sliding_window_inference`` on PyTorch (roi 96, overlap 0.25, Gaussian) in the same rounds
    goals (auto): ≤ 0.5× tutorial, ≤ 0.8× seed article, never above 1.0× (noise aside); the in-run checks against
    PyTorch (``engine.backends.check``) are inside the timed runs: ``checked``, ``check_s`` say what they cost
BX  first use in a fresh process (empty cache): preparation seconds (export, compile, validation; auto: its
    measurement) and the whole first run; then the cached re-use in another fresh process      goals ≤ 20 s, ≤ 1 s
BM  peak RSS of those fresh processes (imports included; Linux ``VmHWM``, else ``ru_maxrss``)

Networks: ``tutorial`` UNet(16…256, 2 residual units, batch norm), ``seed`` UNet(16…256, no residual units,
instance norm), ``brain`` the demo bundle (trained weights). Input: the demo T1 head MRI resampled to 256×256×128
and z-scored (the bundle gets it at 2 mm, so every network sees 256×256×128). torch uses its default threads.

Usage: python Testing/benchmarks/bench_backends.py [--repeats 3] [--nets tutorial,seed,brain] [--quick] [--json out]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(REPO, "UNetSigmoidSeg"))
sys.path.insert(0, HERE)

from bench_common import emit, environment  # noqa: E402
from UNetSigmoidSegLib.contract.model import ModelInfo  # noqa: E402
from UNetSigmoidSegLib.contract.options import SegmentOptions  # noqa: E402
from UNetSigmoidSegLib.contract.result import Window  # noqa: E402
from UNetSigmoidSegLib.contract.volume import Volume  # noqa: E402

BUNDLE = os.path.join(REPO, "Resources", "Models", "BrainT1UNet")
T1 = os.path.join(REPO, "Resources", "Data", "T1_head.nii.gz")
NETS = {
    "tutorial": dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch"),
    "seed": dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=0, norm="instance"),
}
OUT_CHANNELS = {"tutorial": 2, "seed": 1}
BACKENDS = ("torch", "onednn", "openvino", "auto")
ROI = [96, 96, 96]


def build(name):
    """(LoadedModel, spacing the volume gets) of a benchmark network."""
    from UNetSigmoidSegLib.engine.loading.model import LoadedModel, load_model

    if name == "brain":
        return load_model(BUNDLE), 2.0
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    args = dict(spatial_dims=3, in_channels=1, out_channels=OUT_CHANNELS[name], **NETS[name])
    net = UNet(**args).eval()
    activation = "softmax" if OUT_CHANNELS[name] > 1 else "sigmoid"
    info = ModelInfo(name, "checkpoint", "UNet", 1, OUT_CHANNELS[name], activation, "bench", network_args=args)
    info.size_divisor = 16
    return LoadedModel(net, info), 1.0


def volume(shape=(256, 256, 128)):
    """The demo T1 resampled to ``shape``, z-scored: ``(I, J, K)`` float32."""
    from UNetSigmoidSegLib.engine.files.volume import read_volume

    data = torch.from_numpy(read_volume(T1).array.astype(np.float32))[None]
    data = torch.nn.functional.interpolate(data, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0]
    return ((data - data.mean()) / data.std()).numpy()


def options(backend):
    return SegmentOptions(device="cpu", backend=backend, roi_size=ROI, overlap=0.25, blend_mode="gaussian")


def _median_ratio(rows, key, base):
    return statistics.median(r[key] / r[base] for r in rows)


# ---------------------------------------------------------------- in process: one window, whole volume


def bench_window(name, model, image, repeats):
    """BW: seconds per 96³ window of each backend's forward (prepared from this very window)."""
    from UNetSigmoidSegLib.engine.backends import choose as backends
    from UNetSigmoidSegLib.engine.backends import runtimes

    x = image[:, :, 80:176, 80:176, 16:112].contiguous()
    window = Window(ROI, 0.25, 1, "gaussian")
    forwards = {"torch": model.network}
    for backend in ("onednn", "openvino"):
        forward, choice, _ = backends.prepare(model, x, window, backend, "cpu", 1, lambda m: None, lambda m: None)
        if choice.backend == backend:
            forwards[backend] = forward
    try:
        import onnxruntime as ort

        options_ = ort.SessionOptions()
        options_.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(
            runtimes.export_onnx(model.network, x), options_, providers=["CPUExecutionProvider"]
        )
        forwards["onnxruntime (reference)"] = lambda t: torch.from_numpy(session.run(None, {"input": t.numpy()})[0])
    except ImportError:
        pass
    times = {k: [] for k in forwards}
    with torch.inference_mode():
        for f in forwards.values():
            f(x)
        for _ in range(repeats):
            for key, f in forwards.items():
                t0 = time.perf_counter()
                f(x)
                times[key].append(time.perf_counter() - t0)
    base = statistics.median(times["torch"])
    return [
        {
            "name": f"BW {name} one window 96³",
            "net": name,
            "backend": key,
            "s": round(statistics.median(v), 4),
            "min_s": round(min(v), 4),
            "max_s": round(max(v), 4),
            "ratio_vs_torch": round(statistics.median(v) / base, 3),
        }
        for key, v in times.items()
    ]


def _agreement(got, want):
    """The whole volume against the PyTorch path: the largest probability difference (uint8 cache steps of 1/255)
    and the smallest Dice over segments."""
    step = int(np.abs(got.probabilities.quantized.astype(int) - want.probabilities.quantized.astype(int)).max())
    dice = []
    for a, b in zip(got.masks, want.masks):
        total = int(a.sum()) + int(b.sum())
        dice.append(1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total)
    return {"max_probability_step_vs_torch": step, "min_dice_vs_torch": round(min(dice), 6)}


def bench_volume(name, model, array, spacing, repeats):
    """BE: whole volume through ``segment()`` per backend (warm) vs bare MONAI on PyTorch, interleaved rounds."""
    from monai.inferers import sliding_window_inference

    from UNetSigmoidSegLib.engine.running.pipeline import segment

    vol = Volume(array[None], np.diag([spacing, spacing, spacing, 1.0]))
    tensor = torch.from_numpy(array)[None, None]
    chosen, agreement = {}, {}
    for backend in BACKENDS:  # prepare (export, compile, auto's measurement) outside the timed rounds
        segment(vol, model, options(backend))
        result = segment(vol, model, options(backend))  # warm: what each timed round does, checks included
        chosen[backend] = result.backend
        if backend == "torch":
            reference = result
        agreement[backend] = _agreement(result, reference)

    def bare():
        with torch.inference_mode():
            sliding_window_inference(tensor, ROI, 1, model.network, overlap=0.25, mode="gaussian")

    rounds = []
    for _ in range(repeats):
        row = {}
        for key in ("bare",) + BACKENDS:
            t0 = time.perf_counter()
            bare() if key == "bare" else segment(vol, model, options(key))
            row[key] = time.perf_counter() - t0
        rounds.append(row)
    out = []
    for key in BACKENDS:
        out.append(
            {
                "name": f"BE {name} 256×256×128 end to end",
                "net": name,
                "backend": key,
                "ran": chosen[key].backend,
                "reason": chosen[key].reason,
                "checked": f"{chosen[key].checked} of {chosen[key].windows}",
                "pytorch_windows": chosen[key].pytorch_windows,
                "check_s": round(chosen[key].check_s, 3),
                "max_abs_diff": chosen[key].max_abs_diff,
                "segment_s": round(statistics.median(r[key] for r in rounds), 3),
                "bare_monai_torch_s": round(statistics.median(r["bare"] for r in rounds), 3),
                "ratio_vs_bare": round(_median_ratio(rounds, key, "bare"), 3),
                **agreement[key],
                "spread": [round(r[key] / r["bare"], 3) for r in rounds],
            }
        )
    return out


# ---------------------------------------------------------------- fresh processes: first use, cached re-use, memory


def _peak_rss_bytes():
    """This process' peak resident memory. Linux: ``VmHWM`` (``ru_maxrss`` keeps the forking parent's peak across
    ``exec``, so a child started by a large benchmark process would report the parent's)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def child(name, backend):
    """One fresh process: load, one ``segment()`` of the volume; prints a JSON line."""
    from UNetSigmoidSegLib.engine.running.pipeline import segment

    t0 = time.perf_counter()
    model, spacing = build(name)
    vol = Volume(volume()[None], np.diag([spacing, spacing, spacing, 1.0]))
    t1 = time.perf_counter()
    result = segment(vol, model, options(backend))
    peak = _peak_rss_bytes()
    print(
        json.dumps(
            {
                "backend": result.backend.backend,
                "source": result.backend.source,
                "prepare_s": round(result.timings["backend_s"], 3),
                "segment_s": round(time.perf_counter() - t1, 3),
                "load_s": round(t1 - t0, 3),
                "peak_rss_mb": round(peak / 2**20, 1),
            }
        )
    )


def bench_first_use(name):
    """BX/BM: per backend, a fresh process on an empty cache, then another on the cache it left."""
    out = []
    for backend in BACKENDS:
        with tempfile.TemporaryDirectory(prefix="bench-backend-cache-") as cache:
            env = dict(os.environ, UNETSEG_CACHE_DIR=cache)
            env.pop("UNETSEG_AUTO_MIN_SECONDS", None)
            runs = []
            for _ in range(2):
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", name, backend], env=env, capture_output=True, text=True
                )
                if proc.returncode:
                    runs.append({"error": proc.stderr[-400:]})
                else:
                    runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        first, cached = runs
        out.append(
            {
                "name": f"BX {name} first use / cached re-use (fresh processes)",
                "net": name,
                "backend": backend,
                "first": first,
                "cached": cached,
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nets", default="tutorial,seed,brain")
    parser.add_argument("--quick", action="store_true", help="one round, no fresh-process runs")
    parser.add_argument("--json")
    parser.add_argument("--child", nargs=2, metavar=("NET", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    os.environ.pop("UNETSEG_AUTO_MIN_SECONDS", None)
    repeats = 1 if args.quick else args.repeats
    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-backend-cache-") as cache:
        os.environ["UNETSEG_CACHE_DIR"] = cache
        array = volume()
        for name in args.nets.split(","):
            model, spacing = build(name)
            image = torch.from_numpy(array)[None, None]
            for rows in (
                bench_window(name, model, image, 5 * repeats),
                bench_volume(name, model, array, spacing, repeats),
            ):
                for row in rows:
                    row["load_avg_1m"] = round(os.getloadavg()[0], 2)
                    print(json.dumps(row), flush=True)
                results += rows
            if not args.quick:
                results += bench_first_use(name)
    env = environment(load_avg_before=load_before, load_avg_after=os.getloadavg(), repeats=repeats)
    try:
        import openvino

        env["openvino"] = openvino.__version__
    except ImportError:
        env["openvino"] = None
    return emit(env, results, args.json)


if __name__ == "__main__":
    sys.exit(main())
