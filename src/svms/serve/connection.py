"""What the policy server's ROUTER socket reads: one request with the envelope a REP socket would hand back,
and the TCP connection it came on, so the loop can tell a request whose client has gone.

What can be told: a client that closed its connection (a process that exited or was killed, or a client
that gave up and closed its socket, as `PolicyClient` does on a timeout) — libzmq closes its side of the
connection at once, so the fd the request came on (`ZMQ_SRCFD`) no longer holds that socket's inode; with
`svms serve --heartbeat-s`, also a client host that died without closing (ZeroMQ closes the connection when
its pings go unanswered). What cannot be told: a client still connected that no longer wants the answer
(a REQ socket that timed out but was kept open), a connection closed after its request started computing,
and, in a window of microseconds, a connection closed and its fd number reused before its request was read.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass

log = logging.getLogger("svms.serve")


@dataclass(frozen=True)
class Connection:
    """The TCP connection a request came on: libzmq's `ZMQ_SRCFD` and the inode of that socket when the
    request was read. libzmq closes a connection's fd as soon as the peer closes it (or a heartbeat times
    out), and a later connection may get the same fd number but never the same inode, so "the fd no longer
    holds that inode" means the client is gone. `inode` None: unknown (never reported gone)."""

    fd: int = -1
    inode: int | None = None

    @classmethod
    def of(cls, frame) -> Connection:
        import zmq

        try:
            fd = int(frame.get(zmq.SRCFD))  # deprecated in libzmq, present through 4.3
        except Exception:
            return cls()
        if fd < 0:
            return cls()
        try:
            info = os.fstat(fd)
        except OSError:
            return cls(fd, -1)  # closed before the request was even read
        return cls(fd, info.st_ino if stat.S_ISSOCK(info.st_mode) else -1)

    def gone(self) -> bool:
        if self.inode is None:
            return False
        if self.inode == -1:
            return True
        try:
            return os.fstat(self.fd).st_ino != self.inode
        except OSError:
            return True


@dataclass
class Request:
    """One request as the ROUTER read it: the envelope a REP socket would hand back (routing frames through
    the empty delimiter), the body frames and the connection they came on."""

    envelope: list
    body: list
    connection: Connection

    @property
    def size(self) -> int:
        return sum(len(f) for f in self.body)

    @classmethod
    def of(cls, frames: list) -> Request | None:
        """None for a message without the empty delimiter a REQ socket sends, which a REP socket discards too."""
        for i, frame in enumerate(frames[:-1]):
            if i > 0 and len(frame) == 0:
                body = frames[i + 1:]
                return cls(frames[:i + 1], [f.buffer for f in body], Connection.of(body[-1]))
        log.warning("dropped a message without a REQ envelope (%d frames); send requests from a REQ socket",
                    len(frames))
        return None
