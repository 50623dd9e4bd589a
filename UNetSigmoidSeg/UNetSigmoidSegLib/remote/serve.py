"""``unetsigmoidseg serve``: the remote server on this computer's GPU (FastAPI + uvicorn, ``pip install .[server]``).

Binds 127.0.0.1 unless told otherwise and says how to reach it from elsewhere (an SSH tunnel, or TLS with
``--certfile/--keyfile``). The token is generated on the first start into ``--token-file`` (mode 0600) and printed
that once; ``--rotate-token`` replaces it (clients then need the new one).
"""

import argparse
import ipaddress
import logging
import os
import socket
import ssl
import sys
from typing import Any

from ..contract.options import DEVICES, check_choice
from ..errors import OptionError, UserError
from .identity import tokens_file
from .tokens import default_token_file, load_or_create_token

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this computer only (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the models of a folder to remote clients (GPU server)",
        epilog="A token per user: unetsigmoidseg serve token add NAME [--expires-days N] | list | revoke NAME "
        "[--token-file F] (no restart needed).",
    )
    p.add_argument("--models", required=True, metavar="DIR", help="folder of models (files and bundle folders)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--token-file", help=f"bearer token file, created on first start (default {default_token_file()})")
    p.add_argument("--rotate-token", action="store_true", help="write a new token to the token file and print it")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu | mps: where runs asking for auto go")
    p.add_argument("--max-queue", type=int, default=4, help="jobs waiting behind the running one (default 4)")
    p.add_argument("--certfile", help="TLS certificate (PEM): serve https")
    p.add_argument("--keyfile", help="TLS private key (PEM) for --certfile; readable by you only (chmod 600)")
    p.add_argument(
        "--client-ca",
        metavar="CA.pem",
        help="mutual TLS: only clients with a certificate this CA signed get past the TLS handshake (the token "
        "still applies); needs --certfile/--keyfile",
    )
    p.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain http beyond this computer (token and images in clear text); refused without it",
    )
    p.add_argument(
        "--allow-upload",
        action="store_true",
        help="accept model files from clients (loaded untrusted, removed once loaded); off by default",
    )
    p.add_argument("--max-request-mb", type=float, default=1024.0, help="largest request body (default 1024 MB)")
    p.add_argument("--max-volume-mb", type=float, default=4096.0, help="largest volume, uncompressed (default 4096)")
    p.add_argument(
        "--client-timeout",
        type=float,
        default=60.0,
        help="cancel a job whose client is silent this long, in s (default 60)",
    )
    p.add_argument(
        "--head-timeout",
        type=float,
        default=10.0,
        help="seconds a connection may wait for its next request head before it is closed (default 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        help="a request body that brings less than 64 KiB in this many seconds is cut off (408) and its place in "
        "the queue freed (default 60)",
    )
    p.add_argument("--temp-dir", help="where request bodies are spooled (default: the system temp folder)")
    r = p.add_argument_group("Ray cluster (a department's GPU pool; pip install ray)")
    r.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run jobs on warm model replicas of a Ray cluster (no ADDRESS: one on this computer; 'auto'; HOST:PORT); "
        "the models folder must be readable at the same path on every node",
    )
    r.add_argument("--ray-replicas", type=int, default=0, help="replicas (default: one per GPU, or CPUs / threads)")
    r.add_argument("--ray-threads", type=int, default=2, help="CPU threads per replica (default: 2)")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OptionError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}",
            "Another server may use that port: pick another with --port, or stop it.",
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _check_client_ca(args: argparse.Namespace) -> None:
    """``--client-ca``: only with TLS, and a readable PEM certificate (said before anything listens)."""
    if not args.client_ca:
        return
    if not args.certfile:
        raise OptionError(
            "--client-ca (mutual TLS) needs the server's own TLS certificate",
            "Give --certfile and --keyfile too (clients then connect with https and their certificate).",
        )
    try:
        ssl.create_default_context(cafile=args.client_ca)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        detail = f"not a PEM certificate ({exc.reason})" if isinstance(exc, ssl.SSLError) else exc.strerror or exc
        raise OptionError(
            f"Cannot read the client CA {args.client_ca}: {detail}",
            "Give the PEM certificate of the CA that signs your users' client certificates.",
        ) from None


