"""The hardened `svms serve` loop (issue 16, cases 5, 6, 14, 20): requests in several frames, handler bugs,
ZeroMQ's message-size limit, the token read before the observation, NaN/Inf/huge state, batch and image caps,
zero-size images, and requests whose client has gone. Servers run in threads of this process (the loop is
the same code `svms serve` runs) around a stand-in policy with `Gr00tPolicy`'s own strict check and an
instant `get_action`, so each test takes well under a second; `tests/test_serve.py` serves real checkpoints
through the same checks."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import msgpack
import numpy as np
import pytest
import zmq

from svms.data.modality import MODALITY_CONFIGS
from svms.errors import SvmsError
from svms.policy import Gr00tPolicy
from svms.serve import PolicyClient, PolicyServer, PolicyServerTimeout, decode, encode
from svms.serve.observation import Limits
from test_serve import CAMERAS, TOKEN, flat_observation, free_port, nested_observation, pack, raw_call


class FakePolicy:
    """What the server uses of a `Gr00tPolicy` for robocasa_panda_omron, its strict check included; `get_action`
    counts its calls, takes `delay` seconds and returns zero actions."""

    tag = "robocasa_panda_omron"
    check_observation = Gr00tPolicy.check_observation

    def __init__(self, delay: float = 0.0) -> None:
        self.config = MODALITY_CONFIGS[self.tag].validate()
        self.language_key = self.config.language.modality_keys[0]
        self.delay = delay
        self.calls = 0

    def get_modality_config(self):
        return self.config

    def reset(self, options=None) -> dict:
        return {}

    def get_action(self, observation, options=None):
        self.calls += 1
        time.sleep(self.delay)
        batch = self.check_observation(observation)
        return {k: np.zeros((batch, 16, 1), np.float32) for k in self.config.action.modality_keys}, {}


@pytest.fixture
def policy() -> FakePolicy:
    return FakePolicy()


@contextmanager
def running(server: PolicyServer, **serve_kwargs):
    """`server.serve` in a thread on a free port; ended by `kill` (a dead loop is reported, not waited on)."""
    port = free_port()
    thread = threading.Thread(target=server.serve, args=("127.0.0.1", port), kwargs=serve_kwargs, daemon=True)
    thread.start()
    with PolicyClient(port=port, timeout_s=0.5, api_token=server.api_token) as client:
        assert any(client.ping() for _ in range(40)), "server did not start"
    try:
        yield port
    finally:
        if thread.is_alive():
            try:
                raw_call(port, {"endpoint": "kill", "api_token": server.api_token}, timeout_ms=5000)
            except AssertionError:
                pass
            thread.join(timeout=10)


def connect(port: int, kind: int = zmq.REQ) -> zmq.Socket:
    """A raw ZeroMQ client socket of `kind` connected to the server (closes at once when closed)."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def reply_of(server: PolicyServer, request) -> dict | list:
    return decode(server.handle(encode(request))[0])[0]


def action_request(observation: dict, token: str | None = None) -> dict:
    request = {"endpoint": "get_action", "data": {"observation": observation}}
    return request if token is None else {**request, "api_token": token}


def ping_ok(port: int) -> bool:
    return raw_call(port, {"endpoint": "ping"}, timeout_ms=5000)[0].get("status") == "ok"


# ---- case 5: the loop survives anything a request does -------------------------------------------------
def test_a_request_in_two_frames_gets_an_error_and_the_server_keeps_answering():
    with running(PolicyServer(None)) as port:
        sock = connect(port)
        try:
            sock.send_multipart([pack({"endpoint": "ping"}, "npy"), b"second frame"])  # legal for REQ
            assert sock.poll(5000), "no reply to a two-frame request"
            reply = msgpack.unpackb(sock.recv())
        finally:
            sock.close()
        assert "2 ZeroMQ frames" in reply["error"] and "one frame" in reply["error"]
        assert ping_ok(port)


