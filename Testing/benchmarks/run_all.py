"""One command for every benchmark: JSON results plus a markdown report with a scaling plot.

    python Testing/benchmarks/run_all.py [--quick] [--out Testing/benchmarks/results]

P1 threshold step → segment updated (256³, 512×512×300) vs the labelmap-import route   bench_mrml.py
P2 warm re-run through the worker vs bare in-process sliding_window_inference            bench_worker.py W1
P3 cold first run vs ``python -c "import torch, monai"``                                 bench_worker.py W2
P4 array hand-off 512×512×300 vs uncompressed NRRD write+read                            bench_worker.py W3
P5 memory: cached probabilities bytes/voxel; worker peak RSS at 512×512×300              bench_mrml.py / W4
P6 GPU: AMP vs fp32, engine vs bare MONAI with AMP (only where CUDA is available)        bench_gpu.py
R1-R4 remote server on loopback vs the local warm worker; bytes on the wire; threshold  bench_remote.py
H1-H4 the one engine host vs the tree before it (old vs new, alternating processes)     bench_host.py
B  CPU backends: one window and 256×256×128 end to end per backend vs bare MONAI on
   PyTorch; first use (export) and cached re-use in fresh processes; peak memory         bench_backends.py
E1/E2 engine overhead at 128³ and re-threshold 256³                                       bench_engine.py
C1 ``unetsigmoidseg inspect`` on the demo bundle vs ``python -c "import torch, monai"``   bench_cli.py
Y1-Y3 a cohort on Ray: one actor vs the local batch, two actors vs one, the driver's memory  bench_ray.py
V  live threshold in Slicer's rendered views (2-D step vs step with the 3-D surface rebuild)   bench_views.py
S  scaling with volume size (three sizes, plotted): engine vs bare inference; threshold step
Every figure is measured side by side with its baseline in the same run (medians).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "UNetSigmoidSeg"))


def _run_script(name, out_dir, *args):
    path = os.path.join(out_dir, name.replace(".py", ".json"))
    cmd = [sys.executable, os.path.join(HERE, name), "--json", path, *args]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:]}
    if not os.path.exists(path):  # e.g. bench_gpu without CUDA prints a skip line only
        return {"skipped": proc.stdout.strip()}
    with open(path) as f:
        return json.load(f)


def scaling(sizes, repeats):
    """Engine end to end vs bare sliding window (same network) and one threshold step, per size."""
    import torch
    from bench_mrml import bench as threshold_bench
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    from bench_common import loaded_model
    from UNetSigmoidSegLib.contract.options import SegmentOptions
    from UNetSigmoidSegLib.engine.files.volume import Volume
    from UNetSigmoidSegLib.engine.running.pipeline import segment

    torch.manual_seed(0)
    net = UNet(3, 1, 1, (16, 32, 64, 128), (2, 2, 2), num_res_units=2).eval()
    model = loaded_model(net, size_divisor=8)
    rows = []
    for s in sizes:
        arr = np.random.default_rng(0).normal(0, 1, (1, s, s, s)).astype(np.float32)
        x = torch.from_numpy(arr)[None]
        opts = SegmentOptions(device="cpu", roi_size=[64, 64, 64], overlap=0.25, blend_mode="gaussian")
        bare_t, eng_t = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            with torch.inference_mode():
                sliding_window_inference(x, [64, 64, 64], 1, net, overlap=0.25, mode="gaussian")
            bare_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            segment(Volume(arr, np.eye(4)), model, opts)
            eng_t.append(time.perf_counter() - t)
        thr = threshold_bench((2 * s, 2 * s, 2 * s), 7)
        rows.append(
            {
                "size": s,
                "voxels": s**3,
                "bare_s": round(statistics.median(bare_t), 3),
                "engine_s": round(statistics.median(eng_t), 3),
                "ratio": round(statistics.median(eng_t) / statistics.median(bare_t), 3),
                "threshold_size": 2 * s,
                "threshold_ms": thr["live_ms"],
                "import_route_ms": thr["import_route_ms"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    v = [r["voxels"] / 1e6 for r in rows]
    axes[0].plot(v, [r["bare_s"] for r in rows], "o-", label="bare sliding_window_inference")
    axes[0].plot(v, [r["engine_s"] for r in rows], "s-", label="engine segment()")
    axes[0].set(xlabel="inference volume (Mvoxels)", ylabel="seconds (CPU)", title="end to end vs bare inference")
    axes[0].legend()
    tv = [r["threshold_size"] ** 3 / 1e6 for r in rows]
    axes[1].plot(tv, [r["threshold_ms"] for r in rows], "o-", label="live threshold step")
    axes[1].plot(tv, [r["import_route_ms"] for r in rows], "s-", label="labelmap-import route")
    axes[1].set(xlabel="segment volume (Mvoxels)", ylabel="ms", yscale="log", title="threshold step → segment updated")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _fmt(results, name):
    return next((r for r in results.get("results", []) if r.get("name", "").startswith(name)), {})


def backend_lines(results):
    """The CPU-backend rows of the report (bench_backends.py)."""
    if not results.get("results"):
        return [
            f"| B | CPU backends | not measured: {results.get('skipped') or results.get('error', '?')[-300:]} | | | |"
        ]
    lines = []
    for r in results["results"]:
        if r["name"].startswith("BW"):
            lines.append(f"| BW | {r['name']}, {r['backend']} | {r['s']} s | torch | {r['ratio_vs_torch']} | |")
        elif r["name"].startswith("BE"):
            goal = {"tutorial": "auto ≤ 0.5", "seed": "auto ≤ 0.8"}.get(r["net"], "auto ≤ 1.0")
            figures = f"{r['segment_s']} s (ran {r['ran']})"
            lines.append(
                f"| BE | {r['name']}, {r['backend']} | {figures} | bare MONAI {r['bare_monai_torch_s']} s | "
                f"{r['ratio_vs_bare']} | {goal} |"
            )
        else:
            first, cached = r.get("first", {}), r.get("cached", {})
            figures = (
                f"first: prepare {first.get('prepare_s')} s, run {first.get('segment_s')} s, "
                f"{first.get('peak_rss_mb')} MB; cached: prepare {cached.get('prepare_s')} s ({cached.get('source')}), "
                f"{cached.get('peak_rss_mb')} MB"
            )
            lines.append(f"| BX | {r['name']}, {r['backend']} | {figures} | | | ≤ 20 s / ≤ 1 s |")
    return lines


def report(all_results, rows, out_dir):
    mrml, worker, engine, gpu = (all_results.get(k, {}) for k in ("mrml", "worker", "engine", "gpu"))
    remote = all_results.get("remote", {})
    p1 = [r for r in mrml.get("results", [])]
    lines = [
        "# Benchmark report",
        "",
        f"Machine: {all_results['environment']}",
        "",
        "| id | what | measured | baseline | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for r in p1:
        lines.append(
            f"| P1 | threshold step → segment, {r['size']} | {r['live_ms']} ms | "
            f"import route {r['import_route_ms']} ms | {r['ratio']} | {r['goal']} |"
        )
    for key, label in (("W1", "P2"), ("W2", "P3"), ("W3", "P4"), ("W4", "P5"), ("W5", "cancel")):
        r = _fmt(worker, key)
        if r:
            figures = json.dumps({k: v for k, v in r.items() if k not in ("name", "goal")})
            lines.append(
                f"| {label} | {r.get('name', key)} | {figures} | | {r.get('ratio', '')} | {r.get('goal', '')} |"
            )
    for r in p1[:1]:
        lines.append(f"| P5 | cached probabilities | {r['cache_bytes_per_voxel']} byte/voxel/segment | | | ≤ 1 |")
    for r in engine.get("results", []):
        figures = json.dumps({k: v for k, v in r.items() if k not in ("name", "goal")})
        lines.append(f"| E | {r['name']} | {figures} | | {r.get('ratio', '')} | {r['goal']} |")
    for r in remote.get("results", []):
        figures = json.dumps({k: v for k, v in r.items() if k not in ("name", "goal")})
        lines.append(f"| R | {r['name']} | {figures} | | {r.get('ratio', '')} | {r['goal']} |")
    if remote.get("error"):
        lines.append(f"| R | remote server | failed: {remote['error'][-300:]} | | | |")
    host = all_results.get("host", {})
    for r in host.get("results", []):
        lines.append(
            f"| H | {r['name']} (tree {host.get('old')} → this one) | {r['new_ms']} ms | {r['old_ms']} ms | "
            f"{r['ratio']} ({r['ratios']}) | {r['goal']} |"
        )
    if gpu.get("results"):
        for r in gpu["results"]:
            lines.append(f"| P6 | {r['name']} | {json.dumps(r)} | | {r.get('ratio', '')} | |")
    else:
        lines.append(f"| P6 | GPU | not measured: {gpu.get('skipped') or gpu.get('error', 'no CUDA')} | | | |")
    lines += backend_lines(all_results.get("backends", {}))
    lines += [
        "",
        "## Scaling with volume size",
        "",
        "![scaling](scaling.png)",
        "",
        "| size | bare inference s | engine s | ratio | threshold-step size | step ms | import route ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}³ | {r['bare_s']} | {r['engine_s']} | {r['ratio']} | {r['threshold_size']}³ | "
            f"{r['threshold_ms']} | {r['import_route_ms']} |"
        )
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats, small scaling sizes")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    import torch

    results = {
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.is_available(),
        }
    }
    rep = ["--repeats", "3"] if args.quick else []
    results["engine"] = _run_script("bench_engine.py", args.out, *rep)
    results["mrml"] = _run_script("bench_mrml.py", args.out, *(["--repeats", "7"] if args.quick else []))
    results["worker"] = _run_script(
        "bench_worker.py", args.out, *(["--repeats", "3", "--cold", "2"] if args.quick else [])
    )
    results["remote"] = _run_script("bench_remote.py", args.out, *(["--repeats", "3"] if args.quick else []))
    results["host"] = _run_script(
        "bench_host.py", args.out, *(["--rounds", "2", "--repeats", "3"] if args.quick else [])
    )
    results["gpu"] = _run_script("bench_gpu.py", args.out)
    results["cli"] = _run_script("bench_cli.py", args.out, *(["--repeats", "3"] if args.quick else []))
    results["ray"] = _run_script("bench_ray.py", args.out, *(["--memory-cases", "16"] if args.quick else []))
    results["views"] = _run_script("bench_views.py", args.out)
    results["backends"] = _run_script(
        "bench_backends.py", args.out, *(["--quick", "--nets", "tutorial,seed"] if args.quick else [])
    )
    rows = scaling([32, 48, 64] if args.quick else [64, 96, 128], 3)
    results["scaling"] = rows
    with open(os.path.join(args.out, "all.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot(rows, os.path.join(args.out, "scaling.png"))
    report(results, rows, args.out)
    print(f"report: {os.path.join(args.out, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