def _banner(args: argparse.Namespace, url: str, port: int, token_file: str, token: str, created: bool) -> str:
    lines = [f"UNetSigmoidSeg server: models in {os.path.abspath(args.models)}", f"Listening on {url}"]
    if created and sys.stdout.isatty():
        lines.append(f"Token (shown this once; kept in {token_file}, mode 0600): {token}")
    elif created:  # a service's stdout goes to journald / docker logs, which would keep it
        lines.append(f"Token: created in {token_file}, mode 0600 (not printed: stdout is not a terminal)")
    else:
        lines.append(f"Token: in {token_file} (not shown; --rotate-token makes a new one)")
    lines.append(
        f"Named tokens for each user: unetsigmoidseg serve token add NAME (kept hashed in {tokens_file(token_file)})"
    )
    lines.append("Clients: unetsigmoidseg segment … --server URL --token-file FILE (or $UNETSIGMOIDSEG_TOKEN)")
    if args.client_ca:
        lines.append(
            "Mutual TLS: only clients with a certificate signed by the --client-ca get in "
            "(segment/inspect … --client-cert CERT --client-key KEY), and they still need a token"
        )
    if is_loopback(args.host):
        lines += [
            "Only this computer can connect. To reach it from another one:",
            f"  • an SSH tunnel there: ssh -N -L {port}:127.0.0.1:{port} USER@THIS-HOST, then "
            f"--server http://127.0.0.1:{port}",
            "  • or TLS: --host 0.0.0.0 --certfile cert.pem --keyfile key.pem, then --server https://THIS-HOST:PORT",
        ]
    elif not args.certfile:
        lines.append(
            "WARNING: listening beyond this computer without TLS: the token and the images cross the network in "
            "clear text. Use --certfile/--keyfile, or keep --host 127.0.0.1 with an SSH tunnel. Clients refuse "
            "plain http to other computers unless told --allow-http."
        )
    return "\n".join(lines)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .connections import guarded_protocol
        from .server import ServerConfig, create_app
    except ImportError as exc:
        raise UserError(
            f"The server needs FastAPI and uvicorn ({exc})", 'Install them: pip install "unetsigmoidseg[server]"'
        ) from None
    device = check_choice("device", args.device, DEVICES, "--device")
    if device != "auto" and not args.ray:  # a device this machine lacks refuses to start (not: the cluster has it)
        from ..engine.running.inference import select_device

        select_device(device)
    if bool(args.certfile) != bool(args.keyfile):
        raise OptionError("TLS needs both --certfile and --keyfile", "Give both, or neither (then use an SSH tunnel).")
    for path in (args.certfile, args.keyfile):
        if path and not os.path.isfile(path):
            raise OptionError(f"TLS file not found: {path}", "Check the --certfile / --keyfile paths.")
    _check_client_ca(args)
    if args.keyfile and os.name == "posix" and os.stat(args.keyfile).st_mode & 0o077:
        raise OptionError(
            f"The TLS private key {args.keyfile} can be read by other users of this computer",
            f'Make it yours only: chmod 600 "{args.keyfile}".',
        )
    if not is_loopback(args.host) and not args.certfile and not args.insecure_http:
        raise OptionError(
            f"Listening on {args.host} without TLS is refused: the token and the patients' images would cross the "
            "network in clear text",
            "Give --certfile and --keyfile (https), or keep --host 127.0.0.1 and reach it through an SSH tunnel; "
            "--insecure-http allows it anyway (a closed test network only).",
        )
    if args.max_queue < 0 or args.max_request_mb <= 0 or args.max_volume_mb <= 0 or args.client_timeout <= 0:
        raise OptionError("--max-queue must be ≥ 0 and the sizes and --client-timeout > 0", "e.g. --max-queue 4")
    if not 0.1 <= args.head_timeout <= 3600:
        raise OptionError(f"--head-timeout {args.head_timeout} is outside 0.1–3600 s", "e.g. --head-timeout 10")
    if not 0.1 <= args.body_timeout <= 3600:
        raise OptionError(f"--body-timeout {args.body_timeout} is outside 0.1–3600 s", "e.g. --body-timeout 60")
    token_file = os.path.abspath(os.path.expanduser(args.token_file or default_token_file()))
    token, created = load_or_create_token(token_file, rotate=args.rotate_token)
    config = ServerConfig(
        models_dir=args.models,
        token=token,
        device=device,
        max_queue=args.max_queue,
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_volume_bytes=int(args.max_volume_mb * 2**20),
        allow_upload=bool(args.allow_upload),
        client_timeout_s=float(args.client_timeout),
        temp_root=args.temp_dir,
        tokens_file=tokens_file(token_file),
        ray=args.ray,
        ray_replicas=args.ray_replicas,
        ray_threads=args.ray_threads,
    )
    sock = _listen(args.host, args.port)  # first: a taken port is said before anything is created
    try:
        app = create_app(config)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"{'https' if args.certfile else 'http'}://{host}:{port}"
    print(_banner(args, url, port, token_file, token, created), flush=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])

    class Server(uvicorn.Server):
        async def serve(self, sockets: Any = None) -> None:
            code = 0
            try:
                await super().serve(sockets=sockets)
            except BaseException as exc:  # noqa: BLE001 - uvicorn re-raises the signal that stopped it, after
                # its shutdown: exits.Interrupted (SIGTERM: 143), KeyboardInterrupt (130); anything else is a failure
                code = int(getattr(exc, "exit_code", 130 if isinstance(exc, KeyboardInterrupt) else 1))
                logging.getLogger("unetsigmoidseg").info("stopped (%s): exit %d", type(exc).__name__, code)
            finally:
                # Requests have ended or were cancelled and the spool is removed (the app's shutdown). A load or run
                # still in a thread (a network whose forward never returns) would keep the process alive for good
                # (asyncio.run joins the executor's threads after this), so the process ends here.
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    server = Server(
        uvicorn.Config(
            app,
            ssl_certfile=args.certfile,
            ssl_keyfile=args.keyfile,
            ssl_ca_certs=args.client_ca,
            ssl_cert_reqs=ssl.CERT_REQUIRED if args.client_ca else ssl.CERT_NONE,
            log_level="info",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            # idle / slow connections never crowd out requests; a body must keep arriving
            http=guarded_protocol(args.head_timeout, args.body_timeout),
            timeout_keep_alive=max(1, int(args.head_timeout)),
            timeout_graceful_shutdown=3,
            limit_concurrency=None,  # counted sockets: the job queue bounds the requests in progress
        )
    )
    server.run(sockets=[sock])
    return 0


class OneLineFormatter(logging.Formatter):
    """Every log message on one line: line breaks and other control characters in it (a label of an uploaded model,
    a URL path, an exception's text) are written as escapes, so no client can forge or hide a log line."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.msg, record.args = escape_controls(record.getMessage()), None
        return super().format(record)


def escape_controls(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1, Unicode line and paragraph separators) as ``\\xNN`` /
    ``\\uNNNN`` escapes; everything else (accents, CJK) as it is."""
    return "".join(
        c if c.isprintable() or c == " " else (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}") for c in text
    )
