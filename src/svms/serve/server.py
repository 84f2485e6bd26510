"""The GR00T policy server (spec §9.1): a ZeroMQ REP loop answering `ping`, `kill`, `get_action`,
`reset` and `get_modality_config` for one `Gr00tPolicy`, so existing GR00T clients drive our checkpoints.

Requests are msgpack maps `{"endpoint", "data", "api_token"?}` (no endpoint means `get_action`). Every
problem with a request, down to an undecodable message, becomes an `{"error": ...}` reply naming what was
wrong and what was expected: a REP socket must answer each request, and one bad client must not take the
server down. Replies use the array encoding the request used (`wire="auto"`), or a fixed one; a server
with a fixed wire refuses a request whose arrays are in the other era's form with an error naming both
(its reply arrays would reach that client as plain dicts).

Hardening (`Limits`): ZeroMQ's `MAXMSGSIZE` bounds what reaches the server, batch size, image edges and state
values are checked before the policy runs, a request must come in one frame, and the API token is read by
a streaming pass before anything else is decoded. The socket is a ROUTER that answers exactly as a REP
would (the reply goes back along the request's envelope), which lets the loop read requests as soon as they
arrive while a worker thread computes one at a time: each request is tagged with the TCP connection it came
on (libzmq's `ZMQ_SRCFD` and that socket's inode), and one whose connection has closed by the time its
turn comes is dropped unanswered, as there is no one left to answer.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svms.errors import SvmsError
from svms.policy.flat import from_flat, to_flat
from svms.policy.wire import (
    MSGPACK_NUMPY,
    ND_MARKER,
    NPY,
    NPY_MARKER,
    WIRE_NAMES,
    Wire,
    decode,
    encode,
    modality_marker,
    peek_fields,
)
from svms.serve.connection import Request
from svms.serve.observation import Limits, check_limits

log = logging.getLogger("svms.serve")

ENDPOINTS = ("ping", "kill", "get_action", "reset", "get_modality_config")
WIRE_CHOICES = ("auto", NPY, MSGPACK_NUMPY)
#: Requests read ahead of the one being computed; past this the loop stops reading (ZeroMQ's own queues and
#: TCP then hold the rest back), so a flooding client cannot grow the server's memory without bound.
MAX_PENDING = 64
GONE = "client disconnected before its request was computed; dropped unanswered"


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
    dropped: bool = False
    stop: bool = field(default=False, repr=False)

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "stop"}
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


class PolicyServer:
    """Wraps a `Gr00tPolicy` (or anything with its four methods and `language_key`) in the GR00T protocol.

    `sim_wrapper` switches observations and actions to the flat `video.<cam>` / `state.<key>` /
    `action.<key>` form of GR00T's simulation clients. `wire` is `auto` (answer in the request's array
    encoding; modality configs carry both eras' markers), `npsave` or `msgpack-numpy` (requests in the other
    form are refused). With `seed`, `reset` re-seeds the sampling noise, so every episode draws the same
    noise sequence. `limits` bound what one request may hold (`Limits`, defaults on).
    """

    def __init__(self, policy, *, sim_wrapper: bool = False, api_token: str | None = None, wire: str = "auto",
                 seed: int | None = None, limits: Limits | None = None) -> None:
        self.policy = policy
        self.sim_wrapper = sim_wrapper
        self.api_token = api_token
        self.wire = wire_choice(wire)
        self.seed = seed
        self.limits = limits or Limits()
        self.requests = 0
        self.dropped = 0

    # ---- one request ----------------------------------------------------------------------------
    def handle(self, message: bytes | memoryview | Sequence[bytes | memoryview],
               client_gone: Callable[[], bool] | None = None) -> tuple[bytes, RequestRecord]:
        """Answer one raw request (its frames, or the one frame's bytes); never raises (any failure is an error
        reply). `client_gone` is asked again just before the policy computes; when it says so, the record is
        marked `dropped` and the reply need not be sent."""
        start = time.perf_counter()
        frames = [message] if isinstance(message, bytes | memoryview) else list(message)
        record = RequestRecord(time=time.time(), bytes_in=sum(len(f) for f in frames))
        wire = Wire(NPY if self.wire == "auto" else self.wire)
        try:
            if len(frames) != 1:
                raise SvmsError(f"the request came in {len(frames)} ZeroMQ frames; GR00T's protocol sends the "
                                "msgpack map {endpoint, data, api_token} as one frame (socket.send(packed), not "
                                "send_multipart)")
            message = frames[0]
            if self.api_token is not None:  # before the observation is decoded
                head = peek_fields(message, ("endpoint", "api_token"))
                endpoint = head.get("endpoint", "get_action")
                record.endpoint = endpoint if isinstance(endpoint, str) else repr(endpoint)
                self._check_token(head.get("api_token"))
            request, used = decode(message)
            if used is not None:
                record.wire = used.form
                if self.wire == "auto":
                    wire = used
            record.decode_ms = (time.perf_counter() - start) * 1e3
            t = time.perf_counter()
            reply = self._dispatch(request, record, used, client_gone or _alive)
            record.handle_ms = (time.perf_counter() - t) * 1e3
        except _ClientGone:
            record.dropped = True
            reply = self._fail(record, GONE)
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
        if record.dropped:
            self.dropped += 1
        else:
            self.requests += 1
        return payload, record

    @staticmethod
    def _fail(record: RequestRecord, message: str) -> dict[str, str]:
        record.ok, record.error = False, message
        return {"error": message}

    def _dispatch(self, request: Any, record: RequestRecord, used: Wire | None = None,
                  client_gone: Callable[[], bool] | None = None) -> Any:
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
        return self._get_action(data, record, client_gone or _alive)

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

    def _get_action(self, data: Mapping, record: RequestRecord, client_gone: Callable[[], bool]) -> list:
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
        check_limits(observation, config, batch, self.limits)
        if client_gone():
            raise _ClientGone
        action, info = self.policy.get_action(observation, options)
        return [to_flat(action) if self.sim_wrapper else action, info]

    # ---- the loop -------------------------------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 5555, log_requests: Path | None = None, *,
              heartbeat_s: float = 0.0) -> int:
        """Answer requests until `kill`, SIGINT or SIGTERM; returns the number of requests answered.

        `heartbeat_s` > 0 has ZeroMQ ping every connection that often and close one silent for three
        intervals (a client host that died without closing its connection), so its requests are dropped too;
        off by default, as clients on libzmq older than 4.2 do not know the ping.
        """
        import zmq

        stop = threading.Event()
        with ExitStack() as stack:
            context = zmq.Context()
            stack.callback(context.term)
            socket = context.socket(zmq.ROUTER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
            if heartbeat_s > 0:
                socket.setsockopt(zmq.HEARTBEAT_IVL, max(1, round(heartbeat_s * 1000)))
                socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, round(3 * heartbeat_s * 1000)))
            stack.callback(socket.close)
            address = f"tcp://{host}:{port}"
            try:
                socket.bind(address)
            except zmq.ZMQError as err:
                raise SvmsError(f"cannot listen on {address} ({err}); pick another --port or --host") from None
            sink = stack.enter_context(open(log_requests, "a")) if log_requests else None  # noqa: SIM115
            wake_read, wake_write = os.pipe()  # the worker's "done" reaches the loop's poll at once
            stack.callback(os.close, wake_read)
            stack.callback(os.close, wake_write)
            worker = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="svms-serve"))
            _on_signals(stop, stack)
            log.info("serving %s on %s (%s form, wire %s%s; limits: %d bytes, batch %d, image edge %d)",
                     getattr(self.policy, "tag", "policy"), address,
                     "flat sim-wrapper" if self.sim_wrapper else "nested", self.wire,
                     ", api token required" if self.api_token else "", self.limits.max_message_bytes,
                     self.limits.max_batch, self.limits.max_image_edge)
            self._loop(zmq, socket, stop, worker, (wake_read, wake_write), sink)
            log.info("stopped after %d requests%s", self.requests,
                     f" ({self.dropped} dropped: client gone)" if self.dropped else "")
        return self.requests

    def _loop(self, zmq, socket, stop: threading.Event, worker: ThreadPoolExecutor, wake: tuple[int, int],
              sink) -> None:
        """Read requests as they come, compute one at a time in `worker`, reply along each one's envelope.
        Every step is guarded: nothing a request does can end the loop, and each request computed gets one
        reply (a request whose client is gone gets none: nobody could receive it)."""
        pending: deque[Request] = deque()
        running: tuple[Request, Future] | None = None
        poller = zmq.Poller()
        poller.register(wake[0], zmq.POLLIN)
        registered = False
        while not stop.is_set() or running is not None:
            reading = len(pending) < MAX_PENDING and not stop.is_set()
            if reading != registered:  # past MAX_PENDING the socket is not polled, so nothing more is read
                poller.register(socket, zmq.POLLIN if reading else 0)
                registered = reading
            events = dict(poller.poll(100))
            if wake[0] in events:
                os.read(wake[0], 4096)
            while reading and len(pending) < MAX_PENDING:
                try:
                    frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                except zmq.ZMQError as err:
                    log.error("could not read a request: %s", err)
                    break
                request = Request.of(frames)
                if request is not None:
                    pending.append(request)
            if running is not None and running[1].done():
                if self._reply(zmq, socket, *running, sink):
                    stop.set()
                running = None
            while running is None and pending and not stop.is_set():
                request = pending.popleft()
                if request.connection.gone():
                    self._drop(request, sink)
                    continue
                future = worker.submit(self.handle, request.body, request.connection.gone)
                future.add_done_callback(lambda _: os.write(wake[1], b"."))
                running = request, future

    def _reply(self, zmq, socket, request: Request, future: Future, sink) -> bool:
        """Send a computed request's reply (none when its client went during the compute); True on `kill`."""
        try:
            payload, record = future.result()
        except Exception as err:  # `handle` does not raise; this keeps a bug in it from ending the loop
            log.error("request failed:\n%s", traceback.format_exc())
            record = RequestRecord(time=time.time(), bytes_in=request.size)
            payload = encode(self._fail(record, f"request failed: {type(err).__name__}: {err}"))
        if not record.dropped:
            try:
                socket.send_multipart([*request.envelope, payload], copy=False)
            except zmq.ZMQError as err:
                log.error("could not send the reply: %s", err)
        _log_record(record, sink)
        return record.stop

    def _drop(self, request: Request, sink) -> None:
        record = RequestRecord(time=time.time(), ok=False, error=GONE, bytes_in=request.size, dropped=True)
        self.dropped += 1
        _log_record(record, sink)


class _ClientGone(Exception):
    """Raised inside `handle` when the request's client closed its connection before the compute."""


def _alive() -> bool:
    return False


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
    """Log one request (and append it to `--log-requests`); a failing log file is reported, not fatal."""
    status = "ok" if record.ok else f"error: {record.error}"
    log.info("%s %.1f ms (decode %.1f, handle %.1f, encode %.1f) %s", record.endpoint or "?", record.total_ms,
             record.decode_ms, record.handle_ms, record.encode_ms, status)
    if sink is not None:
        try:
            sink.write(json.dumps(record.as_json()) + "\n")
            sink.flush()
        except (OSError, ValueError) as err:
            log.error("could not append to the request log: %s", err)


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
