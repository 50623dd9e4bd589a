"""torch and MONAI in Slicer's Python: check (without importing them), ask, install, report versions.

Nothing is installed without the user's consent: ``ensure`` asks once, listing everything, then
installs torch through the PyTorch extension (``PyTorchUtils``: light-the-torch picks the CUDA
build that matches the driver) and the rest (``Resources/requirements.txt``: MONAI, …) with pip
(``slicer.packaging.pip_ensure`` on Slicer ≥ 5.12, ``slicer.util.pip_install`` before). A refusal
raises a ``DependencyError`` saying what is missing and how to get it; Slicer keeps working.

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


class DependencyError(UserError):
    """torch / MONAI missing, the install was refused or failed."""

    kind = "dependency"


@dataclass
class Item:
    name: str
    requirement: str
    installed: Optional[str]
    ok: bool

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.requirement} (not installed)"
        return f"{self.requirement} (installed {self.installed}{'' if self.ok else ': too old'})"


@dataclass
class DependencyReport:
    items: List[Item]

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    @property
    def missing(self) -> List[Item]:
        return [i for i in self.items if not i.ok]

    def version(self, name: str) -> Optional[str]:
        return next((i.installed for i in self.items if i.name == name), None)

    def describe_missing(self) -> str:
        return ", ".join(i.describe() for i in self.missing)


def read_requirements(path: str) -> List[str]:
    """Requirement lines of a requirements.txt (comments, blanks and pip options skipped)."""
    with open(path, encoding="utf-8") as f:
        lines = [ln.split("#", 1)[0].strip() for ln in f]
    return [ln for ln in lines if ln and not ln.startswith("-")]


def installed_version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check(
    requirements: Sequence[str], version_of: Callable[[str], Optional[str]] = installed_version
) -> DependencyReport:
    """Each requirement (``torch`` first) against what is installed, read from package metadata (no import)."""
    from packaging.requirements import Requirement

    items = []
    for text in [TORCH_REQUIREMENT] + [r for r in requirements if Requirement(r).name.lower() != "torch"]:
        req = Requirement(text)
        installed = version_of(req.name)
        ok = installed is not None and req.specifier.contains(installed, prereleases=True)
        items.append(Item(req.name.lower(), text, installed, ok))
    return DependencyReport(items)


def consent_text(report: DependencyReport) -> Dict[str, str]:
    """The one question asked before installing: what is missing, how each part is installed."""
    lines = []
    for item in report.missing:
        how = (
            "through the PyTorch extension (light-the-torch picks the build for your GPU; several hundred MB)"
            if item.name == "torch"
            else "with pip"
        )
        lines.append(f"• {item.describe()}: {how}")
    text = (
        "UNetSigmoidSeg needs PyTorch and MONAI in Slicer's Python to run networks. Install now?\n\n"
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
) -> DependencyReport:
    """Ask once, then install what is missing; returns the new report or raises ``DependencyError``."""
    if report.ok:
        return report
    question = consent_text(report)
    if not confirm(question["text"], question["details"]):
        raise DependencyError(
            f"Nothing was installed; segmenting needs {report.describe_missing()}", manual_hint(report)
        )
    torch = next((i for i in report.missing if i.name == "torch"), None)
    if torch is not None and not install_torch(torch.requirement):
        raise DependencyError(f"PyTorch was not installed ({torch.describe()})", manual_hint(report))
    rest = [i.requirement for i in report.missing if i.name != "torch"]
    if rest:
        install_packages(rest)
    importlib.invalidate_caches()  # let this process see the packages just installed
    after = recheck()
    if not after.ok:
        raise DependencyError(
            f"Still missing after the install: {after.describe_missing()}",
            "See pip's output in the Python console; restart Slicer and try again.",
        )
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
    return f"torch {torch} · MONAI {monai} · {cuda}{worker}"


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
