"""Every shell and Python block of the README runs as written (in a folder holding the files it names), or — where
it needs what no test machine has (a Slicer build, pip's network, a second computer) — is checked against the
code and the files it names. The Slicer console blocks run against a real slicer-core scene in
``Testing/mrml/test_readme_slicer.py``."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import slicerio
import torch
from readme_blocks import block, blocks, example_files

from conftest import REPO

# A phrase only each block holds → the test that runs or checks it (every block is claimed: see the last test).
CLAIMS = {
    "make demo": "test_set_up_commands_are_what_ci_runs",
    "unetsigmoidseg segment INPUT...": "test_synopsis_names_real_commands_flags_and_choices",
    "cmake -S . -B build": "test_slicer_build_commands_name_real_targets",
    "unetsigmoidseg threshold ct_probabilities.nrrd": "test_command_line_examples_run_as_written",
    '"network": {"strides"': "test_sidecar_example_is_a_valid_sidecar",
    "import write_seg_nrrd": "test_python_api_examples",
    "WorkerRunner(python_executable=sys.executable": "test_python_api_examples",
    'pip install ".[server]"': "test_server_install_and_start",
    "[Service]": "test_systemd_unit_starts_a_valid_command",
    "register-python-argcomplete": "test_shell_completion_line_registers_the_command",
    "RemoteRunner(": "test_remote_example_against_a_real_server",
    'pip install ".[ray]"': "Testing/ray/test_ray_cohort.py",
    'volumeNode = slicer.util.getNode("ct")': "Testing/mrml/test_readme_slicer.py",
    'getModuleLogic("UNetSigmoidSeg")': "Testing/mrml/test_readme_slicer.py",
    "UNetSigmoidSegLib/": "the layout tree (not code)",
}
BIN = Path(sys.executable).parent


@pytest.fixture
def examples(tmp_path, monkeypatch):
    monkeypatch.chdir(example_files(tmp_path))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")  # `unetsigmoidseg` as pip installs it
    return tmp_path


def test_every_shell_and_python_block_is_claimed():
    for language, text in blocks():
        claims = [phrase for phrase in CLAIMS if phrase in text]
        assert len(claims) == 1, f"README block ({language}) claimed {len(claims)} times: {text[:200]!r}"


def test_set_up_commands_are_what_ci_runs():
    _language, text = block("make demo")
    commands = [line.split("#")[0].strip() for line in text.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test"  # .ci/run calls exactly the README's test command
    for target in ("demo", "test"):
        dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr


def test_slicer_build_commands_name_real_targets():
    """Needs a Slicer build tree: the commands are checked against the CMake files they drive."""
    _language, text = block("cmake -S . -B build")
    assert "ctest -R py_UNetSigmoidSeg" in text and "cpack" in text
    top = (REPO / "CMakeLists.txt").read_text()
    module = (REPO / "UNetSigmoidSeg" / "CMakeLists.txt").read_text()
    assert "find_package(Slicer REQUIRED)" in top and "add_subdirectory(UNetSigmoidSeg)" in top
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in top and "include(${Slicer_EXTENSION_CPACK})" in top
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module  # the test named py_UNetSigmoidSeg


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    return result


def test_command_line_examples_run_as_written(examples):
    _language, text = block("unetsigmoidseg threshold ct_probabilities.nrrd")
    for line in text.splitlines():
        _run(line, examples)
    assert slicerio.read_segmentation(str(examples / "ct.seg.nrrd"))["segments"][0]["name"] == "liver"
    prob = sitk.ReadImage(str(examples / "ct_probabilities.nrrd"))
    assert prob.GetMetaData("UNetSigmoidSeg.Components") == '["liver", "spleen"]'
    assert (examples / "ct_t03.seg.nrrd").is_file()
    summary = json.loads((examples / "summary.json").read_text())
    assert sorted(os.path.basename(c["segmentation"]) for c in summary["cases"]) == ["head.seg.nrrd", "t1.seg.nrrd"]
    assert all((examples / "segs" / name).is_file() for name in ("head.seg.nrrd", "t1.seg.nrrd"))


def test_sidecar_example_is_a_valid_sidecar():
    from UNetSigmoidSegLib.engine.loading.sidecar import check_sidecar

    _language, text = block('"network": {"strides"')
    checked = check_sidecar(json.loads(text), "model.json")
    assert checked["normalization"] == "ct" and checked["network"]["strides"] == [2, 2, 1]


@pytest.mark.parametrize(
    "phrase",
    [
        "import write_seg_nrrd",
        "WorkerRunner(python_executable=sys.executable",
    ],
)
def test_python_api_examples(examples, phrase):
    language, text = block(phrase)
    assert language == "python"
    result = subprocess.run(
        [sys.executable, "-c", text], cwd=examples, capture_output=True, text=True, timeout=600, env=_env()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if "write_seg_nrrd" in text:
        assert slicerio.read_segmentation(str(examples / "ct.seg.nrrd"))["segments"][1]["name"] == "spleen"
    else:
        assert "'segment': 'liver'" in result.stdout and "checkpoint: UNet" in result.stdout


def _env():
    path = [str(REPO / "UNetSigmoidSeg"), os.environ.get("PYTHONPATH", "")]  # as `pip install` makes it importable
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))


def test_server_install_and_start(examples, tmp_path):
    """``pip install`` needs the network: the extra it names is checked; the start command runs as written, with
    the server's model folder mapped to the demo's (without CUDA it must refuse to start, exit 2, saying so)."""
    _language, text = block('pip install ".[server]"')
    lines = [line.split("#")[0].strip() for line in text.splitlines() if line.strip()]
    assert lines[0] == 'pip install ".[server]"'
    pyproject = (REPO / "pyproject.toml").read_text()
    server = re.search(r"^server = \[(.*?)\]", pyproject, re.S | re.M)
    assert server and "fastapi" in server.group(1) and "uvicorn" in server.group(1)
    argv = shlex.split(lines[1].replace("/srv/unetseg-models", str(REPO / "Resources" / "Models")))
    argv += ["--token-file", str(tmp_path / "server.token"), "--port", "0"]
    process = subprocess.Popen(argv, cwd=examples, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not torch.cuda.is_available():
            _out, err = process.communicate(timeout=120)
            assert process.returncode == 2 and "CUDA" in err, err
        else:
            assert "listening" in process.stdout.readline().lower() or process.poll() is None
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def test_systemd_unit_starts_a_valid_command():
    from UNetSigmoidSegLib.cli_parser import build_parser

    _language, text = block("[Service]")
    command = re.search(r"^ExecStart=(.*)$", text.replace("\\\n", " "), re.M).group(1)
    argv = shlex.split(command)
    assert argv[0].endswith("/unetsigmoidseg") and argv[1] == "serve"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.host == "0.0.0.0"


def test_remote_example_against_a_real_server(examples, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "Testing" / "remote"))
    from remote_fixtures import Server

    server = Server(REPO / "Resources" / "Models", tmp_path / "server")
    try:
        server.wait_ready()
        _language, text = block("RemoteRunner(")
        text = text.replace("https://gpu-server:8765", server.url).replace(
            '"server.token"', repr(str(server.token_file))
        )
        result = subprocess.run(
            [sys.executable, "-c", text], cwd=examples, capture_output=True, text=True, timeout=600, env=_env()
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith("['BrainT1UNet'] 0") or result.stdout.startswith("['BrainT1UNet'] False")
    finally:
        server.stop()


def test_shell_completion_line_registers_the_command(examples):
    _language, text = block("register-python-argcomplete")
    script = f"set -e\n{text}\ncomplete -p unetsigmoidseg\n"
    result = subprocess.run(["bash", "-c", script], cwd=examples, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "unetsigmoidseg" in result.stdout and "complete " in result.stdout


def test_synopsis_names_real_commands_flags_and_choices():
    """The usage synopsis is not a command to run: each command, flag and listed choice must be the parser's."""
    from UNetSigmoidSegLib.cli_parser import build_parser

    _language, text = block("unetsigmoidseg segment INPUT...")
    commands = {}
    for line in text.splitlines():
        if line.startswith("unetsigmoidseg"):
            current = line.split()[1]
            commands.setdefault(current, "")
        commands[current] += " " + line
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) - {"--version"} == set(sub)  # every command, and only commands that exist
    for name, usage in commands.items():
        if name == "--version":
            continue
        actions = {o: a for a in sub[name]._actions for o in a.option_strings}
        for flag, choices in re.findall(r"(--[a-z0-9-]+)(?: ([a-z-]+(?:\|[a-z-]+)+))?", usage):
            assert flag in actions, f"{name}: {flag} is not an option"
            if choices:
                assert set(choices.split("|")) <= set(actions[flag].choices), f"{name} {flag}: {choices}"
