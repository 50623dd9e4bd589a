"""Remote-server benchmarks, measured side by side in one run (ratios, not timed assertions).

R1  loopback remote run end to end (``RemoteRunner`` → ``unetsigmoidseg serve`` on 127.0.0.1) vs the local warm
    worker (``WorkerRunner``), demo bundle BrainT1UNet on the T1 head (128×128×62)            goal ≤ 1.25×
R2  the same for a 256×256×128 CT-sized volume (a real CT resampled), a small UNet           goal ≤ 1.25×
R3  bytes on the wire (request body + result body; and all bodies with the progress polls) vs the raw float32
    volume + float32 probabilities                                                            goal ≤ 0.5×
R4  a threshold move in the Slicer logic after a remote run vs after a local one, and the requests it makes
                                                                                    goal: same cost, 0 requests
R5  an authenticated client's run while 500 idle connections (kept open: closed ones are reopened at once, as an
    attacker would) hold the server, vs the same run without them (issue #20)                 goal ≤ 1.5×
Both sides run torch with the same thread count (``--threads``, default 1: steadiest on a shared machine); runs
go in pairs (who goes first alternates) and the ratio is the median of the per-pair ratios.

Usage: python Testing/benchmarks/bench_remote.py [--repeats 5] [--threads 1] [--json out.json] [--only R5]
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import SimpleITK as sitk
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "UNetSigmoidSeg"))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "Testing"))
sys.path.insert(0, os.path.join(REPO, "Testing", "mrml"))

from bench_common import emit, environment, resampled_ct  # noqa: E402
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions, Volume  # noqa: E402
from UNetSigmoidSegLib.engine.files.volume import affine_from_sitk, read_volume  # noqa: E402
from UNetSigmoidSegLib.runners.remote import RemoteRunner  # noqa: E402
from UNetSigmoidSegLib.runners.worker import WorkerRunner  # noqa: E402

DEMO = os.path.join(REPO, "Resources", "Models", "BrainT1UNet")
T1 = os.path.join(REPO, "Resources", "Data", "T1_head.nii.gz")


def start_server(models: str, folder: str, threads: int):
    token_file = os.path.join(folder, "token")
    cmd = [sys.executable, "-m", "UNetSigmoidSegLib.cli", "serve", "--models", models, "--port", "0"]
    cmd += ["--token-file", token_file, "--temp-dir", folder, "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    log = open(os.path.join(folder, "server.log"), "wb")
    proc = subprocess.Popen(
        cmd,
        cwd=os.path.join(REPO, "UNetSigmoidSeg"),
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    while True:
        line = proc.stdout.readline().decode()
        if not line:
            raise RuntimeError(open(log.name).read())
        found = re.search(r"Listening on (\S+)", line)
        if found:
            return proc, found.group(1), open(token_file).read().strip()


def ct_sized_volume() -> Volume:
    """The real abdominal CT (122×101×112, 3 mm) resampled to 256×256×128 voxels over the same extent."""
    resampled = resampled_ct((256, 256, 128))
    array = sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)[None]
    return Volume(np.ascontiguousarray(array), affine_from_sitk(resampled))


def paired_runs(worker, remote, volume, local_spec, remote_spec, options, repeats):
    """Warm both, then alternate; returns (worker seconds, remote seconds, per-pair ratios, last remote job)."""
    worker.submit(volume, local_spec, options).wait()
    remote.submit(volume, remote_spec, options).wait()
    w, r, ratios, job = [], [], [], None
    for i in range(repeats):
        for side in ("worker", "remote") if i % 2 == 0 else ("remote", "worker"):  # alternate who goes first
            t0 = time.perf_counter()
            if side == "worker":
                local = worker.submit(volume, local_spec, options).wait()
                w.append(time.perf_counter() - t0)
            else:
                job = remote.submit(volume, remote_spec, options)
                result = job.wait()
                r.append(time.perf_counter() - t0)
        ratios.append(r[-1] / w[-1])
        assert np.array_equal(local.masks, result.masks)
    return w, r, ratios, job, result


def end_to_end(name, worker, remote, volume, local_spec, remote_spec, options, repeats):
    w, r, ratios, job, result = paired_runs(worker, remote, volume, local_spec, remote_spec, options, repeats)
    voxels = int(np.prod(volume.spatial_shape))
    raw = voxels * 4 * (1 + len(result.labels))  # float32 volume + float32 probabilities
    info = job.info
    end = {
        "name": name,
        "size": "x".join(map(str, volume.spatial_shape)),
        "worker_s": round(statistics.median(w), 3),
        "remote_s": round(statistics.median(r), 3),
        "ratio": round(statistics.median(ratios), 3),
        "runs_worker_s": [round(t, 2) for t in w],
        "runs_remote_s": [round(t, 2) for t in r],
        "remote_parts_s": {
            k: round(float(info.timings.get(k) or 0), 3) for k in ("compress_s", "upload_s", "download_s")
        },
        "server_s": info.server_s,
        "goal": "<= 1.25",
    }
    wire = {
        "name": f"R3 bytes on the wire, {end['size']}",
        "volume_dtype": str(volume.array.dtype),
        "request_bytes": info.request_bytes,
        "result_bytes": info.result_bytes,
        "all_bodies_bytes": info.bytes_sent + info.bytes_received,
        "requests": info.requests,
        "raw_float32_bytes": raw,
        "ratio": round((info.request_bytes + info.result_bytes) / raw, 4),
        "ratio_all_bodies": round((info.bytes_sent + info.bytes_received) / raw, 4),
        "goal": "<= 0.5",
    }
    return [end, wire]


class Flood:
    """``count`` connections to ``port`` that send nothing, kept open from a thread (reopened when the server
    closes them) until ``stop()``; ``opened``: how many it opened in all."""

    def __init__(self, port: int, count: int) -> None:
        import socket
        import threading

        self.port, self.count, self.socket_mod = port, count, socket
        self.socks, self.opened, self.done = [], 0, threading.Event()
        self.fill()
        self.thread = threading.Thread(target=self.keep, daemon=True)
        self.thread.start()

    def fill(self) -> None:
        while len(self.socks) < self.count:
            try:
                self.socks.append(self.socket_mod.create_connection(("127.0.0.1", self.port), timeout=5))
                self.opened += 1
            except OSError:
                break

    def keep(self) -> None:
        import select

        while not self.done.wait(0.1):
            readable = select.select(self.socks, [], [], 0)[0]  # closed by the server: end of stream
            for s in readable:
                s.close()
                self.socks.remove(s)
            self.fill()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def under_flood(remote, port, volume, spec, options, repeats, count=500):
    """R5: the same remote run with and without ``count`` idle connections held open, alternating."""
    remote.submit(volume, spec, options).wait()
    quiet, flooded, ratios, opened = [], [], [], 0
    for i in range(repeats):
        for side in ("quiet", "flood") if i % 2 == 0 else ("flood", "quiet"):
            flood = Flood(port, count) if side == "flood" else None
            t0 = time.perf_counter()
            remote.submit(volume, spec, options).wait()
            (flooded if flood else quiet).append(time.perf_counter() - t0)
            if flood:
                opened += flood.opened
                flood.stop()
        ratios.append(flooded[-1] / quiet[-1])
    return {
        "name": f"R5 remote run under {count} idle connections vs without, {'x'.join(map(str, volume.spatial_shape))}",
        "quiet_s": round(statistics.median(quiet), 3),
        "flood_s": round(statistics.median(flooded), 3),
        "ratio": round(statistics.median(ratios), 3),
        "connections_opened": opened,
        "goal": "<= 1.5",
    }


def threshold_moves(remote, volume, spec_local, spec_remote, options, repeats, health):
    """R4: the same threshold moves in the Slicer logic after a local and after a remote run."""
    from mrml_helpers import add_volume
    from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
    from UNetSigmoidSegLib.mrml.scene import create_headless_scene

    scene = create_headless_scene()
    node = add_volume(scene, volume.array[0])
    local_logic = UNetSigmoidSegLogic(scene)
    remote_logic = UNetSigmoidSegLogic(scene, runner=remote)
    seg_local = local_logic.segment(node, spec_local, options)
    seg_remote = remote_logic.segment(node, spec_remote, options)
    served = health()["requests"]
    requests = remote.counters.requests
    values = np.linspace(0.2, 0.8, 13)
    times = {"local": [], "remote": []}
    for _ in range(repeats):
        for t in values:
            for which, logic, seg in (("local", local_logic, seg_local), ("remote", remote_logic, seg_remote)):
                t0 = time.perf_counter()
                logic.setThreshold(seg, float(t))
                times[which].append(time.perf_counter() - t0)
    made = remote.counters.requests - requests
    reached = health()["requests"] - served - 1  # minus the second health request itself
    assert made == 0 and reached == 0, (made, reached)
    local_ms, remote_ms = (1000 * statistics.median(times[k]) for k in ("local", "remote"))
    return {
        "name": "R4 threshold move after a remote run vs after a local run (Slicer logic)",
        "size": "x".join(map(str, volume.spatial_shape)),
        "moves": len(times["remote"]),
        "local_ms": round(local_ms, 2),
        "remote_ms": round(remote_ms, 2),
        "ratio": round(remote_ms / local_ms, 3),
        "requests_made_by_the_client": made,
        "requests_reaching_the_server": reached,
        "goal": "same cost; 0 requests",
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server and the worker")
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--only", choices=["R5"], help="run only this case (R5: the idle-connection flood)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(load_avg_start=os.getloadavg(), side_threads=args.threads)
    results = []
    folder = tempfile.mkdtemp(prefix="unetseg-bench-remote-")
    models = os.path.join(folder, "models")
    os.makedirs(models)
    shutil.copytree(DEMO, os.path.join(models, "BrainT1UNet"))
    from conftest import tiny_unet

    torch.save(tiny_unet(channels=(8, 16, 32)).state_dict(), os.path.join(models, "small.pt"))
    with open(os.path.join(models, "small.json"), "w") as f:
        f.write('{"normalization": "ct", "ct_window": [-200, 300], "labels": ["body"]}')
    proc, url, token = start_server(models, folder, args.threads)
    worker = WorkerRunner(env={"OMP_NUM_THREADS": str(args.threads)})
    remote = RemoteRunner(url, token=token)
    try:
        deadline = time.time() + 300
        while not remote.health()["ready"]:
            assert time.time() < deadline
            time.sleep(0.2)
        t1 = read_volume(T1)
        port = int(url.rsplit(":", 1)[1])
        if args.only == "R5":
            results.append(
                under_flood(remote, port, t1, ModelSpec(name="BrainT1UNet"), SegmentOptions(device="cpu"), 3)
            )
            return emit(env, results, args.json)
        results += end_to_end(
            "R1 remote (loopback) vs local warm worker, demo bundle on the T1 head",
            worker,
            remote,
            t1,
            ModelSpec(DEMO),
            ModelSpec(name="BrainT1UNet"),
            SegmentOptions(device="cpu"),
            args.repeats,
        )
        ct = ct_sized_volume()
        ct_options = SegmentOptions(device="cpu", roi_size=[96, 96, 96])
        results += end_to_end(
            "R2 remote (loopback) vs local warm worker, 256x256x128 CT, UNet(8,16,32)",
            worker,
            remote,
            ct,
            ModelSpec(os.path.join(models, "small.pt")),
            ModelSpec(name="small"),
            ct_options,
            args.repeats,
        )
        results.append(
            threshold_moves(
                remote,
                ct,
                ModelSpec(os.path.join(models, "small.pt")),
                ModelSpec(name="small"),
                ct_options,
                3,
                remote.health,
            )
        )
        results.append(under_flood(remote, port, t1, ModelSpec(name="BrainT1UNet"), SegmentOptions(device="cpu"), 3))
    finally:
        worker.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    env["load_avg_end"] = os.getloadavg()
    return emit(env, results, args.json)


if __name__ == "__main__":
    sys.exit(main())
