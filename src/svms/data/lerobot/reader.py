"""Training samples from a GR00T-flavoured LeRobot dataset (v2.0, v2.1, v3.0; spec §7.3) as a torch `Dataset`.

Sample k is (episode, step i): rows i + delta_indices of every state/action key, frames
i + video deltas of every camera, and the instruction at i. Valid steps are 0 .. L − A with
A = max(action delta) − min(action delta) + 1 and L = min(parquet rows, declared length); with
`allow_padding` every step is valid and out-of-range rows are clamped to the episode. State and
action arrays are read once per episode and kept (they are small); video frames are decoded on
demand by seeking (`video.VideoDecoder`; in a v3.0 file shared by many episodes, from the episode's first
frame on), image features from the PNG bytes of their rows (`images`). What the reference tolerates
(a declared length that differs from the parquet rows, missing stats) is tolerated here too, with a warning.

Training asks for `dataset[(index, position)]`, position being the sample's place in the run
(`svms.train.sampling`): its random choices (the train image transform when `train_augment`, the
instruction when an episode has several) come from generators seeded by (seed, position), so a
resumed or multi-process run sees the same pixels and text. `dataset[index]` is the evaluation
view: eval image transform, instruction from the dataset's own stream.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from svms import seeding
from svms.data.aux_labels import prompt_aux_labels
from svms.data.collate import collate
from svms.data.lerobot.checks import check_loadable
from svms.data.lerobot.embodiment import resolve_config
from svms.data.lerobot.images import decode_image
from svms.data.lerobot.meta import DatasetMeta, load_meta, modality_range_problems
from svms.data.lerobot.stats_files import dataset_statistics
from svms.data.lerobot.video import DecoderCache, VideoDecoder
from svms.data.modality import EmbodimentConfig, normalize_tag
from svms.data.processor import Gr00tProcessor, ProcessedSample, ProcessorSettings
from svms.data.stats import embodiment_statistics
from svms.errors import SvmsError

#: Episodes of image-feature cameras whose (encoded) rows are kept, per camera, most recent first.
IMAGE_CACHE = 4


@dataclass
class RawSample:
    """One cut sample in physical units: frames {camera: [RGB uint8 (H, W, 3) per video delta]},
    state {key: float32 (T, D)}, action {key: float32 (H_e, D)}, the instruction string."""

    episode_index: int
    step: int
    video: dict[str, list[np.ndarray]]
    state: dict[str, np.ndarray]
    action: dict[str, np.ndarray]
    language: str


class Gr00tLeRobotDataset(Dataset):
    """GR00T samples of one dataset folder for one embodiment tag.

    `config` overrides the tag's modality config (e.g. from a checkpoint's processor config);
    `statistics` (the tag's entry of a checkpoint's statistics.json) overrides the dataset's
    meta/stats.json. `__getitem__` returns a `ProcessedSample` (key `index`, or `(index, position)`
    during training, see the module docstring); `raw_sample` the physical values; `collator()` turns
    a list of samples into the model batch. `train_augment` applies the train image transform to
    positioned keys; `seed` (>= 0) seeds the per-position generators.
    """

    def __init__(
        self,
        root: str | Path,
        embodiment_tag: str = "new_embodiment",
        config: EmbodimentConfig | None = None,
        statistics: Mapping[str, Any] | None = None,
        settings: ProcessorSettings | None = None,
        ids: Mapping[str, int] | None = None,
        allow_padding: bool = False,
        seed: int = 0,
        episodes: Sequence[int] | None = None,
        train_augment: bool = False,
    ):
        self.meta: DatasetMeta = load_meta(root)
        self.tag = normalize_tag(embodiment_tag)
        for problem in self.meta.problems:
            warnings.warn(f"{self.meta.root}: {problem}", stacklevel=2)
        ranges = modality_range_problems(self.meta)
        if ranges:
            raise SvmsError(f"{self.meta.root}: {ranges[0]}")
        self.config = resolve_config(self.meta, self.tag, config, ids)
        if not self.meta.episodes:
            raise SvmsError(
                f"{self.meta.root / self.meta.episode_list} lists no episode: the dataset is empty. "
                "Record or generate episodes before training."
            )
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SvmsError(f"dataset seed = {seed!r}: use an integer >= 0 (it seeds per-sample generators)")
        self.allow_padding = allow_padding
        self.seed = seed
        self.train_augment = train_augment
        self._lengths = np.asarray([self._episode_length(ep.index, ep.length) for ep in self.meta.episodes])
        deltas = self.config.action.delta_indices
        span = max(deltas) - min(deltas) + 1
        n_valid = self._lengths if allow_padding else np.maximum(self._lengths - span + 1, 0)
        if episodes is not None:  # a subset (a split): the other episodes contribute no sample
            chosen = set(int(e) for e in episodes)
            unknown = chosen - {ep.index for ep in self.meta.episodes}
            if unknown:
                raise SvmsError(f"{self.meta.root}: episodes {sorted(unknown)} are not in {self.meta.episode_list}")
            n_valid = np.where([ep.index in chosen for ep in self.meta.episodes], n_valid, 0)
        self._offsets = np.concatenate([[0], np.cumsum(n_valid)])
        # every error `svms data validate` reports in the episodes used, before any sample is cut
        used = [p for p, ep in enumerate(self.meta.episodes) if episodes is None or ep.index in chosen]
        check_loadable(self.meta, used, statistics=statistics is None)
        if self._offsets[-1] == 0:
            raise SvmsError(
                f"{self.meta.root}: no episode is long enough for an action chunk of {span} steps "
                f"(longest has {int(self._lengths.max())} frames); use longer episodes or allow_padding."
            )
        self._statistics = statistics
        self._settings = settings
        self._ids = ids
        self._processor: Gr00tProcessor | None = None
        self._episodes: dict[int, dict[str, np.ndarray]] = {}
        self._decoders = DecoderCache()
        self._images: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._rng: random.Random | None = None

    def _episode_length(self, index: int, declared: int) -> int:
        rows = self.meta.episode_rows(index)
        if rows != declared:
            warnings.warn(
                f"{self.meta.data_path(index)} has {rows} rows of episode {index} but {self.meta.episode_list} "
                f"declares length {declared}; using the first {min(rows, declared)} (fix the length).",
                stacklevel=3,
            )
        return min(rows, declared)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Sample index → (position in episodes.jsonl, step within the episode)."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        pos = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return pos, index - int(self._offsets[pos])

    @property
    def statistics(self) -> Mapping[str, Any]:
        """The tag's per-key statistics: the given ones, else the dataset's stats files."""
        if self._statistics is None:
            stats, rel = self.meta.stats, self.meta.relative_stats or {}
            needs_rel = self.meta.relative_stats is None and any(
                self.config.action_config(k).rep.name == "RELATIVE" for k in self.config.action.modality_keys
            )
            if stats is None or needs_rel:
                warnings.warn(
                    f"{self.meta.root / 'meta'} lacks stats.json or relative_stats.json; computing them in "
                    f"memory. Run `svms data stats {self.meta.root} --embodiment-tag {self.tag}` once to "
                    "store them.",
                    stacklevel=2,
                )
                stats, rel = dataset_statistics(self.meta, self.config)
            self._statistics = embodiment_statistics(stats, rel, self.meta.modality, self.config)
        return self._statistics

    @property
    def processor(self) -> Gr00tProcessor:
        if self._processor is None:
            self._processor = Gr00tProcessor(
                {self.tag: self.config}, {self.tag: self.statistics}, self._settings, self._ids
            )
        return self._processor

    def _columns(self, pos: int) -> dict[str, np.ndarray]:
        if pos not in self._episodes:
            meta, cfg = self.meta, self.config
            numeric = {meta.column_of(m, k) for m in ("state", "action") for k in getattr(cfg, m).modality_keys}
            language = meta.language_column(cfg.language.modality_keys[0])
            path = meta.data_path(meta.episodes[pos].index)
            episode = meta.episodes[pos].index
            arrays = meta.read_episode(episode, sorted(numeric) + ([language] if language else []))
            for column in numeric:
                self._check_vector(path, episode, column, arrays[column])
                values = arrays[column] = np.asarray(arrays[column], np.float32)
                if not np.all(np.isfinite(values)):
                    row = int(np.argwhere(~np.isfinite(values))[0][0])
                    raise SvmsError(
                        f"{path}: column {column!r} holds NaN or Inf (first at row {row}); the model "
                        "cannot learn from it. Fix or drop those rows (`svms data validate` lists them)."
                    )
            self._episodes[pos] = arrays
        return self._episodes[pos]

    def _check_vector(self, path: Path, episode: int, column: str, values: np.ndarray) -> None:
        """A state/action column must hold numbers, a list per row, as wide as the slices read from it."""
        for m in ("state", "action"):
            for key in getattr(self.config, m).modality_keys:
                cut = self.meta.key_slice(m, key)
                if self.meta.column_of(m, key) != column:
                    continue
                if values.dtype.kind not in "fiub":
                    found = "strings" if values.dtype.kind in "OUS" else f"{values.dtype} values"
                elif values.ndim != 2:
                    found = "one number per row"
                elif values.shape[1] < cut.stop:
                    found = f"{values.shape[1]} values per row"
                else:
                    continue
                raise SvmsError(
                    f"{path} (episode {episode}): column {column!r} holds {found}, but {m} key {key!r} reads "
                    f"[{cut.start}:{cut.stop}] of it (meta/modality.json); store a float list per row at least "
                    f"{cut.stop} wide (`svms data validate {self.meta.root}` lists every such problem)."
                )

    def _rows(self, step: int, deltas: Sequence[int], length: int) -> np.ndarray:
        return np.clip(step + np.asarray(deltas, dtype=np.int64), 0, length - 1)

    def _language(self, pos: int, step: int, arrays: Mapping[str, np.ndarray], position: int | None = None) -> str:
        key = self.config.language.modality_keys[0]
        episode = self.meta.episodes[pos]
        if position is not None:  # a training sample: its own generator (str seeds are hashed with SHA-512)
            rng = random.Random(f"language/{self.seed}/{position}")
        else:
            if self._rng is None:
                self._rng = random.Random(hash((self.seed, torch.initial_seed())))
            rng = self._rng
        if key == "task":
            return rng.choice(episode.tasks) if episode.tasks else ""
        if key == "sub_task":
            back = self.config.action_horizon // 2
            texts = [s.text for s in episode.sub_tasks if s.start - back <= step < s.end]
            return rng.choice(texts) if texts else ""
        column = self.meta.language_column(key)
        task_index = int(arrays[column][step])
        if task_index not in self.meta.tasks:
            raise SvmsError(
                f"{self.meta.data_path(episode.index)}: column {column!r} row {step} holds task index "
                f"{task_index}, which {self.meta.task_list} does not define; add that task or fix the column."
            )
        return self.meta.tasks[task_index]

    # ---- whole episodes (open-loop evaluation) ------------------------------------------------------
    def position_of(self, episode_index: int) -> int:
        """Position in the episode list of episode `episode_index`."""
        for pos, ep in enumerate(self.meta.episodes):
            if ep.index == episode_index:
                return pos
        raise SvmsError(f"{self.meta.root}: no episode {episode_index} in {self.meta.episode_list}")

    def episode_length(self, pos: int) -> int:
        return int(self._lengths[pos])

    def sample_at(self, pos: int, step: int) -> RawSample:
        """The raw sample at any step of an episode (rows beyond the ends are clamped)."""
        saved = self._offsets
        try:
            self._offsets = np.concatenate([[0], np.cumsum(self._lengths)])
            return self.raw_sample(int(self._offsets[pos]) + step)
        finally:
            self._offsets = saved

    def episode_actions(self, pos: int) -> dict[str, np.ndarray]:
        """Every recorded action of the episode per key, (L, D_key) float32 in physical units."""
        arrays, meta, length = self._columns(pos), self.meta, self.episode_length(pos)
        return {k: np.asarray(arrays[meta.column_of("action", k)][:length][:, meta.key_slice("action", k)], np.float32)
                for k in self.config.action.modality_keys}

    def episode_task(self, pos: int) -> str:
        """The episode's first task string (for per-task results)."""
        tasks = self.meta.episodes[pos].tasks
        return tasks[0] if tasks else ""

    def raw_sample(self, index: int, position: int | None = None, video: bool = True) -> RawSample:
        """Sample `index` in physical units (no normalisation, no image transform); `position`, the
        sample's place in a training run, seeds the instruction choice. `video=False` skips decoding
        (an empty `video`): for state-only consumers such as the learning benchmark's MLP."""
        pos, step = self.locate(index)
        length = int(self._lengths[pos])
        arrays = self._columns(pos)
        meta, cfg = self.meta, self.config
        episode = meta.episodes[pos].index
        out = {}
        for modality in ("state", "action"):
            m = getattr(cfg, modality)
            rows = self._rows(step, m.delta_indices, length)
            out[modality] = {
                k: arrays[meta.column_of(modality, k)][rows][:, meta.key_slice(modality, k)] for k in m.modality_keys
            }
        frames = self._rows(step, cfg.video.delta_indices, length)
        video = {k: self._camera(pos, k, frames, length) for k in (cfg.video.modality_keys if video else ())}
        language = self._language(pos, step, arrays, position)
        return RawSample(episode, step, video, out["state"], out["action"], language)

    def _camera(self, pos: int, key: str, frames: np.ndarray, length: int) -> list[np.ndarray]:
        """Frames at steps `frames` of camera `key`: from its mp4 (offset by where the episode starts in
        it), or decoded from the image feature's bytes in the episode's rows."""
        episode = self.meta.episodes[pos].index
        if self.meta.camera_dtype(key) == "image":
            column = self.meta.video_original_key(key)
            cells = self._images.pop((pos, key), None)
            if cells is None:
                cells = self.meta.read_episode(episode, [column])[column]
            self._images[(pos, key)] = cells
            while len(self._images) > IMAGE_CACHE:
                self._images.popitem(last=False)
            where = f"{self.meta.data_path(episode)} (episode {episode}): column {column!r}"
            return [decode_image(cells[i], f"{where} row {i}") for i in frames.tolist()]
        start = self.meta.video_start(episode, key)
        return self._video(self.meta.video_path(episode, key), start + length).frames((start + frames).tolist())

    def _video(self, path: Path, length: int) -> VideoDecoder:
        decoder = self._decoders.get(path)
        if 0 < decoder.n_frames < length:
            raise SvmsError(
                f"video file {path} has {decoder.n_frames} frames but its episode needs {length}; the "
                "video is shorter than its parquet rows. Re-encode it with one frame per row."
            )
        return decoder

    def __getitem__(self, key: int | tuple[int, int]) -> ProcessedSample:
        index, position = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (key, None)
        with WorkerDataError.carried():
            raw = self.raw_sample(index, position)
            rng = None
            if position is not None and self.train_augment:
                rng = seeding.rng(self.seed, "augment", position)
            return self.processor(self.tag, raw.video, raw.language, raw.state, raw.action, rng=rng)

    def collator(self, tokenizer=None, aux_labels: bool = True) -> BatchCollator:
        return BatchCollator(tokenizer, aux_labels)


