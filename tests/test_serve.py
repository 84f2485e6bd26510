"""`svms serve`: a tiny checkpoint served in subprocesses, driven by a client written only from the protocol
(spec §9.1: raw zmq + msgpack, both array encodings) and by `PolicyClient`."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from svms.policy.wire import modality_marker
from svms.serve import (
    PolicyClient,
    PolicyServerError,
    PolicyServerTimeout,
    Wire,
    WireError,
    decode,
    encode,
    parse_address,
)
from svms.testing import make_tiny_checkpoint

TASK = "annotation.human.action.task_description"
CAMERAS = ("res256_image_side_0", "res256_image_side_1", "res256_image_wrist_0")
STATE = {"end_effector_position_relative": 3, "end_effector_rotation_relative": 4, "gripper_qpos": 2,
         "base_position": 3, "base_rotation": 4}  # the release's order (spec §6.11)
ACTION = {"end_effector_position": 3, "end_effector_rotation": 3, "gripper_close": 1, "base_motion": 4,
          "control_mode": 1}
TOKEN = "s3cret"


# ---- a client written from the spec alone (no project code) ---------------------------------------------
def pack_array(a: np.ndarray, form: str):
    if form == "npy":
        buf = io.BytesIO()
        np.save(buf, a)
        return {"__ndarray_class__": True, "as_npy": buf.getvalue()}
    keys = {"nd": True, "type": a.dtype.str, "kind": "", "shape": list(a.shape), "data": a.tobytes()}
    if form == "nd-bytes":  # as the msgpack-numpy library writes it
        return {k.encode(): (v.encode() if k == "kind" else v) for k, v in keys.items()}
    return keys


def pack(obj, form: str) -> bytes:
    return msgpack.packb(obj, default=lambda a: pack_array(a, form), use_bin_type=True)


def unpack(payload: bytes, seen: list[str]):
    def hook(d):
        if d.get("__ndarray_class__"):
            seen.append("npy")
            return np.load(io.BytesIO(d["as_npy"]))
        if d.get("nd", d.get(b"nd")) is True:
            seen.append("nd-bytes" if b"nd" in d else "nd-str")
            g = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
            return np.frombuffer(g["data"], dtype=np.dtype(g["type"])).reshape(g["shape"])
        if d.get("__ModalityConfig_class__") or d.get("__ModalityConfig__"):
            seen.append("config")
            return d["as_json"] if isinstance(d["as_json"], dict) else json.loads(d["as_json"])
        return d

    return msgpack.unpackb(payload, raw=False, object_hook=hook)


def raw_call(port: int, request, form: str = "npy", timeout_ms: int = 20000, raw: bytes | None = None):
    """One REQ/REP exchange; returns (reply, array forms seen in the reply)."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send(raw if raw is not None else pack(request, form))
        assert sock.poll(timeout_ms), "server did not answer"
        seen: list[str] = []
        return unpack(sock.recv(), seen), seen
    finally:
        sock.close()


def nested_observation(batch: int = 1, seed: int = 0, size: int = 64) -> dict:
    rng = np.random.default_rng(seed)
    return {"video": {k: rng.integers(0, 256, (batch, 1, size, size, 3), dtype=np.uint8) for k in CAMERAS},
            "state": {k: rng.uniform(-1, 1, (batch, 1, d)).astype(np.float32) for k, d in STATE.items()},
            "language": {TASK: [["pick the bowl from the counter"]] * batch}}


def flat_observation(batch: int = 1, seed: int = 0) -> dict:
    nested = nested_observation(batch, seed)
    return {**{f"video.{k}": v for k, v in nested["video"].items()},
            **{f"state.{k}": v for k, v in nested["state"].items()},
            TASK: ["pick the bowl from the counter"] * batch}


