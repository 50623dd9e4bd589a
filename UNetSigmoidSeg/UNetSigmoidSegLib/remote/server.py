"""The remote server's HTTP API (FastAPI on uvicorn): the models of one folder, by name, for clients with the token.

Every request needs ``Authorization: Bearer <token>`` (checked in constant time before routing, before any body
is read; a failure is logged without detail and answered 401 without detail). A body announced larger than
``max_request_bytes`` is refused (413) before it is read, and a body streamed without a length is cut off there; a
POST declaring another type than ``application/octet-stream`` (a form, JSON, text) is refused (415) unread.

    GET    /v1/health                       server time, busy / queued, instance id (tells dead from busy)
    GET    /v1/info                         versions, device, limits, whether uploads are accepted
    GET    /v1/models                       every model by name with its ``ModelInfo`` summary
    GET    /v1/models/{name}                one model's ``ModelInfo`` (loads it: it stays warm)
    POST   /v1/models/inspect               ``ModelInfo`` of an uploaded model (``--allow-upload`` only)
    POST   /v1/jobs                         a run: ``wire`` frame {model, options, affine} + volume → 202 {job, ahead}
    GET    /v1/jobs/{id}/events?after=&wait= the job's messages after ``after``, waiting up to ``wait`` s (long poll)
    GET    /v1/jobs/{id}/result             ``SegmentResult.to_wire()`` as a ``wire`` frame
    DELETE /v1/jobs/{id}                    cancel (queued: at once; running: between windows), or release a result
"""

import asyncio
import logging
import os
import platform
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Dict, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..contract import wire
from ..errors import ModelError, OptionError, UserError
from .identity import TokenStore
from .jobs import Busy, JobQueue
from .requests import UploadRefused, job_request, upload_fields
from .store import CACHE_SIZE, ModelStore, UnknownModel

API = "/v1"
PROTOCOL = 1
LOG = logging.getLogger("unetsigmoidseg.server")


@dataclass
class ServerConfig:
    models_dir: str
    token: str
    device: str = "auto"
    max_queue: int = 4
    max_request_bytes: int = 1 << 30
    max_volume_bytes: int = 4 << 30
    allow_upload: bool = False
    client_timeout_s: float = 60.0
    temp_root: Optional[str] = None
    max_wait_s: float = 30.0  # the longest long poll
    tokens_file: str = ""  # named tokens (remote.identity), read again when it changes; "": the owner's token only
    ray: Optional[str] = None  # run jobs on a Ray cluster's model replicas (runners.ray_pool): its address
    ray_replicas: int = 0
    ray_threads: int = 2


def error(status: int, kind: str, message: str, hint: str = "", **extra: Any) -> JSONResponse:
    body = {"error": dict({"kind": kind, "message": message, "hint": hint}, **extra)}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