@dataclass
class BatchCollator:
    """`collate_fn` for a DataLoader: the model batch (spec §5.6) plus `aux_labels` (B, L, 3).

    The tokenizer defaults to the bundled one, loaded once per worker process.
    """

    tokenizer: Any = None
    aux_labels: bool = True

    def __call__(self, samples: Sequence[ProcessedSample]) -> dict[str, Any]:
        with WorkerDataError.carried():
            batch = collate(samples, self.tokenizer)
            if self.aux_labels:
                batch["aux_labels"] = prompt_aux_labels(batch["input_ids"], batch["attention_mask"],
                                                        self.tokenizer)
            return batch


#: Brackets an error message inside the text torch builds from a worker's traceback.
_MARK = "\x1e"


class WorkerDataError(SvmsError):
    """An SvmsError raised in a DataLoader worker process, arriving in the main process as its own message.

    torch re-raises a worker's exception in the main process as `type(text)`, text being "Caught ... in
    DataLoader worker process N" plus the worker's whole traceback. In the worker, this error's message is
    the original one between two marks; constructed from torch's text, it keeps only what lies between
    them, so the user sees the one paragraph the data layer wrote (works with fork and spawn alike)."""

    def __init__(self, text: str = ""):
        parts = str(text).split(_MARK)
        super().__init__(parts[1] if len(parts) >= 3 else text)

    @classmethod
    @contextlib.contextmanager
    def carried(cls):
        """In a worker process, turn an SvmsError raised inside into a WorkerDataError; elsewhere do nothing."""
        try:
            yield
        except SvmsError as error:
            if isinstance(error, WorkerDataError) or get_worker_info() is None:
                raise
            carrier = cls()
            carrier.args = (f"{_MARK}{error}{_MARK}",)
            raise carrier from None
