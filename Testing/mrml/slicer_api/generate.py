#!/usr/bin/env python3
"""Generate ``slicer_api.json``: the public methods (names) of every Slicer class — MRML nodes and scene,
segmentation core, module logics — the module's code calls, parsed from Slicer's headers at each release in
``RELEASES`` (VTK's ``vtkGetMacro`` / ``vtkSetMacro`` / ``vtkBooleanMacro`` / ``vtkTypeMacro`` … expanded).

``Testing/mrml/slicer58.py`` checks every call the module makes on a Slicer object during the tests against it (and
``test_logic.py`` the class-level calls), so a call that an older supported release lacks fails the tests — as
``vtkSegment.SetTerminology`` (new in 5.10) would on 5.8. Needs a Slicer git directory, not the network; tests never
run this: the JSON is the checked artefact. See README.md beside this file.
"""

import argparse
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

HEADER_PARSER = Path(__file__).resolve().parents[2] / "widget" / "qt_api" / "headers.py"
_spec = importlib.util.spec_from_file_location("headers", HEADER_PARSER)
qtgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qtgen)  # the header parser: Source, strip_comments, class_bodies, parse_class

# (release, git ref) — the oldest supported release first
RELEASES = [("5.8.0", "v5.8.0"), ("5.10.0", "v5.10.0")]
# the Slicer classes whose methods the module calls (found by the trace of slicer58.py); bases are followed
CLASSES = [
    "vtkMRMLScene",
    "vtkMRMLScalarVolumeNode",
    "vtkMRMLVectorVolumeNode",
    "vtkMRMLLabelMapVolumeNode",
    "vtkMRMLSegmentationNode",
    "vtkMRMLScriptedModuleNode",
    "vtkMRMLSubjectHierarchyNode",
    "vtkMRMLTableNode",
    "vtkMRMLPlotSeriesNode",
    "vtkMRMLPlotChartNode",
    "vtkMRMLLinearTransformNode",
    "vtkMRMLScalarVolumeDisplayNode",
    "vtkMRMLSegmentationDisplayNode",
    "vtkMRMLColorLogic",
    "vtkSlicerApplicationLogic",
    "vtkSlicerVolumesLogic",
    "vtkSlicerSegmentationsModuleLogic",
    "vtkSlicerSubjectHierarchyModuleLogic",
    "vtkSegment",
    "vtkSegmentation",
    "vtkOrientedImageData",
    "vtkSegmentationConverterFactory",
]
TYPE_MACRO = ["IsA", "IsTypeOf", "SafeDownCast", "NewInstance", "GetNumberOfGenerationsFromBase",
              "GetNumberOfGenerationsFromBaseType"]  # fmt: skip


def expand_macro(macro: str, args: List[str]) -> List[str]:
    """The methods a VTK/MRML declaration macro declares (``vtkGetMacro(Name, int)`` → ``GetName``)."""
    field = args[0] if args else ""
    if macro in ("vtkTypeMacro", "vtkAbstractTypeMacro"):
        return TYPE_MACRO
    if macro == "vtkMRMLNodeNewMacro":
        return ["CreateNodeInstance"]
    if macro.startswith("vtkMRMLCopyContent"):
        return ["CopyContent", "HasCopyContent"]
    if "Boolean" in macro:
        return [f"{field}On", f"{field}Off"]
    names = []
    if "Get" in macro:
        names.append(f"Get{field}")
    if "Set" in macro:
        names.append(f"Set{field}")
    if "Clamp" in macro:
        names += [f"Get{field}MinValue", f"Get{field}MaxValue"]
    return names


def public_methods(body: str, line: int) -> Set[str]:
    info = qtgen.parse_class(body, line)
    names: Set[str] = set()
    for signature in info["methods"] + info["slots"] + info["invokables"]:
        name, _, params = signature.partition("(")
        if re.fullmatch(r"vtk\w*Macro", name):
            names.update(expand_macro(name, [p.strip() for p in params.rstrip(")").split(",")]))
        elif not name.startswith("~"):
            names.add(name)
    return names


def release_table(source, classes: List[str]) -> Dict[str, dict]:
    """{class: {"base", "header", "methods"}} at one release, following the Slicer base classes."""
    index = {os.path.basename(p)[:-2]: p for paths in source.index.values() for p in paths}
    table: Dict[str, dict] = {}
    todo = list(classes)
    while todo:
        cls = todo.pop(0)
        if cls in table:
            continue
        path = index.get(cls)
        bodies = qtgen.class_bodies(qtgen.strip_comments(source.read(path))) if path else {}
        if cls not in bodies:
            table[cls] = {"base": None, "header": None, "methods": None}  # not in this release
            continue
        body, line, bases = bodies[cls]
        base = bases[0] if bases else None
        table[cls] = {"base": base, "header": path, "methods": sorted(public_methods(body, line))}
        if base and base in index:  # a Slicer class: follow it (VTK's own classes are not Slicer's)
            todo.append(base)
    return table


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slicer", required=True, help="Slicer git directory (e.g. a mirror of Slicer/Slicer)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "slicer_api.json"))
    args = ap.parse_args(argv)
    releases, classes = {}, {}
    for release, ref in RELEASES:
        source = qtgen.Source(f"{args.slicer}@{ref}")
        releases[release] = f"{ref} ({source.commit})"
        for cls, entry in release_table(source, CLASSES).items():
            classes.setdefault(cls, {})[release] = entry
    missing = [c for c in CLASSES if all(classes[c][r]["methods"] is None for r, _ in RELEASES)]
    if missing:
        print(f"not found in any release: {missing}", file=sys.stderr)
        return 1
    meta = {
        "releases": releases,
        "note": "public methods declared in each class's own header (declaration macros expanded); a class absent "
        "at a release has methods null. Inherited methods are in the base class's entry.",
        "generated_by": "Testing/mrml/slicer_api/generate.py (see README.md there)",
    }
    with open(args.out, "w", encoding="utf-8") as f:
        f.write('{\n "_meta": ' + json.dumps(meta) + ",\n")
        f.write(",\n".join(f" {json.dumps(c)}: {json.dumps(classes[c])}" for c in sorted(classes)))
        f.write("\n}\n")
    print(f"{len(classes)} classes at {', '.join(releases)} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
