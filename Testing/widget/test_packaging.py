"""Extension packaging and the module file's shape: CMake lists complete and existing, a configure run against
a stand-in of Slicer's CMake API, Python 3.9 grammar, the size limit, imports that need no Qt or torch."""

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from widget_fixtures import LIB_DIR, MODULE_DIR, MODULE_FILE, REPO

MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
TOP_CMAKE = REPO / "CMakeLists.txt"
RESOURCES = REPO / "Resources"


def cmake_list(text, name):
    """Items of ``set(NAME …)`` in a CMakeLists.txt, with ${MODULE_NAME} expanded."""
    match = re.search(rf"set\({name}\b(.*?)\)", text, re.S)
    assert match, f"set({name} …) not found"
    body = re.sub(r"#[^\n]*", "", match.group(1))
    return [item.replace("${MODULE_NAME}", "UNetSigmoidSeg") for item in body.split()]


def top_cmake_var(name):
    match = re.search(rf'set\({name} "([^"]*)"\)', TOP_CMAKE.read_text())
    assert match, name
    return match.group(1)


def test_every_library_python_file_is_listed_and_every_listed_file_exists():
    scripts = cmake_list(MODULE_CMAKE.read_text(), "MODULE_PYTHON_SCRIPTS")
    on_disk = {
        str(p.relative_to(MODULE_DIR)).replace(os.sep, "/")
        for p in LIB_DIR.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert scripts[0] == "UNetSigmoidSeg.py"
    assert len(scripts) == len(set(scripts))
    assert set(scripts[1:]) == on_disk, (
        f"not listed: {sorted(on_disk - set(scripts))}; listed but absent: {sorted(set(scripts[1:]) - on_disk)}"
    )
    assert all((MODULE_DIR / s).is_file() for s in scripts)


def test_every_resource_the_module_needs_is_listed_and_exists():
    text = MODULE_CMAKE.read_text()
    assert cmake_list(text, "MODULE_PYTHON_RESOURCES") == []  # see the comment there: they live at the repository top
    listed = cmake_list(text, "MODULE_TOP_LEVEL_RESOURCES")
    bundle = {
        str(p.relative_to(RESOURCES)).replace(os.sep, "/")
        for p in (RESOURCES / "Models" / "BrainT1UNet").rglob("*")
        if p.is_file()
    }
    needed = {
        "UI/UNetSigmoidSeg.ui",
        "Icons/UNetSigmoidSeg.png",
        "requirements.txt",
        "Data/T1_head.nii.gz",
        "Data/README.md",
    } | bundle
    assert needed <= set(listed), f"not listed: {sorted(needed - set(listed))}"
    missing = [r for r in listed if not (RESOURCES / r).is_file()]
    assert not missing, missing
    # every resource path the Python asks for is one of them
    sources = MODULE_FILE.read_text() + "".join(p.read_text() for p in (LIB_DIR / "widget").glob("*.py"))
    asked = set(re.findall(r'resource_path\([^,]+, "([^"]+)"\)', sources))
    assert asked and asked <= set(listed), asked - set(listed)


def test_module_cmake_follows_the_scripted_module_template():
    text = MODULE_CMAKE.read_text()
    assert re.search(r"set\(MODULE_NAME UNetSigmoidSeg\)", text)
    assert re.search(
        r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}\s*SCRIPTS \$\{MODULE_PYTHON_SCRIPTS\}\s*"
        r"RESOURCES \$\{MODULE_PYTHON_RESOURCES\}\s*WITH_GENERIC_TESTS\s*\)",
        text,
    )
    assert re.search(
        r"if\(BUILD_TESTING\)\s*(#[^\n]*\s*)*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text
    )
    assert (
        "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/Resources/" in text
        and "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources/" in text
    )


def test_screenshot_urls_name_the_rendered_screenshots_in_the_repository():
    """Each screenshot URL is a PNG under Resources/Screenshots (Testing/make_screenshots.py), small enough for the
    Index, at the icon's address."""
    urls = top_cmake_var("EXTENSION_SCREENSHOTURLS").split()
    base = top_cmake_var("EXTENSION_ICONURL").rsplit("/Resources/", 1)[0]
    assert len(urls) == len(set(urls)) == 3
    for url in urls:
        assert url.startswith(base + "/Resources/Screenshots/") and url.endswith(".png")
        path = REPO / url[len(base) + 1 :]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < path.stat().st_size < 300_000, path


