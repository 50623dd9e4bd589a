"""Slicer-logic benchmark on the real Slicer core (slicer-core), measured side by side in one run.

P1  one threshold step → segment updated in the scene (``logic.setThreshold``), vs the labelmap-import
    route that ``slicer.util.updateSegmentBinaryLabelmapFromArray`` takes (temporary labelmap volume
    node + ``ImportLabelmapToSegmentationNode``), at 256³ and 512×512×300.
    Goals: ≤ 25 ms median and ≤ 0.3× the import route at 256³; ≤ 100 ms median at 512×512×300.

Usage: python Testing/benchmarks/bench_mrml.py [--repeats 15] [--json out.json]
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "UNetSigmoidSeg"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import slicer  # noqa: E402
import vtk  # noqa: E402

from bench_common import blob_probabilities, empty_volume_node  # noqa: E402
from UNetSigmoidSegLib.contract.options import Cleanup  # noqa: E402
from UNetSigmoidSegLib.contract.result import DeviceChoice, SegmentResult, level, make_probabilities  # noqa: E402
from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic  # noqa: E402
from UNetSigmoidSegLib.mrml.scene import create_headless_scene, volumes_logic  # noqa: E402


def _setup(shape):
    scene = create_headless_scene()
    node = empty_volume_node(scene, shape)
    node.SetSpacing(0.8, 0.8, 1.5)
    p = blob_probabilities(shape)[None]
    affine = np.diag([-0.8, -0.8, 1.5, 1.0])
    result = SegmentResult(
        make_probabilities(p, "sigmoid"),
        p >= 0.5,
        ["organ"],
        [(0.9, 0.3, 0.2)],
        [0.5],
        "sigmoid",
        affine,
        np.array([0.8, 0.8, 1.5]),
        DeviceChoice("cpu", "bench"),
        "CPU",
        Cleanup(),
    )
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.applyResult(node, result)
    return scene, node, logic, seg, result


def _median_ms(fn, args_list):
    times = []
    for a in args_list:
        t = time.perf_counter()
        fn(a)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench(shape, repeats):
    scene, node, logic, seg, result = _setup(shape)
    sid = logic.liveResult(seg).writer.segment_ids[0]
    cache_kji = logic.liveResult(seg).probabilities.quantized[0]
    thresholds = [0.3 + 0.4 * (i % 2) for i in range(repeats)]

    def live(t):
        logic.setThreshold(seg, t)

    def import_route(t):
        mask = (cache_kji >= level(t)).astype(np.uint8)  # same threshold work, then the import route
        label = volumes_logic(scene).CreateAndAddLabelVolume(scene, node, "__temp__")
        try:
            slicer.util.updateVolumeFromArray(label, mask)
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(sid)
            assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, seg, ids)
        finally:
            scene.RemoveNode(label)

    live(0.5)
    import_route(0.5)
    a, b = [], []
    for t in thresholds:  # interleaved
        a.append(_median_ms(live, [t]))
        b.append(_median_ms(import_route, [t]))
    ma, mb = statistics.median(a), statistics.median(b)
    return {
        "name": "P1 threshold step -> segment updated",
        "size": "x".join(map(str, shape)),
        "live_ms": round(ma, 2),
        "import_route_ms": round(mb, 2),
        "ratio": round(ma / mb, 3),
        "goal": "<= 25 ms and <= 0.3x" if shape == (256, 256, 256) else "<= 100 ms",
        "cache_bytes_per_voxel": logic.liveResult(seg).probabilities.nbytes / float(np.prod(shape)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    results = [bench((256, 256, 256), args.repeats), bench((512, 512, 300), max(5, args.repeats // 2))]
    for r in results:
        print(json.dumps(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
