"""Configuration of the SVMS module, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_STREAM_NAMES = ("visual", "temporal", "state")
BALANCE_MODES = ("kl", "switch")


class SheafConfigError(ValueError):
    """An invalid `SheafStreamsConfig` value; the message says which field and how to fix it."""


def _path_edges(n_streams: int) -> tuple[tuple[int, int], ...]:
    return tuple((i, i + 1) for i in range(n_streams - 1))


def _is_connected(n: int, edges: tuple[tuple[int, int], ...]) -> bool:
    seen, frontier = {0}, [0]
    while frontier:
        v = frontier.pop()
        for u, w in edges:
            for a, b in ((u, w), (w, u)):
                if a == v and b not in seen:
                    seen.add(b)
                    frontier.append(b)
    return len(seen) == n


@dataclass(frozen=True)
class SheafStreamsConfig:
    """Sizes and switches of `SheafStreams`.

    `edges` are `(u, w)` stream-index pairs of the stream graph (default: the path 0-1, 1-2, ...);
    any connected simple graph works, e.g. the triangle `((0, 1), (1, 2), (0, 2))`.
    `stream_names` default to visual/temporal/state for 3 streams and `stream_<i>` otherwise.
    """

    d_model: int
    n_streams: int = 3
    stream_names: tuple[str, ...] | None = None
    d_stream: int = 768
    d_overlap: int = 384
    adapter_rank: int = 128
    edges: tuple[tuple[int, int], ...] | None = None
    diffusion_steps: int = 1
    # Dropout inside the stream MLPs. It draws from torch's global RNG, so in training it shifts the
    # dropout masks of whatever runs after (the action head): keep 0 for bit-identical baseline runs.
    dropout: float = 0.0
    router_hidden: int = 256
    stream_dropout_p: float = 0.15
    balance_mode: str = "kl"
    use_aux_heads: bool = True
    # False: every stream gets weight 1/S at every token (the "no router" ablation).
    use_router: bool = True
    # Anti-collapse terms of the consistency loss (see `svms.sheaf` docstring). With weight 2 a
    # fully collapsed map (constant or rank-1 outputs) costs 2, the largest value the normalised
    # disagreement can take, so collapsing can never lower the loss.
    overlap_std_floor: float = 0.1
    collapse_weight: float = 2.0
    eps: float = 1e-6

    def __post_init__(self) -> None:
        def fail(name: str, msg: str) -> None:
            raise SheafConfigError(f"SheafStreamsConfig.{name}: {msg}")

        for name in ("d_model", "n_streams", "d_stream", "d_overlap", "adapter_rank", "router_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, f"must be a positive integer, got {value!r}.")
        if self.n_streams < 2:
            fail("n_streams", f"a sheaf needs at least 2 streams to compare, got {self.n_streams}.")
        if self.adapter_rank > min(self.d_stream, self.d_overlap):
            fail("adapter_rank", f"rank {self.adapter_rank} exceeds min(d_stream, d_overlap) = "
                 f"{min(self.d_stream, self.d_overlap)}; lower it (default 128 for 768/384 stalks).")
        if not isinstance(self.diffusion_steps, int) or self.diffusion_steps < 0:
            fail("diffusion_steps", f"must be an integer >= 0 (0 disables the correction), "
                 f"got {self.diffusion_steps!r}.")
        for name in ("dropout", "stream_dropout_p"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                fail(name, f"must be a probability in [0, 1), got {value!r}.")
        if self.balance_mode not in BALANCE_MODES:
            fail("balance_mode", f"must be one of {BALANCE_MODES}, got {self.balance_mode!r}.")
        if self.overlap_std_floor < 0 or self.collapse_weight < 0 or self.eps <= 0:
            fail("overlap_std_floor/collapse_weight/eps", "must be >= 0 (eps > 0).")

        names = self.stream_names
        if names is None:
            names = DEFAULT_STREAM_NAMES if self.n_streams == 3 else tuple(
                f"stream_{i}" for i in range(self.n_streams))
        names = tuple(names)
        if len(names) != self.n_streams or len(set(names)) != len(names):
            fail("stream_names", f"need {self.n_streams} distinct names (one per stream), got {names!r}.")
        object.__setattr__(self, "stream_names", names)

        edges = _path_edges(self.n_streams) if self.edges is None else tuple(
            tuple(int(v) for v in e) for e in self.edges)
        seen = set()
        for e in edges:
            if len(e) != 2:
                fail("edges", f"each edge is a (u, w) pair of stream indices, got {e!r}.")
            u, w = e
            if not (0 <= u < self.n_streams and 0 <= w < self.n_streams):
                fail("edges", f"edge {e} names a stream outside 0..{self.n_streams - 1}.")
            if u == w:
                fail("edges", f"edge {e} is a self-loop; an edge must join two different streams.")
            key = frozenset(e)
            if key in seen:
                fail("edges", f"edge {e} appears twice (edges are undirected).")
            seen.add(key)
        if not edges or not _is_connected(self.n_streams, edges):
            fail("edges", f"the stream graph {edges} must connect all {self.n_streams} streams, "
                 "otherwise disconnected streams are never made consistent; add edges such as the "
                 "default path ((0, 1), (1, 2), ...).")
        object.__setattr__(self, "edges", edges)

    @property
    def n_edges(self) -> int:
        return len(self.edges)
