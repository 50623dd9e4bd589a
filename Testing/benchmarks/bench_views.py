"""Threshold step INCLUDING the render, through Slicer's own displayable managers (slicer-core, off-screen views of
``Testing/mrml/views.py``), measured side by side in one run on one segmentation:

V1  2-D only: ``setThreshold`` + render of a slice view (no 3-D surface shown);
V2  a drag step with the 3-D view shown: ``setThreshold(update3D=False)`` + render of the slice and the 3-D view
    (the surface is kept as it was: what the panel does while the slider moves);
V3  a step with the 3-D closed-surface rebuild: ``setThreshold`` + both renders (a release, a typed value);
V4  the release after a drag: ``updateSurface`` + the 3-D render;
R2 / R3  a render of the slice view / the 3-D view alone, nothing changed (what the renders cost here: software
    OpenGL without a GPU, so the renders weigh more than in the application on a graphics card).

Printed; never asserted. Usage: python Testing/benchmarks/bench_views.py [--size 256] [--repeats 7] [--json out.json]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "..", "UNetSigmoidSeg"), os.path.join(HERE, "..", "mrml")]

import numpy as np  # noqa: E402
from views import SliceView, ThreeDView, blob, rendering_problem, result_on  # noqa: E402

from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic  # noqa: E402
from UNetSigmoidSegLib.mrml.scene import application_logic, create_headless_scene  # noqa: E402


def _setup(n, view_px):
    import vtk
    from vtk.util import numpy_support

    scene = create_headless_scene()
    probabilities = blob((n, n, n))
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "blob")
    image = vtk.vtkImageData()
    image.SetDimensions(n, n, n)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = (probabilities.T.ravel() * 1000).astype(np.int16)
    volume.SetAndObserveImageData(image)
    volume.SetSpacing(0.8, 0.8, 1.0)
    volume.CreateDefaultDisplayNodes()
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.applyResult(volume, result_on(volume, probabilities))
    app = application_logic(scene)
    slice_view = SliceView(scene, app, "Red", (view_px, view_px))
    slice_view.show(volume)
    return scene, logic, seg, slice_view, ThreeDView(scene, app, (view_px, view_px))


def _ms(step, values):
    times = []
    for value in values:
        start = time.perf_counter()
        step(value)
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench(n, repeats, view_px):
    scene, logic, seg, slice_view, view = _setup(n, view_px)
    values = [0.35 + 0.3 * (i % 2) for i in range(repeats)]

    def v1(t):
        logic.setThreshold(seg, t, cleanup=False)
        slice_view.render()

    def v2(t):
        logic.setThreshold(seg, t, cleanup=False, update3D=False)
        slice_view.render()
        view.render()

    def v3(t):
        logic.setThreshold(seg, t, cleanup=False)
        slice_view.render()
        view.render()

    def v4(t):
        logic.setThreshold(seg, t, cleanup=False, update3D=False)  # not timed: the drag that leaves it stale
        start = time.perf_counter()
        logic.updateSurface(seg)
        view.render()
        return (time.perf_counter() - start) * 1000

    slice_view.render()
    results = {"V1 2-D only": _ms(v1, values)}
    start = time.perf_counter()
    seg.CreateClosedSurfaceRepresentation()
    view.look_from()
    view.render()
    first_surface_ms = (time.perf_counter() - start) * 1000
    v2_ms, v3_ms, v4_ms = [], [], []  # interleaved: adjacent runs share the machine's load
    for t in values:
        v2_ms += _ms(v2, [t])
        v3_ms += _ms(v3, [1.0 - t])
        v4_ms.append(v4(t))
    results["V2 drag step, 3-D kept"] = v2_ms
    results["V3 step with 3-D rebuild"] = v3_ms
    results["V4 release: 3-D rebuild"] = v4_ms
    results["R2 slice render alone"] = _ms(lambda t: slice_view.render(), values)
    results["R3 3-D render alone"] = _ms(lambda t: view.render(), values)
    rows = [
        {
            "name": name,
            "size": f"{n}^3",
            "view_px": view_px,
            "median_ms": round(statistics.median(ms), 1),
            "min_ms": round(min(ms), 1),
            "max_ms": round(max(ms), 1),
            "repeats": len(ms),
        }
        for name, ms in results.items()
    ]
    rows.append({"name": "first closed surface + 3-D render", "size": f"{n}^3", "ms": round(first_surface_ms, 1)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--view", type=int, default=512, help="view size in pixels (square)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    problem = rendering_problem()
    if problem:
        print(f"cannot render here: {problem}")
        return 1
    env = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "opengl_window": os.environ.get("VTK_DEFAULT_OPENGL_WINDOW", "VTK default"),
    }
    print(json.dumps(env))
    rows = bench(args.size, args.repeats, args.view)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