# ---- servers in subprocesses --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, checkpoint: Path, folder: Path, name: str, **flags) -> None:
        self.port = free_port()
        self.stderr_path = folder / f"{name}.stderr"
        self.log_path = folder / f"{name}.jsonl"
        args = ", ".join(f"{k}={v!r}" for k, v in {"port": self.port, "seed": 0, **flags}.items())
        code = ("import sys; from pathlib import Path; from svms.commands.serve import Serve; "
                f"sys.exit(Serve(Path({str(checkpoint)!r}), log_requests=Path({str(self.log_path)!r}), {args}).run())")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stderr=self.stderr_path.open("w"))

    def wait_ready(self, token: str | None = None) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.stderr_path.read_text()}")
            with PolicyClient(port=self.port, timeout_s=0.5, api_token=token) as c:
                if c.ping():
                    return
        raise AssertionError(f"server not ready:\n{self.stderr_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def checkpoints(folder) -> dict[str, Path]:
    return {"baseline": make_tiny_checkpoint(folder / "baseline"),
            "svms": make_tiny_checkpoint(folder / "svms", svms=True)}


@pytest.fixture(scope="module")
def servers(checkpoints, folder):
    """Three servers started together: nested, flat with a token, SVMS (ended by kill)."""
    out = {"nested": Served(checkpoints["baseline"], folder, "nested"),
           "flat": Served(checkpoints["baseline"], folder, "flat", sim_wrapper=True, api_token=TOKEN),
           "svms": Served(checkpoints["svms"], folder, "svms", wire="msgpack-numpy")}
    try:
        for name, s in out.items():
            s.wait_ready(TOKEN if name == "flat" else None)
        yield out
    finally:
        for s in out.values():
            s.stop()


def check_action(action: dict, batch: int, prefix: str = "") -> None:
    assert list(action) == [prefix + k for k in ACTION]
    for k, d in ACTION.items():
        a = action[prefix + k]
        assert a.shape == (batch, 16, d) and a.dtype == np.float32 and np.isfinite(a).all(), k


# ---- wire ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wire", [Wire("npy"), Wire("msgpack-numpy"), Wire("msgpack-numpy", bytes_keys=False)])
def test_wire_round_trips_arrays_and_reports_the_form(wire):
    arrays = {"u8": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "f4": np.linspace(0, 1, 6, dtype=np.float32),
              "f8": np.ones((0, 3)), "i8": np.arange(4)[::2], "bool": np.array([True, False])}
    obj, used = decode(encode({"a": arrays, "n": np.float32(1.5), "s": "x"}, wire))
    assert used == wire and obj["n"] == 1.5 and obj["s"] == "x"
    for k, a in arrays.items():
        assert obj["a"][k].dtype == a.dtype and np.array_equal(obj["a"][k], a), k


def test_wire_reads_both_modality_markers_and_refuses_pickled_arrays():
    cfg = {"delta_indices": [0], "modality_keys": ["x"]}
    for marker in ({"__ModalityConfig_class__": True, "as_json": cfg},
                   {"__ModalityConfig__": True, "as_json": json.dumps(cfg)}, modality_marker(cfg)):
        assert decode(msgpack.packb({"m": marker}))[0] == {"m": cfg}
    with pytest.raises(WireError, match="pickle"):
        decode(msgpack.packb({b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1], b"data": b"x"}))
    with pytest.raises(WireError, match="not valid msgpack"):
        decode(b"\xc1")
    assert parse_address("10.0.0.2:6000") == ("10.0.0.2", 6000) and parse_address("host") == ("host", 5555)


# ---- the protocol, from a client that knows only the spec ------------------------------------------------
@pytest.mark.parametrize("form", ["npy", "nd-bytes", "nd-str"])
def test_every_endpoint_round_trips_nested(servers, form):
    port = servers["nested"].port
    reply, _ = raw_call(port, {"endpoint": "ping"}, form)
    assert reply["status"] == "ok" and "message" in reply
    reply, seen = raw_call(port, {"endpoint": "get_modality_config"}, form)
    assert set(reply) == {"video", "state", "action", "language"} and seen == ["config"] * 4
    assert reply["video"]["modality_keys"] == list(CAMERAS) and reply["action"]["modality_keys"] == list(ACTION)
    assert reply["language"]["modality_keys"] == [TASK]
    assert raw_call(port, {"endpoint": "reset", "data": {"options": None}}, form)[0] == {}
    (action, info), seen = raw_call(port, {"endpoint": "get_action",
                                           "data": {"observation": nested_observation(2), "options": None}}, form)
    check_action(action, 2)
    assert info == {} and set(seen) == {form}  # answered in the client's own encoding
    (action, _), _ = raw_call(port, {"data": {"observation": nested_observation(1)}}, form)  # no endpoint
    check_action(action, 1)


@pytest.mark.parametrize("form", ["npy", "nd-bytes"])
def test_every_endpoint_round_trips_flat_sim_wrapper(servers, form):
    port = servers["flat"].port
    for endpoint in ("ping", "get_modality_config", "reset"):
        assert "error" not in raw_call(port, {"endpoint": endpoint, "api_token": TOKEN}, form)[0]
    (action, info), seen = raw_call(port, {"endpoint": "get_action", "api_token": TOKEN,
                                           "data": {"observation": flat_observation(3)}}, form)
    check_action(action, 3, prefix="action.")
    assert set(seen) == {form}


