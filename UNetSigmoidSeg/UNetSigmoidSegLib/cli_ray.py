"""``segment … --ray [ADDRESS]``: a cohort on a Ray cluster, with the local batch's outputs and summary rows.

Reading (and the resume check) and writing are Ray tasks; inference runs on a pool of warm model actors
(``runners.ray_pool``), at most two cases per actor in flight, so the driver holds references, never volumes, and
a cohort larger than memory streams. Ray re-runs the unfinished call of an actor whose process or node died (on the
restarted actor, wherever the cluster has room); a case that fails for a user reason (a bad file) is a failed row
and the cohort goes on. Every output is written atomically, then a record beside it (``<output>.run.json``: the
SHA-256 of the input, the model and the outputs, and the options): running the same command again skips each case
whose record still holds. ``unetsigmoidseg-summary.json`` / ``.csv`` in the output folder list every case.
"""

import argparse
import contextlib
import csv
import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import NOT_CLINICAL, __version__
from .cli_cases import case_row, write_case
from .cli_paths import output_paths
from .contract.model import ModelSpec
from .contract.options import SegmentOptions
from .engine.files.paths import protected_files
from .errors import ModelError, OptionError, OutputError, UserError

RECORD = ".run.json"
SUMMARY = "unetsigmoidseg-summary"
COLUMNS = ("input", "status", "segments", "seconds", "node", "warnings", "error", "segmentation")


def fingerprint(paths: Sequence[str]) -> str:
    """SHA-256 over the files of ``paths`` (a folder: every file in it, by relative name)."""
    digest = hashlib.sha256()
    for top in paths:
        files = [top]
        if os.path.isdir(top):
            files = sorted(os.path.join(d, f) for d, _, names in os.walk(top) for f in names)
        for path in files:
            digest.update(os.path.relpath(path, top).encode("utf-8", "surrogateescape") + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):  # noqa: B023 - read at once
                    digest.update(block)
    return digest.hexdigest()


def _outputs(case: Dict[str, Optional[str]]) -> List[str]:
    return [p for p in (case["segmentation"], case["probabilities"]) if p]


def read_case(case: Dict[str, Optional[str]], run: Dict[str, Any], series: Optional[str]) -> Tuple[Any, Any]:
    """A Ray task: ``("skip", row)`` when the outputs' record says this very input, model and options made them,
    else ``("run", fingerprint)`` and the volume (a second return, fetched only by the actor)."""
    from .engine.files.volume import read_volume

    t0 = time.perf_counter()
    digest = fingerprint([case["input"] or ""])
    record = _read_record(case)
    if record is not None and _holds(record, digest, run, case):
        return ("skip", dict(record["row"], status="skipped")), None
    if any(os.path.exists(p) for p in _outputs(case)) and not run["overwrite"]:
        raise OutputError(
            f"{case['segmentation']} exists from another run (its input, model or options differ, or it was changed)",
            "Pass --overwrite to replace it, or choose another --output.",
        )
    volume = read_volume(case["input"] or "", series=series)
    return ("run", digest, time.perf_counter() - t0), volume


def _read_record(case: Dict[str, Optional[str]]) -> Optional[Dict[str, Any]]:
    try:
        with open((case["segmentation"] or "") + RECORD, encoding="utf-8") as f:
            record = json.load(f)
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def _holds(record: Dict[str, Any], digest: str, run: Dict[str, Any], case: Dict[str, Optional[str]]) -> bool:
    if record.get("input_sha256") != digest or record.get("model_sha256") != run["model_sha256"]:
        return False
    if record.get("options") != run["options"] or sorted(record.get("outputs", {})) != sorted(_outputs(case)):
        return False
    return all(os.path.exists(p) and fingerprint([p]) == h for p, h in record["outputs"].items())


def write_case_task(
    outcome: Tuple[str, Any, Dict[str, Any]],
    case: Dict[str, Optional[str]],
    run: Dict[str, Any],
    digest: str,
    read_s: float,
) -> Dict[str, Any]:
    """A Ray task: write the case's files and then its record; returns its summary row."""
    from .engine.files.volume import atomic_output

    kind, result, how = outcome
    if kind == "error":
        raise result.exception()
    t0 = time.perf_counter()
    write_case(result, case, run["reads"])
    timings = dict(result.timings, read_s=read_s, write_s=time.perf_counter() - t0)
    timings["total_s"] = sum(timings.values())  # the stages of the case, each timed where it ran
    row = dict(case_row(case, result, timings), status="done", node=how.get("node"), pid=how.get("pid"))
    record = {
        "version": __version__,
        "input": case["input"],
        "input_sha256": digest,
        "model_sha256": run["model_sha256"],
        "options": run["options"],
        "outputs": {p: fingerprint([p]) for p in _outputs(case)},
        "row": row,
    }
    with atomic_output((case["segmentation"] or "") + RECORD, run["reads"]) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
    return row