def test_extension_cmake_has_the_metadata_the_index_needs():
    text = TOP_CMAKE.read_text()
    assert re.search(r"project\(UNetSigmoidSeg\)", text)
    assert top_cmake_var("EXTENSION_CATEGORY") == "Segmentation"
    assert top_cmake_var("EXTENSION_DEPENDS") == "PyTorch"
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert top_cmake_var(name).startswith("https://")
    for name in ("EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert len(top_cmake_var(name)) > 10
    order = [
        text.index(s)
        for s in (
            "find_package(Slicer REQUIRED)",
            "include(${Slicer_USE_FILE})",
            "add_subdirectory(UNetSigmoidSeg)",
            "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
            "include(${Slicer_EXTENSION_CPACK})",
        )
    ]
    assert order == sorted(order)
    # the minimum of Slicer 5.10's extension template (3.20.6...3.22.6), policies up to main's template (3.28.0)
    minimum = re.match(r"cmake_minimum_required\(VERSION (\d+)\.(\d+)\.(\d+)\.\.\.(\d+)\.(\d+)", text)
    assert (
        minimum
        and tuple(map(int, minimum.groups()[:3])) >= (3, 20, 6)
        and tuple(map(int, minimum.groups()[3:])) >= (3, 28)
    )
    licence = (TOP_CMAKE.parent / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence  # the README's Apache-2.0


# A stand-in for Slicer's CMake API, enough to configure the extension here: the real macros' argument
# checks (SlicerMacroBuildScriptedModule.cmake: unknown keywords, nonexistent SCRIPTS/RESOURCES) are kept.
FAKE_SLICER_CONFIG = textwrap.dedent("""
    set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
    set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/empty.cmake")
    set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/empty.cmake")
    set(Slicer_FOUND TRUE)
""")
FAKE_USE_SLICER = textwrap.dedent("""
    set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.8/qt-scripted-modules")
    set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.8/qt-scripted-modules")
    set(BUILD_TESTING ON)
    macro(slicerMacroBuildScriptedModule)
      cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
      if(MY_SLICER_UNPARSED_ARGUMENTS)
        message(FATAL_ERROR "Unknown keywords: ${MY_SLICER_UNPARSED_ARGUMENTS}")
      endif()
      foreach(value ${MY_SLICER_SCRIPTS} ${MY_SLICER_RESOURCES})
        if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${value} AND NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${value}.py)
          message(FATAL_ERROR "nonexistent file '${value}'")
        endif()
        file(APPEND "${CMAKE_BINARY_DIR}/manifest.txt" "module ${MY_SLICER_NAME} ${value}\\n")
      endforeach()
    endmacro()
    macro(slicer_add_python_unittest)
      cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
      file(APPEND "${CMAKE_BINARY_DIR}/manifest.txt" "unittest ${MY_SCRIPT}\\n")
    endmacro()
""")


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_extension_configures_and_copies_resources_beside_the_module(tmp_path):
    fake = tmp_path / "FakeSlicer"
    fake.mkdir()
    (fake / "SlicerConfig.cmake").write_text(FAKE_SLICER_CONFIG)
    (fake / "UseSlicer.cmake").write_text(FAKE_USE_SLICER)
    (fake / "empty.cmake").write_text("")
    build = tmp_path / "build"
    run = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={fake}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    manifest = (build / "manifest.txt").read_text().splitlines()
    assert "unittest UNetSigmoidSeg.py" in manifest
    assert sum(line.startswith("module UNetSigmoidSeg ") for line in manifest) == len(
        cmake_list(MODULE_CMAKE.read_text(), "MODULE_PYTHON_SCRIPTS")
    )
    module_resources = build / "lib/Slicer-5.8/qt-scripted-modules/Resources"
    for resource in cmake_list(MODULE_CMAKE.read_text(), "MODULE_TOP_LEVEL_RESOURCES"):
        assert (module_resources / resource).read_bytes() == (RESOURCES / resource).read_bytes(), resource
    install = subprocess.run(
        ["cmake", "--install", str(build), "--prefix", str(tmp_path / "inst")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (tmp_path / "inst/lib/Slicer-5.8/qt-scripted-modules/Resources/UI/UNetSigmoidSeg.ui").is_file()
    assert (tmp_path / "inst/lib/Slicer-5.8/qt-scripted-modules/Resources/Models/BrainT1UNet/models/model.pt").is_file()


def test_module_file_stays_wiring_sized():
    lines = MODULE_FILE.read_text().count("\n")
    assert lines <= 400, f"UNetSigmoidSeg.py has {lines} lines: move behaviour into UNetSigmoidSegLib/"


@pytest.mark.parametrize(
    "path", [MODULE_FILE] + sorted(LIB_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(MODULE_DIR))
)
def test_python_3_9_grammar(path):
    """Slicer 5.8 ships Python 3.9: no match statements, parenthesised context managers, ``X | Y`` in evaluated
    annotations …"""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation] + (
                [node.returns] if node.returns else []
            )
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for annotation in annotations:
            uses_pipe = any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(annotation))
            assert future or not uses_pipe, (
                f"{path.name}:{node.lineno}: 'X | Y' annotation fails at import on Python 3.9"
            )


def test_module_file_defines_what_slicer_looks_up():
    tree = ast.parse(MODULE_FILE.read_text())
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes["UNetSigmoidSeg"] == ["ScriptedLoadableModule"]
    assert classes["UNetSigmoidSegWidget"][0] == "ScriptedLoadableModuleWidget"
    assert "ScriptedLoadableModuleTest" in classes["UNetSigmoidSegTest"]
    text = MODULE_FILE.read_text()
    assert 'translate("qSlicerAbstractCoreModule", "Segmentation")' in text and "self.parent.title = _(" in text
    assert "self.parent.helpText = _(" in text and "self.parent.acknowledgementText = _(" in text
    top_imports = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top_imports |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert not top_imports & {"torch", "monai", "numpy", "SimpleITK"}, (
        "Slicer imports the module file at start-up: torch may be missing"
    )


def test_widget_helpers_and_module_file_import_chain_need_no_qt_and_no_torch():
    """The widget package's rules and helpers (and everything the module file imports at top level) must import where
    Qt, torch and MONAI are absent: Slicer loads the module file at start-up, before the user agreed to install
    anything. The panel itself (``widget/panel.py``, ``thresholds.py``, ``runon.py``: the Qt wiring) needs Qt but never
    torch, MONAI or SimpleITK, and neither does the Slicer logic it creates (torch is imported only by a run in
    Slicer's own process) nor the remote client (standard library + numpy: no FastAPI on the Slicer side)."""
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys, types
        class Block:
            blocked = {{"qt", "ctk", "torch", "monai", "SimpleITK", "PythonQt"}}
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.blocked:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(MODULE_DIR)!r})
        import UNetSigmoidSegLib.widget as w
        for m in pkgutil.iter_modules(w.__path__):
            if m.name not in ("panel", "runon", "thresholds"):  # the Qt wiring
                importlib.import_module("UNetSigmoidSegLib.widget." + m.name)
        import UNetSigmoidSegLib.errors, UNetSigmoidSegLib.mrml.parameters, UNetSigmoidSegLib.contract
        Block.blocked -= {{"qt", "ctk"}}  # the panel runs inside Slicer, where Qt is: stand-ins suffice to import it
        sys.modules["qt"], sys.modules["ctk"] = types.ModuleType("qt"), types.ModuleType("ctk")
        i18n = types.ModuleType("slicer.i18n")
        i18n.tr = i18n.translate = lambda *a: a[-1]
        sys.modules["slicer.i18n"] = i18n
        import UNetSigmoidSegLib.widget.panel, UNetSigmoidSegLib.mrml.logic, UNetSigmoidSegLib.runners.worker
        import UNetSigmoidSegLib.runners.remote, UNetSigmoidSegLib.runners.remote_run  # stdlib + numpy only
        assert "fastapi" not in sys.modules and "uvicorn" not in sys.modules
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
