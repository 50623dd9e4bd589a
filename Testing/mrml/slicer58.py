"""Slicer 5.8's API on a newer slicer-core. No slicer-core wheel exists for Slicer 5.8 (Python 3.9) or 5.10, so:

* ``Segment58``: ``vtkSegment`` without the terminology methods Slicer 5.10 added (``SetTerminology`` /
  ``GetTerminology`` / ``HasTerminology``, Slicer commit 49a251067d, 2025-03-05) — used by ``test_logic.py``;
* as a pytest plugin (``make test`` runs Testing/mrml so), it also replaces ``slicer.vtkSegment`` by it for the whole
  run, and traces every call the module's own code makes on a Slicer object (MRML scene and nodes, segmentation core,
  module logics): at the end, each must be declared by the object's Slicer classes at every release of
  ``slicer_api/slicer_api.json`` (parsed from Slicer 5.8.0's and 5.10.0's headers), else the run fails listing them::

    PYTHONPATH=Testing/mrml python -m pytest -p slicer58 Testing/mrml

Methods VTK's own classes declare (``AddObserver``, ``GetPointData`` …) are not Slicer's: they are only counted.
Class-level calls (``slicer.vtkSegment.GetTerminologyEntryTagName()``) do not reach a profiler; ``test_logic.py``
checks them in the source.
"""

import json
import sys
import threading
from pathlib import Path
from typing import Dict, List, Tuple

import slicer

REAL_SEGMENT = slicer.vtkSegment
ADDED_IN_5_10 = ("SetTerminology", "GetTerminology", "HasTerminology")
PRODUCT = str(Path(__file__).resolve().parents[2] / "UNetSigmoidSeg")
SLICER_API: Dict[str, dict] = json.loads((Path(__file__).parent / "slicer_api" / "slicer_api.json").read_text())
RELEASES = list(SLICER_API["_meta"]["releases"])


class Segment58(REAL_SEGMENT):
    """``vtkSegment`` as in Slicer 5.8.x: the 5.10 terminology methods raise AttributeError, as there."""

    def __getattribute__(self, name):
        if name in ADDED_IN_5_10:
            raise AttributeError(f"'vtkSegment' object has no attribute '{name}' (Slicer 5.8 emulation)")
        return super().__getattribute__(name)


def is_slicer_class(cls: type) -> bool:
    return cls.__module__.startswith("slicer_core")


def missing_at(chain: List[str], method: str) -> List[str]:
    """The releases at which none of the Slicer classes ``chain`` declares ``method`` (a class the table lacks: all)."""
    if any(c not in SLICER_API for c in chain):
        return ["(class not in slicer_api.json: add it to CLASSES in slicer_api/generate.py)"]
    return [r for r in RELEASES if not any(method in (SLICER_API[c][r]["methods"] or ()) for c in chain)]


CALLS: Dict[Tuple[str, str], dict] = {}  # (class, method) -> what was seen first
VTK_CALLS: Dict[Tuple[str, str], int] = {}


def _profile(frame, event, arg):
    if event != "c_call" or not frame.f_code.co_filename.startswith(PRODUCT):
        return
    obj = getattr(arg, "__self__", None)
    cls = type(obj)
    if obj is None or isinstance(obj, type) or not cls.__module__.startswith(("slicer_core", "vtkmodules")):
        return
    key = (cls.__name__, arg.__name__)
    declared_by = next((c for c in cls.__mro__ if arg.__name__ in c.__dict__), cls)
    if not is_slicer_class(declared_by):
        VTK_CALLS[key] = VTK_CALLS.get(key, 0) + 1
    elif key not in CALLS:
        where = f"{frame.f_code.co_filename[len(PRODUCT) + 1 :]}:{frame.f_lineno}"
        CALLS[key] = {"chain": [c.__name__ for c in cls.__mro__ if is_slicer_class(c)], "where": where}


def pytest_configure(config):
    slicer.vtkSegment = Segment58
    sys.setprofile(_profile)
    threading.setprofile(_profile)


def pytest_report_header(config):
    return (
        f"Slicer 5.8 emulation: slicer.vtkSegment has no {', '.join(ADDED_IN_5_10)}; the module's Slicer calls are "
        f"checked against Slicer {' and '.join(RELEASES)} (slicer_api/slicer_api.json)"
    )


def pytest_sessionfinish(session, exitstatus):
    sys.setprofile(None)
    threading.setprofile(None)
    slicer.vtkSegment = REAL_SEGMENT
    wrong = []
    for (cls, method), seen in sorted(CALLS.items()):
        releases = missing_at(seen["chain"], method)
        if releases:
            wrong.append(f"{seen['where']}: {cls}.{method} is not declared in Slicer {', '.join(releases)}")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [
        f"Slicer API check: {len(CALLS)} Slicer methods the module called, checked against {', '.join(RELEASES)}; "
        f"{len(VTK_CALLS)} VTK methods (not checked)"
    ]
    if not CALLS and session.testscollected:  # 85 for Testing/mrml + test_panel.py when written
        wrong.append("no Slicer method call traced: is the profiler working?")
    lines += wrong
    if reporter is not None:
        reporter.write("\n")  # after the progress dots
        for line in lines:
            reporter.write_line(line, red=bool(wrong) and line in wrong)
    if wrong and session.exitstatus == 0:
        session.exitstatus = 1
