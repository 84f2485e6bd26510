"""`svms serve`: a checkpoint behind GR00T's policy-server protocol (`svms.serve`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Weights above this on a CPU mean the 3B model: seconds to minutes per request, so refuse unless asked.
CPU_WEIGHT_LIMIT_BYTES = 2 * 1024**3


@dataclass
class Serve:
    """Serve a baseline or SVMS checkpoint over GR00T's ZeroMQ + msgpack policy protocol, so NVIDIA's
    RoboCasa rollout client (or any GR00T client) can drive it unchanged.

    Endpoints ping, kill, get_action, reset and get_modality_config; arrays in both GR00T encodings;
    every bad request gets an {"error": ...} reply. Requests are bounded (message size, batch, image edge,
    state magnitude; NaN/Inf state refused), the API token is checked before the observation is decoded,
    and a request whose client has disconnected is dropped before it is computed. Stop with Ctrl-C, SIGTERM
    or the kill endpoint.
    """

    checkpoint: Path
    """checkpoint folder (config.json, weights, processor files) or a run folder (its newest checkpoint)"""
    embodiment_tag: str | None = None
    """embodiment to serve (default: the checkpoint's only tag with statistics)"""
    host: str = "127.0.0.1"
    """interface to listen on (0.0.0.0 for every interface)"""
    port: int = 5555
    sim_wrapper: bool = False
    """flat observation keys video.<cam> / state.<key> and action.<key> replies, as GR00T's sim clients send"""
    api_token: str | None = None
    """require this token in every request's api_token field"""
    device: str = "auto"
    """auto, cpu or cuda (the 3B model needs cuda)"""
    denoising_steps: int | None = None
    """Euler steps of the action head (default: the checkpoint's)"""
    compile: bool = False
    """run the model compiled (torch.compile; CUDA graphs on CUDA): the warm-up query compiles, and a query of
    a new shape (batch, prompt length) compiles again"""
    wire: Literal["auto", "npsave", "msgpack-numpy"] = "auto"
    """array encoding: auto (answer each request in its own), npsave (N1.6 era) or msgpack-numpy (current
    era); a fixed one refuses the other era's requests with an error naming both"""
    log_requests: Path | None = None
    """append one JSON line per request (endpoint, ok/error, batch, bytes, latencies in ms) to this file"""
    seed: int | None = None
    """seed the sampling noise; reset re-seeds it, so each episode draws the same noise"""
    max_message_bytes: int = 64 * 1024**2  # svms.serve.observation.MAX_MESSAGE_BYTES (not imported: torch)
    """largest request ZeroMQ lets in (MAXMSGSIZE, default 64 MiB); a larger one is never answered: ZeroMQ
    closes that client's connection and the client waits until its own timeout"""
    max_batch: int = 64
    """most observations in one get_action; more get an error reply"""
    max_image_edge: int = 2048
    """longest image edge (H or W) accepted; larger images get an error reply"""
    max_state_abs: float = 1e6
    """largest state magnitude accepted (inf: no limit); NaN and Inf are always refused"""
    heartbeat_s: float = 0.0
    """ping each connection this often and close one silent for 3 intervals, so a dead client host's
    requests are dropped (0: off; needs clients on libzmq 4.2 or later)"""

    def run(self) -> int:
        from svms.device import resolve_device
        from svms.errors import SvmsError
        from svms.policy import Gr00tPolicy
        from svms.serve.observation import Limits
        from svms.serve.server import PolicyServer, warm_up, wire_choice

        try:
            wire_choice(self.wire)  # before the slow load
        except SvmsError as err:
            raise SvmsError(f"--{err}") from None
        limits = Limits(self.max_message_bytes, self.max_batch, self.max_image_edge, self.max_state_abs)
        if not self.heartbeat_s >= 0:
            raise SvmsError(f"--heartbeat-s {self.heartbeat_s!r}: expected seconds ≥ 0 (0: off)")
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        folder = self._folder()
        if resolve_device(self.device).type == "cpu":
            self._check_fits_cpu(folder)
        logging.getLogger("svms.serve").info("loading %s", folder)
        policy = Gr00tPolicy.from_checkpoint(folder, self.embodiment_tag, device=self.device,
                                             denoising_steps=self.denoising_steps, seed=self.seed,
                                             compile=self.compile)
        warm_up(policy)
        server = PolicyServer(policy, sim_wrapper=self.sim_wrapper, api_token=self.api_token, wire=self.wire,
                              seed=self.seed, limits=limits)
        server.serve(self.host, self.port, self.log_requests, heartbeat_s=self.heartbeat_s)
        return 0

    def _folder(self) -> Path:
        from svms.errors import SvmsError
        from svms.model.checkpoint import resolve_init

        try:
            return resolve_init(Path(self.checkpoint))
        except SvmsError:
            raise SvmsError(f"--checkpoint {self.checkpoint}: neither a checkpoint folder (config.json, weights, "
                            "processor files) nor a run folder holding a checkpoint-<step>/") from None

    def _check_fits_cpu(self, folder: Path) -> None:
        from svms.errors import SvmsError

        size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        if size > CPU_WEIGHT_LIMIT_BYTES and self.device == "auto":
            raise SvmsError(f"{folder} holds {size / 1024**3:.1f} GiB of weights (the 3B model) and no CUDA GPU "
                            "is visible; serve it on a GPU machine, or pass --device cpu to serve it slowly anyway")
