"""Scene access and, outside the Slicer application, a scene set up as Slicer sets it up."""

from typing import Any, Optional

import slicer

from ..errors import UserError

_LOGICS: dict = {}


def default_scene(scene: Optional[Any] = None) -> Any:
    """``scene`` if given, else the application's ``slicer.mrmlScene``."""
    if scene is not None:
        return scene
    app_scene = getattr(slicer, "mrmlScene", None)
    if app_scene is None:
        raise UserError(
            "No MRML scene: outside the Slicer application pass scene=…",
            "Use UNetSigmoidSegLib.mrml.scene.create_headless_scene() to make one.",
        )
    return app_scene


def register_segmentation_converters() -> None:
    """Register the segmentation representation converters once (the application does this at start-up)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return
    for rule in (
        slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
        slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
        slicer.vtkClosedSurfaceToFractionalLabelmapConversionRule,
        slicer.vtkFractionalLabelmapToClosedSurfaceConversionRule,
    ):
        factory.RegisterConverterRule(rule())


def create_headless_scene() -> Any:
    """A ``vtkMRMLScene`` with application, colour, volumes, segmentations and subject-hierarchy logic,
    wired as ``qSlicerCoreApplication`` does (for tests and headless use with slicer-core)."""
    register_segmentation_converters()
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLApplicationLogic(app_logic)
    colors.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Colors", colors)
    logics = {"app": app_logic, "Colors": colors}
    for name, cls in (
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
    ):
        logic = cls()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    _LOGICS[scene.GetAddressAsString("")] = logics  # keep the logic objects alive with the scene
    return scene


def application_logic(scene: Any) -> Optional[Any]:
    """The application logic of a scene made by ``create_headless_scene`` (views need it), else None."""
    return _LOGICS.get(scene.GetAddressAsString(""), {}).get("app")


def volumes_logic(scene: Any) -> Any:
    """The Volumes module logic: the application's, or the headless scene's."""
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "volumes"):
        return modules.volumes.logic()
    logics = _LOGICS.get(scene.GetAddressAsString(""))
    if logics is None:
        logic = slicer.vtkSlicerVolumesLogic()
        logic.SetMRMLScene(scene)
        _LOGICS[scene.GetAddressAsString("")] = logics = {"Volumes": logic}
    return logics["Volumes"]


def subject_hierarchy(scene: Any) -> Optional[Any]:
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
