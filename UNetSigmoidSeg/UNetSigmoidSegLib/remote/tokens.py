"""The server's bearer token: generated on first start into a file only its owner can read, compared in constant
time. Standard library only (clients read token files too).

Rotation: ``unetsigmoidseg serve --rotate-token`` (or replacing the file) and restarting the server; clients then
need the new token.
"""

import hmac
import os
import secrets
import stat
from typing import Optional, Tuple, Union

from ..errors import OptionError

TOKEN_BYTES = 32  # 256 bits of randomness, URL-safe text
ENV_TOKEN = "UNETSIGMOIDSEG_TOKEN"


def default_token_file() -> str:
    """``$XDG_CONFIG_HOME/unetsigmoidseg/server.token`` (``~/.config/…``; ``%APPDATA%`` on Windows)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.environ.get("APPDATA") or os.path.expanduser("~/.config")
    return os.path.join(base, "unetsigmoidseg", "server.token")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def _check_private(path: str) -> None:
    if os.name != "posix":
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise OptionError(
            f"Token file {path} can be read by other users (mode {mode:o})",
            f"Make it private: chmod 600 {path}",
        )


def _write_private(path: str, token: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_or_create_token(path: str, rotate: bool = False) -> Tuple[str, bool]:
    """The server's token from ``path``, generating it (mode 0600) when the file does not exist or ``rotate``.
    Returns ``(token, created)``. A token file others can read, or an empty one, is an ``OptionError``."""
    if rotate or not os.path.exists(path):
        token = new_token()
        _write_private(path, token)
        return token, True
    return read_token(path), False


def read_token(path: str) -> str:
    """A token from a file (first line, stripped); a missing, empty or world-readable file is an ``OptionError``."""
    try:
        _check_private(path)
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    except FileNotFoundError:
        raise OptionError(
            f"Token file not found: {path}",
            "Copy the token the server printed on its first start (or its token file) to this computer.",
        ) from None
    except OSError as exc:
        raise OptionError(f"Cannot read token file {path}: {exc.strerror}", "Check the path and permissions.") from None
    if not token:
        raise OptionError(f"Token file {path} is empty", "Put the server's token on its first line.")
    return token


def client_token(token: Optional[str] = None, token_file: Optional[str] = None) -> str:
    """The token a client sends: given, else from ``token_file``, else ``$UNETSIGMOIDSEG_TOKEN``, else the default
    token file (a server on this same computer)."""
    if token:
        return str(token).strip()
    if token_file:
        return read_token(token_file)
    if os.environ.get(ENV_TOKEN):
        return os.environ[ENV_TOKEN].strip()
    if os.path.exists(default_token_file()):
        return read_token(default_token_file())
    raise OptionError(
        "No token for the server",
        f"Give --token-file FILE (the server printed its token on first start), or set ${ENV_TOKEN}.",
    )


def same_token(given: Union[str, bytes], expected: Union[str, bytes]) -> bool:
    """Constant-time comparison (``hmac.compare_digest``) of the UTF-8 bytes."""
    a = given.encode("utf-8") if isinstance(given, str) else bytes(given)
    b = expected.encode("utf-8") if isinstance(expected, str) else bytes(expected)
    return hmac.compare_digest(a, b)
