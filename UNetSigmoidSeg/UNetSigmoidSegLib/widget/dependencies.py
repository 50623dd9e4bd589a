"""torch and MONAI in Slicer's Python: check (without importing them), ask, install, report versions.

Nothing is installed without the user's consent: ``ensure`` asks once, listing everything, then
installs torch through the PyTorch extension (``PyTorchUtils``: light-the-torch picks the CUDA
build that matches the driver) and the rest (``Resources/requirements.txt``: MONAI, …) with pip
(``slicer.packaging.pip_ensure`` on Slicer ≥ 5.12, ``slicer.util.pip_install`` before). A refusal
raises a ``DependencyError`` saying what is missing and how to get it; Slicer keeps working.

Requirements marked ``# optional`` in ``requirements.txt`` (OpenVINO and onnx: the fastest CPU backend) are offered
in the same question but never block a run: declined, or failing to install (no wheel for this platform), runs use
the other backends (``auto`` says why) and the panel says so. Alone, they are offered only when the user presses
*Install…* (never on Segment).

The ``slicer_*`` functions are the Slicer implementations of the callables ``ensure`` takes; they
import Slicer lazily so this file imports anywhere.
"""

import importlib.metadata
import shutil
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import UserError

TORCH_REQUIREMENT = "torch>=2.1"  # as pyproject.toml; installed by the PyTorch extension, never by pip here
REQUESTER = "UNetSigmoidSeg"
OPTIONAL_MARK = "optional"  # a requirements.txt line whose comment starts with it: offered, never required


class DependencyError(UserError):
    """torch / MONAI missing, the install was refused or failed."""

    kind = "dependency"


@dataclass
class Item:
    name: str
    requirement: str
    installed: Optional[str]
    ok: bool
    optional: bool = False

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.requirement} (not installed)"
        return f"{self.requirement} (installed {self.installed}{'' if self.ok else ': too old'})"


@dataclass
class DependencyReport:
    items: List[Item]
    note: str = ""  # after an install: why optional packages are still missing (the panel logs it)

    @property
    def ok(self) -> bool:
        """Every required package is there (optional ones do not count)."""
        return all(i.ok for i in self.items if not i.optional)

    @property
    def missing(self) -> List[Item]:
        """The required packages that are absent or too old."""
        return [i for i in self.items if not i.ok and not i.optional]

    @property
    def optional_missing(self) -> List[Item]:
        return [i for i in self.items if not i.ok and i.optional]

    def version(self, name: str) -> Optional[str]:
        return next((i.installed for i in self.items if i.name == name), None)

    def describe_missing(self) -> str:
        return ", ".join(i.describe() for i in self.missing)


def read_requirements(path: str, optional: Optional[bool] = None) -> List[str]:
    """Requirement lines of a requirements.txt (comments, blanks and pip options skipped). ``optional``: None all of
    them, True only those whose comment starts with ``OPTIONAL_MARK``, False the others."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text, _, comment = line.partition("#")
            text = text.strip()
            marked = comment.strip().lower().startswith(OPTIONAL_MARK)
            if text and not text.startswith("-") and (optional is None or optional == marked):
                out.append(text)
    return out


def requirements_report(path: str) -> DependencyReport:
    """``check`` of a requirements.txt, its ``# optional`` lines as optional."""
    return check(read_requirements(path, optional=False), optional=read_requirements(path, optional=True))


def installed_version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check(
    requirements: Sequence[str],
    version_of: Callable[[str], Optional[str]] = installed_version,
    optional: Sequence[str] = (),
) -> DependencyReport:
    """Each requirement (``torch`` first, then ``requirements``, then the ``optional`` ones) against what is
    installed, read from package metadata (no import)."""
    from packaging.requirements import Requirement

    items = []
    wanted = [(TORCH_REQUIREMENT, False)] + [(r, False) for r in requirements if Requirement(r).name.lower() != "torch"]
    for text, is_optional in wanted + [(r, True) for r in optional]:
        req = Requirement(text)
        installed = version_of(req.name)
        ok = installed is not None and req.specifier.contains(installed, prereleases=True)
        items.append(Item(req.name.lower(), text, installed, ok, is_optional))
    return DependencyReport(items)


