"""`PolicyClient`: query any GR00T policy server (ours or NVIDIA's) over ZeroMQ REQ/REP (spec §9.1).

Each call waits at most `timeout_s` and then raises `PolicyServerTimeout` instead of blocking forever;
the socket is rebuilt after a timeout (a REQ socket that missed its reply cannot send again), so the next
call works once the server is back. The client has `Gr00tPolicy`'s interface (`get_action`, `reset`,
`get_modality_config`, `language_key`), so rollout and open-loop tools can take either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from svms.data.modality import EmbodimentConfig
from svms.errors import SvmsError
from svms.serve.wire import NPY, Wire, decode, encode


class PolicyServerError(SvmsError):
    """The server answered `{"error": ...}`."""


class PolicyServerTimeout(SvmsError):
    """The server did not answer within the client's timeout."""


def parse_address(address: str, default_port: int = 5555) -> tuple[str, int]:
    """`HOST:PORT` (or `HOST`, or `tcp://HOST:PORT`) → (host, port), as `--server` takes it."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if not host:
        return port or "127.0.0.1", default_port
    if not port.isdigit():
        raise SvmsError(f"server address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:5555")
    return host, int(port)


class PolicyClient:
    """A GR00T policy-server client; `wire` picks the array encoding it sends (`npy` or `msgpack-numpy`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5555, *, timeout_s: float = 30.0,
                 api_token: str | None = None, wire: str = NPY) -> None:
        import zmq

        self._zmq = zmq
        self.address = f"tcp://{host}:{port}"
        self.tag = self.address  # a label for messages, where a local policy has its embodiment tag
        self.timeout_s = timeout_s
        self.api_token = api_token
        self.wire = Wire(wire)
        self._context = zmq.Context()
        self._socket = None
        self._config: EmbodimentConfig | None = None

    def _connect(self):
        if self._socket is None:
            self._socket = self._context.socket(self._zmq.REQ)
            self._socket.setsockopt(self._zmq.LINGER, 0)
            self._socket.connect(self.address)
        return self._socket

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def call(self, endpoint: str, data: Mapping[str, Any] | None = None, *, timeout_s: float | None = None) -> Any:
        """Send one request and return the decoded reply; raises on an error reply or a timeout."""
        request: dict[str, Any] = {"endpoint": endpoint}
        if data is not None:
            request["data"] = data
        if self.api_token is not None:
            request["api_token"] = self.api_token
        timeout = self.timeout_s if timeout_s is None else timeout_s
        socket = self._connect()
        socket.setsockopt(self._zmq.SNDTIMEO, int(timeout * 1000))
        try:
            socket.send(encode(request, self.wire))
            answered = socket.poll(int(timeout * 1000))
        except self._zmq.Again:
            answered = False
        except BaseException:  # e.g. Ctrl-C while waiting: a REQ socket without its reply is unusable
            self._drop_socket()
            raise
        if not answered:
            self._drop_socket()
            raise PolicyServerTimeout(f"no reply from {self.address} to {endpoint!r} within {timeout:g} s; is "
                                      "the server running and reachable (host, port, firewall)?")
        reply, _ = decode(socket.recv())
        if isinstance(reply, Mapping) and set(reply) == {"error"}:
            raise PolicyServerError(f"{self.address} refused {endpoint!r}: {reply['error']}")
        return reply

    def ping(self, timeout_s: float | None = None) -> bool:
        """True when the server answers `ping` in time, False otherwise (never raises on a dead server)."""
        try:
            self.call("ping", timeout_s=timeout_s)
        except PolicyServerTimeout:
            return False
        return True

    def get_action(self, observation: Mapping[str, Any], options: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict]:
        reply = self.call("get_action", {"observation": observation, "options": options})
        if not isinstance(reply, list | tuple) or len(reply) != 2:
            raise SvmsError(f"{self.address} answered get_action with {type(reply).__name__}, not [action, info]")
        return reply[0], reply[1]

    def reset(self, options: Mapping[str, Any] | None = None) -> dict:
        return self.call("reset", {"options": options})

    def get_modality_config(self) -> EmbodimentConfig:
        """The server's modality config (cached: a server does not change embodiment)."""
        if self._config is None:
            reply = self.call("get_modality_config")
            try:
                self._config = EmbodimentConfig.from_dict(reply)
            except (KeyError, TypeError) as err:
                raise SvmsError(f"{self.address} sent a modality config this client cannot read ({err})") from None
        return self._config

    @property
    def language_key(self) -> str:
        return self.get_modality_config().language.modality_keys[0]

    def kill(self) -> None:
        """Ask the server to stop (it answers first)."""
        self.call("kill")

    def close(self) -> None:
        self._drop_socket()
        self._context.term()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
