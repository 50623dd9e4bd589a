"""The panel's *Run on* choice over fake Qt widgets, a real slicer-core scene and a real server on 127.0.0.1:
settings remembered in Slicer's settings (never in the scene), the server's models and device shown, a run and
live threshold with no network traffic, no torch install asked for, and back to this computer; a server with mutual
TLS reached with the server's CA and this client's certificate and key from the panel."""

import os
import sys
import time

import pytest
from test_panel import assert_clean, run_until

import fakeslicer
from conftest import REPO
from UNetSigmoidSegLib import runners
from UNetSigmoidSegLib.widget import dependencies
from widget_fixtures import slicer_app_fixture  # noqa: F401 - fixture

sys.path.insert(0, str(REPO / "Testing" / "remote"))
from mrml_helpers import add_volume  # noqa: E402 - on sys.path through widget_fixtures
from remote_fixtures import (  # noqa: E402
    Server,
    ct_volume,
    make_models,
    make_pki,
    models_dir_fixture,  # noqa: F401 - fixture
    server_fixture,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="servers are stopped with POSIX signals")


def open_panel(slicer_app):
    """The module widget set up as Slicer does (``fakeslicer.SETTINGS`` kept: a new session of the same user)."""
    module, scene = slicer_app
    host = module.UNetSigmoidSegWidget(fakeslicer.module_panel())
    host.setup()
    return module, scene, host.panel


@pytest.fixture
def nothing_installed(monkeypatch):
    """This computer has no torch / MONAI for Slicer: running on a server must not need them."""
    report = dependencies.check(["monai>=1.3"], version_of=lambda name: None)
    monkeypatch.setattr(dependencies, "requirements_report", lambda path: report)
    monkeypatch.setattr(dependencies, "slicer_confirm", lambda text, details: pytest.fail("asked to install"))
    monkeypatch.setattr(dependencies, "pick_python", lambda which=None: None)


def connect(widget, server):
    ui = widget.ui
    ui.runOnComboBox.currentText = "Server"
    assert ui.serverUrlLineEdit.visible and not ui.modelPathLineEdit.visible
    assert not ui.segmentButton.enabled and "URL" in ui.segmentButton.toolTip
    ui.serverUrlLineEdit.text = server.url
    ui.serverUrlLineEdit.emit("editingFinished()")
    ui.serverTokenLineEdit.text = server.token
    ui.serverTokenLineEdit.emit("editingFinished()")
    ui.serverConnectButton.click()
    run_until(widget, lambda: ui.serverModelComboBox.items, timeout_s=60)