def consent_text(report: DependencyReport) -> Dict[str, str]:
    """The one question asked before installing: what is missing, how each part is installed (the optional
    packages too, said to be optional)."""
    lines = []
    for item in report.missing + report.optional_missing:
        if item.name == "torch":
            how = (
                "through the PyTorch extension, with torchvision, which it installs alongside (light-the-torch picks "
                "the build for your GPU; several hundred MB to a few GB)"
            )
        elif item.optional:
            how = "with pip (optional: faster runs on the CPU)"
        else:
            how = "with pip"
        lines.append(f"• {item.describe()}: {how}")
    head = (
        "UNetSigmoidSeg needs PyTorch and MONAI in Slicer's Python to run networks."
        if report.missing
        else "UNetSigmoidSeg runs networks faster on the CPU with OpenVINO (optional: runs work without it)."
    )
    text = (
        head
        + " Install now?\n\n"
        + "\n".join(lines)
        + "\n\nThis downloads packages and may take several minutes. Nothing is installed if you cancel."
    )
    return {"text": text, "details": "Requirements: " + ", ".join(i.requirement for i in report.items)}


def manual_hint(report: DependencyReport) -> str:
    steps = (
        ["install PyTorch with the PyTorch Utils module (PyTorch extension)"]
        if any(i.name == "torch" for i in report.missing)
        else []
    )
    pip = [i.requirement for i in report.missing if i.name != "torch"]
    if pip:
        steps.append(f"run slicer.util.pip_install({pip!r}) in the Python console")
    return (
        "Click Segment (or Install) again and accept, or "
        + " and ".join(steps)
        + ". Slicer keeps working without them."
    )


def ensure(
    report: DependencyReport,
    confirm: Callable[[str, str], bool],
    install_torch: Callable[[str], bool],
    install_packages: Callable[[List[str]], None],
    recheck: Callable[[], DependencyReport],
    optional: bool = False,
    testing: bool = False,
) -> DependencyReport:
    """Ask once, then install what is missing; returns the new report or raises ``DependencyError`` (required
    packages only). The optional packages are offered with the required ones, or alone when ``optional`` (the
    Install button); refused or failing, they leave a ``note`` and runs go on without them.

    ``testing`` (Slicer started with ``--testing``): nothing is asked or installed — Slicer would answer the question
    itself (``confirmOkCancelDisplay`` returns OK) and ``pip_ensure`` (Slicer >= 5.12) skips installs then, so an
    install would only seem to fail; the error or the ``note`` says so."""
    if report.ok and not (optional and report.optional_missing):
        return report
    if testing:
        hint = "Slicer installs no packages in testing mode; install them in a session started without --testing."
        if not report.ok:
            raise DependencyError(
                f"Testing mode (--testing): nothing is installed; segmenting needs {report.describe_missing()}", hint
            )
        names = ", ".join(i.describe() for i in report.optional_missing)
        report.note = f"Testing mode (--testing): optional {names} not installed. {hint}"
        return report
    question = consent_text(report)
    if not confirm(question["text"], question["details"]):
        if not report.ok:
            raise DependencyError(
                f"Nothing was installed; segmenting needs {report.describe_missing()}", manual_hint(report)
            )
        return report
    torch = next((i for i in report.missing if i.name == "torch"), None)
    if torch is not None and not install_torch(torch.requirement):
        raise DependencyError(f"PyTorch was not installed ({torch.describe()})", manual_hint(report))
    rest = [i.requirement for i in report.missing if i.name != "torch"]
    if rest:
        install_packages(rest)
    failed = ""
    extras = [i.requirement for i in report.optional_missing]
    if extras:
        try:
            install_packages(extras)
        except Exception as exc:  # noqa: BLE001 - e.g. no wheel for this platform: runs use PyTorch, said below
            failed = f" ({type(exc).__name__}: {str(exc).strip()[:200]})"
    importlib.invalidate_caches()  # let this process see the packages just installed
    after = recheck()
    if not after.ok:
        raise DependencyError(
            f"Still missing after the install: {after.describe_missing()}",
            "See pip's output in the Python console; restart Slicer and try again.",
        )
    if after.optional_missing:
        names = ", ".join(i.describe() for i in after.optional_missing)
        after.note = f"Optional {names} not installed{failed}: the OpenVINO CPU backend is not available."
    return after


