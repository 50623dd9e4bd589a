"""The Extensions Index catalog entry (``UNetSigmoidSeg.json`` at the repository top): valid against the Index's real
schema (copied with its provenance in ``index_schema/``), holding what Slicer's extension build reads, and agreeing
with the extension metadata of the top-level CMakeLists.txt."""

import json
import re
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY_FILE = REPO / "UNetSigmoidSeg.json"
SCHEMA_FILE = Path(__file__).resolve().parent / "index_schema" / "slicer-extension-catalog-entry-schema-v1.0.1.json"
PLACEHOLDER = "TO-BE-FILLED-BY-THE-PUBLISHER"
ENTRY = json.loads(ENTRY_FILE.read_text(encoding="utf-8"))
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def top_cmake_var(name):
    match = re.search(rf'set\({name} "([^"]*)"\)', (REPO / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert match, name
    return match.group(1)


def errors(entry):
    return [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(entry)]


def test_entry_is_valid_against_the_index_schema_it_names():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert ENTRY["$schema"] == SCHEMA["$id"]
    assert errors(ENTRY) == []
    assert ENTRY_FILE.name == re.search(r"project\((\w+)\)", (REPO / "CMakeLists.txt").read_text()).group(1) + ".json"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"scm_url": None}, "'scm_url' is a required property"),
        ({"category": None}, "'category' is a required property"),
        ({"tier": 7}, "7 is greater than the maximum of 5"),
        ({"scm_type": "svn"}, "'svn' is not one of ['git', 'local']"),
        ({"homepage": "x"}, "Additional properties are not allowed ('homepage' was unexpected)"),
        ({"build_dependencies": "PyTorch"}, "'PyTorch' is not of type 'array'"),
    ],
)
def test_the_schema_refuses_what_the_index_would(change, message):
    entry = {k: v for k, v in {**ENTRY, **change}.items() if v is not None}
    assert message in errors(entry)


def test_entry_has_what_slicers_extension_build_reads():
    """Slicer's ``slicerFunctionExtractExtensionDescriptionFromJson`` (Extensions/CMake/
    SlicerFunctionExtractExtensionDescription.cmake, the same at v5.8.0, v5.10.0 and main) fails on a missing
    ``scm_url``, ``scm_revision`` or ``category`` (the schema requires only two of them)."""
    for key in ("scm_url", "scm_revision", "category"):
        assert isinstance(ENTRY[key], str) and ENTRY[key], key
    assert ENTRY["scm_type"] == "git" and ENTRY["build_subdirectory"] == "."  # a plain (not superbuild) extension
    assert ENTRY["enabled"] is True and ENTRY["tier"] == 1  # experimental until the Index says otherwise


def test_scm_url_is_a_url_or_a_visible_placeholder_never_an_invented_address():
    url = ENTRY["scm_url"]
    if url.startswith(PLACEHOLDER):
        docs = (REPO / "docs" / "INDEX_SUBMISSION.md").read_text(encoding="utf-8")
        assert PLACEHOLDER in docs and "scm_url" in docs  # the checklist says what to put there
    else:
        assert re.fullmatch(r"https://\S+?(\.git)?", url), url
        homepage = top_cmake_var("EXTENSION_HOMEPAGE")
        assert homepage.startswith(url.removesuffix(".git")), (homepage, url)  # one repository, both places


def test_entry_agrees_with_the_cmake_extension_metadata():
    assert ENTRY["category"] == top_cmake_var("EXTENSION_CATEGORY")
    assert ENTRY["build_dependencies"] == top_cmake_var("EXTENSION_DEPENDS").split()
    assert "PyTorch" in ENTRY["build_dependencies"]  # the PyTorch extension installs torch
