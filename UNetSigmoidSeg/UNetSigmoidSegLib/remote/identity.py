"""Who a request is: the server's own token (named ``owner``, in its token file) and named tokens for each user.

Named tokens live in ``<token file stem>.tokens.json`` beside the token file (mode 0600): for each a name, the
SHA-256 of its secret (never the secret), when it was made and when it expires. ``unetsigmoidseg serve token add
NAME`` prints the secret once; ``list`` shows names and dates; ``revoke NAME`` removes it. A running server reads
the file again when it changes, so adding and revoking need no restart. Each job belongs to the token that
submitted it (``remote.server``): another token cannot follow, read or cancel it. The audit log names the token,
never its secret. Standard library only.
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import re
import threading
from typing import Any, Dict, List, Optional

from ..errors import OptionError
from .tokens import _check_private, _write_private, default_token_file, new_token, same_token

OWNER = "owner"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_FILE_BYTES = 1 << 20


def tokens_file(token_file: str) -> str:
    """The named tokens' file beside the server's token file (``server.token`` → ``server.tokens.json``)."""
    return os.path.splitext(os.path.abspath(token_file))[0] + ".tokens.json"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def read_entries(path: str) -> List[Dict[str, Any]]:
    """The file's entries (none when it does not exist); a file others can read, too large or not ours: an error."""
    if not os.path.exists(path):
        return []
    _check_private(path)  # the token file's rule: readable by its owner only
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise OptionError(f"{path} is larger than {MAX_FILE_BYTES} bytes", "Remove it and add the tokens again.")
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f).get("tokens", [])
    except (ValueError, AttributeError) as exc:
        raise OptionError(f"{path} is not a tokens file ({exc})", "Remove it and add the tokens again.") from None
    return [e for e in entries if isinstance(e, dict) and NAME.fullmatch(str(e.get("name", "")))]


def _write_entries(path: str, entries: List[Dict[str, Any]]) -> None:
    _write_private(path, json.dumps({"tokens": entries}, indent=1))


def add(path: str, name: str, expires_days: Optional[float] = None) -> str:
    """A new token ``name`` (its secret is returned, and kept nowhere)."""
    if not NAME.fullmatch(name) or name == OWNER:
        raise OptionError(
            f"Token name {name!r:.80} is not allowed",
            f"Use letters, digits and . _ @ - (up to 64), not {OWNER!r}: e.g. serve token add alice",
        )
    entries = read_entries(path)
    if any(e["name"] == name for e in entries):
        raise OptionError(f"A token named {name} exists", f"Revoke it first: serve token revoke {name}")
    if expires_days is not None and not 0 < expires_days <= 3650:
        raise OptionError(f"--expires-days {expires_days} is outside (0, 3650]", "e.g. --expires-days 90")
    secret = new_token()
    now = _now()
    expires = (now + datetime.timedelta(days=expires_days)).isoformat() if expires_days else None
    entries.append({"name": name, "sha256": digest(secret), "created": now.isoformat(), "expires": expires})
    _write_entries(path, entries)
    return secret


def revoke(path: str, name: str) -> bool:
    entries = read_entries(path)
    kept = [e for e in entries if e["name"] != name]
    if len(kept) != len(entries):
        _write_entries(path, kept)
    return len(kept) != len(entries)


class TokenStore:
    """The server's view: ``identify(secret)`` → the token's name, or None (unknown, revoked or expired)."""

    def __init__(self, owner_secret: str, path: str) -> None:
        self.owner = owner_secret.encode("utf-8")
        self.path = path
        self._seen: Any = None
        self._entries: List[Dict[str, Any]] = []
        self._lock = threading.Lock()

    def _current(self) -> List[Dict[str, Any]]:
        try:
            st = os.stat(self.path)
            seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            seen = None
        with self._lock:
            if seen != self._seen:
                try:
                    self._entries = read_entries(self.path) if seen is not None else []
                except (OptionError, OSError):
                    self._entries = []  # an unreadable or unsafe file admits nobody but the owner
                self._seen = seen
            return self._entries

    def identify(self, secret: bytes) -> Optional[str]:
        if same_token(secret, self.owner):
            return OWNER
        given = hashlib.sha256(bytes(secret)).hexdigest()
        now = _now().isoformat()
        for entry in self._current():
            if hmac.compare_digest(given, str(entry.get("sha256", ""))):
                expires = entry.get("expires")
                return None if expires and str(expires) <= now else str(entry["name"])
        return None


def token_main(argv: List[str]) -> int:
    """``unetsigmoidseg serve token add NAME [--expires-days N] | list | revoke NAME [--token-file F]``."""
    parser = argparse.ArgumentParser(prog="unetsigmoidseg serve token", description="the server's named tokens")
    parser.add_argument("action", choices=["add", "list", "revoke"])
    parser.add_argument("name", nargs="?")
    parser.add_argument("--token-file", help=f"the server's token file (default {default_token_file()})")
    parser.add_argument("--expires-days", type=float, help="add: the token stops working after this many days")
    args = parser.parse_args(argv)
    path = tokens_file(args.token_file or default_token_file())
    if args.action != "list" and not args.name:
        raise OptionError(f"serve token {args.action} needs a NAME", f"e.g. serve token {args.action} alice")
    if args.action == "add":
        secret = add(path, args.name, args.expires_days)
        print(f"Token {args.name} (shown this once; the server keeps only its SHA-256, in {path}):\n{secret}")
    elif args.action == "revoke":
        if not revoke(path, args.name):
            raise OptionError(f"No token named {args.name}", "See them: unetsigmoidseg serve token list")
        print(f"Token {args.name} revoked: the server refuses it from its next request")
    else:
        print(f"{OWNER}: the server's token file (not expiring)")
        for e in read_entries(path):
            print(f"{e['name']}: created {e.get('created')}, expires {e.get('expires') or 'never'}")
    return 0
