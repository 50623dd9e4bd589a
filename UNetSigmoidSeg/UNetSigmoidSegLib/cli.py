"""Headless front end: ``unetsigmoidseg segment|inspect|threshold|serve|demo``.

Exit codes: 0 ok, 2 user error (one paragraph, no traceback), 1 a bug (the message names its log), 128 + the
signal number when stopped (Ctrl-C 130, SIGTERM 143, a closed terminal 129) — see ``exits``. The flags are
declared in ``cli_parser`` (``build_parser``, importable from here too).
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import NOT_CLINICAL, cli_threshold, exits
from .cli_cases import case_row, write_case
from .cli_parser import build_parser
from .cli_paths import expand_inputs, output_folders, output_paths, stem
from .contract.model import ModelInfo, ModelSpec, looks_like_path
from .contract.options import Cleanup, SegmentOptions
from .engine.files.paths import protected_files
from .errors import OptionError, UserError
from .progress import Progress
from .remote import serve

TRUST_WARNING = (
    "warning: --trust-bundle: the model's config is run by MONAI's ConfigParser as it is — any code in it runs "
    "with your permissions. Use it only for models whose author you trust."
)


def _model_files(spec: ModelSpec) -> List[str]:
    """The files a run reads besides its inputs: the model (a bundle folder: every file in it) and its JSON."""
    if not spec.path:  # a server's model: nothing of it is on this computer
        return []
    sidecar = os.path.splitext(spec.path)[0] + ".json" if not os.path.isdir(spec.path) else ""
    return [p for p in (spec.path, sidecar, spec.network_config or "") if p]


def _options(args: argparse.Namespace) -> SegmentOptions:
    """The command line's ``SegmentOptions`` (validated: a bad value is an ``OptionError`` naming it)."""
    threshold = args.threshold if args.threshold is None or len(args.threshold) > 1 else args.threshold[0]
    return SegmentOptions(
        activation=args.activation,
        threshold=threshold,
        device=args.device,
        amp=not args.no_amp,
        backend=args.backend,
        roi_size=args.roi_size,
        sw_batch_size=args.sw_batch_size,
        overlap=args.overlap,
        blend_mode=args.blend_mode,
        slice_axis=args.slice_axis,
        normalization=args.normalization,
        ct_window=args.ct_window,
        orientation=args.orientation,
        spacing=args.spacing,
        cleanup=Cleanup(args.largest_component, args.fill_holes, args.min_island_mm3 or 0.0),
        labels=args.labels,
        keep_probabilities=bool(args.probabilities),
        multi_label=args.multi_label,
    )


def _model_spec(args: argparse.Namespace) -> ModelSpec:
    """``--model``: a path; with ``--server``, a server model name unless it looks like a path (a folder separator
    or a model-file suffix: then the file is uploaded, if the server accepts uploads)."""
    if getattr(args, "server", None) and not looks_like_path(args.model):
        return ModelSpec(name=args.model, strides=getattr(args, "strides", None))
    return ModelSpec(
        args.model,
        trust_bundle=args.trust_bundle,
        network_config=args.network_config,
        strides=getattr(args, "strides", None),
    )


def cmd_segment(args: argparse.Namespace) -> int:
    from .runners import make_runner

    options, spec = _options(args), _model_spec(args)
    if spec.trust_bundle:
        print(TRUST_WARNING, file=sys.stderr)
    inputs = expand_inputs(args.inputs)
    if args.ray:
        if args.worker or args.server:
            raise OptionError("--ray runs on the Ray cluster: not with --worker or --server", "Leave one out.")
        from .cli_ray import segment_cohort

        with output_folders(args.output, args.probabilities):
            return segment_cohort(args, inputs, spec, options, _model_files(spec))
    with output_folders(args.output, args.probabilities):
        cases = output_paths(inputs, args.output, args.probabilities, _model_files(spec), args.overwrite)
        t0 = time.perf_counter()
        runner = make_runner(worker=args.worker, worker_python=args.worker_python, **_remote(args))
        try:
            info = runner.inspect(spec).wait()
            return _segment_cases(args, cases, runner, spec, options, info, time.perf_counter() - t0)
        finally:
            runner.close()


