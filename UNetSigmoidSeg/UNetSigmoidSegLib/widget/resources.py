"""Where the module's resources are, and a clean module reload.

In the source tree the resources sit at the repository top (``<repo>/Resources``) beside the module
folder ``<repo>/UNetSigmoidSeg``; in a CMake build / installed extension they are copied into the
module's own ``Resources`` folder, where Slicer's ``resourcePath`` looks. Both are searched.
"""

import os
import sys
from typing import Dict, List, Optional

PACKAGE = "UNetSigmoidSegLib"


def resource_dirs(module_dir: str) -> List[str]:
    """Candidate ``Resources`` folders, the installed layout first."""
    return [os.path.join(module_dir, "Resources"), os.path.normpath(os.path.join(module_dir, "..", "Resources"))]


def resource_path(module_dir: str, relative: str) -> str:
    """The first existing ``<Resources>/relative``; the installed-layout path when none exists (for the error)."""
    candidates = [os.path.join(d, relative) for d in resource_dirs(module_dir)]
    return next((c for c in candidates if os.path.exists(c)), candidates[0])


def demo_files(module_dir: str) -> Optional[Dict[str, str]]:
    """The shipped demo bundle and volume, or None when this installation has no demo files."""
    model = resource_path(module_dir, os.path.join("Models", "BrainT1UNet"))
    image = resource_path(module_dir, os.path.join("Data", "T1_head.nii.gz"))
    if os.path.isfile(os.path.join(model, "configs", "inference.json")) and os.path.isfile(image):
        return {"model": model, "image": image}
    return None


def purge_modules(modules: Optional[Dict[str, object]] = None, package: str = PACKAGE) -> List[str]:
    """Drop ``package`` and its submodules from ``sys.modules`` so a module reload imports the edited code."""
    modules = sys.modules if modules is None else modules
    names = sorted(n for n in list(modules) if n == package or n.startswith(package + "."))
    for name in names:
        del modules[name]
    return names
