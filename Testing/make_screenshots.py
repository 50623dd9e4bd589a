"""Regenerate Resources/Screenshots/*.png: the demo's brain segmentation of the T1 head, shown by Slicer's own
displayable managers (slice views and the 3-D view of ``Testing/mrml/views.py``, rendered off screen on slicer-core).

The segments come from the product's logic (``applyResult`` of the demo's probabilities, then ``setThreshold``),
as the panel shows them. Run the demo first, then this::

    cd UNetSigmoidSeg && python -m UNetSigmoidSegLib.cli demo --output-dir /tmp/demo
    python Testing/make_screenshots.py /tmp/demo [--out Resources/Screenshots]
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "UNetSigmoidSeg"), os.path.join(HERE, "mrml")]

import numpy as np  # noqa: E402
import vtk  # noqa: E402
from views import SliceView, ThreeDView, rendering_problem, result_on  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic  # noqa: E402
from UNetSigmoidSegLib.mrml.scene import application_logic, create_headless_scene, volumes_logic  # noqa: E402

SLICER_3D_BACKGROUND = ((0.7568, 0.7647, 0.9098), (0.4549, 0.4705, 0.7450))  # the 3-D view's default gradient
GAP = 4


def voxels_ijk(node):
    image = node.GetImageData()
    i, j, k = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i).transpose(2, 1, 0)


def centre_ras(node, mask_ijk):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk = list(np.argwhere(mask_ijk).mean(axis=0)) + [1.0]
    return matrix.MultiplyPoint(ijk)[:3]


def side_by_side(images):
    height = max(im.shape[0] for im in images)
    gap = np.zeros((height, GAP, 3), np.uint8)
    parts = []
    for im in images:
        parts += [im, gap]
    return np.concatenate(parts[:-1], axis=1)


def write_png(pixels, path):
    height, width = pixels.shape[:2]
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = pixels[::-1].reshape(-1, 3)
    writer = vtk.vtkPNGWriter()
    writer.SetCompressionLevel(9)
    writer.SetInputData(image)
    writer.SetFileName(path)
    writer.Write()
    print(f"{path}: {width}x{height}, {os.path.getsize(path) // 1024} KB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_dir", help="the demo's --output-dir (T1_head_probabilities.nrrd)")
    parser.add_argument("--out", default=os.path.join(REPO, "Resources", "Screenshots"))
    parser.add_argument("--size", type=int, default=320, help="pixels per view (square)")
    args = parser.parse_args(argv)
    problem = rendering_problem()
    if problem:
        print(f"cannot render here: {problem}")
        return 1
    os.makedirs(args.out, exist_ok=True)
    scene = create_headless_scene()
    volumes = volumes_logic(scene)
    t1 = volumes.AddArchetypeVolume(os.path.join(REPO, "Resources", "Data", "T1_head.nii.gz"), "T1_head")
    probabilities_node = volumes.AddArchetypeVolume(os.path.join(args.demo_dir, "T1_head_probabilities.nrrd"), "p")
    probabilities = voxels_ijk(probabilities_node).astype(np.float32)
    if probabilities.max() > 1.0:  # stored quantized
        probabilities /= 255.0
    scene.RemoveNode(probabilities_node)
    logic = UNetSigmoidSegLogic(scene)
    seg = logic.applyResult(t1, result_on(t1, probabilities, color=(0.87, 0.53, 0.42)), model="BrainT1UNet")
    centre = centre_ras(t1, probabilities >= 0.5)
    app = application_logic(scene)
    size = (args.size, args.size)
    views = []
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        view = SliceView(scene, app, name, size)
        view.node.SetOrientation(orientation)
        view.show(t1, offset_ras=centre)
        views.append(view)
    write_png(side_by_side([v.render() for v in views]), os.path.join(args.out, "slice_views.png"))

    axial = views[0]
    strip = []
    for threshold in (0.1, 0.5, 0.95):  # the live threshold: one cached result, three thresholds
        logic.setThreshold(seg, threshold)
        strip.append(axial.render())
    write_png(side_by_side(strip), os.path.join(args.out, "live_threshold.png"))
    logic.setThreshold(seg, 0.5)

    seg.CreateClosedSurfaceRepresentation()
    view = ThreeDView(scene, app, (args.size * 3 // 2, args.size))
    view.renderer.GradientBackgroundOn()
    view.renderer.SetBackground(*SLICER_3D_BACKGROUND[1])
    view.renderer.SetBackground2(*SLICER_3D_BACKGROUND[0])
    view.look_from((-0.55, 0.75, 0.35))
    write_png(view.render(), os.path.join(args.out, "3d_view.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
