"""The real test data ships with the repository (``Testing/Data``): every file is there, unchanged, with its
provenance and licence beside it, and nothing in the tests reaches outside the repository for data."""

import hashlib
from pathlib import Path

from conftest import REPO, SHARED_DATA

DATA = REPO / "Testing" / "Data"


def test_every_listed_file_is_there_unchanged():
    listed = {}
    for line in (DATA / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
    assert len(listed) >= 25  # 5 volumes, 20 DICOM slices
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name
    on_disk = {str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file() and p.suffix not in (".md", ".txt")} - {
        "SHA256SUMS"
    }
    assert on_disk == set(listed), "every data file is listed in SHA256SUMS (and every listed one exists)"


def test_provenance_and_licence_beside_the_data():
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in readme and "not for clinical use" in readme
    assert "TotalSegmentator" in readme and "Insight Toolkit" in readme
    assert "Apache License" in (DATA / "LICENSE-Apache-2.0.txt").read_text(encoding="utf-8")


def test_tests_read_data_from_inside_the_repository():
    assert SHARED_DATA.resolve() == DATA.resolve()
    outside = []
    for path in (REPO / "Testing").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if '"shared", "data"' in text or "shared/data" in text.replace("Testing/Data", ""):
            outside.append(str(path.relative_to(REPO)))
    assert outside == [str(Path("Testing") / "test_data.py")], outside