def versions_text(report: DependencyReport, hello: Optional[Dict] = None) -> str:
    """'torch 2.3.1+cu121 · MONAI 1.3.2 · CUDA: 1 GPU' — what the runner describes (the worker's hello) when known,
    else the metadata."""
    remote = bool(hello) and hello.get("runner") == "remote"
    if not report.ok and not remote:  # a server brings its own torch and MONAI
        return "Missing: " + report.describe_missing()
    torch = (hello or {}).get("torch") or report.version("torch")
    monai = (hello or {}).get("monai") or report.version("monai")
    if hello is None:
        cuda = "CUDA: known when the worker starts"
    elif hello.get("cuda") is None:
        cuda = "CUDA: known after the first run"
    else:
        n = int(hello.get("cuda_devices") or 0)
        cuda = f"CUDA: {n} GPU{'s' if n != 1 else ''}" if hello.get("cuda") else "CUDA: not available"
    where = {"in-process": "Slicer's Python", "remote": "server Python"}.get(
        (hello or {}).get("runner"), "worker Python"
    )
    worker = f" · {where} {hello['python']}" if hello and hello.get("python") else ""
    names = ", ".join(i.name for i in report.optional_missing)
    extras = f" · optional {names} not installed (no OpenVINO backend)" if names and not remote else ""
    return f"torch {torch} · MONAI {monai} · {cuda}{worker}{extras}"


def device_label(choice: str, hello: Optional[Dict] = None) -> str:
    """What a device choice will mean in the worker (from its hello: torch version, CUDA, GPU count)."""
    if choice == "cpu":
        return "CPU"
    if choice == "mps":
        return "Apple GPU (MPS); an error if this Mac has none"
    if hello is None or hello.get("cuda") is None:
        return "decided when the worker starts" if choice == "auto" else "checked when the worker starts"
    n = int(hello.get("cuda_devices") or 0)
    torch = hello.get("torch", "?")
    remote = hello.get("runner") == "remote"
    there = " on the server" if remote else ""
    if hello.get("cuda"):
        names = ", ".join(hello.get("gpus") or []) if remote else ""
        gpus = names or f"{n} NVIDIA GPU{'s' if n != 1 else ''}"
        return (f"→ CUDA ({gpus})" if choice == "auto" else f"CUDA: {gpus}") + there
    if choice == "cuda":
        where = "on the server" if remote else "in the worker"
        return f"CUDA not available {where} (torch {torch}): runs will fail — pick auto or cpu"
    if remote:
        return f"→ {hello.get('device', 'cpu').upper()} on the server (no CUDA in its torch {torch})"
    return f"→ CPU (or Apple MPS); no CUDA in the worker's torch {torch}"


def pick_python(which: Callable[[str], Optional[str]] = shutil.which) -> Optional[str]:
    """The interpreter for the worker: Slicer's ``PythonSlicer`` (same packages as Slicer), or None."""
    return which("PythonSlicer")


# ---------------------------------------------------------------- Slicer implementations (lazy imports)


def slicer_confirm(text: str, details: str) -> bool:
    import slicer

    return bool(
        slicer.util.confirmOkCancelDisplay(text, "UNetSigmoidSeg - install Python packages", detailedText=details)
    )


def slicer_install_torch(requirement: str) -> bool:
    """torch through the PyTorch extension; the user already agreed (``ensure``), so it does not ask again."""
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError(
            "The PyTorch extension (module PyTorch Utils) is not installed",
            "Install 'PyTorch' from the Extensions Manager, restart Slicer, then click Segment again.",
        ) from None
    spec = requirement[len("torch") :].strip()
    return (
        PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=spec) is not None
    )


def slicer_install_packages(requirements: List[str]) -> None:
    """pip, with a progress dialog and the restart prompt on Slicer ≥ 5.12 (``slicer.packaging``)."""
    import slicer

    try:
        import slicer.packaging as packaging
    except ImportError:  # Slicer < 5.12
        packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(list(requirements), prompt_install=False, requester=REQUESTER)
    else:
        slicer.util.pip_install(list(requirements))
