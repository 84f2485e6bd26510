"""GR00T-flavoured LeRobot v2.0/v2.1 datasets (spec §7): read, write, validate, summarise.

`meta` (meta/ files), `parquet` (episode columns), `video` (random-access decoding), `embodiment`
(which modality config reads a dataset), `stats_files` (stats.json / relative_stats.json),
`reader` (training samples, batches), `writer` (new datasets), `validate`, `inspect`.
"""

from svms.data.lerobot.embodiment import config_from_modality_json, resolve_config
from svms.data.lerobot.inspect import DatasetSummary, inspect_dataset
from svms.data.lerobot.meta import DatasetMeta, EpisodeInfo, load_meta
from svms.data.lerobot.reader import BatchCollator, Gr00tLeRobotDataset, RawSample
from svms.data.lerobot.stats_files import dataset_statistics, write_stats
from svms.data.lerobot.validate import Problem, validate_dataset
from svms.data.lerobot.video import DecoderCache, VideoDecoder, decode_all, probe_video
from svms.data.lerobot.writer import (
    EpisodeData,
    LeRobotWriter,
    fill_from_meta,
    moving_frames,
    write_synthetic_dataset,
    write_video,
)

__all__ = [
    "BatchCollator",
    "DatasetMeta",
    "DatasetSummary",
    "DecoderCache",
    "EpisodeData",
    "EpisodeInfo",
    "Gr00tLeRobotDataset",
    "LeRobotWriter",
    "Problem",
    "RawSample",
    "VideoDecoder",
    "config_from_modality_json",
    "dataset_statistics",
    "decode_all",
    "fill_from_meta",
    "inspect_dataset",
    "load_meta",
    "moving_frames",
    "probe_video",
    "resolve_config",
    "validate_dataset",
    "write_stats",
    "write_synthetic_dataset",
    "write_video",
]
