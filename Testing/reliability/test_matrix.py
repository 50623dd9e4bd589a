"""Runs every case of the reliability matrix with the same "nothing lost" checks afterwards."""

import contextlib
import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, blob_volume, tiny_unet, worker_fault_env, write_volume
from matrix_cases import CASES, markdown

sys.path.insert(0, str(REPO / "Testing" / "mrml"))  # mrml_helpers

from UNetSigmoidSegLib.cli import main  # noqa: E402
from UNetSigmoidSegLib.errors import CancelledError  # noqa: E402


def _digest(path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")) if os.path.isdir(path) else [Path(path)]:
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _temp_entries():
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("unetseg")}


class Env:
    """Inputs, a model, a Slicer scene with a user segment, and helpers the cases call."""

    def __init__(self, tmp: Path) -> None:
        from mrml_helpers import add_volume
        from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
        from UNetSigmoidSegLib.mrml.scene import create_headless_scene

        self.tmp = tmp
        self.input = write_volume(tmp / "input.nii.gz", blob_volume((24, 20, 12)))
        self.model = str(tmp / "model.pt")
        torch.save(tiny_unet().state_dict(), self.model)
        self._add_volume = add_volume
        self.scene = create_headless_scene()
        self.volume_node = add_volume(self.scene, blob_volume((24, 20, 12)))
        self.user_seg = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user")
        self.user_seg.SetReferenceImageGeometryParameterFromVolumeNode(self.volume_node)
        self.user_segment = self.user_seg.GetSegmentation().AddEmptySegment("tumour", "tumour", [0.1, 0.8, 0.1])
        self.logic = UNetSigmoidSegLogic(self.scene)

    # ---------------------------------------------------------------- runners
    def cli_error(self, *args: str) -> str:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(list(args) + ([] if "-o" in args else ["-o", str(self.tmp / "never.seg.nrrd")]))
        text = err.getvalue()
        assert rc == 2, f"expected exit 2, got {rc}: {text}"
        assert "Traceback" not in text and "fix:" in text, text
        return text

    def cli_error_subprocess(self, code: str, *args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=str(REPO / "UNetSigmoidSeg"),
        )
        assert run.returncode == 2, run.stderr[-2000:]
        assert "Traceback" not in run.stderr
        return run.stderr

    def cli_ok(self, path: str, shape, model=None, out=None) -> str:
        import SimpleITK as sitk

        out = out or str(self.tmp / "ok.nii.gz")
        assert main(["segment", path, "--model", model or self.model, "-o", out, "--quiet"]) == 0
        if out.endswith(".seg.nrrd"):
            import slicerio

            assert slicerio.read_segmentation(out)["voxels"].shape[-3:] == shape
        else:
            a, b = sitk.ReadImage(path), sitk.ReadImage(out)
            assert b.GetSize() == shape and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
            assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4) and np.allclose(
                a.GetSpacing(), b.GetSpacing(), atol=1e-6
            )
        return "ok: on the input grid"

    def _engine(self):
        from UNetSigmoidSegLib.engine.files.volume import read_volume
        from UNetSigmoidSegLib.engine.loading.model import load_model

        return read_volume(self.input), load_model(self.model)

    def engine_error(self, volume) -> str:
        from UNetSigmoidSegLib.contract.options import SegmentOptions
        from UNetSigmoidSegLib.engine.running.pipeline import segment
        from UNetSigmoidSegLib.errors import UserError

        with pytest.raises(UserError) as err:
            segment(volume, self._engine()[1], SegmentOptions(device="cpu"))
        return str(err.value)

    def engine_run(self, options, log=None, inject_out_of_memory=False):
        from conftest import injected_out_of_memory
        from UNetSigmoidSegLib.engine.running.pipeline import segment

        volume, model = self._engine()
        if not inject_out_of_memory:
            return segment(volume, model, options, log=log)
        with injected_out_of_memory(model):
            return segment(volume, model, options, log=log)

    def engine_cancel_at(self, stage: str) -> str:
        from UNetSigmoidSegLib.contract.options import SegmentOptions
        from UNetSigmoidSegLib.engine.running.pipeline import segment

        volume, model = self._engine()
        seen = {"stage": None}
        result = None
        with pytest.raises(CancelledError) as err:
            result = segment(
                volume,
                model,
                SegmentOptions(device="cpu", roi_size=[8, 8, 8]),
                progress=lambda s, f, m: seen.update(stage=s),
                should_cancel=lambda: seen["stage"] == stage,
            )
        assert result is None
        return str(err.value)

    def bundle(self, extra_transform=None, target=None) -> str:
        sys.path.insert(0, str(REPO / "Testing" / "engine"))
        from test_oracles import _bundle

        from conftest import write_json

        root = self.tmp / "bundle"
        inference = _bundle(root, tiny_unet())
        if extra_transform:
            inference["preprocessing"]["transforms"].append(extra_transform)
        if target:
            inference["network_def"]["_target_"] = target
        write_json(root / "configs" / "inference.json", inference)
        return str(root)

    def logic_error(self, node) -> str:
        from UNetSigmoidSegLib.errors import UserError

        with pytest.raises(UserError) as err:
            self.logic.segment(node, self.model, device="cpu")
        return str(err.value)

    def add_volume(self, name: str):
        return self._add_volume(self.scene, blob_volume((32, 32, 16)), name=name)

    def second_scene(self):
        from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
        from UNetSigmoidSegLib.mrml.scene import create_headless_scene

        scene = create_headless_scene()
        return scene, UNetSigmoidSegLogic(scene), self._add_volume(scene, blob_volume((32, 32, 16)))

    def worker_logic(self, fault=None, **client_kwargs):
        from UNetSigmoidSegLib.mrml.logic import UNetSigmoidSegLogic
        from UNetSigmoidSegLib.runners.worker import WorkerRunner

        env = worker_fault_env(fault) if fault else {}
        client = WorkerRunner(env=env, **client_kwargs)
        return UNetSigmoidSegLogic(self.scene, runner=client), client

    @staticmethod
    def poll_until_error(handle, timeout: float = 240.0) -> str:
        import time

        deadline = time.time() + timeout
        try:
            while not handle.poll():
                assert time.time() < deadline, "run did not end"
                time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - a start failure surfaces at poll
            return str(exc)
        assert handle.error is not None, "the run succeeded"
        return str(handle.error) + " " + " ".join(getattr(handle.error, "log_tail", []))

    def python_output(self, code: str, *args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=str(REPO / "UNetSigmoidSeg"),
        )
        assert run.returncode == 0, run.stderr[-2000:]
        return run.stdout

    @staticmethod
    def expect_cancel(handle) -> str:
        with pytest.raises(CancelledError) as err:
            handle.wait()
        return str(err.value)

    # ---------------------------------------------------------------- nothing lost
    def snapshot(self):
        from mrml_helpers import export_segment, volume_hash

        return {
            "input": _digest(self.input),
            "model": _digest(self.model),
            "volume": volume_hash(self.volume_node),
            "user": export_segment(self.scene, self.user_seg, self.user_segment, self.volume_node).tobytes(),
            "temp": _temp_entries(),
        }

    def assert_nothing_lost_and_next_run_works(self, before) -> None:
        after = self.snapshot()
        for key in ("input", "model", "volume", "user"):
            assert after[key] == before[key], f"{key} changed"
        assert after["temp"] <= before["temp"], f"temporary files left: {after['temp'] - before['temp']}"
        assert not self.logic.isRunning
        out = str(self.tmp / "next.seg.nrrd")
        assert main(["segment", self.input, "--model", self.model, "-o", out, "--quiet"]) == 0
        seg = self.logic.segment(self.volume_node, self.model, device="cpu", outputSegmentation=self.user_seg)
        assert self.user_segment in list(seg.GetSegmentation().GetSegmentIDs())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, tmp_path, monkeypatch):
    private = tmp_path / "tmp"  # this case's own temp folder (inherited by workers): other runs' leftovers don't count
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    env = Env(tmp_path)
    before = env.snapshot()
    message = case.run(env)
    assert re.search(case.expect, message, re.S), f"{case.id}: {message!r} does not match {case.expect!r}"
    env.assert_nothing_lost_and_next_run_works(before)


def test_matrix_has_thirty_cases_and_docs_are_in_sync():
    assert len(CASES) >= 30, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)
    doc = (REPO / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    assert markdown() in doc, "docs/RELIABILITY.md is out of date: python Testing/reliability/matrix_cases.py"
