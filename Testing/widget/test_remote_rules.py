"""The panel's Run-on rules without Qt: settings round trip, what the status line and the Segment button say,
the server's models for the model list, and the versions / device lines for a server."""

from UNetSigmoidSegLib.contract import ModelInfo
from UNetSigmoidSegLib.widget import dependencies, remote_rules, rules

DESCRIBED = {
    "runner": "remote",
    "url": "https://gpu:8765",
    "python": "3.11.7",
    "torch": "2.13.0+cu126",
    "monai": "1.6.1",
    "cuda": True,
    "cuda_devices": 1,
    "gpus": ["NVIDIA H100"],
    "device": "cuda",
    "models": [
        {
            "name": "brain",
            "summary": "bundle: UNet, 1→1 channels, activation sigmoid (bundle postprocessing), labels: brain",
            "info": ModelInfo("brain", "bundle", "UNet", 1, 1, "sigmoid", "bundle", 0.4, ["brain"]).to_dict(),
        },
        {"name": "broken", "error": "The checkpoint is not a readable PyTorch checkpoint"},
    ],
}


def test_settings_round_trip_through_a_settings_store():
    store = {}
    settings = remote_rules.load(store.get)
    assert settings == remote_rules.RemoteSettings() and not settings.server
    settings = remote_rules.RemoteSettings(remote_rules.SERVER, "https://gpu:8765", "tok", "brain", "/ca.pem")
    settings.client_cert, settings.client_key = "/me.pem", "/me.key"
    remote_rules.save(settings, store.__setitem__)
    assert set(store) == set(remote_rules.KEYS.values()) and all(k.startswith("UNetSigmoidSeg/") for k in store)
    assert remote_rules.load(store.get) == settings and remote_rules.load(store.get).server
    assert store["UNetSigmoidSeg/ServerCA"] == "/ca.pem" and store["UNetSigmoidSeg/ClientKey"] == "/me.key"
    assert settings.tls_options() == {"cafile": "/ca.pem", "client_cert": "/me.pem", "client_key": "/me.key"}
    assert remote_rules.RemoteSettings().tls_options() == {"cafile": None, "client_cert": None, "client_key": None}
    store["UNetSigmoidSeg/RunOn"] = "Mars"
    assert remote_rules.load(store.get).run_on == remote_rules.LOCAL  # an unknown choice falls back to here


def test_connection_problems_say_what_to_fill_in():
    s = remote_rules.RemoteSettings(remote_rules.SERVER)
    assert "URL" in remote_rules.connection_problem(s)
    s.url = "https://gpu:8765"
    assert "token" in remote_rules.connection_problem(s)
    s.token = "t"
    assert remote_rules.connection_problem(s) == ""
    s.url = "http://gpu:8765"
    assert "unencrypted" in remote_rules.connection_problem(s)
    s.url = "http://127.0.0.1:8765"  # an SSH tunnel
    assert remote_rules.connection_problem(s) == ""


