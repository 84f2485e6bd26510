"""Serving a policy over GR00T's ZeroMQ + msgpack policy protocol (spec §9.1).

`server` (the request loop), `connection` (the socket), `observation` (the limits of one request). The wire
(`svms.policy.wire`, `svms.policy.flat`) and the client (`svms.policy.remote.PolicyClient`) belong to the
policy package, since evaluation and rollouts use them without a server; they are re-exported here. pyzmq is
imported only when a server or client starts.
"""

from svms.policy.remote import PolicyClient, PolicyServerError, PolicyServerTimeout, parse_address
from svms.policy.wire import MSGPACK_NUMPY, NPY, Wire, WireError, decode, encode
from svms.serve.server import PolicyServer

__all__ = [
    "MSGPACK_NUMPY",
    "NPY",
    "PolicyClient",
    "PolicyServer",
    "PolicyServerError",
    "PolicyServerTimeout",
    "Wire",
    "WireError",
    "decode",
    "encode",
    "parse_address",
]
