"""The panel's *Run on* choice as plain rules (no Qt, no Slicer): this computer or a remote server.

The choice, the server URL, its token, the TLS files (the server's certificate or CA; this client's certificate
and key for a server with mutual TLS) and the chosen server model live in Slicer's application settings
(``qt.QSettings``: per user, never in the scene file or the parameter node — the token must not travel with a
scene); ``load`` / ``save`` take the settings' ``value`` / ``setValue``. The rest says what the panel shows: the
connection line, the server's models for the model list, why Segment is not possible yet.
"""

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..contract.model import ModelInfo

LOCAL = "This computer"
SERVER = "Server"
RUN_ON_CHOICES: Tuple[Tuple[str, str], ...] = (
    (LOCAL, "Run the network here, in a background worker with this computer's torch (its GPU if it has one)."),
    (
        SERVER,
        "Send the volume to a UNetSigmoidSeg server (unetsigmoidseg serve) with a GPU. The result comes back as "
        "compact probabilities: the threshold slider stays local and instant. Needs no PyTorch on this computer.",
    ),
)
KEYS = {
    "run_on": "UNetSigmoidSeg/RunOn",
    "url": "UNetSigmoidSeg/ServerURL",
    "token": "UNetSigmoidSeg/ServerToken",
    "model": "UNetSigmoidSeg/ServerModel",
    "cafile": "UNetSigmoidSeg/ServerCA",
    "client_cert": "UNetSigmoidSeg/ClientCertificate",
    "client_key": "UNetSigmoidSeg/ClientKey",
}
TLS_FIELDS = ("cafile", "client_cert", "client_key")  # RemoteRunner's options of the same names
URL_PLACEHOLDER = "https://gpu-server:8765  (or http://127.0.0.1:PORT through an SSH tunnel)"


@dataclass
class RemoteSettings:
    run_on: str = LOCAL
    url: str = ""
    token: str = ""
    model: str = ""
    cafile: str = ""
    client_cert: str = ""
    client_key: str = ""

    @property
    def server(self) -> bool:
        return self.run_on == SERVER

    def connection(self) -> Tuple[str, ...]:
        """What a connection is made with: a change of any of it needs a new one."""
        return (self.url, self.token) + tuple(getattr(self, field) for field in TLS_FIELDS)

    def tls_options(self) -> Dict[str, Optional[str]]:
        """``cafile`` / ``client_cert`` / ``client_key`` for ``make_runner`` (None: not given)."""
        return {field: getattr(self, field) or None for field in TLS_FIELDS}


def load(value: Callable[[str], Any]) -> RemoteSettings:
    """The settings from ``value(key)`` (``QSettings.value``: None when never saved)."""
    read = {field: str(value(key) or "").strip() for field, key in KEYS.items()}
    if read["run_on"] not in (LOCAL, SERVER):
        read["run_on"] = LOCAL
    return RemoteSettings(**read)


def save(settings: RemoteSettings, set_value: Callable[[str, Any], None]) -> None:
    for field, key in KEYS.items():
        set_value(key, str(getattr(settings, field)))


def connection_problem(settings: RemoteSettings) -> str:
    """Why no server can be used with these settings ("" when the URL and token are there, the URL is valid and
    the TLS files given can be used)."""
    if not settings.url:
        return "Enter the server's URL (Run on → Server)."
    if not settings.token:
        return "Enter the server's token (printed by unetsigmoidseg serve on its first start, or in its token file)."
    problem = tls_problem(settings)
    if problem:
        return problem
    from ..errors import RemoteError
    from ..runners.http import Endpoint

    options = settings.tls_options()
    try:
        Endpoint(settings.url, settings.token, options["cafile"], False, options["client_cert"], options["client_key"])
    except RemoteError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:  # the CA file (the client files' errors are RemoteErrors)
        return f"Cannot use the server certificate (CA) {settings.cafile}: {exc}"
    return ""


TLS_LABELS = {"cafile": "server certificate (CA)", "client_cert": "client certificate", "client_key": "client key"}


def tls_problem(settings: RemoteSettings) -> str:
    """A TLS file given that does not exist, or half of this client's certificate and key ("" when none)."""
    for field in TLS_FIELDS:
        path = getattr(settings, field)
        if path and not os.path.isfile(path):
            return f"The {TLS_LABELS[field]} file {path} does not exist."
    if settings.client_key and not settings.client_cert:
        return "Give the client certificate of the client key too (a server with mutual TLS needs both)."
    if settings.client_cert and not settings.client_key and not holds_key(settings.client_cert):
        return "Give the client key too: the client certificate's file holds no private key (mutual TLS needs both)."
    return ""


def holds_key(path: str) -> bool:
    """Whether a PEM file holds a private key besides the certificate (then it needs no separate key file)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return "PRIVATE KEY-----" in f.read()
    except OSError:
        return False


def server_models(described: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return list((described or {}).get("models") or [])


def model_items(described: Optional[Dict[str, Any]]) -> List[Tuple[str, str]]:
    """``(name, tooltip)`` of each server model for the model list: its summary, or what is wrong with it."""
    return [(m["name"], m.get("summary") or f"Cannot be used: {m.get('error')}") for m in server_models(described)]


def model_choice(described: Optional[Dict[str, Any]], name: str) -> Tuple[Optional[ModelInfo], str]:
    """``(ModelInfo, "")`` of server model ``name``, or ``(None, what is wrong)``."""
    for m in server_models(described):
        if m["name"] == name:
            if m.get("info"):
                return ModelInfo.from_dict(m["info"]), ""
            return None, f"The server cannot use model {name}: {m.get('error')}"
    if described is None:
        return None, ""
    return None, f"The server has no model {name!r}" if name else "Pick one of the server's models."


def status_text(settings: RemoteSettings, described: Optional[Dict[str, Any]], error: Any, connecting: bool) -> str:
    """The line under the Run-on choice."""
    if not settings.server:
        return ""
    problem = connection_problem(settings)
    if problem:
        return problem
    if error is not None:
        return f"Not connected: {error}"
    if described is None:
        return f"Connecting to {settings.url}…" if connecting else "Press Connect."
    gpus = ", ".join(described.get("gpus") or [])
    device = described.get("device", "?") + (f" ({gpus})" if gpus else "")
    n = len(server_models(described))
    return f"Connected to {described.get('url', settings.url)}: {n} model{'s' if n != 1 else ''}, runs on {device}."


def server_problem(settings: RemoteSettings, described: Optional[Dict[str, Any]], error: Any) -> str:
    """Why Segment cannot run on the server now ("" when it can, as far as the panel knows)."""
    if not settings.server:
        return ""
    problem = connection_problem(settings)
    if problem:
        return problem
    if error is not None:
        return f"Not connected to the server: {error}"
    if described is None:
        return "Connecting to the server…"
    info, why = model_choice(described, settings.model)
    return why if info is None else ""
