"""``RemoteRunner``: the run contract's ``Runner`` whose networks run on a remote server (``unetsigmoidseg serve``).

    runner = RemoteRunner("https://gpu-server:8765", token_file="server.token")
    job = runner.submit(volume, ModelSpec(name="BrainT1UNet"), SegmentOptions(threshold=0.5))
    result = job.wait()              # the same SegmentResult as a local run; re-thresholding it is local

The volume goes as its raw voxels (native dtype) + affine, zlib-compressed; the result comes back as the compact
probabilities (1 byte per voxel and segment) + bit-packed masks (``SegmentResult.to_wire``), compressed. Standard
library + numpy only: Slicer needs nothing installed for it. Every failure is a clear ``RemoteError`` (server down,
token refused, busy, connection lost, server restarted, too large) or the server's own ``UserError``.
"""

import io
import os
import threading
import time
import zipfile
from typing import Any, Dict, List, Optional
from urllib.parse import quote

import numpy as np

from ..contract import wire
from ..contract.messages import Log
from ..contract.model import MODEL_SUFFIXES, ModelInfo, ModelSpec
from ..contract.options import SegmentOptions
from ..contract.request import RunRequest
from ..contract.volume import Volume
from ..errors import CancelledError, InputError, ModelError, RemoteError, UserError
from ..remote.tokens import client_token
from .http import Counters, Endpoint, Http, Response, wait_until
from .job import QueueJob
from .remote_run import API, RemoteRun, response_error