def test_run_on_a_server_without_local_torch_and_settings_stay_out_of_the_scene(
    slicer_app, nothing_installed, server, tmp_path
):
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    assert ui.runOnComboBox.items == ["This computer", "Server"] and all(ui.runOnComboBox.tips.values())
    assert widget.logic is None and not ui.serverUrlLineEdit.visible  # this computer: torch missing
    node = add_volume(scene, ct_volume().array[0])
    ui.inputSelector.setCurrentNode(node)
    connect(widget, server)
    assert ui.serverModelComboBox.items == ["BrainT1UNet", "tiny", "tiny2"]
    assert all(ui.serverModelComboBox.tips.values())
    assert ui.serverStatusLabel.text == f"Connected to {server.url}: 3 models, runs on cpu."
    assert ui.deviceInfoLabel.text.endswith(
        "on the server (no CUDA in its torch " + __import__("torch").__version__ + ")"
    )
    assert "server Python" in ui.dependenciesLabel.text and not ui.installDependenciesButton.visible
    ui.serverModelComboBox.currentText = "tiny"
    assert ui.modelSummaryLabel.text.startswith("checkpoint: UNet(channels=[4, 8, 16]")
    ui.roiSizeLineEdit.text = "32,32,16"
    ui.deviceComboBox.currentText = "cpu"
    ui.roiSizeLineEdit.emit("editingFinished()")
    assert ui.segmentButton.enabled and "on the server" in ui.segmentButton.toolTip
    ui.segmentButton.click()
    assert widget.handle is not None and not ui.runOnComboBox.enabled  # no switching mid-run
    run_until(widget, lambda: widget.handle is None, timeout_s=300)
    assert_clean()
    seg = ui.outputSelector.currentNode()
    assert seg is not None and widget.logic.statistics(seg)[0]["segment"] == "body"
    assert "with tiny on " + server.url in ui.logTextEdit.plainText
    runner = widget.logic.runner
    assert runner.__class__.__name__ == "RemoteRunner"
    requests = runner.counters.requests
    before = widget.logic.statistics(seg)[0]["voxels"]
    ui.thresholdSlider.value = 0.2
    widget.thresholdTimer.fire()
    assert widget.logic.statistics(seg)[0]["voxels"] != before
    assert runner.counters.requests == requests  # the slider never talks to the server
    # Slicer's settings hold the choice, URL and token; the scene file does not
    assert fakeslicer.SETTINGS["UNetSigmoidSeg/ServerToken"] == server.token
    assert fakeslicer.SETTINGS["UNetSigmoidSeg/ServerURL"] == server.url
    assert fakeslicer.SETTINGS["UNetSigmoidSeg/ServerModel"] == "tiny"
    scene_file = tmp_path / "scene.mrml"
    scene.SetURL(str(scene_file))
    assert scene.Commit()
    saved = scene_file.read_text()
    assert server.token not in saved and server.url not in saved and "ServerToken" not in saved
    widget.cleanup()
    # a new session (Slicer restarted): the choice comes back from the settings and connects by itself
    module, scene, again = open_panel(slicer_app)
    assert again.ui.runOnComboBox.currentText == "Server" and again.ui.serverUrlLineEdit.text == server.url
    run_until(again, lambda: again.ui.serverModelComboBox.items, timeout_s=60)
    assert (
        again.ui.serverModelComboBox.currentText == "tiny" and again.logic.runner.__class__.__name__ == "RemoteRunner"
    )
    again.cleanup()
    assert_clean()


def test_wrong_token_and_back_to_this_computer(slicer_app, server, monkeypatch):
    monkeypatch.setattr(dependencies, "pick_python", lambda which=None: None)  # this computer: in-process
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    ui.inputSelector.setCurrentNode(add_volume(scene, ct_volume().array[0]))
    ui.runOnComboBox.currentText = "Server"
    ui.serverUrlLineEdit.text = server.url
    ui.serverTokenLineEdit.text = "not-the-token"
    ui.serverConnectButton.click()
    deadline = time.time() + 60
    while not ui.serverStatusLabel.text.startswith("Not connected"):
        assert time.time() < deadline, ui.serverStatusLabel.text
        if widget.pollTimer.active:
            widget.pollTimer.fire()
        time.sleep(0.05)
    assert "refused the token" in ui.serverStatusLabel.text
    assert not ui.segmentButton.enabled and "refused the token" in ui.segmentButton.toolTip
    ui.runOnComboBox.currentText = "This computer"
    assert widget.logic.runner.__class__.__name__ == "InProcessRunner" and ui.modelPathLineEdit.visible
    assert not ui.serverUrlLabel.visible and ui.serverStatusLabel.text == ""
    assert fakeslicer.SETTINGS["UNetSigmoidSeg/RunOn"] == "This computer"
    ui.serverTokenLineEdit.text = server.token  # fixed, and back to the server: a fresh connection
    ui.runOnComboBox.currentText = "Server"
    run_until(widget, lambda: ui.serverModelComboBox.items, timeout_s=60)
    assert widget.logic.runner.__class__.__name__ == "RemoteRunner" and not widget.logic.runner.closed
    assert ui.serverStatusLabel.text.startswith("Connected to")
    widget.cleanup()
    assert_clean()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_server(pki, tmp_path_factory):
    """A server that lets in only clients with a certificate its CA signed (``serve --client-ca``)."""
    cert, key = pki["server"]
    tls = ("--certfile", str(cert), "--keyfile", str(key), "--client-ca", str(pki["ca"][0]))
    srv = Server(make_models(tmp_path_factory.mktemp("models")), tmp_path_factory.mktemp("mtls"), *tls)
    srv.client_options.update(cafile=str(pki["ca"][0]), client_cert=str(pki["alice"][0]))
    srv.client_options["client_key"] = str(pki["alice"][1])
    srv.wait_ready()
    yield srv
    srv.stop()


