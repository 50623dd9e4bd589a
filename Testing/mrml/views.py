"""Slicer's own views without the application: a slice view and a 3-D view, each a VTK render window whose content
comes from Slicer's displayable managers (``vtkMRMLSegmentationsDisplayableManager2D`` / ``…3D``), driven by a
``vtkMRMLSliceLogic`` / ``vtkMRMLViewNode`` on a headless slicer-core scene, rendered off screen into numpy pixels.

The wiring is what qMRMLSliceView / qMRMLThreeDView do in the application: a displayable-manager group initialised
from the view type's factory on the view's renderer and pointed at the view node; in a slice view, the slice logic's
blended layers (background / foreground / label) drawn as the image behind the managers' actors.

Off-screen rendering: without an X display the VTK wheel needs EGL (``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``;
its OSMesa fallback needs a libOSMesa most systems lack). ``rendering_problem()`` tries it in a child process (a
failed OpenGL start can end the process) and says why views cannot render here, or "".
"""

import functools
import os
import subprocess
import sys
from typing import Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

SLICE_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D",)
THREED_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager3D",)

_PROBE = """
import vtk
window = vtk.vtkRenderWindow()
window.SetOffScreenRendering(1)
window.SetSize(8, 8)
renderer = vtk.vtkRenderer()
renderer.SetBackground(1, 0, 0)
window.AddRenderer(renderer)
window.Render()
grab = vtk.vtkWindowToImageFilter()
grab.SetInput(window)
grab.Update()
print("pixel", grab.GetOutput().GetScalarComponentAsDouble(4, 4, 0, 0))
"""


def use_offscreen_backend() -> None:
    """Without a display, let VTK render through EGL (set before the first render window is made)."""
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@functools.cache
def rendering_problem() -> str:
    """ "" when an off-screen render window draws here; else what went wrong (tests skip with it)."""
    use_offscreen_backend()
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"off-screen rendering probe failed: {exc}"
    if done.returncode != 0 or "pixel 255" not in done.stdout:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        backend = os.environ.get("VTK_DEFAULT_OPENGL_WINDOW", "VTK's default")
        return f"no off-screen OpenGL through {backend} (exit {done.returncode}): {' | '.join(tail)}"
    return ""


class View:
    """A render window (off screen), its renderer and a displayable-manager group from ``factory``."""

    def __init__(self, scene, app_logic, factory_class, managers, size: Tuple[int, int]) -> None:
        use_offscreen_backend()
        self.scene = scene
        self.size = tuple(int(s) for s in size)
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetMultiSamples(0)
        self.window.SetSize(*self.size)
        self.renderer = vtk.vtkRenderer()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        factory = factory_class.GetInstance()
        factory.SetMRMLApplicationLogic(app_logic)
        for name in managers:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)

    def render(self) -> np.ndarray:
        """Render and read the window back: ``(height, width, 3)`` uint8, top row first."""
        self.window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        width, height = image.GetDimensions()[:2]
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
        return pixels[::-1].copy()

    def save_png(self, path: str) -> None:
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.ReadFrontBufferOff()
        writer = vtk.vtkPNGWriter()
        writer.SetCompressionLevel(9)
        writer.SetInputConnection(grab.GetOutputPort())
        writer.SetFileName(str(path))
        self.window.Render()
        writer.Write()


