"""Bounded reading of untrusted JSON / YAML: size, nesting depth and node count are limited.

Every config that travels with a model (a bundle's ``configs/*.json|yaml``, the JSON next to a
checkpoint, the ``config`` inside a checkpoint) is data from outside. ``read_data_file`` refuses a file
larger than ``MAX_FILE_BYTES``; YAML goes through a ``SafeLoader`` (no Python tags) that also refuses more
than ``MAX_YAML_ALIASES`` aliases and nesting deeper than ``MAX_DEPTH`` while composing; ``check_plain``
then walks the loaded value once, counting shared (aliased) parts every time they are reached, and stops
at ``MAX_NODES`` or ``MAX_DEPTH`` — so a "billion laughs" file or a recursive alias ends in a clear
``ModelError`` in milliseconds, and every later walk of the value is bounded too.
"""

import json
import os
from typing import Any, Optional

from ...errors import ModelError

MAX_FILE_BYTES = 8 * 2**20  # model-zoo configs are 2-60 KB
MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_YAML_ALIASES = 64
PLAIN_SCALARS = (str, int, float, bool, type(None))


class DataLimitError(ValueError):
    """The data is larger or deeper than the limits, or is not plain data."""


def check_plain(value: Any, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> int:
    """Walk ``value`` (dicts with string keys, lists, plain scalars); returns the node count.

    Raises ``DataLimitError`` (its text says why, without naming the file) beyond ``max_nodes`` nodes
    (aliased parts count every time), beyond ``max_depth`` levels (a recursive structure ends here too)
    or for any other type.
    """
    count = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > max_nodes:
            raise DataLimitError(f"it has more than {max_nodes:,} values (aliases or references expand it)")
        if depth > max_depth:
            raise DataLimitError(f"it is nested more than {max_depth} levels deep (or refers to itself)")
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise DataLimitError(f"it has a non-text key {key!r:.40}")
                stack.append((item, depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((item, depth + 1) for item in node)
        elif not isinstance(node, PLAIN_SCALARS):
            raise DataLimitError(f"it holds a {type(node).__name__}, not plain data")
    return count


def _yaml_loader():
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """``SafeLoader`` (no Python tags) that counts aliases and nesting while composing."""

        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self.aliases = 0
            self.depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    raise DataLimitError(f"it uses more than {MAX_YAML_ALIASES} YAML aliases (*name)")
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise DataLimitError(f"it is nested more than {MAX_DEPTH} levels deep")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    # dates stay text (plain data); every other tag SafeLoader knows builds plain values or is refused later
    BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)
    return BoundedLoader


def parse_yaml(text: str) -> Any:
    """YAML text → plain data through the bounded safe loader (``DataLimitError`` / ``yaml.YAMLError``)."""
    loader = _yaml_loader()(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _describe_yaml_error(exc: Exception) -> str:
    text = str(exc)
    if "python/" in text:
        return "it holds a Python tag (!!python/…), which would create Python objects; only plain data is read"
    return "it is not valid YAML: " + " ".join(text.split())[:200]


def read_data_file(path: str, what: Optional[str] = None, hint: str = "") -> Any:
    """A JSON (``.json``) or YAML (``.yaml``/``.yml``) file as plain data, within the limits; else a ``ModelError``."""
    name = what or os.path.basename(path)
    fix = hint or "Fix or replace the model's config file (plain JSON/YAML, a few MB at most)."
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ModelError(
                f"{name} is {size / 2**20:.1f} MB; config files are read only up to {MAX_FILE_BYTES // 2**20} MB",
                fix,
            )
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"Cannot read {name}: {exc.strerror or exc}", fix) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ModelError(f"{name} is not UTF-8 text", fix) from None
    return parse_data_text(text, name, yaml_syntax=path.lower().endswith((".yaml", ".yml")), hint=fix)


def parse_data_text(text: str, what: str, yaml_syntax: bool = False, hint: str = "") -> Any:
    """Parse JSON (or YAML) text with the limits; every failure is a ``ModelError`` naming ``what``."""
    fix = hint or "Fix or replace the model's config file (plain JSON/YAML)."
    try:
        if yaml_syntax:
            try:
                data = parse_yaml(text)
            except ImportError:
                raise ModelError(f"{what} is YAML and PyYAML is not installed.", "pip install pyyaml") from None
            except DataLimitError:
                raise
            except Exception as exc:  # noqa: BLE001 - yaml.YAMLError and its subclasses
                raise ModelError(f"Cannot read {what}: {_describe_yaml_error(exc)}", fix) from None
        else:
            try:
                data = json.loads(text, parse_constant=_refuse_constant)
            except RecursionError:
                raise DataLimitError(f"it is nested more than {MAX_DEPTH} levels deep") from None
            except ValueError as exc:
                raise ModelError(f"Cannot read {what}: it is not valid JSON ({exc})", fix) from None
        check_plain(data)
    except DataLimitError as exc:
        raise ModelError(f"Refused {what}: {exc}", fix) from None
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
