"""H: the one engine host (issue #18) against the tree before it, side by side and alternating, in fresh processes.

H1 warm re-run in process (InProcessRunner, 128×128×64, UNet(4,8,16), roi 64)
H2 warm re-run through the worker process (WorkerRunner, the same)
H3 live threshold step on the real Slicer core (logic.setThreshold, 256³)
H4 remote loopback run (``unetsigmoidseg serve`` of that tree on 127.0.0.1 + its RemoteRunner, the same volume)

Torch runs at 1 thread everywhere (the child, its worker, its server): far steadier on a shared machine. The old
tree is ``git archive``d from ``--old`` (default: the commit before the host landed) into a temp folder; each round
runs one child process per tree, the order alternating between rounds. Each child gives the medians of its repeats;
the report gives per metric the median over rounds of new / old, and each round's ratio. Goal: every ratio ≤ 1.03.

Usage: python Testing/benchmarks/bench_host.py [--old REF] [--rounds 6] [--repeats 11] [--json out.json]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
OLD_REF = "058f226"  # main before the engine host (issue #18)
SHAPE = (128, 128, 64)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # each side, its worker and its server: far steadier


def child(tree: str, repeats: int, out: str) -> None:
    """Measure H1–H4 with the ``UNetSigmoidSegLib`` of ``tree``; write the medians (ms) to ``out``."""
    sys.path.insert(0, os.path.join(tree, "UNetSigmoidSeg"))
    import numpy as np
    import torch
    from monai.networks.nets import UNet

    from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, Volume

    try:
        from UNetSigmoidSegLib.runners.remote import RemoteRunner
        from UNetSigmoidSegLib.runners.worker import WorkerRunner
    except ImportError:  # the tree before the host
        from UNetSigmoidSegLib.remote.client import RemoteRunner
        from UNetSigmoidSegLib.worker.client import WorkerRunner
    from UNetSigmoidSegLib.runners.inprocess import InProcessRunner

    torch.manual_seed(0)
    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="bench-host-")
    models = os.path.join(work, "models")
    os.mkdir(models)
    torch.save(UNet(3, 1, 1, (4, 8, 16), (2, 2), num_res_units=1).eval().state_dict(), os.path.join(models, "net.pt"))
    with open(os.path.join(models, "net.json"), "w") as f:
        f.write('{"normalization": "zscore"}')
    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(size=(1,) + SHAPE).astype(np.float32), np.diag([0.8, 0.8, 1.5, 1.0]))
    options = SegmentOptions(device="cpu", roi_size=[64, 64, 64], backend="torch")
    local = ModelSpec(os.path.join(models, "net.pt"))

    def timed(runner, spec):
        runner.submit(volume, spec, options).wait(timeout=600)  # warm: the network is loaded
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            runner.submit(volume, spec, options).wait(timeout=600)
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times)

    results = {"H1 warm re-run in process": timed(InProcessRunner(), local)}
    worker = WorkerRunner(python_executable=sys.executable)
    try:
        results["H2 warm re-run through the worker"] = timed(worker, local)
    finally:
        worker.close()
    results["H3 live threshold step 256^3"] = threshold_step(np, repeats * 4)
    server = start_server(tree, models, work)
    try:
        runner = RemoteRunner(server["url"], token=server["token"])
        results["H4 remote loopback run"] = timed(runner, ModelSpec(name="net"))
        runner.close()
    finally:
        server["popen"].terminate()
        server["popen"].wait(20)
    shutil.rmtree(work, ignore_errors=True)
    with open(out, "w") as f:
        json.dump(results, f)


def threshold_step(np, repeats: int) -> float:
    from bench_common import blob_probabilities, empty_volume_node
    from UNetSigmoidSegLib.contract.options import Cleanup
    from UNetSigmoidSegLib.contract.result import DeviceChoice, SegmentResult, make_probabilities
    from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
    from UNetSigmoidSegLib.mrml.scene import create_headless_scene

    shape = (256, 256, 256)
    scene = create_headless_scene()
    node = empty_volume_node(scene, shape)
    p = blob_probabilities(shape)[None]
    result = SegmentResult(
        make_probabilities(p, "sigmoid"), p >= 0.5, ["organ"], [(0.9, 0.3, 0.2)], [0.5], "sigmoid",
        np.diag([-1.0, -1.0, 1.0, 1.0]), np.ones(3), DeviceChoice("cpu", "bench"), "CPU", Cleanup(),
    )  # fmt: skip
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.applyResult(node, result)
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        logic.setThreshold(seg, 0.3 + 0.4 * (i % 2))
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def start_server(tree: str, models: str, work: str) -> dict:
    token_file = os.path.join(work, "token")
    cmd = [sys.executable, "-m", "UNetSigmoidSegLib.cli", "serve", "--models", models, "--port", "0"]
    cmd += ["--token-file", token_file, "--temp-dir", work]
    popen = subprocess.Popen(
        cmd, cwd=os.path.join(tree, "UNetSigmoidSeg"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        found = re.search(r"Listening on (https?://\S+)", popen.stdout.readline().decode("utf-8", "replace"))
        if found:
            with open(token_file) as f:
                return {"popen": popen, "url": found.group(1), "token": f.read().strip()}
    popen.kill()
    raise RuntimeError("the server did not start")


def old_tree(ref: str, into: str) -> str:
    """The product of ``ref`` (``UNetSigmoidSeg/``) unpacked into ``into``."""
    archive = subprocess.run(["git", "-C", REPO, "archive", ref, "UNetSigmoidSeg"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)
    return into


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=OLD_REF, help="git ref of the tree to compare with")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--json")
    parser.add_argument("--child", nargs=2, metavar=("TREE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.repeats, args.child[1])
        return 0
    work = tempfile.mkdtemp(prefix="bench-host-trees-")
    try:
        os.mkdir(os.path.join(work, "old"))
        trees = {"old": old_tree(args.old, os.path.join(work, "old")), "new": REPO}
        runs = {"old": [], "new": []}
        for round_ in range(args.rounds):
            for name in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                out = os.path.join(work, f"{name}-{round_}.json")
                cmd = [sys.executable, __file__, "--repeats", str(args.repeats), "--child", trees[name], out]
                subprocess.run(cmd, check=True, timeout=900, env=dict(os.environ, **ONE_THREAD))
                with open(out) as f:
                    runs[name].append(json.load(f))
                print(f"round {round_ + 1} {name}: " + ", ".join(f"{v:.1f}" for v in runs[name][-1].values()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = []
    for metric in runs["new"][0]:
        ratios = [n[metric] / o[metric] for n, o in zip(runs["new"], runs["old"])]
        results.append(
            {
                "name": metric,
                "old_ms": round(statistics.median(o[metric] for o in runs["old"]), 2),
                "new_ms": round(statistics.median(n[metric] for n in runs["new"]), 2),
                "ratio": round(statistics.median(ratios), 3),
                "ratios": [round(r, 3) for r in ratios],
                "goal": "<= 1.03",
            }
        )
        print(json.dumps(results[-1]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"old": args.old, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
