"""`PolicyClient`: query a GR00T policy server — ours, or NVIDIA's of either era — over ZeroMQ REQ/REP
(spec §9.1).

Wire: NVIDIA's N1.6-era servers read arrays as `np.save` bytes (`npsave`), current ones as msgpack-numpy
maps; neither reads the other's. With `wire="auto"` (the default) the client settles on the server's era
at the first exchange that shows it (the modality-config markers or the arrays of a reply, or a request
the server accepted), and a request refused because the server did not understand its arrays is sent
once more in the other era's form. Observation form: `sim_wrapper=True` talks to a server started with
GR00T's simulation wrapper (flat `video.<key>` / `state.<key>` keys, the instruction under its language
key as a list of B strings, `action.<key>` replies); the caller still passes and gets the nested form.

Each call waits at most `timeout_s` and then raises `PolicyServerTimeout` instead of blocking forever;
the socket is rebuilt after a timeout (a REQ socket that missed its reply cannot send again), so the next
call works once the server is back. The client has `Gr00tPolicy`'s interface (`get_action`, `reset`,
`get_modality_config`, `language_key`), so rollout and open-loop tools can take either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from svms.data.modality import EmbodimentConfig
from svms.errors import SvmsError
from svms.policy.flat import flat_observation, nested_action
from svms.policy.wire import NPY, WIRE_NAMES, Wire, decode, encode, other_form

WIRE_OPTIONS = ("auto", NPY, "msgpack-numpy")
#: A timed-out request larger than this may have met the server's message-size limit: the message says so.
LARGE_REQUEST_BYTES = 2**20
#: Error replies that mean "I could not read the arrays in this form" (NVIDIA's policy checks meet an
#: undecoded array map as a dict; our fixed-wire server names both wires).
_ARRAY_FORM_REFUSALS = (re.compile(r"must be a numpy array", re.I), re.compile(r"Got <class 'dict'>"),
                        re.compile(r"started with --wire \S+ and answers only in"))
_FLAT_KEY_MISSING = re.compile(r"""key ['"](video|state)\.[^'"]+['"] must be in observation""", re.I)


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


def _has_arrays(obj: Any) -> bool:
    if isinstance(obj, np.ndarray):
        return True
    if isinstance(obj, Mapping):
        return any(_has_arrays(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(_has_arrays(v) for v in obj)
    return False


def array_form_refused(message: str) -> bool:
    """True when an error reply says the server could not read the request's array form."""
    return any(p.search(message) for p in _ARRAY_FORM_REFUSALS)


