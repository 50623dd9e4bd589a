"""Ray cohort throughput, side by side in one run (issue #21):

Y1 one actor (1 thread) on a local Ray cluster vs the local in-process batch with 1 thread (goal ≤ 1.10×)
Y2 two actors (1 thread each) vs one actor: throughput ratio (goal ≥ 1.6×, on a machine with ≥ 2 free cores)
Y3 the driver's peak memory for a cohort of ``--memory-cases`` volumes (bounded: it holds references, not volumes)

The cohort: the real CT (example_ct, 122×101×112) resampled to 256×256×128 (``--size``), ``--cases`` copies;
a UNet(8, 16, 32, 64) with random weights, CT normalisation, roi 96³, the PyTorch backend. Every variant is the
real CLI in a fresh process.

    python Testing/benchmarks/bench_ray.py [--cases 8] [--memory-cases 64] [--json out.json]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "UNetSigmoidSeg"))

from bench_common import emit, environment, resampled_ct  # noqa: E402

FLAGS = ["--device", "cpu", "--backend", "torch", "--roi-size", "96", "-q", "--json"]


def make_cohort(folder: str, cases: int, size) -> str:
    """``cases`` copies of the real CT resampled to ``size`` (linear), as NIfTI."""
    import SimpleITK as sitk

    os.makedirs(folder)
    first = os.path.join(folder, "case000.nii.gz")
    sitk.WriteImage(resampled_ct(tuple(size)), first)
    for i in range(1, cases):
        shutil.copy(first, os.path.join(folder, f"case{i:03d}.nii.gz"))
    return folder


def make_model(folder: str) -> str:
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    path = os.path.join(folder, "model.pt")
    torch.save(UNet(3, 1, 1, (8, 16, 32, 64), (2, 2, 2), num_res_units=1).state_dict(), path)
    with open(os.path.join(folder, "model.json"), "w") as f:
        json.dump({"normalization": "ct", "ct_window": [-200, 300]}, f)
    return path


def cli(inputs: str, model: str, out: str, *extra: str, threads: int = 1):
    """Seconds, peak RSS of the driver (bytes) and the summary of one CLI run."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "UNetSigmoidSegLib.cli", "segment", inputs, "--model", model, "-o", out + "/"]
    code = (
        "import resource, runpy, sys; sys.argv = sys.argv[1:]; "
        "import torch; torch.set_num_threads(%d)\n"
        "try:\n    runpy.run_module('UNetSigmoidSegLib.cli', run_name='__main__')\n"
        "finally:\n    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr)"
    ) % threads
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *command[2:], *FLAGS, *extra],
        capture_output=True,
        text=True,
        cwd=os.path.join(REPO, "UNetSigmoidSeg"),
        env=env,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    peak = int(proc.stderr.rsplit("PEAK", 1)[1].split()[0])
    return seconds, peak, json.loads(proc.stdout[proc.stdout.index("{") :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--memory-cases", type=int, default=64)
    parser.add_argument("--size", type=int, nargs=3, default=[256, 256, 128])
    parser.add_argument("--json")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-ray-")
    try:
        model = make_model(work)
        inputs = make_cohort(os.path.join(work, "in"), args.cases, args.size)
        local_s, local_peak, _ = cli(inputs, model, os.path.join(work, "local"))
        one_s, one_peak, one = cli(inputs, model, os.path.join(work, "one"), "--ray", "--actors", "1", "--threads", "1")
        two_s, _, two = cli(inputs, model, os.path.join(work, "two"), "--ray", "--actors", "2", "--threads", "1")
        results = [
            {
                "id": "Y1",
                "what": f"{args.cases} cases, one actor vs local batch (1 thread), wall time of the command",
                "local_s": round(local_s, 1),
                "ray_one_s": round(one_s, 1),
                "ratio": round(one_s / local_s, 3),
                "goal": "<= 1.10",
            },
            {
                "id": "Y2",
                "what": "two actors vs one (1 thread each): throughput over the cohort (after the cluster and the "
                "first model load; the wall ratio of the whole command beside it)",
                "cohort_one_s": one["total_s"],
                "cohort_two_s": two["total_s"],
                "throughput_ratio": round(one["total_s"] / two["total_s"], 3),
                "wall_ratio": round(one_s / two_s, 3),
                "goal": ">= 1.6",
                "nodes": sorted({c.get("node") for c in two["cases"]}),
            },
        ]
        if args.memory_cases <= 0:
            return emit(environment(cases=args.cases, size=args.size), results, args.json)
        memory = make_cohort(os.path.join(work, "many"), args.memory_cases, [128, 128, 64])
        many_s, many_peak, many = cli(
            memory, model, os.path.join(work, "many-out"), "--ray", "--actors", "2", "--threads", "1"
        )
        few = make_cohort(os.path.join(work, "few"), args.cases, [128, 128, 64])
        few_s, few_peak, _ = cli(few, model, os.path.join(work, "few-out"), "--ray", "--actors", "2", "--threads", "1")
        results.append(
            {
                "id": "Y3",
                "what": f"driver peak RSS, 128x128x64: {args.memory_cases} cases vs {args.cases}",
                "peak_mb_many": round(many_peak / 2**20),
                "peak_mb_few": round(few_peak / 2**20),
                "local_batch_peak_mb": round(local_peak / 2**20),
                "ray_one_peak_mb": round(one_peak / 2**20),
                "many_done": many["cohort"]["done"],
                "many_s": round(many_s, 1),
            }
        )
        return emit(environment(cases=args.cases, size=args.size), results, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
