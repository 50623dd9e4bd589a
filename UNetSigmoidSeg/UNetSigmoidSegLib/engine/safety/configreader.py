"""Our own interpreter of untrusted MONAI configs: never MONAI's ``ConfigParser``, never ``locate`` or ``eval``.

``ConfigReader`` first makes a resolved plain-data copy of a section: ``@id`` / ``@id::key::0`` references
are replaced by a copy of what they name (any top-level id but ``_meta_``, cycles and size bounded), disabled
list items are dropped without looking inside them, ``$`` expressions of the side-effect-free subset
(``expressions``: aliases, arithmetic, ``torch.device``, dtypes, ``len``, …) are evaluated by our own reader, and
everything else MONAI would turn into code or side effects is refused with the key path: other ``$`` expressions,
``%`` macros, relative references, non-string or referenced ``_target_``, ``_requires_``, ``_debug_``, ``_mode_``
other than ``default``, any other ``_x_`` key. Then each component is checked against ``allowlist``: its
``_target_`` must be an exact allowed spelling for the section, every argument a listed name of a listed kind.
Objects are built from that checked copy only: networks first on PyTorch's ``meta`` device, so a network that does
not fit its weights is refused before any memory is allocated.
"""

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ...errors import ModelError
from . import allowlist, expressions, networks, targets
from .kinds import Ignored, Refused

TRUST_HINT = (
    "Check where the model comes from. If you trust its author, pass --trust-bundle (panel: Advanced → Trust "
    "bundle code): MONAI's ConfigParser then runs the whole config, code included."
)
MAX_NODES = 20_000  # values produced while resolving references (a reference can be used many times)
MAX_DEPTH = 32
_REF = re.compile(r"@(\w+)((?:(?:::|#)\w+)*)")
_DISABLED = object()
_WHY_SPECIAL = {
    "_requires_": "would run other config items first, for their side effects",
    "_debug_": "would start the Python debugger (a prompt that waits on the terminal)",
}
_WHY_MODE = {
    "callable": "would hand MONAI a class or function instead of building it (a way to run code later)",
    "debug": "would start the Python debugger (a prompt that waits on the terminal)",
}


@dataclass
class Component:
    """One allowed MONAI class and its checked, plain-data constructor arguments."""

    name: str
    args: Dict[str, Any]
    where: str
    parts: List["Component"] = field(default_factory=list)  # Compose: its transforms


@dataclass
class BundlePlan:
    """What an untrusted bundle's inference config asks for, checked; nothing built yet."""

    network: Component
    preprocessing: Optional[List[Component]]  # None: the bundle has no preprocessing
    inferer: Optional[Component]
    notes: List[str] = field(default_factory=list)


def refused(origin: str, exc: Refused) -> ModelError:
    """The user-facing error for a refused config: the file, the key path, why, and that nothing ran."""
    return ModelError(f"Refused {origin} (untrusted model): {exc}. Nothing was run.", TRUST_HINT)