class PolicyClient:
    """A GR00T policy-server client.

    `wire`: `auto` (settle on the server's era, retrying a refused request once in the other form),
    `npsave` (N1.6 era) or `msgpack-numpy` (current era). `sim_wrapper`: the server expects the flat
    observation form. `api_token`: sent in every request.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5555, *, timeout_s: float = 30.0,
                 api_token: str | None = None, wire: str = "auto", sim_wrapper: bool = False) -> None:
        import zmq

        self._zmq = zmq
        self.address = f"tcp://{host}:{port}"
        self.tag = self.address  # a label for messages, where a local policy has its embodiment tag
        self.timeout_s = timeout_s
        self.api_token = api_token
        self.sim_wrapper = sim_wrapper
        self.auto = wire == "auto"
        if not self.auto and wire not in (*WIRE_OPTIONS, "npy"):
            raise SvmsError(f"wire {wire!r}: expected one of {list(WIRE_OPTIONS)}")
        #: The array form requests are sent in: fixed, or (auto) settled from the server, or the first guess.
        self.wire = Wire(NPY) if self.auto else Wire(wire)
        self.settled = not self.auto
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

    def _exchange(self, request: Mapping[str, Any], wire: Wire, timeout: float) -> tuple[Any, Wire | None]:
        """One request/reply in `wire`'s array form; the decoded reply and the form it showed."""
        endpoint = request["endpoint"]
        socket = self._connect()
        socket.setsockopt(self._zmq.SNDTIMEO, int(timeout * 1000))
        payload = encode(request, wire)
        try:
            socket.send(payload)
            answered = socket.poll(int(timeout * 1000))
        except self._zmq.Again:
            answered = False
        except BaseException:  # e.g. Ctrl-C while waiting: a REQ socket without its reply is unusable
            self._drop_socket()
            raise
        if not answered:
            self._drop_socket()
            size = ""
            if len(payload) > LARGE_REQUEST_BYTES:  # ZeroMQ drops an over-limit message without a word
                size = (f"; the request was {len(payload) / 2**20:.1f} MiB, and svms serve never answers one "
                        "over its --max-message-bytes (64 MiB by default)")
            raise PolicyServerTimeout(f"no reply from {self.address} to {endpoint!r} within {timeout:g} s; is "
                                      f"the server running and reachable (host, port, firewall)?{size}")
        return decode(socket.recv())

    def _settle(self, wire: Wire | None) -> None:
        if self.auto and wire is not None:
            self.wire, self.settled = wire, True

    def call(self, endpoint: str, data: Mapping[str, Any] | None = None, *, timeout_s: float | None = None) -> Any:
        """Send one request and return the decoded reply; raises on an error reply or a timeout."""
        request: dict[str, Any] = {"endpoint": endpoint}
        if data is not None:
            request["data"] = data
        if self.api_token is not None:
            request["api_token"] = self.api_token
        timeout = self.timeout_s if timeout_s is None else timeout_s
        arrays = _has_arrays(data)
        sent = self.wire
        reply, shown = self._exchange(request, sent, timeout)
        refused = _error(reply)
        if refused is not None and arrays and self.auto and array_form_refused(refused):
            first, sent = sent, Wire(other_form(sent.form))  # once, in the other era's form
            reply, shown = self._exchange(request, sent, timeout)
            if _error(reply) is not None:
                raise PolicyServerError(
                    f"{self.address} refused {endpoint!r} in both array forms: as {WIRE_NAMES[first.form]}: "
                    f"{refused}; as {WIRE_NAMES[sent.form]}: {_error(reply)}")
        error = _error(reply)
        if error is not None:
            raise PolicyServerError(f"{self.address} refused {endpoint!r}: {error}{self._hint(error)}")
        self._settle(shown or (sent if arrays else None))
        return reply

    def _hint(self, error: str) -> str:
        """What to change on this side for the refusals whose cause is known."""
        if array_form_refused(error) and not self.auto:
            return (f" (the server does not read {self.wire.form} arrays: use --wire auto, or --wire "
                    f"{other_form(self.wire.form)})")
        if _FLAT_KEY_MISSING.search(error) and not self.sim_wrapper:
            return (" (the server runs GR00T's simulation wrapper and expects flat video.<key> / state.<key> "
                    "keys: pass --sim-wrapper, PolicyClient(sim_wrapper=True))")
        if "unauthorized" in error.lower() or "api token" in error.lower():
            return " (pass the server's token with --api-token T, PolicyClient(api_token=T))"
        return ""

    def ping(self, timeout_s: float | None = None) -> bool:
        """True when the server answers `ping` in time, False otherwise (never raises on a dead server)."""
        try:
            self.call("ping", timeout_s=timeout_s)
        except PolicyServerTimeout:
            return False
        return True

    def get_action(self, observation: Mapping[str, Any], options: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict]:
        """Nested observation in, `{key: (B, H, D)}` actions out (in the sim-wrapper form on the wire when
        `sim_wrapper`); without `sim_wrapper` observation and reply travel as they are."""
        if self.sim_wrapper:
            observation = flat_observation(observation)
        reply = self.call("get_action", {"observation": observation, "options": options})
        if not isinstance(reply, list | tuple) or len(reply) != 2 or not isinstance(reply[0], Mapping):
            raise SvmsError(f"{self.address} answered get_action with {type(reply).__name__}, not [action, info]")
        action = nested_action(reply[0]) if self.sim_wrapper else dict(reply[0])
        return action, reply[1]

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


def _error(reply: Any) -> str | None:
    """The message of an `{"error": ...}` reply, else None."""
    if isinstance(reply, Mapping) and set(reply) == {"error"}:
        return str(reply["error"])
    return None
