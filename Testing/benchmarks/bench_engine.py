"""Engine benchmarks, measured side by side in one run (ratios, not timed assertions).

B1  engine ``segment`` vs bare ``sliding_window_inference`` of the same network, same process, 128³ CPU (goal ≤ 1.05×)
B2  re-threshold of a cached 256³ probability map (goal ≤ 5 ms median) vs numpy on float32 alone

Usage: python Testing/benchmarks/bench_engine.py [--repeats 5] [--json out.json]
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "UNetSigmoidSeg"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import emit, environment, loaded_model, paired  # noqa: E402
from UNetSigmoidSegLib.contract.options import SegmentOptions  # noqa: E402
from UNetSigmoidSegLib.contract.result import make_probabilities, threshold_map  # noqa: E402
from UNetSigmoidSegLib.engine.files.volume import Volume  # noqa: E402
from UNetSigmoidSegLib.engine.loading.model import LoadedModel  # noqa: E402
from UNetSigmoidSegLib.engine.running.pipeline import segment  # noqa: E402


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench_overhead(repeats: int, size: int = 128):
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(3, 1, 1, (16, 32, 64, 128), (2, 2, 2), num_res_units=2).eval()
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 1, (1, size, size, size)).astype(np.float32)
    vol = Volume(arr, np.diag([1.0, 1.0, 1.0, 1.0]))
    model = loaded_model(net, size_divisor=8)
    opts = SegmentOptions(device="cpu", roi_size=[96, 96, 96], overlap=0.25, sw_batch_size=1, blend_mode="gaussian")
    x = torch.from_numpy(arr)[None]

    def bare():
        with torch.inference_mode():
            sliding_window_inference(x, [96, 96, 96], 1, net, overlap=0.25, mode="gaussian")

    def engine():
        segment(vol, model, opts)

    bare()  # warm-up both paths (allocator, MONAI lazy imports)
    engine()
    mb, me, ratio = paired(bare, engine, repeats)
    # the engine's own fixed cost, without network noise: the same run with a 1x1x1 convolution as the network
    tiny = LoadedModel(torch.nn.Conv3d(1, 1, 1).eval(), model.info)
    tb, te, _ = paired(
        lambda: sliding_window_inference(x, [96, 96, 96], 1, tiny.network, overlap=0.25, mode="gaussian"),
        lambda: segment(vol, tiny, opts),
        repeats,
    )
    return {
        "name": "B1 engine vs bare sliding_window_inference",
        "size": f"{size}^3",
        "bare_ms": round(mb * 1000, 1),
        "engine_ms": round(me * 1000, 1),
        "ratio": round(ratio, 3),
        "fixed_overhead_ms": round((te - tb) * 1000, 1),
        "goal": "<= 1.05",
    }


def bench_rethreshold(repeats: int, size: int = 256):
    rng = np.random.default_rng(1)
    p = rng.random((1, size, size, size), dtype=np.float32)
    pm = make_probabilities(p, "sigmoid")
    cached = _median_ms(lambda: threshold_map(pm, [0.37]), repeats)
    numpy_float = _median_ms(lambda: p[0] >= 0.37, repeats)
    return {
        "name": "B2 re-threshold cached probabilities",
        "size": f"{size}^3",
        "cached_uint8_ms": round(cached, 2),
        "numpy_float32_ms": round(numpy_float, 2),
        "ratio": round(cached / numpy_float, 3),
        "goal": "<= 5 ms median",
        "cache_bytes_per_voxel": pm.nbytes / p[0].size,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides (1: steadiest)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # 1 thread on both sides is far steadier on a shared machine
    results = [bench_rethreshold(max(20, args.repeats * 10)), bench_overhead(args.repeats)]
    return emit(environment(), results, args.json)


if __name__ == "__main__":
    sys.exit(main())
