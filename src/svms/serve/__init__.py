"""Serving a checkpoint over GR00T's ZeroMQ + msgpack policy protocol (spec §9.1), and the matching client.

`wire` (the two array encodings), `observation` (the sim-wrapper flat form), `server` (the REP loop),
`client` (`PolicyClient`), `tiny` (a servable tiny checkpoint for tests and benchmarks). pyzmq is imported
only when a server or client starts.
"""

from svms.serve.client import PolicyClient, PolicyServerError, PolicyServerTimeout, parse_address
from svms.serve.server import PolicyServer
from svms.serve.wire import MSGPACK_NUMPY, NPY, Wire, WireError, decode, encode

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