def test_served_actions_equal_in_process_get_action(servers, checkpoints):
    from svms.policy import Gr00tPolicy

    local = Gr00tPolicy.from_checkpoint(checkpoints["baseline"], seed=0)
    expected, _ = local.get_action(nested_observation(2, seed=3))
    with PolicyClient(port=servers["nested"].port, timeout_s=20) as client:
        client.reset()  # re-seeds the server's noise: its next draw is the seed's first
        served, _ = client.get_action(nested_observation(2, seed=3))
    for k in ACTION:
        np.testing.assert_array_equal(served[k], expected[k])
    with PolicyClient(port=servers["flat"].port, timeout_s=20, api_token=TOKEN, wire="msgpack-numpy") as client:
        client.reset()
        flat, _ = client.get_action(flat_observation(2, seed=3))
    for k in ACTION:
        np.testing.assert_array_equal(flat[f"action.{k}"], expected[k])


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def _malformed() -> list[tuple[str, dict | bytes, str]]:
    obs = nested_observation(2)

    def with_video(cam, arr):
        return {**obs, "video": {**obs["video"], cam: arr}}

    def with_state(key, arr):
        return {**obs, "state": {**obs["state"], key: arr}}

    cam, key = CAMERAS[1], "base_position"
    v, s = obs["video"][cam], obs["state"][key]
    cases = [
        ("undecodable", b"\xc1\x00garbage", "msgpack"),
        ("not a map", [1, 2], "map"),
        ("unknown endpoint", {"endpoint": "fly"}, "fly"),
        ("data not a map", {"endpoint": "get_action", "data": [1]}, "data"),
        ("no observation", {"endpoint": "get_action", "data": {}}, "observation"),
        ("missing camera", {**obs, "video": _without(obs["video"], cam)}, cam),
        ("missing state key", {**obs, "state": _without(obs["state"], key)}, key),
        ("video dtype", with_video(cam, v.astype(np.float32)), "uint8"),
        ("video rank", with_video(cam, v[:, 0]), cam),
        ("video T", with_video(cam, np.concatenate([v, v], axis=1)), cam),
        ("video channels", with_video(cam, np.concatenate([v, v[..., :1]], axis=-1)), cam),
        ("state dtype", with_state(key, s.astype(np.int64)), key),
        ("state T", with_state(key, np.concatenate([s, s], axis=1)), key),
        ("state width", with_state(key, s[..., :2]), key),
        ("batch mismatch", with_state(key, s[:1]), "batch"),
        ("empty batch", {"video": {k: a[:0] for k, a in obs["video"].items()},
                         "state": {k: a[:0] for k, a in obs["state"].items()}, "language": {TASK: []}}, "empty"),
        ("language form", {**obs, "language": {TASK: "pick"}}, TASK),
        ("flat keys", flat_observation(1), "--sim-wrapper"),
    ]
    out = [(n, r if isinstance(r, bytes | list) or "endpoint" in r else {"data": {"observation": r}}, m)
           for n, r, m in cases]
    out.append(("options", {"data": {"observation": obs, "options": [1]}}, "options"))
    out.append(("bad npy", {"data": {"observation": {"video": {cam: {"__ndarray_class__": True,
                                                                          "as_npy": b"nope"}}}}}, "npy"))
    out.append(("bad nd", {"data": {"observation": {"video": {cam: {"nd": True, "type": "<f4", "kind": "",
                                                                        "shape": [9], "data": b"abc"}}}}}, "rebuilt"))
    return out


@pytest.mark.parametrize("name,request_,message", _malformed(), ids=[c[0] for c in _malformed()])
def test_malformed_request_gets_an_error_and_the_server_keeps_answering(servers, name, request_, message):
    port = servers["nested"].port
    raw = request_ if isinstance(request_, bytes) else None
    reply, _ = raw_call(port, request_, "npy", raw=raw)
    assert set(reply) == {"error"}, reply
    assert message in reply["error"], reply["error"]
    assert raw_call(port, {"endpoint": "ping"})[0]["status"] == "ok"


def test_flat_server_refuses_nested_and_missing_flat_keys(servers):
    port = servers["flat"].port
    req = {"api_token": TOKEN, "data": {"observation": nested_observation(1)}}
    assert "--sim-wrapper" in raw_call(port, req)[0]["error"]
    obs = _without(flat_observation(1), "state.gripper_qpos")
    assert "state.gripper_qpos" in raw_call(port, {"api_token": TOKEN, "data": {"observation": obs}})[0]["error"]