class RemoteRunner:
    """Runs segmentations on a server. ``url``: ``https://host:port`` (or ``http://127.0.0.1:port`` through an SSH
    tunnel); the token is ``token``, else read from ``token_file``, else ``$UNETSIGMOIDSEG_TOKEN``. ``cafile``: the
    server's certificate or CA for https; ``client_cert`` / ``client_key``: this client's certificate (PEM) for a
    server that requires one (mutual TLS). ``reconnect_s``: how long a running job waits for a lost server to answer
    again. ``poll_wait_s``: the long poll (the server answers at once when something happens)."""

    runs_here = False

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        cafile: Optional[str] = None,
        allow_http: bool = False,
        timeout_s: float = 30.0,
        reconnect_s: float = 15.0,
        poll_wait_s: float = 10.0,
        cancel_timeout_s: float = 10.0,
        client_cert: Optional[str] = None,
        client_key: Optional[str] = None,
    ) -> None:
        self.endpoint = Endpoint(url, client_token(token, token_file), cafile, allow_http, client_cert, client_key)
        self.url = self.endpoint.url
        self.timeout_s = float(timeout_s)
        self.reconnect_s = float(reconnect_s)
        self.poll_wait_s = float(poll_wait_s)
        self.cancel_timeout_s = float(cancel_timeout_s)
        self.counters = Counters()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._info: Optional[Dict[str, Any]] = None
        self._described: Optional[Dict[str, Any]] = None
        self._refresh: Optional[threading.Thread] = None
        self.connection_error: Optional[UserError] = None  # of the last describe()/refresh() in the background
        self._runs: List[RemoteRun] = []
        self._closed = False

    # ---------------------------------------------------------------- blocking calls
    def _http(self) -> Http:
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = Http(self.endpoint, self.counters, self.timeout_s)
        return http

    def _get(self, path: str, doing: str, timeout: Optional[float] = None, http: Optional[Http] = None) -> Any:
        response = (http or self._http()).request("GET", API + path, timeout=timeout, doing=doing)
        if response.status != 200:
            raise response_error(self.url, response, doing)
        return response.json()

    def health(self, timeout: float = 5.0) -> Dict[str, Any]:
        """The server's heartbeat: ``server_time``, ``busy``, ``queued``, ``instance`` (changes on a restart)."""
        return self._get("/health", "asking whether it is alive", timeout, Http(self.endpoint, self.counters))

    def server_info(self, refresh: bool = False) -> Dict[str, Any]:
        """Versions, device, limits and whether uploads are accepted (cached)."""
        if self._info is None or refresh:
            self._info = self._get("/info", "asking for its versions and limits", self.timeout_s + 120.0)
        return self._info

    def models(self) -> List[Dict[str, Any]]:
        """The server's models: ``[{"name", "summary", "info"} | {"name", "error"}]``."""
        return list(self._get("/models", "listing its models", self.timeout_s + 120.0)["models"])

    # ---------------------------------------------------------------- Runner protocol
    def describe(self) -> Optional[Dict[str, Any]]:
        """What the server runs with (Python, torch, MONAI, CUDA devices, its ``device``) and its ``models``, once
        known; ``None`` while asking (in the background: never blocks). A failure is in ``connection_error``."""
        with self._lock:
            if self._described is None and self._refresh is None and self.connection_error is None:
                self._start_refresh()
            return self._described

    def refresh(self) -> None:
        """Ask the server again for its versions and models, in the background (``describe`` shows them)."""
        with self._lock:
            if self._refresh is None:
                self.connection_error = None
                self._start_refresh()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def refreshing(self) -> bool:
        return self._refresh is not None

    def _start_refresh(self) -> None:
        def run() -> None:
            try:
                info = self.server_info(refresh=True)
                described = dict(info, models=self.models(), url=self.url)
                error = None
            except UserError as exc:
                described, error = None, exc
            except Exception as exc:  # noqa: BLE001 - shown by the panel, never raised in its timer
                described, error = None, RemoteError(f"{type(exc).__name__}: {exc}", "", reason="protocol")
            with self._lock:
                self._described = described if described is not None else self._described
                self.connection_error = error
                self._refresh = None

        self._refresh = threading.Thread(target=run, name="unetseg-remote-describe", daemon=True)
        self._refresh.start()

    def keep_warm(self, keep: bool) -> None:
        """Nothing to do: the server keeps its models warm for every client."""

    def submit(self, volume: Volume, model: ModelSpec, options: SegmentOptions) -> QueueJob:
        """Send ``volume`` (``(C, I, J, K)`` + voxel→RAS affine) to be segmented with ``model`` (a server model
        name, or — if the server accepts uploads — a model file); returns at once."""
        array = np.asarray(volume.array)
        if array.dtype.kind not in "biuf" or array.ndim != 4:
            raise InputError(f"Cannot send a {array.dtype} {array.shape} array", "Give a numeric (C, I, J, K) array.")
        request = RunRequest(model, options, volume.affine)
        return self._start(lambda run: self._run(run, array, request))

    def inspect(self, model: ModelSpec) -> QueueJob:
        """The ``ModelInfo`` of a server model (the server loads it: it stays warm)."""
        return self._start(lambda run: self._inspect(model))

    def close(self) -> None:
        """Cancel this runner's running jobs (the server frees them); later submits fail."""
        self._closed = True
        for run in list(self._runs):
            run.job.cancel()

    def __enter__(self) -> "RemoteRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- jobs
    def _start(self, work: Any) -> QueueJob:
        if self._closed:
            raise RemoteError("The remote runner is closed", "Create a new RemoteRunner.", reason="closed")
        job = QueueJob("remote", self._on_cancel, section="server")
        job.info.url = self.url
        run = RemoteRun(self, job)

        def tracked(_job: QueueJob) -> Any:
            try:
                return work(run)
            finally:
                with self._lock:
                    if run in self._runs:
                        self._runs.remove(run)

        with self._lock:
            self._runs.append(run)
        return job.start_thread(tracked, f"unetseg-{job.id}")

    def _on_cancel(self, job: QueueJob) -> None:
        """(the caller's thread) Cancel on the server in the background: the GUI never waits on the network."""
        with self._lock:
            runs = [r for r in self._runs if r.job is job]
        for run in runs:
            threading.Thread(target=run.cancel_on_server, name=f"unetseg-cancel-{job.id}", daemon=True).start()

    def delete(self, server_id: str, timeout: float, doing: str) -> Response:
        """``DELETE`` a job on the server (cancel it, or free its result)."""
        return Http(self.endpoint, self.counters, timeout).request("DELETE", f"{API}/jobs/{server_id}", doing=doing)

    def _inspect(self, model: ModelSpec) -> ModelInfo:
        if model.name is not None:
            data = self._get(f"/models/{quote(model.name, safe='')}", f"reading model {model.name}")
            return ModelInfo.from_dict(data["info"])
        fields, arrays = self._upload(model)
        http = Http(self.endpoint, Counters(self.counters), self.timeout_s + 120.0)
        response = http.request("POST", API + "/models/inspect", wire.encode(fields, arrays), doing="sending a model")
        if response.status != 200:
            raise response_error(self.url, response, "reading the uploaded model")
        return ModelInfo.from_dict(response.json()["info"])

    def _run(self, run: RemoteRun, array: np.ndarray, request: RunRequest):
        info = self.server_info()
        if array.nbytes > int(info["max_volume_bytes"]):
            raise RemoteError(
                f"The volume ({array.nbytes / 2**20:.0f} MB) is over the server's limit of "
                f"{int(info['max_volume_bytes']) / 2**20:.0f} MB",
                "Crop or downsample it, or ask the server's administrator for a larger --max-volume-mb.",
                reason="too_large",
            )
        fields = request.to_wire(with_model=request.model.name is not None)
        arrays: Dict[str, np.ndarray] = {"volume": array}
        if request.model.name is None:
            upload_fields, upload_arrays = self._upload(request.model)
            fields.update(upload_fields)
            arrays.update(upload_arrays)
        http = Http(self.endpoint, Counters(self.counters), self.timeout_s)
        instance = run.send(http, fields, arrays, int(info["max_request_bytes"]))
        return run.follow(http, instance, tuple(int(s) for s in array.shape[1:]))

    def _upload(self, model: ModelSpec):
        """The fields and arrays that carry a local model file to a server started with ``--allow-upload``."""
        info = self.server_info()
        if not info.get("allow_upload"):
            names = ", ".join(m["name"] for m in self.models()) or "none"
            raise RemoteError(
                f"The server at {self.url} runs only its own models; it does not accept model files",
                f"Pick one of its models by name ({names}), or ask its administrator for --allow-upload.",
                reason="refused",
            )
        if model.trust_bundle:
            raise RemoteError(
                "A server loads uploaded models untrusted: it never runs a bundle's code",
                "Turn off 'trust bundle', or run the model on this computer.",
                reason="refused",
            )
        path = model.path
        if os.path.isdir(path):
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
                for root, _dirs, files in os.walk(path):
                    for name in sorted(files):
                        full = os.path.join(root, name)
                        zf.write(full, os.path.relpath(full, os.path.dirname(path)))
            data, suffix = buffer.getvalue(), ".zip"
        elif os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            ext = os.path.splitext(path)[1].lower()
            suffix = ext if ext in MODEL_SUFFIXES else ".pt"
        else:
            raise ModelError(f"Model not found: {path}", "Give a checkpoint, TorchScript file or bundle.")
        arrays = {"model": np.frombuffer(data, dtype=np.uint8)}
        sidecar = model.network_config or os.path.splitext(path)[0] + ".json"
        if os.path.isfile(sidecar) and not os.path.isdir(path):
            with open(sidecar, "rb") as f:
                arrays["sidecar"] = np.frombuffer(f.read(), dtype=np.uint8)
        return {"upload": {"suffix": suffix, "strides": model.strides}}, arrays

    # ---------------------------------------------------------------- errors
    def reconnect(self, job: QueueJob, instance: str, cause: RemoteError) -> None:
        """After a failure mid-job: wait up to ``reconnect_s`` for the server; the same instance → go on; another
        instance → it restarted and the job is lost; none → the connection is lost."""
        deadline = time.monotonic() + self.reconnect_s
        job.put(Log(f"connection to the server lost ({cause.reason}); trying again"))
        while True:
            if job.cancel_requested.is_set():
                raise CancelledError("cancelled (the server could not be reached to confirm)")
            try:
                alive = self.health(timeout=min(5.0, max(0.5, self.reconnect_s)))
            except UserError:
                if wait_until(deadline):
                    continue
                raise RemoteError(
                    f"Lost the connection to the server at {self.url} during the run: {cause.message}",
                    "Nothing was written. Check that the server still runs and the network, then run again.",
                    reason="connection",
                ) from None
            if alive.get("instance") != instance:
                raise RemoteError(
                    f"The server at {self.url} restarted during the run: the job was lost",
                    "Nothing was written. Run again.",
                    reason="restarted",
                )
            return