def test_a_bug_in_the_handler_gets_an_error_reply_and_the_server_keeps_answering():
    class Buggy(PolicyServer):
        def handle(self, message, client_gone=None):
            if bytes(message[0]) == b"boom":
                raise RuntimeError("a bug past every check")
            return super().handle(message, client_gone)

    with running(Buggy(None)) as port:
        reply, _ = raw_call(port, None, raw=b"boom", timeout_ms=5000)
        assert "RuntimeError: a bug past every check" in reply["error"]
        assert ping_ok(port)


def test_a_dealer_client_with_the_req_envelope_is_answered_like_rep_would():
    with running(PolicyServer(None)) as port:
        sock = connect(port, zmq.DEALER)
        try:
            sock.send(b"no delimiter")  # a REP socket discards this; so does the server
            sock.send_multipart([b"", pack({"endpoint": "ping"}, "npy")])
            assert sock.poll(5000)
            empty, payload = sock.recv_multipart()
        finally:
            sock.close()
        assert empty == b"" and msgpack.unpackb(payload)["status"] == "ok"


# ---- case 6: non-finite and absurd state ----------------------------------------------------------------
@pytest.mark.parametrize("value,shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf"),
                                         (1e39, "beyond float32"), (1e30, "--max-state-abs")])
def test_non_finite_or_absurd_state_is_refused_naming_the_key(policy, value, shown):
    server = PolicyServer(policy)
    observation = nested_observation(2)
    state = observation["state"]["base_position"].astype(np.float64)
    state[1, 0, 2] = value
    observation["state"]["base_position"] = state
    reply = reply_of(server, action_request(observation))
    assert set(reply) == {"error"}, reply
    assert "'base_position'" in reply["error"] and shown in reply["error"] and "[1, 0, 2]" in reply["error"]


def test_flat_state_with_nan_is_refused_too_and_a_finite_state_still_serves(policy):
    server = PolicyServer(policy, sim_wrapper=True)
    observation = flat_observation(1)
    observation["state.gripper_qpos"] = np.full((1, 1, 2), np.nan, np.float32)
    assert "'gripper_qpos' holds nan" in reply_of(server, action_request(observation))["error"]
    assert policy.calls == 0
    assert isinstance(reply_of(server, action_request(flat_observation(1))), list) and policy.calls == 1
    loose = PolicyServer(policy, limits=Limits(max_state_abs=float("inf")))
    big = nested_observation(1)
    big["state"]["base_position"][:] = 1e30
    assert isinstance(reply_of(loose, action_request(big)), list)  # the flag turns the magnitude check off


# ---- case 14: limits --------------------------------------------------------------------------------------
def test_an_oversize_message_is_dropped_by_zeromq_and_the_server_keeps_answering():
    with running(PolicyServer(None, limits=Limits(max_message_bytes=2**20))) as port:
        with PolicyClient(port=port, timeout_s=1) as client:
            with pytest.raises(PolicyServerTimeout, match="--max-message-bytes"):
                client.call("ping", {"padding": b"x" * 2 * 2**20})
            assert client.call("ping", {"padding": b"x" * 2**19})["status"] == "ok"
        assert ping_ok(port)


def test_the_token_is_checked_before_the_observation_is_decoded(policy, monkeypatch):
    import svms.serve.server as server_module

    server = PolicyServer(policy, api_token=TOKEN)
    broken = {"video": {CAMERAS[0]: {"__ndarray_class__": True, "as_npy": b"not npy"}}}
    request = action_request(broken, token="wrong")
    assert "unauthorized: wrong 'api_token'" in reply_of(server, request)["error"]  # not the .npy error
    decoded = []
    monkeypatch.setattr(server_module, "decode", lambda payload: decoded.append(1) or decode(payload))
    reply_of(server, action_request(nested_observation(4), token="wrong"))
    reply_of(server, {"endpoint": "get_action", "data": {"observation": nested_observation(1)}})  # no token
    assert decoded == []
    assert "npy" in reply_of(server, action_request(broken, token=TOKEN))["error"]
    assert len(decoded) == 1


