"""The README's code blocks and the files its examples name, for the tests that run them as written.

``blocks()`` gives every fenced block (language, text). Each test claims its blocks by a phrase only that block
holds; ``test_readme.py`` checks that every block is claimed. ``example_files(folder)`` writes the files the
examples name into ``folder`` (their working folder): ``model.pt`` (a 2-output UNet recording sigmoid and its
labels, not its normalisation — a multi-label checkpoint as users save it), ``ct.nii.gz`` (real CT),
``T1_head.nii.gz`` (the demo T1), ``cases/`` (two real MR/T1 images), ``my_bundle/`` (the demo bundle).
Placeholders that name another computer's paths are mapped by ``PLACEHOLDERS`` in the tests that need them.
"""

import json
import re
import shutil
from pathlib import Path
from typing import List, Tuple

import torch

from conftest import REPO, shared_data, tiny_unet

README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def blocks() -> List[Tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text(encoding="utf-8"))]


def block(phrase: str) -> Tuple[str, str]:
    """The one block holding ``phrase``."""
    found = [b for b in blocks() if phrase in b[1]]
    assert len(found) == 1, f"{len(found)} README blocks hold {phrase!r}"
    return found[0]


def example_files(folder: Path) -> Path:
    torch.save(tiny_unet(out_channels=2, seed=11).state_dict(), folder / "model.pt")
    (folder / "model.json").write_text(json.dumps({"activation": "sigmoid", "labels": ["liver", "spleen"]}))
    shutil.copy(shared_data("totalsegmentator", "example_ct_sm.nii.gz"), folder / "ct.nii.gz")
    shutil.copy(REPO / "Resources" / "Data" / "T1_head.nii.gz", folder / "T1_head.nii.gz")
    (folder / "cases").mkdir()
    shutil.copy(shared_data("itk-t1", "KmeansTest_T1UCharRaw.nii.gz"), folder / "cases" / "t1.nii.gz")
    shutil.copy(REPO / "Resources" / "Data" / "T1_head.nii.gz", folder / "cases" / "head.nii.gz")
    shutil.copytree(REPO / "Resources" / "Models" / "BrainT1UNet", folder / "my_bundle")
    return folder