def test_a_server_with_mutual_tls_from_the_panel_files(slicer_app, nothing_installed, mtls_server, pki, monkeypatch):
    made = []
    real_make_runner = runners.make_runner
    monkeypatch.setattr(runners, "make_runner", lambda **kwargs: made.append(kwargs) or real_make_runner(**kwargs))
    module, scene, widget = open_panel(slicer_app)
    ui = widget.ui
    assert not ui.serverCaPathLineEdit.visible and not ui.clientKeyLabel.visible  # this computer
    ui.inputSelector.setCurrentNode(add_volume(scene, ct_volume().array[0]))
    ui.runOnComboBox.currentText = "Server"
    assert ui.serverCaPathLineEdit.visible and ui.clientCertPathLineEdit.visible and ui.clientKeyLabel.visible
    ui.serverUrlLineEdit.text = mtls_server.url
    ui.serverUrlLineEdit.emit("editingFinished()")
    ui.serverTokenLineEdit.text = mtls_server.token
    ui.serverTokenLineEdit.emit("editingFinished()")
    ca = str(pki["ca"][0])
    cert, key = (str(p) for p in pki["alice"])
    ui.serverCaPathLineEdit.currentPath = ca
    ui.clientKeyPathLineEdit.currentPath = key  # half of the client's pair
    assert ui.serverStatusLabel.text.startswith("Give the client certificate of the client key too")
    assert not ui.segmentButton.enabled and "client certificate" in ui.segmentButton.toolTip
    ui.serverConnectButton.click()
    assert widget.runOn.remote is None and not made and len(fakeslicer.DIALOGS) == 1
    assert "Give the client certificate of the client key too" in fakeslicer.DIALOGS.pop()
    ui.clientCertPathLineEdit.currentPath = cert + ".missing"
    assert ui.serverStatusLabel.text == f"The client certificate file {cert}.missing does not exist."
    ui.clientCertPathLineEdit.currentPath = cert
    assert ui.serverStatusLabel.text == "Press Connect."
    ui.serverConnectButton.click()
    run_until(widget, lambda: ui.serverModelComboBox.items, timeout_s=60)
    assert made == [dict(server=mtls_server.url, token=mtls_server.token, cafile=ca, client_cert=cert, client_key=key)]
    assert ui.serverStatusLabel.text.startswith(f"Connected to {mtls_server.url}: ")
    assert widget.runOn.remote.endpoint.client_cert == cert
    assert fakeslicer.SETTINGS["UNetSigmoidSeg/ServerCA"] == ca
    assert fakeslicer.SETTINGS["UNetSigmoidSeg/ClientCertificate"] == cert
    assert fakeslicer.SETTINGS["UNetSigmoidSeg/ClientKey"] == key
    # another CA file: disconnected, like another URL or token
    ui.serverCaPathLineEdit.currentPath = str(pki["other"][0])
    assert widget.runOn.remote is None and ui.serverModelComboBox.items == []
    assert ui.serverStatusLabel.text == "Press Connect." and not ui.segmentButton.enabled
    ui.serverCaPathLineEdit.currentPath = ca
    assert widget.runOn.remote is None and len(made) == 1  # only Connect connects again
    widget.cleanup()
    # a new session: the files come back from the settings and it connects by itself
    module, scene, again = open_panel(slicer_app)
    assert again.ui.serverCaPathLineEdit.currentPath == ca and again.ui.clientKeyPathLineEdit.currentPath == key
    assert again.ui.clientCertPathLineEdit.currentPath == cert
    run_until(again, lambda: again.ui.serverModelComboBox.items, timeout_s=60)
    assert made[-1]["client_cert"] == cert and again.ui.serverStatusLabel.text.startswith("Connected to")
    # clearing the key (CTK's validator rejects "": validInputChanged only) is a change too
    again.ui.clientKeyPathLineEdit.currentPath = ""
    assert again.runOn.remote is None and fakeslicer.SETTINGS["UNetSigmoidSeg/ClientKey"] == ""
    assert again.ui.serverStatusLabel.text.startswith("Give the client key too")
    again.cleanup()
    assert_clean()
