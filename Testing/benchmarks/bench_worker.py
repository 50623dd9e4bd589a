"""Background-worker benchmarks, measured side by side in one run (ratios, not timed assertions).

W1  warm re-run end-to-end through the worker vs bare in-process ``sliding_window_inference``,
    same network and volume (128³, roi 96, CPU)                                    goal ≤ 1.10×
W2  cold first run minus bare inference vs ``python -c "import torch, monai"``      goal ≤ 1.5×
W3  hand-off of a 512×512×300 float32 volume in and its probabilities + masks back
    vs writing + reading the same arrays as uncompressed NRRD with SimpleITK        goal ≤ 0.2×
W4  worker peak RSS segmenting 512×512×300 on the CPU with default settings, small UNet
    (worker's own ``getrusage`` and client-side psutil sampling of its process tree)  goal ≤ 3 GB
W5  cancel acknowledgement at default settings on the CPU (after the first window)  goal ≤ 1 s

Usage: python Testing/benchmarks/bench_worker.py [--repeats 5] [--cold 3] [--skip-large] [--json out.json]

On a shared, loaded machine single runs vary by 2-4x: timings are taken in adjacent pairs and the
ratio is the median of the per-pair ratios; W1/W2 run torch with ``--threads`` (default 1) on both
sides, which is far steadier under load than competing for two busy cores. W3/W4 use defaults.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "UNetSigmoidSeg"))

from bench_common import environment  # noqa: E402
from UNetSigmoidSegLib.contract import ModelSpec, Volume  # noqa: E402
from UNetSigmoidSegLib.contract.options import SegmentOptions  # noqa: E402
from UNetSigmoidSegLib.runners.worker import WorkerRunner  # noqa: E402
from UNetSigmoidSegLib.worker import handoff  # noqa: E402

LARGE = (512, 512, 300)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _network(channels=(16, 32, 64, 128), res_units=2):
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 1, channels, [2] * (len(channels) - 1), num_res_units=res_units).eval()


def bench_warm_and_cold(folder: str, repeats: int, cold: int, threads: int, size: int = 128):
    from monai.inferers import sliding_window_inference

    net = _network()
    path = os.path.join(folder, "bench_unet.pt")
    torch.save(net.state_dict(), path)
    arr = np.random.default_rng(0).normal(0, 1, (1, size, size, size)).astype(np.float32)
    affine = np.eye(4)
    opts = SegmentOptions(device="cpu", roi_size=[96, 96, 96], overlap=0.25, sw_batch_size=1, blend_mode="gaussian")
    x = torch.from_numpy(arr)[None]
    env = {"OMP_NUM_THREADS": str(threads)}  # the same torch thread count on both sides

    def bare():
        with torch.inference_mode():
            sliding_window_inference(x, [96, 96, 96], 1, net, overlap=0.25, mode="gaussian")

    client = WorkerRunner(env=env)
    try:
        client.submit(Volume(arr, affine), ModelSpec(path), opts).wait()  # cold start + model load, not timed here
        bare()
        b, w = [], []
        for _ in range(repeats):  # interleaved pairs: each ratio compares runs under the same machine load
            b.append(_timed(bare)[0])
            w.append(_timed(lambda: client.submit(Volume(arr, affine), ModelSpec(path), opts).wait())[0])
        latencies = [_cancel_latency(client, arr, affine, path, opts) for _ in range(repeats)]
        assert client.hello["torch_threads"] == torch.get_num_threads() == threads
    finally:
        client.close()
    warm = {
        "name": "W1 warm worker re-run vs bare sliding_window_inference",
        "size": f"{size}^3",
        "threads": threads,
        "bare_s": round(statistics.median(b), 3),
        "worker_s": round(statistics.median(w), 3),
        "ratio": round(statistics.median([wi / bi for wi, bi in zip(w, b)]), 3),
        "runs_bare_s": [round(t, 2) for t in b],
        "runs_worker_s": [round(t, 2) for t in w],
        "goal": "<= 1.10",
    }
    cancel = {
        "name": "W5 cancel acknowledged (CPU, roi 96, UNet(16..128)), worker kept",
        "median_s": round(statistics.median(latencies), 3),
        "max_s": round(max(latencies), 3),
        "goal": "<= 1 s",
    }
    imports, colds, bares = [], [], []
    for _ in range(cold):
        imports.append(
            _timed(
                lambda: subprocess.run(
                    [sys.executable, "-c", "import torch, monai"], check=True, env=dict(os.environ, **env)
                )
            )[0]
        )
        c = WorkerRunner(env=env)
        try:
            colds.append(_timed(lambda c=c: c.submit(Volume(arr, affine), ModelSpec(path), opts).wait())[0])
        finally:
            c.close()
        bares.append(_timed(bare)[0])
    ratios = [(ci - bi) / ii for ci, bi, ii in zip(colds, bares, imports)]
    cold_res = {
        "name": "W2 cold first run minus bare inference vs python -c 'import torch, monai'",
        "threads": threads,
        "import_s": round(statistics.median(imports), 3),
        "cold_run_s": round(statistics.median(colds), 3),
        "bare_s": round(statistics.median(bares), 3),
        "ratio": round(statistics.median(ratios), 3),
        "runs_import_s": [round(t, 2) for t in imports],
        "runs_cold_s": [round(t, 2) for t in colds],
        "runs_bare_s": [round(t, 2) for t in bares],
        "goal": "<= 1.5",
    }
    return [warm, cancel, cold_res]


def _cancel_latency(client, arr, affine, path, opts) -> float:
    """Seconds from ``cancel()`` (sent after the first window) to the worker's acknowledgement."""
    from UNetSigmoidSegLib.errors import CancelledError

    pid = client.pid
    job = client.submit(Volume(arr, affine), ModelSpec(path), opts)
    while not any(m.type == "progress" and m.stage == "inference" and m.fraction > 0 for m in job.poll()):
        time.sleep(0.01)
    t0 = time.perf_counter()
    job.cancel()
    try:
        job.wait()
    except CancelledError:
        pass
    latency = time.perf_counter() - t0
    assert client.pid == pid, "cancel was not acknowledged: the worker was killed"
    return latency


