"""The command line of ``unetsigmoidseg``: its argparse parser (``segment``, ``inspect``, ``serve``, ``demo``).

Declarations only: ``cli`` runs the commands (``cli.main``) and turns the parsed flags into ``ModelSpec`` /
``SegmentOptions``; ``remote.serve`` adds the ``serve`` command's own flags.
"""

import argparse
import sys

from . import NOT_CLINICAL, __version__, cli_threshold
from .contract.options import ACTIVATIONS, BACKENDS, DEVICES, NORMALIZATIONS, ORIENTATIONS
from .remote import serve


class Parser(argparse.ArgumentParser):
    """argparse's refusals in the CLI's own shape: ``error:`` and ``fix:`` lines (exit 2), after the usage."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\nfix: see '{self.prog} --help' for every option, its values and default.\n")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-bundle",
        action="store_true",
        help="run the model's config with MONAI's ConfigParser, code included (only for authors you trust)",
    )
    p.add_argument(
        "--network-config", help="JSON with UNet settings/labels for a plain checkpoint (default: <checkpoint>.json)"
    )


def _remote_args(p: argparse.ArgumentParser, model: str) -> None:
    r = p.add_argument_group("remote server (unetsigmoidseg serve)")
    r.add_argument(
        "--server",
        metavar="URL",
        help=f"run on this server, e.g. https://gpu-server:8765; {model} is then one of its model names",
    )
    r.add_argument("--token-file", help="the server's token (default: $UNETSIGMOIDSEG_TOKEN, else the local server's)")
    r.add_argument("--server-ca", help="certificate (PEM) to trust for an https server with a self-signed one")
    r.add_argument("--client-cert", metavar="CERT.pem", help="this client's certificate, for a server with mutual TLS")
    r.add_argument("--client-key", metavar="KEY.pem", help="the private key of --client-cert (if not in that file)")
    r.add_argument("--allow-http", action="store_true", help="allow plain http to another computer (token in clear)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="unetsigmoidseg",
        description="Run a MONAI UNet: checkpoint → probabilities → segmentation on the input grid. " + NOT_CLINICAL,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("segment", help="segment one or more volumes")
    s.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="NIfTI / NRRD / MHA file, DICOM series folder, or a folder of images (batch)",
    )
    s.add_argument(
        "--model", required=True, help="checkpoint (.pt/.pth/.ckpt), TorchScript file, or MONAI bundle folder/.zip"
    )
    s.add_argument(
        "--activation",
        default="auto",
        choices=ACTIVATIONS,
        help="applied to the network's output (default: auto, the model's, else sigmoid for 1 channel, softmax for "
        "more)",
    )
    s.add_argument(
        "--multi-label",
        action="store_true",
        help="the output channels are independent labels: confirms --activation sigmoid on a model with several "
        "output channels that does not record sigmoid",
    )
    s.add_argument(
        "--threshold",
        type=float,
        nargs="+",
        help="probability threshold, one value or one per segment (softmax: minimum confidence)",
    )
    s.add_argument("--device", default="auto", choices=DEVICES, help="where the network runs (default: auto)")
    s.add_argument(
        "--output",
        "-o",
        help="segmentation file (.seg.nrrd or NIfTI/NRRD labelmap), or a folder (ending in / or existing; created "
        "if missing) for <input name>.seg.nrrd (default: <input name>.seg.nrrd here)",
    )
    s.add_argument(
        "--probabilities",
        help="also write the probability map (NRRD/NIfTI), or a folder (ending in /) for "
        "<input name>_probabilities.nrrd",
    )
    s.add_argument("--overwrite", action="store_true", help="replace output files that exist (default: refuse)")
    s.add_argument("--labels", nargs="+", help="segment names (override the model's)")
    s.add_argument("--series", metavar="UID", help="the DICOM series to read when an input folder holds several")
    s.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress or notes (warnings and results still show)")
    s.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="technical detail under each result: device and why, backend and its checks, window, seconds per stage",
    )
    g = s.add_argument_group("inference")
    g.add_argument("--roi-size", type=int, nargs="+", help="sliding-window size (default: model's, else 96)")
    g.add_argument("--overlap", type=float, help="sliding-window overlap (default 0.25)")
    g.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default 1)")
    g.add_argument("--blend-mode", choices=["gaussian", "constant"], help="window blending (default gaussian)")
    g.add_argument(
        "--slice-axis",
        type=int,
        help="2-D networks: slide along axis 0, 1 or 2 (i, j, k; default: the axis of largest spacing, ties → k)",
    )
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA (never used on CPU)")
    g.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="what runs the windows on the CPU: auto (the fastest validated one, measured once) | torch | onednn | "
        "openvino (default auto; CUDA/MPS runs use PyTorch)",
    )
    g.add_argument("--strides", type=int, nargs="+", help="UNet strides per level when not 2 (plain checkpoints)")
    p = s.add_argument_group("preprocessing (plain checkpoints; bundles bring their own)")
    p.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        help="the input normalisation the model was trained with (default: the model's; a checkpoint that does not "
        "record it needs this)",
    )
    p.add_argument(
        "--ct-window", type=float, nargs=2, metavar=("LOW", "HIGH"), help="intensity window for ct / range-sigmoid"
    )
    p.add_argument(
        "--orientation", choices=ORIENTATIONS, help="reorient before inference (default: the model's, else keep)"
    )
    p.add_argument("--spacing", type=float, nargs="+", help="resample to this spacing (mm) before inference")
    c = s.add_argument_group("clean-up")
    c.add_argument(
        "--largest-component", action="store_true", help="keep the largest connected component of each segment"
    )
    c.add_argument("--fill-holes", action="store_true", help="fill holes in each segment")
    c.add_argument("--min-island-mm3", type=float, help="remove islands smaller than this volume (mm³)")
    w = s.add_argument_group("background worker")
    w.add_argument(
        "--worker",
        action="store_true",
        help="run inference in a background worker process (one warm worker for the batch)",
    )
    w.add_argument("--worker-python", help="interpreter for the worker, with torch + MONAI (default: this Python)")
    r = s.add_argument_group("Ray cluster (a cohort on many GPUs / machines; pip install ray)")
    r.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the cases on a Ray cluster: without ADDRESS one on this computer, 'auto' the one `ray start` made "
        "here, or HOST:PORT; finished cases are skipped when the command is run again",
    )
    r.add_argument(
        "--actors", type=int, default=0, help="warm model replicas (default: one per GPU, or CPUs / --threads)"
    )
    r.add_argument("--threads", type=int, default=2, help="CPU threads per replica (default: 2)")
    _remote_args(s, "--model")
    _model_args(s)
    i = sub.add_parser("inspect", help="print what was detected in a model")
    i.add_argument("model", help="checkpoint, TorchScript file, or MONAI bundle folder/.zip (with --server: a name)")
    i.add_argument("--json", action="store_true", help="print what was detected as JSON")
    _remote_args(i, "MODEL")
    _model_args(i)
    serve.add_parser(sub)
    cli_threshold.add_parser(sub)
    d = sub.add_parser("demo", help="segment the bundled demo volume with the bundled demo model")
    d.add_argument(
        "--output-dir", default="unetsigmoidseg-demo", help="where to write the results (default: unetsigmoidseg-demo)"
    )
    d.add_argument("--device", default="auto", choices=DEVICES, help="where the network runs (default: auto)")
    d.add_argument("--quiet", "-q", action="store_true", help="no progress")
    return parser