class ConfigReader:
    """Resolves and checks sections of one config mapping (``{id: value}``)."""

    def __init__(self, config: Dict[str, Any]) -> None:
        self.config = config
        self.nodes = 0

    # ---------------------------------------------------------------- resolving
    def resolve(self, node: Any, where: str, depth: int = 0, chain: Tuple[str, ...] = ()) -> Any:
        """A plain-data copy of ``node`` with references substituted and disabled items removed."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise Refused(where, f"makes the config expand to more than {MAX_NODES:,} values through its references")
        if depth > MAX_DEPTH:
            raise Refused(where, f"is nested more than {MAX_DEPTH} levels deep (or refers to itself)")
        if isinstance(node, dict):
            return self._resolve_dict(node, where, depth, chain)
        if isinstance(node, list):
            items = [self.resolve(v, f"{where}[{i}]", depth + 1, chain) for i, v in enumerate(node)]
            return [v for v in items if v is not _DISABLED]
        if isinstance(node, str):
            return self._resolve_text(node, where, depth, chain)
        return node  # numbers, booleans, null: their kinds check them

    def _resolve_dict(self, node: Dict[str, Any], where: str, depth: int, chain: Tuple[str, ...]) -> Any:
        if "_disabled_" in node:
            flag = node["_disabled_"]
            if isinstance(flag, str) and flag.strip().lower() in ("true", "false"):
                flag = flag.strip().lower() == "true"
            if not isinstance(flag, bool):
                raise Refused(f"{where}._disabled_", f"= {flag!r:.40} must be true or false (it is not evaluated)")
            if flag:
                return _DISABLED  # dropped before anything inside it is looked at
        out: Dict[str, Any] = {}
        for key, value in node.items():
            at = f"{where}.{key}"
            if key == "_target_":
                out[key] = self._target(value, at)
            elif key in ("_disabled_",):
                continue
            elif key == "_desc_":
                if not isinstance(value, str) and not (
                    isinstance(value, list) and all(isinstance(v, str) for v in value)
                ):
                    raise Refused(at, "must be text (it is a description)")
            elif key == "_mode_":
                if value != "default":
                    raise Refused(
                        at, f"= {value!r:.30} {_WHY_MODE.get(str(value), 'is not a mode this product accepts')}"
                    )
            elif len(key) > 2 and key.startswith("_") and key.endswith("_"):
                raise Refused(at, _WHY_SPECIAL.get(key, "is a special key this product does not accept untrusted"))
            else:
                out[key] = self.resolve(value, at, depth + 1, chain)
                if out[key] is _DISABLED:
                    raise Refused(at, "is disabled; only items of a list (e.g. a transform) may be")
        return out

    @staticmethod
    def _target(value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise Refused(where, f"must name a class; a {type(value).__name__} here would make MONAI call its result")
        if value.startswith("$"):
            raise Refused(where, f"= {value[:60]!r} is a Python expression: it would run code")
        if value.startswith(("%", "@")):
            raise Refused(where, f"= {value[:60]!r} must name a class, not another config item")
        return value

    def _resolve_text(self, text: str, where: str, depth: int, chain: Tuple[str, ...]) -> Any:
        if text.startswith("$"):  # only the side-effect-free subset (``expressions``); its references resolve here
            return expressions.evaluate(text[1:], lambda top, path: self._lookup(top, path, where, depth, chain), where)
        if text.startswith("%"):
            raise Refused(where, f"= {text[:60]!r} is a macro: it would read another config file")
        if not text.startswith("@"):
            return text
        match = _REF.fullmatch(text)
        if match is None:
            raise Refused(where, f"= {text[:60]!r} is a relative or malformed reference; use @id or @id::key")
        return self._lookup(match.group(1), [p for p in re.split("::|#", match.group(2)) if p], where, depth, chain)

    def _lookup(self, top: str, path: List[str], where: str, depth: int, chain: Tuple[str, ...]) -> Any:
        ref = "::".join([top] + path)
        at = f"{where} → @{ref}"
        if top == "_meta_" or top not in self.config:
            raise Refused(where, f"refers to @{ref}, which is not defined in the config")
        if ref in chain:
            raise Refused(where, f"refers to @{ref}, which refers back to itself")
        value = self.config[top]
        for part in path:
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise Refused(where, f"refers to @{ref}, which does not exist")
        return self.resolve(value, at, depth + 1, chain + (ref,))

    # ---------------------------------------------------------------- checking
    def section(self, key: str, table: str) -> Component:
        """The component at top-level id ``key``, checked against the allow-list section ``table``."""
        value = self.resolve(self.config[key], key)
        if value is _DISABLED:
            raise Refused(key, "is disabled, but the product needs it")
        if table == "preprocessing" and isinstance(value, list):
            value = {"_target_": "Compose", "transforms": value}
        return self.component(value, table, key)

    def component(self, value: Any, table: str, where: str) -> Component:
        if not isinstance(value, dict) or "_target_" not in value:
            raise Refused(where, f"must be a component with a _target_, got {_kind_of(value)}")
        target = value["_target_"]
        name = targets.target_name(table, target)
        if name is None:
            allowed = ", ".join(targets.allowed_names(table))
            raise Refused(
                f"{where}._target_", f"= {target[:80]!r} is not a MONAI class on the allow-list for {table} ({allowed})"
            )
        spec = allowlist.SECTIONS[table][name]
        args: Dict[str, Any] = {}
        parts: List[Component] = []
        for key, item in value.items():
            if key == "_target_":
                continue
            kind = spec.get(key)
            if kind is None:
                accepted = ", ".join(spec) or "none"
                raise Refused(f"{where}.{key}", f"is not an argument this product accepts for {name} ({accepted})")
            if name == "Compose" and key == "transforms":
                if not isinstance(item, list):
                    raise Refused(f"{where}.transforms", f"must be a list of transforms, got {_kind_of(item)}")
                parts = [self.component(t, table, f"{where}.transforms[{i}]") for i, t in enumerate(item)]
                continue
            checked = kind.check(item, f"{where}.{key}")
            if not isinstance(kind, Ignored):
                args[key] = checked
        if table == "network_def":
            networks.check(name, args, where)
        return Component(name, args, where, parts)


def _kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: f"the text {value!r:.40}"}.get(type(value), type(value).__name__)


def read_bundle(inference: Any, origin: str = "configs/inference.json") -> BundlePlan:
    """Check the ``network_def``, ``preprocessing`` and ``inferer`` of an inference config (plain data)."""
    if not isinstance(inference, dict):
        raise ModelError(
            f"{origin} must hold a mapping of config ids, got {_kind_of(inference)}",
            "A MONAI bundle's inference config is a JSON object with network_def, preprocessing, inferer, …",
        )
    if "network_def" not in inference:
        raise ModelError(f"{origin} has no 'network_def'", "Add the network definition under 'network_def'.")
    reader = ConfigReader(inference)
    found: Dict[str, Any] = {}
    problems: List[Refused] = []
    notes: List[str] = []
    for key in ("network_def", "preprocessing", "inferer"):  # every refusal at once, not only the first
        if key in inference:
            try:
                found[key] = reader.section(key, key)
                if key == "preprocessing":
                    found[key] = _image_steps(found[key], notes)
            except Refused as exc:
                problems.append(exc)
    if problems:
        if len(problems) == 1:
            raise refused(origin, problems[0])
        listed = "; ".join(f"({i + 1}) {p}" for i, p in enumerate(problems))
        raise ModelError(
            f"Refused {origin} (untrusted model), {len(problems)} problems: {listed}. Nothing was run.", TRUST_HINT
        )
    return BundlePlan(found["network_def"], found.get("preprocessing"), found.get("inferer"), notes)


BUNDLE_ROOT = "\x00bundle_root"  # what ``@bundle_root`` reads as in a weights path: the caller puts it in the bundle
LOADER_SPELLINGS = ("CheckpointLoader", "monai.handlers.CheckpointLoader")


def checkpoint_path(inference: Dict[str, Any], origin: str) -> Optional[str]:
    """The ``load_path`` of the config's ``CheckpointLoader`` handler (in its ``handlers`` list) as text, or None.
    Only that value is read (with the expression subset); ``@bundle_root`` in it reads as ``BUNDLE_ROOT``."""
    handlers = inference.get("handlers")
    if not isinstance(handlers, list):
        return None
    reader = ConfigReader(dict(inference, bundle_root=BUNDLE_ROOT))
    for i, item in enumerate(handlers):
        if isinstance(item, dict) and item.get("_target_") in LOADER_SPELLINGS and "load_path" in item:
            where = f"handlers[{i}].load_path"
            try:
                value = reader.resolve(item["load_path"], where)
            except Refused as exc:
                raise refused(origin, exc) from None
            if not isinstance(value, str) or not value:
                raise refused(origin, Refused(where, f"must be a file name, got {_kind_of(value)}"))
            return value
    return None


def read_network(network: Any, origin: str) -> Component:
    """Check a network component given on its own (the ``config.network`` of a MONAIAuto3DSeg checkpoint)."""
    try:
        return ConfigReader({"network": network}).section("network", "network_def")
    except Refused as exc:
        raise refused(origin, exc) from None


def _flatten(component: Component) -> List[Component]:
    if component.name != "Compose":
        return [component]
    return [step for part in component.parts for step in _flatten(part)]


def _keys(value: Any) -> List[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _image_steps(pre: Component, notes: List[str]) -> List[Component]:
    """The transforms that act on the image, in order, each on key ``"image"``; loaders are checked, not kept."""
    steps = _flatten(pre)
    loaders = [s for s in steps if s.name == "LoadImaged" and s.args.get("keys")]
    image_key = _keys(loaders[0].args["keys"])[0] if loaders else "image"
    kept: List[Component] = []
    for step in steps:
        keys = _keys(step.args.get("keys", image_key))
        if image_key not in keys:
            notes.append(f"{step.where} ({step.name}) applies to {', '.join(keys)}, not the image: not used")
            continue
        if step.name in allowlist.LOADERS:
            continue
        if step.name == "CropForegroundd" and step.args.get("source_key", image_key) != image_key:
            raise Refused(f"{step.where}.source_key", "must be the image: the product has no other input")
        args = dict(step.args, keys="image")
        if "source_key" in args:
            args["source_key"] = "image"
        kept.append(Component(step.name, args, step.where))
    return kept


# ---------------------------------------------------------------- building (from the checked copy only)


def build(component: Component, table: str) -> Any:
    """Instantiate an allowed class with its checked arguments; a constructor's refusal is a ``ModelError``."""
    cls = targets.classes(table)[component.name]
    try:
        return cls(**component.args)
    except Exception as exc:  # noqa: BLE001 - MONAI validates its own arguments with many exception types
        raise ModelError(
            f"Cannot build {component.name} from {component.where}: {type(exc).__name__}: {str(exc)[:200]}",
            "The config's arguments do not make a valid MONAI object; fix them or use the model's own release.",
        ) from None


def build_probe(component: Component) -> Any:
    """The network of ``component`` on PyTorch's ``meta`` device: its parameter names and shapes, no memory. Every
    tensor factory makes meta tensors except ``torch.linspace``, whose few values SwinUNETR reads while it is built
    (its drop-path schedule)."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._device import _device_constructors

    class MetaExceptLinspace(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in _device_constructors() and func is not torch.linspace and kwargs.get("device") is None:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    with MetaExceptLinspace():
        return build(component, "network_def")


def build_network(component: Component, state: Dict[str, Any], what: str, probe: Any = None) -> Any:
    """The network of ``component`` holding the weights ``state``. It is compared with the weights on the ``meta``
    device first (``probe``), so a network larger than its weights is never allocated."""
    from ..loading.checkpoint import check_weights_fit, load_strict

    check_weights_fit(probe if probe is not None else build_probe(component), state, what)
    network = build(component, "network_def")
    load_strict(network, state, what)
    return network


def build_preprocessing(steps: List[Component]) -> Any:
    """A MONAI ``Compose`` of the checked image transforms."""
    from monai.transforms import Compose

    return Compose([build(step, "preprocessing") for step in steps])