def segment_cohort(
    args: argparse.Namespace, inputs: List[str], spec: ModelSpec, options: SegmentOptions, model_files: List[str]
) -> int:
    """Run ``inputs`` on the Ray cluster of ``--ray`` with ``spec`` (whose files are ``model_files``); exit 0 when
    every case is done (or was done before), 2 when some failed (each named in the summary)."""
    model_files = [p for p in model_files if os.path.exists(p)]
    cases = output_paths(inputs, args.output, args.probabilities, model_files, overwrite=True)
    reads = protected_files([c["input"] for c in cases] + model_files)
    fresh = [c for c in cases if any(os.path.exists(p) for p in _outputs(c)) and _read_record(c) is None]
    if fresh and not args.overwrite:
        raise OutputError(
            f"{_outputs(fresh[0])[0]} already exists and no record says which run made it"
            + (f" (and {len(fresh) - 1} more)" if len(fresh) > 1 else "")
            + ": nothing was run",
            "Pass --overwrite to replace them, or choose another --output.",
        )
    folder = os.path.dirname(os.path.abspath(cases[0]["segmentation"] or ""))
    summary_files = [os.path.join(folder, SUMMARY + ext) for ext in (".json", ".csv")]
    check_summary_files(summary_files, reads + [p for c in cases for p in _outputs(c)])
    run = {
        "model_sha256": fingerprint(model_files),
        "options": options.to_dict(),
        "reads": reads,
        "overwrite": bool(args.overwrite),
    }
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # Ray's own lines (a worker died, a retry) never mix into --json
        summary = _run(args, cases, spec, options, run, summary_files)
    if args.json:
        print(json.dumps(summary, indent=2), file=stdout)
    failed = summary["cohort"]["failed"]
    if failed:
        print(f"error: {failed} of {len(cases)} case(s) failed: see {summary_files[1]}", file=sys.stderr)
        return 2
    return 0


def _run(
    args: argparse.Namespace,
    cases: List[Dict[str, Optional[str]]],
    spec: ModelSpec,
    options: SegmentOptions,
    run: Dict[str, Any],
    summary_files: List[str],
) -> Dict[str, Any]:
    from .runners.ray_pool import RayPool, lost

    gpus = 1.0 if options.device.startswith("cuda") else 0.0
    pool = RayPool(args.ray, replicas=args.actors, threads=args.threads, gpus=gpus, retries=2)
    ray = pool.ray
    try:
        info = pool.inspect(spec)[0]  # a model that cannot load stops here, before any case
    except BaseException:
        pool.close()
        raise
    if not args.quiet:
        print(f"model: {info.summary()}\nray: {len(pool.actors)} replica(s) on {pool.describe()}", file=sys.stderr)
    read = ray.remote(num_cpus=0, num_returns=2, max_retries=2)(read_case)
    write = ray.remote(num_cpus=0, max_retries=2)(write_case_task)
    request = {"model": spec.to_dict(), "options": run["options"]}  # each case's affine comes with its volume
    rows: List[Dict[str, Any]] = []
    say = Say(len(cases), args.quiet, args.verbose)
    started = time.perf_counter()
    pending = list(enumerate(cases))
    flight: Dict[Any, Tuple[int, Any, Any]] = {}  # a case's newest ref → (index, its actor, the volume's ref)
    busy = {id(a): 0 for a in pool.actors}
    try:
        while pending or flight:
            for actor in pool.actors:
                while pending and busy[id(actor)] < 2:
                    index, case = pending.pop(0)
                    status, volume = read.remote(case, run, args.series)
                    flight[status] = (index, actor, volume)
                    busy[id(actor)] += 1
            ready, _ = ray.wait(list(flight), num_returns=1, timeout=0.5)
            for ref in ready:
                index, actor, volume = flight.pop(ref)
                case = cases[index]
                try:
                    value = ray.get(ref)
                    if isinstance(value, dict):  # written
                        row = value
                    elif value[0] == "skip":
                        row = value[1]
                    else:
                        outcome = actor.segment_volume.remote(request, volume)
                        flight[write.remote(outcome, case, run, value[1], value[2])] = (index, actor, None)
                        continue
                except UserError as raised:
                    exc = getattr(raised, "cause", raised)  # Ray's error: the task's own exception is its cause
                    if isinstance(exc, (OptionError, ModelError)):
                        raise exc from None  # the options do not fit the model: every case would fail alike
                    row = _failed(case, exc.message, exc.hint)
                except ray.exceptions.RayActorError as exc:
                    error = lost(exc, "this case")
                    row = _failed(case, error.message, error.hint)
                except ray.exceptions.RayTaskError as exc:  # a bug on one case: said in its row, the cohort goes on
                    cause = getattr(exc, "cause", exc)
                    message = f"unexpected {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
                    row = _failed(case, message, "This is a bug: please report it with the summary file.")
                busy[id(actor)] -= 1
                rows.append(dict(row, index=index))
                say.case(row)
            say.line()
    except KeyboardInterrupt:
        for ref in list(flight):
            ray.cancel(ref, force=False)
        raise
    finally:
        pool.close()
    rows.sort(key=lambda r: r.pop("index"))
    summary = {"cohort": say.counts(), "cases": rows, "total_s": round(time.perf_counter() - started, 3)}
    write_summary(summary, summary_files, run["reads"])
    say.end(summary_files)
    return summary


