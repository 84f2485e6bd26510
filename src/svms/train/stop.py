"""Graceful stop on SIGTERM / SIGINT: finish the optimizer step, save a checkpoint, exit 128 + signal.

SIGTERM is how a cluster's time limit arrives, SIGINT is Ctrl-C. The first one only sets a flag the training
loop reads after each step (with several processes the flag is reduced with the step's losses, so every rank
stops after the same step); the handlers are then reset to the default action, so a second signal ends the
process at once, with the last complete checkpoint kept (checkpoints are renamed into place only when whole).
"""

from __future__ import annotations

import signal
import sys
import threading

from svms.errors import SvmsError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(SvmsError):
    """Training ended early on a signal; `exit_code` is the shell's 128 + signal number (143, 130)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class WorkersStopped(Exception):
    """The data workers ended after a stop signal, before the current step had its samples (a signal sent to
    the whole process group, as clusters do, reaches them too)."""


class StopSignals:
    """Installs the handlers in the main thread (a no-op elsewhere: Python delivers signals there only)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._sigchld: object = None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "none"

    def install(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        for s in SIGNALS:  # a second signal: the default action, at once
            signal.signal(s, signal.SIG_DFL)
        print(f"{signal.Signals(signum).name} received: finishing this optimizer step, then saving a checkpoint "
              "(send it again to stop at once; the last complete checkpoint is kept)", file=sys.stderr, flush=True)

    def ignore_in_children(self) -> None:
        """Until `restore_handlers`: ignore both signals, so that worker processes started now (DataLoader
        workers are spawned, and an ignored signal survives exec) leave the decision to this process instead of
        dying mid-step and failing the data loader."""
        if self._previous:
            for s in SIGNALS:
                signal.signal(s, signal.SIG_IGN)

    def restore_handlers(self) -> None:
        """Back to the stop handlers, and wrap the SIGCHLD handler the data loader installed (it raises in the
        middle of whatever runs when a worker dies): once stopping, a worker's death is expected and surfaces
        where the next batch is drawn instead (`WorkersStopped`)."""
        if not self._previous:
            return
        for s in SIGNALS:
            signal.signal(s, signal.SIG_DFL if self.received is not None else self._handle)
        loader_handler = signal.getsignal(signal.SIGCHLD)
        if callable(loader_handler) and self._sigchld is None:
            self._sigchld = loader_handler

            def on_child(signum, frame) -> None:
                if self.received is None:
                    loader_handler(signum, frame)

            signal.signal(signal.SIGCHLD, on_child)

    def uninstall(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if self._sigchld is not None:
            signal.signal(signal.SIGCHLD, self._sigchld)  # torch installs its own only once per process
        self._previous, self._sigchld = {}, None
