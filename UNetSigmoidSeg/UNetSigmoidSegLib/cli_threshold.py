"""``unetsigmoidseg threshold``: new thresholds (and clean-up) on saved probability files, without the network.

The masks equal what ``segment`` with the same options and ``--threshold T`` gives: the file holds the float32
probabilities that run thresholded (``engine.files.probfile``), compared the same way.
"""

import argparse
import json
import os
import sys
from typing import Any, Dict, List

from . import NOT_CLINICAL
from .cli_paths import output_folders, output_paths, stem
from .contract.options import Cleanup
from .engine.files.paths import protected_files

SUFFIX = "_probabilities"


def add_parser(sub: Any) -> None:
    t = sub.add_parser(
        "threshold",
        help="threshold saved probability files again (no network run)",
        description="New thresholds and clean-up on probability files written by `segment --probabilities`: the "
        "masks equal what `segment … --threshold T` gives. " + NOT_CLINICAL,
    )
    t.add_argument("inputs", nargs="+", metavar="PROBS", help="probability files (.nrrd/.mha) or folders of them")
    t.add_argument(
        "--threshold",
        type=float,
        nargs="+",
        help="one probability, or one per segment (softmax: a minimum confidence) (default: the run's)",
    )
    t.add_argument(
        "--output",
        "-o",
        help="OUT.seg.nrrd | OUT.nii.gz | FOLDER/ (default: <input name>.seg.nrrd beside the working folder)",
    )
    t.add_argument("--overwrite", action="store_true", help="replace output files that exist (default: refuse)")
    t.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    c = t.add_argument_group("clean-up (default: the run's, as recorded in the file)")
    c.add_argument("--largest-component", action="store_true", help="keep the largest connected component")
    c.add_argument("--fill-holes", action="store_true", help="fill holes in each segment")
    c.add_argument("--min-island-mm3", type=float, help="remove islands smaller than this volume (mm³)")
    c.add_argument("--no-cleanup", action="store_true", help="no clean-up, whatever the run used")


def _inputs(items: List[str]) -> List[str]:
    """Files as given; a folder gives its ``*_probabilities.nrrd|mha`` files."""
    from .engine.files.probfile import EXTENSIONS

    out: List[str] = []
    for item in items:
        if not os.path.isdir(item):
            out.append(item)
            continue
        for name in sorted(os.listdir(item)):
            low = name.lower()
            if stem(name).endswith(SUFFIX) and low.endswith(EXTENSIONS) and not low.endswith(".seg.nrrd"):
                out.append(os.path.join(item, name))
    return out


def cmd_threshold(args: argparse.Namespace) -> int:
    from .engine.files.outputs import write_segmentation
    from .engine.files.probfile import load_probabilities
    from .errors import UserError

    inputs = _inputs(args.inputs)
    if not inputs:
        raise UserError(f"No probability files in {', '.join(args.inputs)}", "Give files written by --probabilities.")
    flags = args.largest_component or args.fill_holes or bool(args.min_island_mm3)
    if args.no_cleanup and flags:
        raise UserError("--no-cleanup contradicts the clean-up flags given", "Give either, not both.")
    cleanup = Cleanup(args.largest_component, args.fill_holes, args.min_island_mm3 or 0.0) if flags else None
    summary: Dict[str, Any] = {"cases": []}
    with output_folders(args.output):
        cases = output_paths(inputs, args.output, None, (), args.overwrite, strip=SUFFIX)
        for case in cases:
            result = load_probabilities(case["input"])
            if args.no_cleanup:
                result.cleanup = Cleanup()
            elif cleanup is not None:
                result.cleanup = cleanup
            result.rethreshold(args.threshold if args.threshold is not None else result.thresholds)
            warning = write_segmentation(result, case["segmentation"], protected_files([case["input"]]))
            stats = result.statistics()
            row = {
                "input": case["input"],
                "segmentation": case["segmentation"],
                "activation": result.activation,
                "thresholds": result.thresholds,
                "cleanup": result.cleanup.__dict__,
                "segments": stats,
                "warnings": [warning] if warning else [],
            }
            summary["cases"].append(row)
            if warning:
                print("warning: " + warning, file=sys.stderr)
            if not args.json:
                vols = ", ".join(f"{s['segment']} {s['volume_ml']:.1f} mL" for s in stats)
                levels = ", ".join(f"{t:g}" for t in result.thresholds)
                print(f"{case['input']} → {case['segmentation']} ({vols}; threshold {levels}) — {NOT_CLINICAL}")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0
