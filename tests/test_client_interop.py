"""`PolicyClient` against small fake NVIDIA policy servers written from spec §9.1, one per behaviour: the N1.6
era (np.save arrays), the current era (msgpack-numpy arrays), the simulation wrapper (flat keys), the API
token; and `svms eval open-loop --server` with `--wire`, `--sim-wrapper` and `--api-token`.

A fake decodes only its own era's arrays (the other era's array maps stay dicts, as they would there) and
refuses requests with the messages NVIDIA's servers give.
"""

from __future__ import annotations

import importlib.util
import io
import json
import socket
import threading
from dataclasses import dataclass, field

import msgpack
import numpy as np
import pytest
import zmq

from svms.serve import PolicyClient, PolicyServerError

LANGUAGE = "annotation.human.action.task_description"
CAMERAS = ("res256_image_side_0",)
STATE = {"end_effector_position_relative": 3, "end_effector_rotation_relative": 4}
ACTION = {"end_effector_position": 3, "gripper_close": 1}
HORIZON = 16
TOKEN = "t0ken"


def default_config() -> dict:
    return {"video": {"delta_indices": [0], "modality_keys": list(CAMERAS)},
            "state": {"delta_indices": [0], "modality_keys": list(STATE)},
            "action": {"delta_indices": list(range(HORIZON)), "modality_keys": list(ACTION)},
            "language": {"delta_indices": [0], "modality_keys": [LANGUAGE]}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the fake servers -------------------------------------------------------------------------------------
@dataclass
class FakeServer:
    """A REP socket in a thread answering as an NVIDIA policy server of `era` (`n1d6` or `current`) would."""

    era: str
    sim_wrapper: bool = False
    api_token: str | None = None
    config: dict = field(default_factory=default_config)
    widths: dict = field(default_factory=lambda: dict(ACTION))
    requests: list = field(default_factory=list)  # (endpoint, array forms seen, observation keys, token)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.stop = threading.Event()
        self.sock = zmq.Context.instance().socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://127.0.0.1:{self.port}")
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()

    def _loop(self) -> None:
        for _ in range(10_000):  # bounded; ends when the test closes the server
            if self.stop.is_set():
                return
            if self.sock.poll(50):
                self.sock.send(self._pack(self._answer(self.sock.recv())))

    # ---- the era's wire ----
    def _pack(self, obj) -> bytes:
        def default(a):
            if self.era == "n1d6":
                buf = io.BytesIO()
                np.save(buf, a)
                return {"__ndarray_class__": True, "as_npy": buf.getvalue()}
            return {b"nd": True, b"type": a.dtype.str, b"kind": b"", b"shape": list(a.shape), b"data": a.tobytes()}
        return msgpack.packb(obj, default=default, use_bin_type=True)

    def _unpack(self, payload: bytes, seen: list):
        def hook(d):
            if d.get("__ndarray_class__"):
                seen.append("npsave")
                if self.era == "n1d6":
                    return np.load(io.BytesIO(d["as_npy"]))
            elif d.get(b"nd") is True or d.get("nd") is True:
                seen.append("msgpack-numpy")
                if self.era == "current":
                    g = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
                    return np.frombuffer(g["data"], np.dtype(g["type"])).reshape(g["shape"])
            return d  # the other era's array map: left as a dict, as the other era's server leaves it
        return msgpack.unpackb(payload, raw=False, object_hook=hook)

    def _modality(self):
        if self.era == "n1d6":
            return {m: {"__ModalityConfig_class__": True, "as_json": c} for m, c in self.config.items()}
        return {m: {"__ModalityConfig__": True, "as_json": json.dumps(c)} for m, c in self.config.items()}

    # ---- the server's behaviour ----
    def _answer(self, payload: bytes):
        seen: list[str] = []
        request = self._unpack(payload, seen)
        endpoint = request.get("endpoint", "get_action")
        observation = (request.get("data") or {}).get("observation") or {}
        self.requests.append((endpoint, seen, sorted(observation), request.get("api_token")))
        if self.api_token is not None and request.get("api_token") != self.api_token:
            return {"error": "Unauthorized: invalid API token"}
        if endpoint == "ping":
            return {"status": "ok", "message": "Server is running"}
        if endpoint == "reset":
            return {}
        if endpoint == "get_modality_config":
            return self._modality()
        try:
            batch = self._check(observation)
        except ValueError as err:
            return {"error": str(err)}
        action = {k: np.full((batch, HORIZON, d), 0.25, np.float32) for k, d in self.widths.items()}
        if self.sim_wrapper:
            action = {f"action.{k}": v for k, v in action.items()}
        return [action, {}]

    def _check(self, observation) -> int:
        """Batch size of a valid observation; ValueError with NVIDIA's wording otherwise."""
        batch = None
        for modality in ("video", "state"):
            for key in self.config[modality]["modality_keys"]:
                name = f"{modality}.{key}" if self.sim_wrapper else key
                where = observation if self.sim_wrapper else observation.get(modality, {})
                if name not in where:
                    raise ValueError(f"{modality.capitalize()} key '{name}' must be in observation")
                value = where[name]
                if not isinstance(value, np.ndarray):
                    raise ValueError(f"{modality.capitalize()} key '{name}' must be a numpy array. Got {type(value)}")
                batch = value.shape[0]
        language = self.config["language"]["modality_keys"][0]
        texts = observation.get(language) if self.sim_wrapper else observation.get("language", {}).get(language)
        if self.sim_wrapper and not (isinstance(texts, list | tuple) and all(isinstance(t, str) for t in texts)):
            raise ValueError(f"Language key '{language}' must be a list of strings")
        if not self.sim_wrapper and not (isinstance(texts, list) and all(isinstance(t, list) for t in texts)):
            raise ValueError(f"Language key '{language}' must be a list of lists of strings")
        return batch


@pytest.fixture
def fake():
    servers = []

    def start(era: str, **kwargs) -> FakeServer:
        servers.append(FakeServer(era, **kwargs))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def nested_observation(batch: int = 2) -> dict:
    rng = np.random.default_rng(0)
    return {"video": {k: rng.integers(0, 256, (batch, 1, 8, 8, 3), dtype=np.uint8) for k in CAMERAS},
            "state": {k: rng.uniform(-1, 1, (batch, 1, d)).astype(np.float32) for k, d in STATE.items()},
            "language": {LANGUAGE: [["pick the cup"]] * batch}}


def check_action(action: dict, batch: int = 2) -> None:
    assert list(action) == list(ACTION)
    for k, d in ACTION.items():
        assert action[k].shape == (batch, HORIZON, d) and np.all(action[k] == 0.25), k


def forms(server: FakeServer, endpoint: str = "get_action") -> list[list[str]]:
    return [seen for e, seen, _, _ in server.requests if e == endpoint]


# ---- one behaviour per test ---------------------------------------------------------------------------------
def test_n1d6_era_server(fake):
    server = fake("n1d6")
    with PolicyClient(port=server.port, timeout_s=5) as client:
        assert client.get_modality_config().action.modality_keys == tuple(ACTION)
        assert client.wire.form == "npsave" and client.settled  # its __ModalityConfig_class__ markers
        check_action(client.get_action(nested_observation())[0])
    assert set(forms(server)[0]) == {"npsave"} and len(forms(server)) == 1  # no refusal, no retry
    with PolicyClient(port=server.port, timeout_s=5, wire="msgpack-numpy") as fixed:
        with pytest.raises(PolicyServerError, match=r"must be a numpy array.*--wire auto"):
            fixed.get_action(nested_observation())
    assert len(forms(server)) == 2  # a fixed wire is not retried


def test_current_era_server_and_the_retry_in_the_other_form(fake):
    server = fake("current")
    with PolicyClient(port=server.port, timeout_s=5) as client:
        assert client.get_modality_config().state.modality_keys == tuple(STATE)  # JSON-string as_json
        assert client.wire.form == "msgpack-numpy"  # settled by the __ModalityConfig__ markers
        check_action(client.get_action(nested_observation())[0])
    assert [set(f) for f in forms(server)] == [{"msgpack-numpy"}]
    with PolicyClient(port=server.port, timeout_s=5) as fresh:  # first exchange is get_action: nothing settled
        check_action(fresh.get_action(nested_observation())[0])
        assert [set(f) for f in forms(server)[1:]] == [{"npsave"}, {"msgpack-numpy"}]  # refused, retried once
        check_action(fresh.get_action(nested_observation())[0])
        assert [set(f) for f in forms(server)[3:]] == [{"msgpack-numpy"}]  # settled: straight in its form
    with PolicyClient(port=server.port, timeout_s=5, wire="npsave") as fixed:
        with pytest.raises(PolicyServerError, match=r"Video key 'res256_image_side_0' must be a numpy array"):
            fixed.get_action(nested_observation())


def test_sim_wrapper_server(fake):
    server = fake("current", sim_wrapper=True)
    with PolicyClient(port=server.port, timeout_s=5) as nested:
        with pytest.raises(PolicyServerError, match=r"'video.res256_image_side_0' must be in obs.*--sim-wrapper"):
            nested.get_action(nested_observation())
    with PolicyClient(port=server.port, timeout_s=5, sim_wrapper=True) as client:
        action, info = client.get_action(nested_observation())  # the caller keeps the nested form
        check_action(action)
        assert info == {}
    flat_keys = server.requests[-1][2]
    assert flat_keys == sorted([f"video.{k}" for k in CAMERAS] + [f"state.{k}" for k in STATE] + [LANGUAGE])


def test_api_token(fake):
    server = fake("n1d6", api_token=TOKEN)
    with PolicyClient(port=server.port, timeout_s=5) as anonymous:
        with pytest.raises(PolicyServerError, match=r"Unauthorized.*--api-token"):
            anonymous.get_modality_config()
    with PolicyClient(port=server.port, timeout_s=5, api_token=TOKEN) as client:
        assert client.ping()
        check_action(client.get_action(nested_observation())[0])
    assert [token for *_, token in server.requests] == [None, TOKEN, TOKEN]


def test_both_forms_refused_is_one_error_naming_both(fake):
    server = fake("current")
    server.config["video"]["modality_keys"] = ["res256_image_wrist_0"]  # a camera the client does not send
    with PolicyClient(port=server.port, timeout_s=5) as client:
        with pytest.raises(PolicyServerError, match="must be in observation"):
            client.get_action(nested_observation())  # refused, but not for its array form: no retry
        assert len(forms(server)) == 1
        server.config["video"]["modality_keys"] = list(CAMERAS)
        server.era = "neither"  # now it reads no array form at all
        with pytest.raises(PolicyServerError, match=r"in both array forms.*npsave.*msgpack-numpy"):
            client.get_action(nested_observation())


def test_open_loop_cli_reaches_a_current_sim_wrapper_server_with_a_token(fake, tmp_path):
    from svms.cli import main
    from svms.data.lerobot import Gr00tLeRobotDataset, write_synthetic_dataset

    root = tmp_path / "data"
    write_synthetic_dataset(root, lengths=(20, 20), cameras=("cam0",))
    config = Gr00tLeRobotDataset(root).config
    server = fake("current", sim_wrapper=True, api_token=TOKEN,
                  config={m: getattr(config, m).to_dict() for m in ("video", "state", "action", "language")},
                  widths={"arm": 3, "gripper": 1})
    args = ["eval", "open-loop", "--server", f"127.0.0.1:{server.port}", "--dataset", str(root), "--split", "all",
            "--wire", "msgpack-numpy", "--sim-wrapper", "--api-token", TOKEN, "--plots", "0"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["overall"]["mse"] > 0
    gets = [r for r in server.requests if r[0] == "get_action"]
    assert gets and all(set(seen) == {"msgpack-numpy"} and token == TOKEN and "video.cam0" in keys
                        for _, seen, keys, token in gets)


@pytest.mark.skipif(importlib.util.find_spec("robosuite") is None, reason="robosuite not installed (extra `sim`)")
def test_sim_rollout_cli_reaches_an_n1d6_sim_wrapper_server_with_a_token(fake, tmp_path):
    from svms.cli import main
    from svms.sim.layout import ACTION_KEYS, STATE_KEYS

    camera = "res256_image_wrist_0"
    server = fake("n1d6", sim_wrapper=True, api_token=TOKEN, widths=dict(ACTION_KEYS), config={
        **default_config(), "video": {"delta_indices": [0], "modality_keys": [camera]},
        "state": {"delta_indices": [0], "modality_keys": list(STATE_KEYS)},
        "action": {"delta_indices": list(range(HORIZON)), "modality_keys": list(ACTION_KEYS)}})
    args = ["sim", "rollout", "--server", f"127.0.0.1:{server.port}", "--tasks", "Lift", "--episodes", "1",
            "--resolution", "32", "--cameras", camera, "--wire", "npsave", "--sim-wrapper", "--api-token", TOKEN]
    assert main(args) == 0
    gets = [r for r in server.requests if r[0] == "get_action"]
    assert len(gets) > 1 and all(set(seen) == {"npsave"} and token == TOKEN and f"video.{camera}" in keys
                                 for _, seen, keys, token in gets)