def test_token_is_required_when_set(servers):
    port = servers["flat"].port
    for request in ({"endpoint": "ping"}, {"endpoint": "ping", "api_token": "wrong"},
                    {"endpoint": "kill", "api_token": 7}):
        reply, _ = raw_call(port, request)
        assert "unauthorized" in reply["error"]
    with PolicyClient(port=port, timeout_s=5) as client, pytest.raises(PolicyServerError, match="unauthorized"):
        client.get_modality_config()
    assert raw_call(port, {"endpoint": "ping", "api_token": TOKEN})[0]["status"] == "ok"


def test_svms_checkpoint_serves_with_a_fixed_wire_and_kill_ends_the_process(servers):
    served = servers["svms"]
    (action, _), seen = raw_call(served.port, {"data": {"observation": nested_observation(1)}}, "nd-str")
    check_action(action, 1)
    assert set(seen) == {"nd-bytes"}  # --wire msgpack-numpy answers in that form (as the library writes it)
    # the other era's client would read the reply's arrays as plain dicts: refused, naming both wires
    reply, _ = raw_call(served.port, {"data": {"observation": nested_observation(1)}}, "npy")
    assert set(reply) == {"error"} and "--wire msgpack-numpy" in reply["error"] and "npsave" in reply["error"]
    assert "--wire auto" in reply["error"]
    reply, _ = raw_call(served.port, {"endpoint": "get_modality_config"})
    assert reply["state"]["modality_keys"] == list(STATE)
    markers = msgpack.unpackb(encode(modality_marker({})))  # auto: both eras' markers
    assert {"__ModalityConfig_class__", "__ModalityConfig__"} <= set(markers)
    with PolicyClient(port=served.port, timeout_s=20) as client:  # wire auto: settles on msgpack-numpy
        config = client.get_modality_config()
        assert config.action.modality_keys == tuple(ACTION) and client.language_key == TASK
        assert client.wire.form == "msgpack-numpy"  # the server's fixed wire shows in its modality markers
        check_action(client.get_action(nested_observation(2))[0], 2)
    with PolicyClient(port=served.port, timeout_s=20) as fresh:  # no config asked: refused once, then retried
        check_action(fresh.get_action(nested_observation(1))[0], 1)
        assert fresh.wire.form == "msgpack-numpy"
    with PolicyClient(port=served.port, timeout_s=20, wire="npsave") as fixed:
        with pytest.raises(PolicyServerError, match="--wire msgpack-numpy"):
            fixed.get_action(nested_observation(1))
        fixed.kill()
    assert served.proc.wait(timeout=20) == 0


def test_term_and_int_signals_shut_down_cleanly():
    """The loop itself, policy-free (no model needed to answer ping)."""
    procs = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        port = free_port()
        code = ("import logging; logging.basicConfig(level=logging.INFO); from svms.serve.server import PolicyServer; "
                f"PolicyServer(None).serve('127.0.0.1', {port})")
        procs[sig] = port, subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    for sig, (port, proc) in procs.items():
        assert raw_call(port, {"endpoint": "ping"}, timeout_ms=60000)[0]["status"] == "ok"
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
        assert "stopped after 1 requests" in proc.stderr.read()


def test_requests_are_logged_as_jsonl(servers):
    raw_call(servers["nested"].port, {"endpoint": "ping"})
    records = [json.loads(line) for line in servers["nested"].log_path.read_text().splitlines()]
    assert {"ping", "get_modality_config"} <= {r["endpoint"] for r in records}
    assert all(r["total_ms"] >= 0 and isinstance(r["ok"], bool) for r in records)


# ---- the client's timeout ---------------------------------------------------------------------------------
def test_client_times_out_against_a_silent_server_and_reconnects():
    port = free_port()
    with PolicyClient(port=port, timeout_s=0.2) as nobody:  # nothing listening at all
        assert nobody.ping() is False
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.REP)
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind(f"tcp://127.0.0.1:{port}")
    client = PolicyClient(port=port, timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(PolicyServerTimeout, match="within 0.3 s"):
        client.get_action(nested_observation(1))
    assert time.monotonic() - start < 3
    assert client.ping() is False
    silent.close()

    def answer_once():
        rep = ctx.socket(zmq.REP)
        rep.setsockopt(zmq.LINGER, 0)
        for _ in range(100):  # the silent socket's port is released asynchronously
            try:
                rep.bind(f"tcp://127.0.0.1:{port}")
                break
            except zmq.ZMQError:
                time.sleep(0.05)
        if rep.poll(10000):
            rep.recv()
            rep.send(encode({"status": "ok", "message": "back"}))
        rep.close()

    thread = threading.Thread(target=answer_once)
    thread.start()
    try:
        assert client.call("ping", timeout_s=10)["message"] == "back"
    finally:
        thread.join()
        client.close()