class SliceView(View):
    """A slice view (``Red`` axial, ``Yellow`` sagittal, ``Green`` coronal) showing ``background`` with the
    segmentations drawn by Slicer's 2-D segmentation displayable manager."""

    def __init__(self, scene, app_logic, name: str = "Red", size: Tuple[int, int] = (256, 256)) -> None:
        super().__init__(scene, app_logic, slicer.vtkMRMLSliceViewDisplayableManagerFactory, SLICE_MANAGERS, size)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(app_logic)
        logics = app_logic.GetSliceLogics()
        if logics is None:
            logics = vtk.vtkCollection()
            app_logic.SetSliceLogics(logics)
        logics.AddItem(self.logic)
        self.logic.SetMRMLScene(scene)
        self.node = self.logic.AddSliceNode(name)
        self.managers.SetMRMLDisplayableNode(self.node)
        # the blended volume layers (RGBA, 0-255), drawn in display coordinates by a renderer underneath the managers'
        # one, as CTK's light-box renderer manager draws them in the application (the managers' 2-D fill then blends
        # over the image; in the managers' own renderer it would blend over the cleared background)
        self.mapper = vtk.vtkImageMapper()
        self.mapper.SetColorWindow(255)
        self.mapper.SetColorLevel(127.5)
        self.image = vtk.vtkActor2D()
        self.image.SetMapper(self.mapper)
        self.image_renderer = vtk.vtkRenderer()
        self.image_renderer.AddViewProp(self.image)
        self.window.SetNumberOfLayers(2)
        self.image_renderer.SetLayer(0)
        self.renderer.SetLayer(1)
        self.window.AddRenderer(self.image_renderer)
        self.logic.ResizeSliceNode(*self.size)

    def show(self, background=None, offset_ras=None) -> None:
        """Put ``background`` in the view, fit it, and go to the slice through ``offset_ras`` (else the middle)."""
        self.logic.GetSliceCompositeNode().SetBackgroundVolumeID(background.GetID() if background else None)
        self.logic.FitSliceToBackground(*self.size)
        if offset_ras is not None:
            self.node.JumpSliceByCentering(*offset_ras)
        self.mapper.SetInputConnection(self.logic.GetImageDataConnection())
        self.logic.ResizeSliceNode(*self.size)


class ThreeDView(View):
    """A 3-D view showing the segmentations' closed surfaces through Slicer's 3-D segmentation displayable manager."""

    def __init__(self, scene, app_logic, size: Tuple[int, int] = (256, 256)) -> None:
        super().__init__(scene, app_logic, slicer.vtkMRMLThreeDViewDisplayableManagerFactory, THREED_MANAGERS, size)
        self.node = slicer.vtkMRMLViewNode()
        self.node.SetLayoutName("1")
        scene.AddNode(self.node)
        self.managers.SetMRMLDisplayableNode(self.node)

    def look_from(self, direction_ras=(0.0, 1.0, 0.0), up_ras=(0.0, 0.0, 1.0)) -> None:
        """Point the camera at what is shown, from ``direction_ras`` (default: anterior), ``up_ras`` up."""
        self.renderer.ResetCamera()
        camera = self.renderer.GetActiveCamera()
        focal = np.array(camera.GetFocalPoint())
        distance = camera.GetDistance()
        camera.SetPosition(*(focal + distance * np.asarray(direction_ras, float)))
        camera.SetViewUp(*up_ras)
        self.renderer.ResetCamera()
        self.renderer.ResetCameraClippingRange()


def coloured(pixels: np.ndarray, rgb, tolerance: int = 60) -> np.ndarray:
    """Pixels whose hue leans towards ``rgb`` (the segment colour over a grey image): a bool mask ``(h, w)``."""
    p = pixels.astype(np.int16)
    grey = p.mean(axis=-1, keepdims=True)
    tint = p - grey
    want = np.asarray(rgb, float) * 255
    want = want - want.mean()
    return (tint * np.sign(want)).sum(axis=-1) > tolerance


def result_on(volume_node, probabilities_ijk: np.ndarray, threshold: float = 0.5, color=(0.9, 0.3, 0.2)):
    """An engine ``SegmentResult`` of one sigmoid segment on ``volume_node``'s grid from ``(I, J, K)`` probabilities,
    as a run would return it (what ``logic.applyResult`` takes), without running a network."""
    from UNetSigmoidSegLib.contract.options import Cleanup
    from UNetSigmoidSegLib.contract.result import DeviceChoice, SegmentResult, make_probabilities

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    affine = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    p = np.asarray(probabilities_ijk, np.float32)[None]
    return SegmentResult(
        make_probabilities(p, "sigmoid"),
        p >= threshold,
        ["organ"],
        [tuple(color)],
        [threshold],
        "sigmoid",
        affine,
        np.linalg.norm(affine[:3, :3], axis=0),
        DeviceChoice("cpu", "test"),
        "CPU",
        Cleanup(),
    )


def blob(shape, centre=None, radius=None) -> np.ndarray:
    """A smooth probability blob ``(I, J, K)`` in [0, 1]: thresholds move a real boundary (higher → smaller)."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = centre if centre is not None else [(s - 1) / 2 for s in shape]
    radius = radius if radius is not None else [s / 3 for s in shape]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius))
    return (1.0 / (1.0 + np.exp(4 * (r2 - 1)))).astype(np.float32)
