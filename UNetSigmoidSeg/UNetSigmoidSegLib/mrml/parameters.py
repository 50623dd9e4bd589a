"""The module's parameter node: typed values in a ``vtkMRMLScriptedModuleNode``, saved with the scene."""

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

from ..contract.options import RANGES as CONTRACT_RANGES

MODULE_NAME = "UNetSigmoidSeg"
REFERENCE_ROLES = ("InputVolume", "OutputSegmentation", "ProbabilityVolume")

# name -> (min, max) for numeric parameters (the run contract's ranges, by their panel names); validated on read
RANGES = {
    panel: CONTRACT_RANGES[run]
    for panel, run in (
        ("threshold", "threshold"),
        ("overlap", "overlap"),
        ("minIslandMm3", "min_island_mm3"),
        ("swBatchSize", "sw_batch_size"),
    )
}


@dataclass
class Parameters:
    """Panel state; node references (input volume, output segmentation, probability volume) live on the node."""

    modelPath: str = ""
    activation: str = "auto"
    multiLabel: bool = False
    normalization: str = "model"  # "model": what the model records; else one of contract.options.NORMALIZATIONS
    ctWindow: List[float] = field(default_factory=list)
    threshold: float = 0.5
    segmentThresholds: List[float] = field(default_factory=list)
    device: str = "auto"
    createProbabilityVolume: bool = False
    largestComponent: bool = False
    fillHoles: bool = False
    minIslandMm3: float = 0.0
    roiSize: List[int] = field(default_factory=list)
    overlap: float = 0.25
    swBatchSize: int = 1
    blendMode: str = "gaussian"
    amp: bool = True
    backend: str = "auto"
    keepWorkerWarm: bool = True
    trustBundle: bool = False
    recentModels: List[str] = field(default_factory=list)

    def validated(self) -> "Parameters":
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            setattr(self, name, type(value)(min(max(value, lo), hi)))
        return self


def get_parameter_node(scene: Any, create: bool = True) -> Optional[Any]:
    """The module's singleton scripted-module node in ``scene`` (created on demand)."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
        if node.GetModuleName() == MODULE_NAME:
            return node
    if not create:
        return None
    import slicer

    node = slicer.vtkMRMLScriptedModuleNode()
    node.SetModuleName(MODULE_NAME)
    node.SetSingletonTag(MODULE_NAME)
    node.SetName(MODULE_NAME)
    return scene.AddNode(node)


def read_parameters(node: Any) -> Parameters:
    """Typed parameters from the node; missing or unreadable values keep their defaults."""
    params = Parameters()
    for f in fields(Parameters):
        raw = node.GetParameter(f.name)
        if not raw:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        default = getattr(params, f.name)
        if isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, (int, float)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:  # wrong type or NaN
                continue
            value = type(default)(value)
        elif isinstance(default, list) and not isinstance(value, list):
            continue
        elif isinstance(default, str) and not isinstance(value, str):
            continue
        setattr(params, f.name, value)
    return params.validated()


def write_parameters(node: Any, params: Parameters) -> None:
    """Store every value (JSON-encoded) in one modification batch."""
    was = node.StartModify()
    try:
        for name, value in asdict(params).items():
            node.SetParameter(name, json.dumps(value))
    finally:
        node.EndModify(was)


def set_reference(node: Any, role: str, target: Optional[Any]) -> None:
    assert role in REFERENCE_ROLES, role
    node.SetNodeReferenceID(role, target.GetID() if target is not None else None)


def get_reference(node: Any, role: str) -> Optional[Any]:
    return node.GetNodeReference(role)


def as_dict(params: Parameters) -> Dict[str, Any]:
    return asdict(params)
