"""The GR00T policy server (spec §9.1): a ZeroMQ REP loop answering `ping`, `kill`, `get_action`,
`reset` and `get_modality_config` for one `Gr00tPolicy`, so existing GR00T clients drive our checkpoints.

Requests are msgpack maps `{"endpoint", "data", "api_token"?}` (no endpoint means `get_action`). Every
problem with a request, down to an undecodable message, becomes an `{"error": ...}` reply naming what was
wrong and what was expected: a REP socket must answer each request, and one bad client must not take the
server down. Replies use the array encoding the request used (`wire="auto"`), or a fixed one; a server
with a fixed wire refuses a request whose arrays are in the other era's form with an error naming both
(its reply arrays would reach that client as plain dicts).
"""

from __future__ import annotations

import hmac
import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svms.errors import SvmsError
from svms.serve.observation import from_flat, to_flat
from svms.serve.wire import (
    MSGPACK_NUMPY,
    ND_MARKER,
    NPY,
    NPY_MARKER,
    WIRE_NAMES,
    Wire,
    decode,
    encode,
    modality_marker,
)

log = logging.getLogger("svms.serve")

ENDPOINTS = ("ping", "kill", "get_action", "reset", "get_modality_config")
WIRE_CHOICES = ("auto", NPY, MSGPACK_NUMPY)


def wire_choice(wire: str) -> str:
    """`auto`, `npsave` (also read as `npy`) or `msgpack-numpy`; anything else is an error."""
    if wire == "auto":
        return wire
    try:
        return Wire(wire).form
    except SvmsError:
        raise SvmsError(f"wire {wire!r}: expected one of {list(WIRE_CHOICES)}") from None


@dataclass
class RequestRecord:
    """One request's outcome and timings (milliseconds), logged and optionally written as a JSONL line."""

    time: float
    endpoint: str | None = None
    ok: bool = True
    error: str | None = None
    batch: int | None = None
    wire: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    decode_ms: float = 0.0
    handle_ms: float = 0.0
    encode_ms: float = 0.0
    total_ms: float = 0.0
    stop: bool = field(default=False, repr=False)

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "stop"}
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