def bench_handoff(folder: str, repeats: int, shape=LARGE):
    """Same code path as a run (client write → worker map + full read → worker writes → client reads + unpack)."""
    rng = np.random.default_rng(1)
    volume = rng.normal(0, 1, (1,) + shape).astype(np.float32)
    probs = rng.integers(0, 256, (1,) + shape, dtype=np.uint8)
    masks = probs >= 128
    affine = np.diag([0.7, 0.7, 1.5, 1.0])

    def ours():
        job = tempfile.mkdtemp(dir=folder)
        desc = handoff.write_array(job, "input", volume)
        np.array(handoff.map_array(desc))  # the worker touches every byte (the engine copies it to a tensor)
        out_v = handoff.write_array(job, "values", probs)
        out_m = handoff.write_array(job, "masks", handoff.pack_masks(masks))
        handoff.read_array(out_v)
        handoff.unpack_masks(handoff.read_array(out_m), masks.shape)
        handoff.remove_dir(job)

    def nrrd():
        from UNetSigmoidSegLib.engine.files.volume import array_to_sitk

        job = tempfile.mkdtemp(dir=folder)
        for name, arr in (("input", volume[0]), ("values", probs[0]), ("masks", masks[0].astype(np.uint8))):
            p = os.path.join(job, name + ".nrrd")
            sitk.WriteImage(array_to_sitk(arr, affine), p, False)
            sitk.GetArrayFromImage(sitk.ReadImage(p))
        handoff.remove_dir(job)

    ours(), nrrd()  # warm the page cache / allocator for both
    a, b = [], []
    for _ in range(repeats):
        a.append(_timed(ours)[0])
        b.append(_timed(nrrd)[0])
    ma, mb = statistics.median(a), statistics.median(b)
    return {
        "name": "W3 hand-off .npy + packed masks vs uncompressed NRRD (SimpleITK)",
        "size": "x".join(map(str, shape)),
        "handoff_s": round(ma, 3),
        "nrrd_s": round(mb, 3),
        "ratio": round(ma / mb, 3),
        "goal": "<= 0.2",
    }


def _sample_rss(pid: int, stop: threading.Event, peak: list) -> None:
    import psutil

    try:
        proc = psutil.Process(pid)
        while not stop.wait(0.05):
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                peak[0] = max(peak[0], rss)
            except psutil.NoSuchProcess:
                return
    except Exception:  # noqa: BLE001
        return


def bench_large_run(folder: str, shape=LARGE):
    net = _network(channels=(8, 16, 32), res_units=1)
    path = os.path.join(folder, "small_unet.pt")
    torch.save(net.state_dict(), path)
    grid = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    volume = (100.0 * ((grid[0] / 0.6) ** 2 + (grid[1] / 0.5) ** 2 + (grid[2] / 0.7) ** 2 < 1)).astype(np.float32)[None]
    del grid
    client = WorkerRunner()
    try:
        pid = client.start()["pid"]
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=_sample_rss, args=(pid, stop, peak), daemon=True)
        sampler.start()
        job = client.submit(
            Volume(volume, np.diag([0.7, 0.7, 1.5, 1.0])), ModelSpec(path), SegmentOptions(device="cpu")
        )
        total, result = _timed(job.wait)
        stop.set()
        sampler.join()
    finally:
        client.close()
    info = job.info
    handoff_s = sum(info.timings[k] for k in ("write_input_s", "map_input_s", "write_output_s", "read_output_s"))
    return {
        "name": "W4 worker peak RSS, 512x512x300 CPU, default settings, UNet(8,16,32)",
        "size": "x".join(map(str, shape)),
        "run_s": round(total, 1),
        "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
        "handoff_in_run_s": round(handoff_s, 3),
        "peak_rss_worker_getrusage_GB": round(info.peak_rss_bytes / 1e9, 3),
        "peak_rss_client_sampled_GB": round(peak[0] / 1e9, 3),
        "goal": "<= 3 GB",
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold", type=int, default=3, help="cold starts to measure (each imports torch + MONAI)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for W1/W2 on both sides (1: steadiest on a shared machine)",
    )
    parser.add_argument("--skip-large", action="store_true", help="skip W3/W4 (512x512x300)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(load_avg=os.getloadavg())
    print(f"environment: {env}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="unetseg-bench-") as folder:
        for bench in [lambda: bench_warm_and_cold(folder, args.repeats, args.cold, args.threads)] + (
            []
            if args.skip_large
            else [lambda: [bench_handoff(folder, args.repeats)], lambda: [bench_large_run(folder)]]
        ):
            for r in bench():
                print(json.dumps(r), flush=True)
                results.append(r)
    env["load_avg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