def _segment_cases(
    args: argparse.Namespace,
    cases: List[Dict[str, Optional[str]]],
    runner: Any,
    spec: ModelSpec,
    options: SegmentOptions,
    info: ModelInfo,
    load_s: float,
) -> int:
    from .engine.files.volume import read_volume

    def log(message: str) -> None:  # -q hides progress and notes, never a warning
        if not args.quiet or message.startswith("warning"):
            print(message, file=sys.stderr)

    log(f"model: {info.summary()}")
    for note in info.notes:
        log(f"note: {note}")  # the model's warnings come with every run's warnings
    if not info.format.startswith("checkpoint") or not info.architecture.startswith("UNet("):
        ignored = [
            f
            for f, v in (
                ("--normalization", args.normalization),
                ("--ct-window", args.ct_window),
                ("--orientation", args.orientation),
                ("--spacing", args.spacing),
                ("--strides", args.strides),
            )
            if v
        ]
        if ignored and info.format.startswith("bundle"):
            print(
                f"warning: {', '.join(ignored)} ignored: the bundle brings its own preprocessing and network",
                file=sys.stderr,
            )
        elif args.strides and info.format != "checkpoint":
            print("warning: --strides ignored: it applies to plain UNet state_dicts only", file=sys.stderr)
    reads = protected_files([c["input"] for c in cases] + _model_files(spec))
    progress = Progress(len(cases), quiet=args.quiet)
    summary: Dict[str, Any] = {"model": info.to_dict(), "load_s": round(load_s, 3), "cases": []}
    started = time.perf_counter()
    for i, case in enumerate(cases):
        progress.start_case(i, stem(case["input"] or ""))
        t1 = time.perf_counter()
        volume = read_volume(case["input"], series=args.series)
        read_s = time.perf_counter() - t1
        job = runner.submit(volume, spec, options)
        result = job.wait(progress=progress, log=log)
        t2 = time.perf_counter()
        for warning in write_case(result, case, reads):
            log("warning: " + warning)
        progress("write", 1.0, os.path.basename(case["segmentation"] or ""))
        progress.end_line()
        timings = dict(result.timings, read_s=read_s, write_s=time.perf_counter() - t2)
        timings["total_s"] = time.perf_counter() - t1  # reading, the run (and its waits) and writing
        row = case_row(case, result, timings)
        stats = row["segments"]
        row.update(job.info.summary())  # how the worker or the server ran it
        summary["cases"].append(row)
        if not args.json:
            vols = ", ".join(f"{s['segment']} {s['volume_ml']:.1f} mL" for s in stats)
            where = ", ".join(
                [result.device.device]
                + ([result.backend.short()] if result.backend else [])
                + ([result.window.describe()] if result.window else [])
            )
            seconds = timings["total_s"] + (load_s if i == 0 else 0.0)
            loading = f" incl. {load_s:.1f} s loading the model" if i == 0 else ""
            print(
                f"{case['input']} → {case['segmentation']} ({vols}; {where}; {seconds:.1f} s{loading}) — {NOT_CLINICAL}"
            )
            if args.verbose:
                _details(result, timings)
    summary["total_s"] = round(load_s + time.perf_counter() - started, 3)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def _remote(args: argparse.Namespace) -> Dict[str, Any]:
    """``make_runner`` keywords for ``--server`` (none without it)."""
    if not args.server:
        return {}
    return {
        "server": args.server,
        "token_file": args.token_file,
        "cafile": args.server_ca,
        "allow_http": args.allow_http,
        "client_cert": args.client_cert,
        "client_key": args.client_key,
    }


def _details(result: Any, timings: Dict[str, float]) -> None:
    """``--verbose``: the technical detail under a case's result line."""
    print(f"  device: {result.device.device} ({result.device.reason}); placement: {result.placement}")
    if result.backend is not None:
        print(f"  backend: {result.backend.describe()}")
    if result.window is not None:
        print(f"  window: {result.window.describe()}")
    print(f"  activation: {result.activation}; thresholds: {', '.join(f'{t:g}' for t in result.thresholds)}")
    print("  seconds: " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in timings.items() if k.endswith("_s")))


