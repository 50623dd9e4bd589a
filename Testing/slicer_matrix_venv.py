"""Build one virtualenv of the Slicer-version matrix: ``.venv-slicer-<version>/``.

It holds only ``slicer-core==<version>`` and the vtk that release pins (5.11 and 5.12 pin vtk 9.6.0, 5.13 pins 9.6.2);
torch, MONAI, SimpleITK, pytest and the rest come from the main virtualenv through a ``.pth`` file placed after the
matrix virtualenv's own site-packages, so its slicer-core and vtk win every import. Three full copies of torch,
OpenVINO and SimpleITK (2.4 GB each) filled CI's disk; this way a matrix virtualenv is the Slicer core alone.

Usage: ``python Testing/slicer_matrix_venv.py VERSION TARGET_DIR`` run with the main virtualenv's Python.
"""

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import venv

PTH_NAME = "unetsigmoidseg-main-venv.pth"


def run(python, *args):
    return subprocess.run([python, *args], check=True, capture_output=True, text=True).stdout.strip()


def main(version, target):
    venv.EnvBuilder(clear=True, with_pip=True).create(target)
    python = os.path.join(target, "bin", "python")
    run(python, "-m", "pip", "install", "-q", "--no-deps", f"slicer-core=={version}")
    requires = run(python, "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('slicer-core') or []))")
    vtk_pins = [line for line in requires.splitlines() if line.replace(" ", "").startswith("vtk") and ";" not in line]
    if len(vtk_pins) != 1:
        sys.exit(f"slicer-core {version} does not pin exactly one vtk (requires: {requires!r})")
    run(python, "-m", "pip", "install", "-q", "--no-deps", vtk_pins[0])
    own = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    shared = sysconfig.get_paths()["purelib"]
    with open(os.path.join(own, PTH_NAME), "w") as pth:  # a relative line is joined to the .pth file's folder
        pth.write(os.path.relpath(shared, own) + "\n")
    check = (
        "import importlib.metadata as m, sys, vtk, slicer, torch, monai;"
        "print(m.version('slicer-core'), vtk.vtkVersion.GetVTKVersion(), sys.version_info[:2])"
    )
    got = run(python, "-c", check).split(" ", 2)
    if got[0] != version or got[2] != str(sys.version_info[:2]):
        sys.exit(f"{target}: expected slicer-core {version} on Python {sys.version_info[:2]}, found {got}")
    torch = importlib.metadata.version("torch")
    print(f"{target}: slicer-core {got[0]}, vtk {got[1]}; torch {torch} and the other packages from {shared}")


if __name__ == "__main__":
    main(*sys.argv[1:])
