"""One case of ``segment``: its output files written and its summary row — the same for the local batch and a cohort
on Ray (``cli_ray``), so both write the same files and the same ``--json`` rows."""

from typing import Any, Dict, List, Optional, Sequence


def write_case(result: Any, case: Dict[str, Optional[str]], reads: Sequence[str]) -> List[str]:
    """Write the case's segmentation (and probability file), each atomically, never onto a file of ``reads`` (the
    inputs and the model). Returns the warnings writing added (also appended to ``result.warnings``)."""
    from .engine.files.outputs import write_segmentation
    from .engine.files.probfile import write_probabilities

    added = []
    warning = write_segmentation(result, case["segmentation"] or "", list(reads))
    if warning:
        result.warnings.append(warning)
        added.append(warning)
    if case["probabilities"]:
        write_probabilities(result, case["probabilities"], list(reads) + [case["segmentation"] or ""])
    return added


def case_row(case: Dict[str, Optional[str]], result: Any, timings: Dict[str, float]) -> Dict[str, Any]:
    """The case's row of the run summary (``--json``)."""
    return {
        "input": case["input"],
        "segmentation": case["segmentation"],
        "probabilities": case["probabilities"],
        "device": result.device.device,
        "device_reason": result.device.reason,
        "placement": result.placement,
        "activation": result.activation,
        "thresholds": result.thresholds,
        "window": result.window.to_dict() if result.window is not None else None,
        "backend": result.backend.to_dict() if result.backend is not None else None,
        "segments": result.statistics(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "warnings": result.warnings,
    }