def _plain(values: Dict[str, Any]) -> str:
    """``{"norm": "batch", "strides": [2, 2]}`` → ``norm batch, strides 2 2`` (no Python reprs on screen)."""

    def text(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return " ".join(text(v) for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    return ", ".join(f"{key} {text(value)}" for key, value in values.items())


BUNDLE_DONE_HERE = ("Activations", "AsDiscrete", "Invert", "KeepLargestConnectedComponent")
BUNDLE_OPTIONS = "--roi-size, --overlap, --sw-batch-size, --blend-mode, --threshold, --activation (each run says which)"


def bundle_table(info: Any) -> List[Tuple[str, str]]:
    """What ``inspect`` says of a bundle: each section and step honoured, replaced when asked, skipped or not
    applied (warned on every run)."""
    post = [name for name in info.postprocessing if name != "Compose"]
    done = [n for n in post if not n.endswith(" (not applied)") and n.rstrip("d") in BUNDLE_DONE_HERE]
    inert = [n for n in post if not n.endswith(" (not applied)") and n not in done]
    window = _plain({k: v for k, v in (("roi", info.roi_size), ("overlap", info.overlap)) if v is not None})
    rows = [
        ("honoured", "preprocessing: " + (", ".join(info.preprocessing.get("bundle", [])) or "-")),
        ("honoured", f"inferer: {info.inferer or '-'}" + (f" ({window})" if window else "")),
        ("honoured", "postprocessing: " + (", ".join(done) or "-")),
        ("replaced if given", BUNDLE_OPTIONS),
        (
            "skipped",
            ", ".join(info.skipped + inert) + " (this product reads the image and writes the files)",
        ),
    ]
    unapplied = [n[: -len(" (not applied)")] for n in post if n not in done + inert]
    rows += [("not applied", name + " (warned on every run)") for name in unapplied]
    return rows


def cmd_inspect(args: argparse.Namespace) -> int:
    from .runners import make_runner

    spec = _model_spec(args)
    if spec.trust_bundle:
        print(TRUST_WARNING, file=sys.stderr)
    runner = make_runner(**_remote(args))
    try:
        info = runner.inspect(spec).wait()
    finally:
        runner.close()
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(info.summary())
    rows = [
        ("format", info.format),
        ("architecture", info.architecture),
        ("input channels", info.in_channels),
        ("output channels", info.out_channels),
        ("activation", f"{info.activation} ({info.activation_source})"),
        ("threshold", "-" if info.threshold is None else f"{info.threshold:g}"),
        ("labels", ", ".join(info.labels) or "-"),
        (
            "dimensions",
            f"{info.spatial_dims}-D" + (" (runs slice by slice: --slice-axis)" if info.spatial_dims == 2 else ""),
        ),
        ("roi size", "×".join(str(r) for r in info.roi_size) if info.roi_size else "-"),
        ("inferer", (info.inferer or "-") + (f" ({_plain(info.inferer_args)})" if info.inferer_args else "")),
        ("preprocessing", _plain(info.preprocessing) or "not recorded"),
        ("postprocessing", ", ".join(info.postprocessing) or "-"),
        ("network", _plain(info.network_args) or "-"),
    ]
    for key, value in rows:
        print(f"  {key:<16} {value}")
    if info.format.startswith("bundle"):
        print("  the bundle:")
        for key, value in bundle_table(info):
            print(f"    {key:<18} {value}")
    for note in info.notes:
        print(f"  note: {note}")
    for warning in info.warnings:
        print(f"  warning: {warning}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.output_dir, device=args.device, quiet=args.quiet)


def main(argv: Optional[Sequence[str]] = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:2] == ["serve", "token"]:  # the server's named tokens (remote.identity): standard library only
        return _guarded(lambda: _token_command(words[2:]), argv)
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (argcomplete): answer and exit
        import argcomplete

        argcomplete.autocomplete(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0), or a flag argparse refused (2, said as error + fix)
        return int(exc.code or 0)
    commands = {
        "segment": cmd_segment,
        "inspect": cmd_inspect,
        "demo": cmd_demo,
        "serve": serve.cmd_serve,
        "threshold": cli_threshold.cmd_threshold,
    }
    return _guarded(lambda: commands[args.command](args), argv)


def _token_command(words: List[str]) -> int:
    from .remote.identity import token_main

    try:
        return token_main(words)
    except SystemExit as exc:  # --help (0), or a word argparse refused (2)
        return int(exc.code or 0)


def _guarded(command: Any, argv: Optional[Sequence[str]]) -> int:
    """Run ``command()`` as every command runs: a user error is exit 2 with its fix, a signal ends it cleanly, anything
    else is a bug (exit 1, with the log's location)."""
    with exits.signals_as_exceptions():
        try:
            return command()
        except UserError as exc:
            exits.say(f"error: {exc.message}" + (f"\nfix: {exc.hint}" if exc.hint else ""))
            return exits.EXIT_USER
        except exits.Interrupted as exc:
            exits.say(f"stopped by {exc}: nothing partial was written; temporary files were removed")
            return exc.exit_code
        except KeyboardInterrupt:
            exits.say("interrupted: nothing partial was written; temporary files were removed")
            return 130
        except Exception as exc:  # noqa: BLE001 - anything else is a bug: exit 1 with the log's location
            return exits.report_bug(exc, list(argv) if argv is not None else None)


if __name__ == "__main__":
    sys.exit(main())