def _failed(case: Dict[str, Optional[str]], message: str, hint: str) -> Dict[str, Any]:
    return {
        "input": case["input"],
        "segmentation": case["segmentation"],
        "status": "failed",
        "error": message,
        "fix": hint,
    }


def check_summary_files(paths: List[str], protected: List[str]) -> None:
    """The summary files may replace an earlier summary, never a file of anyone else (nor an input or output)."""
    from .engine.files.paths import check_output_paths

    check_output_paths([("summary", p) for p in paths], protected)
    for path in paths:
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                head = f.read(200)
            if not (head.startswith('{\n  "cohort"') or head.startswith(",".join(COLUMNS))):
                raise OutputError(
                    f"{path} exists and is not a summary of this program", "Move it, or choose another --output."
                )


def write_summary(summary: Dict[str, Any], paths: List[str], protected: List[str]) -> None:
    from .engine.files.volume import atomic_output

    with atomic_output(paths[0], protected) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    with atomic_output(paths[1], protected) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            out = csv.writer(f)
            out.writerow(COLUMNS)
            for row in summary["cases"]:
                volumes = "; ".join(f"{s['segment']} {s['volume_ml']} mL" for s in row.get("segments", []))
                seconds = row.get("timings_s", {}).get("total_s", "")
                warnings = " | ".join(row.get("warnings", []))
                out.writerow(
                    [
                        row["input"],
                        row["status"],
                        volumes,
                        seconds,
                        row.get("node", ""),
                        warnings,
                        row.get("error", ""),
                        row["segmentation"],
                    ]
                )


class Say:
    """The cohort's one progress line (cases done / failed / skipped, throughput, ETA) and, with ``--verbose``, a
    line per case."""

    def __init__(self, total: int, quiet: bool, verbose: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.verbose = verbose
        self.done: Dict[str, int] = {"done": 0, "failed": 0, "skipped": 0}
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def counts(self) -> Dict[str, int]:
        return dict(self.done, total=self.total)

    def case(self, row: Dict[str, Any]) -> None:
        self.done[row["status"]] += 1
        if row["status"] == "failed":
            print(f"\nwarning: {row['input']}: {row['error']}", file=sys.stderr)
        elif self.verbose and not self.quiet:
            vols = ", ".join(f"{s['segment']} {s['volume_ml']:.1f} mL" for s in row.get("segments", []))
            print(
                f"\n{row['input']} → {row['segmentation']} ({row['status']}; {vols}; node {row.get('node')})",
                file=sys.stderr,
            )
        self.line(force=True)

    def line(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.quiet or (not force and now - self.last < (1.0 if self.tty else 30.0)):
            return
        self.last = now
        ran = self.done["done"] + self.done["failed"]
        left = self.total - ran - self.done["skipped"]
        rate = ran / max(1e-9, now - self.t0) * 3600
        eta = f"{left / rate * 3600:.0f} s" if ran and left else "-"
        text = (
            f"cohort: {ran + self.done['skipped']}/{self.total} ({self.done['done']} done, {self.done['failed']} "
            f"failed, {self.done['skipped']} skipped) · {rate:.0f} cases/h · ETA {eta}"
        )
        sys.stderr.write(("\r" + text.ljust(100)) if self.tty else text + "\n")
        sys.stderr.flush()

    def end(self, files: List[str]) -> None:
        if not self.quiet:
            self.line(force=True)
            print(f"\nsummary: {files[0]}, {files[1]} — {NOT_CLINICAL}", file=sys.stderr)