def test_batch_and_image_size_caps(policy):
    server = PolicyServer(policy, limits=Limits(max_batch=2, max_image_edge=32))
    assert "--max-batch 2" in reply_of(server, action_request(nested_observation(3, size=16)))["error"]
    reply = reply_of(server, action_request(nested_observation(2, size=64)))
    assert "64×64" in reply["error"] and "--max-image-edge 32" in reply["error"]
    action, _ = reply_of(server, action_request(nested_observation(2, size=32)))
    assert action["end_effector_position"].shape[0] == 2 and policy.calls == 1


@pytest.mark.parametrize("flag,value", [("max_message_bytes", 0), ("max_batch", 0), ("max_image_edge", -1),
                                        ("max_state_abs", 0.0), ("heartbeat_s", -1.0)])
def test_bad_limit_flags_are_refused_before_the_checkpoint_loads(tmp_path, flag, value):
    from svms.commands.serve import Serve

    with pytest.raises(SvmsError, match=f"--{flag.replace('_', '-')}"):
        Serve(tmp_path / "missing", **{flag: value}).run()


def test_abandoned_requests_are_dropped_and_a_live_ping_is_answered_promptly(tmp_path):
    slow = FakePolicy(delay=0.3)  # 20 computed requests would take 6 s
    server = PolicyServer(slow)
    with running(server, log_requests=tmp_path / "requests.jsonl") as port:
        clients = []
        for _ in range(20):  # connected (a ping answered) before the abandoned request, so that it is sent
            sock = connect(port)
            sock.send(pack({"endpoint": "ping"}, "npy"))
            assert sock.poll(5000)
            sock.recv()
            clients.append(sock)
        request = pack(action_request(nested_observation(1)), "npy")
        for sock in clients:
            sock.send(request)
        time.sleep(0.45)  # two computed (0.3 s each), the others queued: a REP socket computes them all
        for sock in clients:
            sock.close()  # gave up, as a timed-out client does
        start = time.monotonic()
        assert raw_call(port, {"endpoint": "ping"}, timeout_ms=3000)[0]["status"] == "ok"
        assert time.monotonic() - start < 1.5
        assert slow.calls <= 3 and server.dropped >= 17
    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert sum('"dropped": true' in line for line in lines) == server.dropped


def test_requests_past_the_read_ahead_wait_in_zeromq_and_are_all_answered(monkeypatch):
    import svms.serve.server as server_module

    monkeypatch.setattr(server_module, "MAX_PENDING", 2)
    with running(PolicyServer(FakePolicy(delay=0.05))) as port:
        clients = []
        for seed in range(6):
            sock = connect(port)
            sock.send(pack(action_request(nested_observation(1 + seed % 2)), "npy"))
            clients.append(sock)
        try:
            for seed, sock in enumerate(clients):
                assert sock.poll(5000), f"request {seed} not answered"
                action = msgpack.unpackb(sock.recv(), raw=False)[0]
                assert set(action) == {"end_effector_position", "end_effector_rotation", "gripper_close",
                                       "base_motion", "control_mode"}
        finally:
            for sock in clients:
                sock.close()


def test_a_heartbeat_server_still_answers_an_idle_req_client():
    with running(PolicyServer(None), heartbeat_s=0.05) as port:
        sock = connect(port)
        try:
            time.sleep(0.4)  # several heartbeat intervals with nothing sent
            sock.send(pack({"endpoint": "ping"}, "npy"))
            assert sock.poll(5000)
            assert msgpack.unpackb(sock.recv())["status"] == "ok"
        finally:
            sock.close()


# ---- case 20: zero-size images ---------------------------------------------------------------------------
@pytest.mark.parametrize("height,width", [(0, 0), (0, 5), (7, 0)])
def test_a_zero_size_image_gets_a_named_error(policy, height, width):
    observation = nested_observation(1)
    observation["video"][CAMERAS[2]] = np.zeros((1, 1, height, width, 3), np.uint8)
    reply = reply_of(PolicyServer(policy), action_request(observation))
    assert set(reply) == {"error"} and f"{CAMERAS[2]!r} holds {height}×{width} images" in reply["error"]
    assert "ZeroDivisionError" not in reply["error"]