def test_tls_files_missing_or_half_a_client_pair_are_problems(tmp_path):
    s = remote_rules.RemoteSettings(remote_rules.SERVER, "https://gpu:8765", "t")
    s.cafile = str(tmp_path / "ca.pem")
    problem = remote_rules.connection_problem(s)
    assert problem == f"The server certificate (CA) file {s.cafile} does not exist."
    (tmp_path / "ca.pem").write_text("not a certificate")
    assert remote_rules.connection_problem(s).startswith(f"Cannot use the server certificate (CA) {s.cafile}: ")
    s.cafile = ""
    s.client_key = str(tmp_path / "me.key")
    assert remote_rules.connection_problem(s) == f"The client key file {s.client_key} does not exist."
    (tmp_path / "me.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    assert "Give the client certificate of the client key too" in remote_rules.connection_problem(s)
    s.client_key, s.client_cert = "", str(tmp_path / "me.pem")
    (tmp_path / "me.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert remote_rules.connection_problem(s).startswith("Give the client key too")
    assert remote_rules.status_text(s, None, None, False).startswith("Give the client key too")
    assert remote_rules.server_problem(s, None, None).startswith("Give the client key too")
    s.client_key = str(tmp_path / "me.key")  # both, but not PEM: the runner's own check says so
    assert remote_rules.connection_problem(s).startswith(f"Cannot use the client certificate {s.client_cert}")
    s.url = "http://127.0.0.1:8765"
    assert "over https only" in remote_rules.connection_problem(s)


def test_status_line_and_segment_button_follow_the_connection():
    s = remote_rules.RemoteSettings(remote_rules.SERVER, "https://gpu:8765", "t", "brain")
    assert remote_rules.status_text(s, None, None, True) == "Connecting to https://gpu:8765…"
    assert remote_rules.server_problem(s, None, None) == "Connecting to the server…"
    assert remote_rules.status_text(s, None, "refused the token", False) == "Not connected: refused the token"
    text = remote_rules.status_text(s, DESCRIBED, None, False)
    assert text == "Connected to https://gpu:8765: 2 models, runs on cuda (NVIDIA H100)."
    assert remote_rules.server_problem(s, DESCRIBED, None) == ""
    s.model = "broken"
    assert "cannot use model broken: The checkpoint is not" in remote_rules.server_problem(s, DESCRIBED, None)
    s.model = "gone"
    assert remote_rules.server_problem(s, DESCRIBED, None) == "The server has no model 'gone'"
    state = rules.PanelState(volume=True, server=True, server_problem="Connecting to the server…")
    assert rules.segment_button(state) == rules.ButtonState(False, "Segment", "Connecting to the server…")
    ok = rules.segment_button(rules.PanelState(volume=True, model_path="brain", model_exists=True, server=True))
    assert ok.enabled and "on the server" in ok.tooltip
    local = remote_rules.RemoteSettings()
    assert (
        remote_rules.status_text(local, None, None, False) == "" and remote_rules.server_problem(local, None, 1) == ""
    )


def test_server_models_fill_the_model_list_with_their_summary():
    items = remote_rules.model_items(DESCRIBED)
    assert items[0] == ("brain", DESCRIBED["models"][0]["summary"])
    assert items[1][0] == "broken" and items[1][1].startswith("Cannot be used: The checkpoint")
    info, why = remote_rules.model_choice(DESCRIBED, "brain")
    assert why == "" and info.labels == ["brain"] and info.threshold == 0.4
    assert rules.model_defaults(info, "auto")["threshold"] == 0.4  # a server model brings its defaults too


def test_versions_and_device_lines_describe_the_server():
    report = dependencies.check(["monai>=1.3"], version_of=lambda name: None)  # nothing installed here
    text = dependencies.versions_text(report, DESCRIBED)
    assert text == "torch 2.13.0+cu126 · MONAI 1.6.1 · CUDA: 1 GPU · server Python 3.11.7"
    assert dependencies.device_label("auto", DESCRIBED) == "→ CUDA (NVIDIA H100) on the server"
    cpu_server = dict(DESCRIBED, cuda=False, cuda_devices=0, gpus=[], device="cpu")
    assert "CUDA not available on the server" in dependencies.device_label("cuda", cpu_server)
    assert dependencies.device_label("auto", cpu_server) == "→ CPU on the server (no CUDA in its torch 2.13.0+cu126)"
    assert dependencies.versions_text(report, None).startswith("Missing: torch")  # locally, still said


def test_run_request_uses_the_server_model_name():
    from UNetSigmoidSegLib.mrml.parameters import Parameters

    params = Parameters()
    params.modelPath = "/local/model.pt"
    params.trustBundle = True
    spec, options, _prob = rules.run_request(params, "", server_model="brain")
    assert spec.name == "brain" and spec.path == "" and not spec.trust_bundle
    assert rules.run_request(params, "")[0].path == "/local/model.pt"