class Guard:
    """ASGI middleware in front of everything: the bearer token, then the announced body size."""

    def __init__(self, app: Any, tokens: TokenStore, max_body: int, counter: Dict[str, int]) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body = int(max_body)
        self.counter = counter

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")
        name = self.tokens.identify(given[7:].strip()) if given[:7].lower() == b"bearer " else None
        if name is None:
            client = scope.get("client") or ("?", 0)
            path = str(scope.get("path", "")).encode("unicode_escape").decode("ascii")[:200]  # no forged log lines
            LOG.warning("authentication failed: %s %s from %s", scope.get("method"), path, client[0])
            response = JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        self.counter["requests"] += 1
        scope.setdefault("state", {})["token"] = name  # who this is: jobs belong to it, the log names it
        declared = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope.get("method") == "POST" and declared not in (b"", b"application/octet-stream"):
            response = error(
                415,
                "remote",
                "A request body must be a UNetSigmoidSeg frame (Content-Type: application/octet-stream)",
                "Use RemoteRunner or unetsigmoidseg segment --server; a form or JSON body is not accepted.",
                reason="content_type",
            )
            return await response(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0 or size > self.max_body:
                response = error(
                    413,
                    "remote",
                    f"The request of {size} bytes is over this server's limit of {self.max_body} bytes",
                    "Crop or downsample the volume, or start the server with a larger --max-request-mb.",
                    reason="too_large",
                    limit=self.max_body,
                )
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(config: ServerConfig) -> Any:
    """The ASGI application (the ``Guard`` around FastAPI) serving ``config.models_dir``."""
    store = ModelStore(config.models_dir, log=LOG.info)
    limits = {"max_request_bytes": config.max_request_bytes, "max_volume_bytes": config.max_volume_bytes}
    pool = None
    if config.ray:
        from ..runners.ray_pool import RayPool

        gpus = 1.0 if config.device.startswith("cuda") else 0.0
        pool = RayPool(config.ray, config.ray_replicas, config.ray_threads, gpus, retries=1, cache_size=CACHE_SIZE)
        LOG.info("jobs run on Ray: %s", pool.describe())
    jobs = JobQueue(
        store, config.max_queue, config.device, limits, config.client_timeout_s, config.temp_root, LOG.info, pool
    )
    state: Dict[str, Any] = {"instance": uuid.uuid4().hex, "started": time.time(), "versions": None}
    counter = {"requests": 0}

    def preload() -> None:
        """Import torch, MONAI and the engine, learn the device, read every model's summary (warms the cache)."""
        try:
            import torch

            from ..engine.running import pipeline  # noqa: F401
            from ..engine.running.inference import select_device
            from ..sysinfo import package_version

            cuda = bool(torch.cuda.is_available())
            choice = select_device(config.device)
            state["versions"] = {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "monai": package_version("monai"),
                "cuda": cuda,
                "cuda_devices": int(torch.cuda.device_count()) if cuda else 0,
                "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
                "device": choice.device,
                "device_reason": choice.reason,
                "torch_threads": int(torch.get_num_threads()),
            }
        except Exception as exc:  # noqa: BLE001 - reported by /v1/info and every job
            state["versions"] = {"error": f"{type(exc).__name__}: {exc}"}
            LOG.error("the server cannot run networks: %s", state["versions"]["error"])
        jobs.ready.set()
        try:
            for item in store.listing():
                LOG.info("model %s: %s", item["name"], item.get("summary") or item.get("error"))
        except Exception as exc:  # noqa: BLE001
            LOG.error("cannot list the models: %s", exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.start(asyncio.get_running_loop())
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, preload)

        async def sweeper() -> None:
            while True:
                await asyncio.sleep(1.0)
                jobs.sweep()

        task = asyncio.create_task(sweeper())
        try:
            yield
        finally:
            task.cancel()
            await run_in_threadpool(jobs.stop)
            if pool is not None:
                await run_in_threadpool(pool.close)

    app = FastAPI(title="UNetSigmoidSeg server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.jobs = jobs
    app.state.store = store

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        LOG.exception("unexpected error in %s %s", request.method, request.url.path)
        return error(500, "internal", f"Unexpected server error: {type(exc).__name__}", "See the server's log.")

    @app.get(API + "/health")
    async def health() -> Dict[str, Any]:
        return dict(
            jobs.health(),
            status="ok",
            server_time=time.time(),
            instance=state["instance"],
            uptime_s=round(time.time() - state["started"], 1),
            requests=counter["requests"],
        )

    @app.get(API + "/info")
    async def info() -> Any:
        await run_in_threadpool(jobs.ready.wait, 120.0)
        return dict(
            state["versions"] or {},
            runner="remote",
            protocol=PROTOCOL,
            instance=state["instance"],
            max_queue=config.max_queue,
            max_request_bytes=config.max_request_bytes,
            max_volume_bytes=config.max_volume_bytes,
            allow_upload=config.allow_upload,
        )

    @app.get(API + "/models")
    def models() -> Dict[str, Any]:
        jobs.ready.wait(120.0)
        return {"models": store.listing()}

    @app.get(API + "/models/{name}")
    def model_info(name: str) -> Any:
        jobs.ready.wait(120.0)
        try:
            return {"name": name, "info": store.info(name).to_dict()}
        except UserError as exc:
            return _user_error(exc, store)

    @app.post(API + "/models/inspect")
    async def inspect_upload(request: Request) -> Any:
        if not config.allow_upload:
            return _upload_refused(store)
        spool = jobs.new_spool()
        try:
            received = await _spool(request, spool, config.max_request_bytes)
            if isinstance(received, Response):
                return received
            with open(spool, "rb") as f:
                names = {d["name"] for d in wire.read_header(f, received)[1]}
            if names - {"model", "sidecar"}:  # refused before a byte is decompressed
                raise OptionError(
                    f"An inspection carries a model only, not {sorted(names - {'model', 'sidecar'})}",
                    "Send the 'model' array (and its 'sidecar' JSON) alone: use RemoteRunner.inspect.",
                )
            # reading, decompressing and loading run off the event loop: other clients are answered meanwhile
            loaded = await run_in_threadpool(_load_upload, spool, jobs.temp_dir, store, config.max_request_bytes)
            return {"name": "upload", "info": store.public_info(loaded[0].info, "upload").to_dict()}
        except wire.WireError as exc:
            return error(400, "remote", f"Malformed upload: {exc}", "Use a client of the server's version.")
        except UserError as exc:
            return _user_error(exc, store)
        finally:
            if os.path.exists(spool):
                os.remove(spool)

    @app.post(API + "/jobs", status_code=202)
    async def submit(request: Request) -> Any:
        spool = jobs.new_spool()
        client = request.client.host if request.client else "?"
        job, reserved = None, False
        try:
            jobs.reserve()  # before reading the body: a full queue costs no disk, however many send at once
            reserved = True
            received = await _spool(request, spool, config.max_request_bytes)
            if isinstance(received, Response):
                return received
            with open(spool, "rb") as f:
                fields, descriptors = wire.read_header(f, received)
            validated = job_request(fields, descriptors, store, config, jobs.max_decoded_bytes)
            job = jobs.add(spool, client, validated, owner=request.state.token)
        except Busy as exc:
            return error(
                503,
                "remote",
                f"The server is busy: {exc.queued} jobs queued (at most {config.max_queue})",
                "Try again in a while.",
                reason="busy",
                queued=exc.queued,
            )
        except wire.WireError as exc:
            return error(400, "remote", f"Malformed request: {exc}", "Use a client of the server's version.")
        except UserError as exc:
            return _user_error(exc, store)
        finally:
            if reserved and job is None:
                jobs.release()
            if os.path.exists(spool):
                os.remove(spool)
        return {"job": job.id, "ahead": jobs.ahead(job), "instance": state["instance"]}

    def own_job(request: Request, job_id: str) -> Any:
        """The job, if the request's token submitted it (another token's job answers as an unknown one)."""
        job = jobs.get(job_id)
        return job if job is not None and job.owner == request.state.token else None

    @app.get(API + "/jobs/{job_id}/events")
    async def events(request: Request, job_id: str, after: int = 0, wait: float = 10.0) -> Any:
        job = own_job(request, job_id)
        if job is None:
            return _no_job(state)
        await jobs.wait(job, after, max(0.0, min(float(wait), config.max_wait_s)))
        return dict(jobs.events(job, after), instance=state["instance"])

    @app.get(API + "/jobs/{job_id}/result")
    async def result(request: Request, job_id: str) -> Any:
        job = own_job(request, job_id)
        if job is None:
            return _no_job(state)
        if job.result is None:
            return error(409, "remote", "The job has no result (yet)", "Wait for its result message.", reason="state")
        return Response(job.result, media_type="application/octet-stream")

    @app.delete(API + "/jobs/{job_id}")
    async def cancel(request: Request, job_id: str) -> Any:
        job = own_job(request, job_id)
        if job is None:
            return _no_job(state)
        return {"job": job.id, "state": jobs.cancel(job, f"cancelled by token {request.state.token}")}

    return Guard(app, TokenStore(config.token, config.tokens_file), config.max_request_bytes, counter)


def _load_upload(spool: str, temp_dir: str, store: ModelStore, limit: int) -> Any:
    """(worker thread) The uploaded model of an inspection's spooled body, loaded untrusted (``store.upload``)."""
    with open(spool, "rb") as f:
        fields, arrays = wire.decode(f.read(), limit * 2, limit * 4)
    upload = upload_fields(fields.get("upload"), arrays)
    folder = os.path.join(temp_dir, os.path.basename(spool)[:-5])
    os.mkdir(folder, 0o700)
    try:
        sidecar = arrays["sidecar"].tobytes() if "sidecar" in arrays else None
        return store.upload(folder, upload["suffix"], arrays["model"].data, sidecar, upload["strides"])
    finally:
        os.rmdir(folder)


async def _spool(request: Request, path: str, limit: int) -> Any:
    """Stream the body into ``path``; the byte count, or a 413 / 400 response (the partial file is removed)."""
    size = 0
    try:
        with open(path, "wb") as f:
            os.chmod(path, 0o600)
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return error(
                        413,
                        "remote",
                        f"The request is over this server's limit of {limit} bytes",
                        "Crop or downsample the volume, or start the server with a larger --max-request-mb.",
                        reason="too_large",
                        limit=limit,
                    )
                f.write(chunk)
    except ClientDisconnect:
        LOG.warning("client %s disconnected while sending its request", request.client.host if request.client else "?")
        return error(400, "remote", "The client went away while sending", "Send it again.", reason="connection")
    return size


def _upload_refused(store: ModelStore) -> JSONResponse:
    return _user_error(UploadRefused(store), store)


def _user_error(exc: UserError, store: ModelStore) -> JSONResponse:
    status = getattr(exc, "status", 404 if isinstance(exc, UnknownModel) else 400)
    kind = exc.kind if isinstance(exc, (ModelError, OptionError)) else getattr(exc, "kind", "error")
    extra = {"reason": exc.reason} if getattr(exc, "reason", None) else {}
    return error(status, kind, store.scrub(exc.message), exc.hint, **extra)


def _no_job(state: Dict[str, Any]) -> JSONResponse:
    return error(
        404,
        "remote",
        "The server does not know this job (it ended, was released, or the server restarted)",
        "Run again.",
        reason="lost",
        instance=state["instance"],
    )