class PolicyServer:
    """Wraps a `Gr00tPolicy` (or anything with its four methods and `language_key`) in the GR00T protocol.

    `sim_wrapper` switches observations and actions to the flat `video.<cam>` / `state.<key>` /
    `action.<key>` form of GR00T's simulation clients. `wire` is `auto` (answer in the request's array
    encoding; modality configs carry both eras' markers), `npsave` or `msgpack-numpy` (requests in the other
    form are refused). With `seed`, `reset`
    re-seeds the sampling noise, so every episode draws the same noise sequence.
    """

    def __init__(self, policy, *, sim_wrapper: bool = False, api_token: str | None = None, wire: str = "auto",
                 seed: int | None = None) -> None:
        self.policy = policy
        self.sim_wrapper = sim_wrapper
        self.api_token = api_token
        self.wire = wire_choice(wire)
        self.seed = seed
        self.requests = 0

    # ---- one request ----------------------------------------------------------------------------
    def handle(self, message: bytes) -> tuple[bytes, RequestRecord]:
        """Answer one raw request; never raises (any failure is an error reply)."""
        start = time.perf_counter()
        record = RequestRecord(time=time.time(), bytes_in=len(message))
        wire = Wire(NPY if self.wire == "auto" else self.wire)
        try:
            request, used = decode(message)
            if used is not None:
                record.wire = used.form
                if self.wire == "auto":
                    wire = used
            record.decode_ms = (time.perf_counter() - start) * 1e3
            t = time.perf_counter()
            reply = self._dispatch(request, record, used)
            record.handle_ms = (time.perf_counter() - t) * 1e3
        except SvmsError as err:
            reply = self._fail(record, str(err))
        except Exception as err:  # a bug or an input the checks missed: report it, keep serving
            log.error("request failed:\n%s", traceback.format_exc())
            reply = self._fail(record, f"{record.endpoint or 'request'} failed: {type(err).__name__}: {err}")
        t = time.perf_counter()
        try:
            payload = encode(reply, wire)
        except Exception as err:
            payload = encode(self._fail(record, f"could not encode the reply ({err})"), wire)
        record.encode_ms = (time.perf_counter() - t) * 1e3
        record.bytes_out = len(payload)
        record.total_ms = (time.perf_counter() - start) * 1e3
        self.requests += 1
        return payload, record

    @staticmethod
    def _fail(record: RequestRecord, message: str) -> dict[str, str]:
        record.ok, record.error = False, message
        return {"error": message}

    def _dispatch(self, request: Any, record: RequestRecord, used: Wire | None = None) -> Any:
        if not isinstance(request, Mapping):
            raise SvmsError(f"a request must be a msgpack map {{endpoint, data, api_token}}, got "
                            f"{type(request).__name__}")
        endpoint = request.get("endpoint", "get_action")
        record.endpoint = endpoint if isinstance(endpoint, str) else repr(endpoint)
        self._check_token(request.get("api_token"))
        self._check_wire(used)
        if endpoint not in ENDPOINTS:
            raise SvmsError(f"unknown endpoint {endpoint!r}; expected one of {list(ENDPOINTS)}")
        data = request.get("data")
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            raise SvmsError(f"'data' of {endpoint!r} must be a map, got {type(data).__name__}")
        if endpoint == "ping":
            return {"status": "ok", "message": f"svms policy server for {getattr(self.policy, 'tag', '?')!r} "
                                               "is running"}
        if endpoint == "kill":
            record.stop = True
            return {"status": "ok", "message": "server shutting down"}
        if endpoint == "reset":
            options = _options(data)
            if self.seed is not None and getattr(self.policy, "generator", None) is not None:
                self.policy.generator.manual_seed(self.seed)
            return self.policy.reset(options)
        if endpoint == "get_modality_config":
            return self._modality_config()
        return self._get_action(data, record)

    def _check_token(self, token: Any) -> None:
        if self.api_token is None:
            return
        if token is None:
            raise SvmsError("unauthorized: this server needs an 'api_token' field in every request")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.api_token.encode()):
            raise SvmsError("unauthorized: wrong 'api_token'")

    def _check_wire(self, used: Wire | None) -> None:
        if self.wire == "auto" or used is None or used.form == self.wire:
            return
        raise SvmsError(f"this server was started with --wire {self.wire} and answers only in the "
                        f"{WIRE_NAMES[self.wire]} form, but the request's arrays are in the {WIRE_NAMES[used.form]} "
                        f"form; send {self.wire} arrays (svms clients: --wire {self.wire} or auto), or restart the "
                        "server with --wire auto, which answers each client in its own form")

    def _modality_config(self) -> dict[str, dict]:
        markers = {"auto": (NPY_MARKER, ND_MARKER), NPY: (NPY_MARKER,), MSGPACK_NUMPY: (ND_MARKER,)}[self.wire]
        config = self.policy.get_modality_config()
        return {m: modality_marker(getattr(config, m).to_dict(), markers)
                for m in ("video", "state", "action", "language")}

    def _get_action(self, data: Mapping, record: RequestRecord) -> list:
        observation = data.get("observation")
        if not isinstance(observation, Mapping):
            raise SvmsError("get_action needs data {'observation': map, 'options': map or nil}; the "
                            "observation is missing or not a map")
        options = _options(data)
        config = self.policy.get_modality_config()
        if self.sim_wrapper:
            observation = from_flat(observation, config, self.policy.language_key)
        elif "video" not in observation and any(str(k).startswith("video.") for k in observation):
            raise SvmsError("observation uses flat 'video.<camera>' keys, but this server expects the nested "
                            "form {video, state, language}; restart it with --sim-wrapper for flat keys")
        batch = self.policy.check_observation(observation)
        if batch < 1:
            raise SvmsError("observation holds an empty batch (B = 0); send at least one sample")
        record.batch = batch
        action, info = self.policy.get_action(observation, options)
        return [to_flat(action) if self.sim_wrapper else action, info]

    # ---- the loop -------------------------------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 5555, log_requests: Path | None = None) -> int:
        """Answer requests until `kill`, SIGINT or SIGTERM; returns the number of requests answered."""
        import zmq

        stop = threading.Event()
        with ExitStack() as stack:
            context = zmq.Context()
            stack.callback(context.term)
            socket = context.socket(zmq.REP)
            socket.setsockopt(zmq.LINGER, 0)
            stack.callback(socket.close)
            address = f"tcp://{host}:{port}"
            try:
                socket.bind(address)
            except zmq.ZMQError as err:
                raise SvmsError(f"cannot listen on {address} ({err}); pick another --port or --host") from None
            sink = stack.enter_context(open(log_requests, "a")) if log_requests else None  # noqa: SIM115
            _on_signals(stop, stack)
            log.info("serving %s on %s (%s form, wire %s%s)", getattr(self.policy, "tag", "policy"), address,
                     "flat sim-wrapper" if self.sim_wrapper else "nested", self.wire,
                     ", api token required" if self.api_token else "")
            while not stop.is_set():
                if not socket.poll(100):
                    continue
                message = socket.recv(copy=True)
                payload, record = self.handle(message)
                socket.send(payload)
                _log_record(record, sink)
                if record.stop:
                    stop.set()
            log.info("stopped after %d requests", self.requests)
        return self.requests


def _options(data: Mapping) -> Mapping | None:
    options = data.get("options")
    if options is not None and not isinstance(options, Mapping):
        raise SvmsError(f"'options' must be a map or nil, got {type(options).__name__}")
    return options


def _on_signals(stop: threading.Event, stack: ExitStack) -> None:
    """SIGINT/SIGTERM end the loop after the current request (handlers restored on exit)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.signal(sig, lambda *_: stop.set())
        stack.callback(signal.signal, sig, previous)


def _log_record(record: RequestRecord, sink) -> None:
    status = "ok" if record.ok else f"error: {record.error}"
    log.info("%s %.1f ms (decode %.1f, handle %.1f, encode %.1f) %s", record.endpoint or "?", record.total_ms,
             record.decode_ms, record.handle_ms, record.encode_ms, status)
    if sink is not None:
        sink.write(json.dumps(record.as_json()) + "\n")
        sink.flush()


def warm_up(policy) -> None:
    """One dummy `get_action` before serving, so the first client is not charged for lazy initialisation;
    the sampling noise state is restored, so a seeded server's first answer is its seed's first draw."""
    config = policy.get_modality_config()
    normalizer = policy.processor.normalizer(policy.tag)
    edge = policy.processor.settings.shortest_image_edge
    t_video, t_state = len(config.video.delta_indices), len(config.state.delta_indices)
    observation = {
        "video": {k: np.zeros((1, t_video, edge, edge, 3), np.uint8) for k in config.video.modality_keys},
        "state": {lay.key: np.zeros((1, t_state, lay.raw_dim), np.float32) for lay in normalizer.state_layout},
        "language": {policy.language_key: [["warm up"]]},
    }
    generator = policy.generator
    saved = generator.get_state() if generator is not None else None
    with torch.random.fork_rng(devices=[policy.device] if policy.device.type == "cuda" else []):
        policy.get_action(observation)
    if generator is not None:
        generator.set_state(saved)
