"""P6 GPU benchmark (run on a CUDA machine; a few minutes): AMP vs fp32 sliding window, and the engine
end to end vs bare MONAI ``sliding_window_inference`` with AMP, at 512×512×300.

Without CUDA it prints one line saying so and exits 0 (the report then states P6 was not measured).

Usage: python Testing/benchmarks/bench_gpu.py [--repeats 3] [--size 512 512 300] [--json out.json]
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "UNetSigmoidSeg"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import emit, environment, loaded_model  # noqa: E402


def _timed(fn, repeats):
    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"name": "P6 GPU", "skipped": "no CUDA device in this Python (torch %s)" % torch.__version__}))
        return 0
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    from UNetSigmoidSegLib.contract.options import SegmentOptions
    from UNetSigmoidSegLib.engine.files.volume import Volume
    from UNetSigmoidSegLib.engine.running.pipeline import segment

    torch.manual_seed(0)
    net = UNet(3, 1, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2).eval().cuda()
    arr = np.random.default_rng(0).normal(0, 1, (1, *args.size)).astype(np.float32)
    x = torch.from_numpy(arr)[None].cuda()
    roi, batch = [96, 96, 96], 4

    def bare(amp):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            sliding_window_inference(x, roi, batch, net, overlap=0.25, mode="gaussian")

    model = loaded_model(net, size_divisor=16)
    vol = Volume(arr, np.eye(4))
    opts = SegmentOptions(
        device="cuda", amp=True, roi_size=roi, sw_batch_size=batch, overlap=0.25, blend_mode="gaussian"
    )

    def engine():
        segment(vol, model, opts)

    bare(True), bare(False), engine()  # warm-up (cuDNN autotune, allocator)
    fp32, amp = _timed(lambda: bare(False), args.repeats), _timed(lambda: bare(True), args.repeats)
    end_to_end = _timed(engine, args.repeats)
    torch.cuda.reset_peak_memory_stats()
    engine()
    peak = torch.cuda.max_memory_allocated() / 2**30
    env = environment(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda, size=args.size)
    results = [
        {
            "name": "P6a AMP vs fp32 sliding window",
            "fp32_s": round(fp32, 3),
            "amp_s": round(amp, 3),
            "ratio": round(amp / fp32, 3),
        },
        {
            "name": "P6b engine end-to-end (AMP) vs bare MONAI (AMP)",
            "bare_s": round(amp, 3),
            "engine_s": round(end_to_end, 3),
            "ratio": round(end_to_end / amp, 3),
            "engine_peak_gpu_gib": round(peak, 2),
        },
    ]
    return emit(env, results, args.json)


if __name__ == "__main__":
    sys.exit(main())
