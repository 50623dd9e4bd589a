"""SIGTERM ends the server within 10 s even while a network that never returns holds a thread — during a model
listing (a request thread) and during a job (the executor) — and its spool folder is gone (issue #20)."""

import signal
import threading
import time

import pytest
import torch

from remote_fixtures import Server, ct_volume
from UNetSigmoidSegLib.contract import ModelSpec, SegmentOptions


class Forever(torch.nn.Module):
    """A network in the server's own folder (its admin's model) whose forward never returns."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        i = 0
        while i >= 0:
            i = i + 1
            if i > 1000000000:
                i = 0
        return y


@pytest.mark.parametrize("where", ["listing", "job"])
def test_sigterm_ends_a_server_held_by_a_network_that_never_returns(tmp_path, where):
    models = tmp_path / "models"
    models.mkdir()
    torch.jit.save(torch.jit.script(Forever()), str(models / "forever.pt"))
    srv = Server(models, tmp_path / "server")
    try:
        runner = srv.runner()
        if where == "listing":
            threading.Thread(target=lambda: _ignore(runner.models), daemon=True).start()
        else:
            runner.submit(ct_volume(), ModelSpec(name="forever"), SegmentOptions(device="cpu"))
        time.sleep(3.0)  # the load (and its probe window) is under way and will never end
        spool = srv.temp_dir()
        t0 = time.perf_counter()
        srv.popen.send_signal(signal.SIGTERM)
        srv.popen.wait(30)
        took = time.perf_counter() - t0
        assert took <= 10.0, f"the server took {took:.1f} s to end after SIGTERM"
        assert srv.popen.returncode == 143  # 128 + SIGTERM, as the CLI ends on a signal
        assert not spool.exists(), "the spool folder must be removed"
    finally:
        srv.stop()


def _ignore(call):
    try:
        call()
    except Exception:  # noqa: BLE001 - the request dies with the server
        pass
