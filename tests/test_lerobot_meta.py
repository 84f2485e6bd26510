"""NVIDIA's own metadata (tests/fixtures/real_meta, copied from shared/real-meta) is accepted: two demo
datasets' meta/ folders and four example modality.json files, with data synthesised by our writer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from svms.data.lerobot import (
    EpisodeData,
    Gr00tLeRobotDataset,
    LeRobotWriter,
    fill_from_meta,
    inspect_dataset,
    load_meta,
    moving_frames,
    validate_dataset,
)
from svms.data.lerobot.embodiment import config_from_modality_json
from svms.data.modality import MODALITY_CONFIGS

REAL_META = Path(__file__).resolve().parent / "fixtures" / "real_meta"  # a copy of shared/real-meta


def _copy_meta(name: str, dest: Path, max_length: int | None = 20) -> Path:
    """Copy a real meta/ folder; shorten episodes to `max_length` frames (everything else as written)."""
    root = dest / name
    shutil.copytree(REAL_META / name, root / "meta")
    if max_length is not None:
        path = root / "meta/episodes.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            row["length"] = min(row["length"], max_length)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        info = json.loads((root / "meta/info.json").read_text())
        info["total_frames"] = sum(r["length"] for r in rows)
        (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return root


@pytest.mark.parametrize("name", ["cube_to_bowl_5", "gr1.PickNPlace"])
def test_real_meta_parses_with_its_quirks(name, tmp_path):
    meta = load_meta(_copy_meta(name, tmp_path, max_length=None))
    assert meta.version in ("v2.0", "v2.1") and len(meta.episodes) == 5
    assert meta.problems == ()
    for key in meta.modality["video"]:
        assert meta.video_feature_info(key)["video.codec"] in ("h264", "av1")
    assert meta.stats is not None and meta.relative_stats is not None


@pytest.mark.parametrize("name", ["cube_to_bowl_5", "gr1.PickNPlace"])
def test_real_meta_with_synthesised_data_is_valid_and_loads(name, tmp_path):
    root = _copy_meta(name, tmp_path)
    fill_from_meta(root)
    problems = [p for p in validate_dataset(root) if p.severity == "error"]
    assert problems == []
    summary = inspect_dataset(root)
    assert summary.episodes == 5 and summary.frames == 100
    ds = Gr00tLeRobotDataset(root)  # a custom embodiment built from modality.json
    sample = ds[len(ds) - 1]
    assert sample.state.shape == (1, 128) and sample.action.shape == (50, 128)
    raw = ds.raw_sample(0)
    assert raw.language in ds.meta.tasks.values()
    cam = next(iter(raw.video))
    info = ds.meta.video_feature_info(cam)
    assert raw.video[cam][0].shape == (info["video.height"], info["video.width"], 3)


def test_gr1_language_from_episode_task_list(tmp_path):
    root = _copy_meta("gr1.PickNPlace", tmp_path)
    fill_from_meta(root)
    cfg = config_from_modality_json(load_meta(root).modality)
    cfg = type(cfg)(cfg.video, cfg.state, cfg.action, type(cfg.language)((0,), ("task",)))
    ds = Gr00tLeRobotDataset(root, config=cfg, seed=3)
    drawn = {ds.raw_sample(0).language for _ in range(30)}
    assert drawn == {"pick the pear from the counter and place it in the plate", "valid"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cube_to_bowl_5", "gr1.PickNPlace"])
def test_real_meta_full_length(name, tmp_path):
    root = _copy_meta(name, tmp_path, max_length=None)
    fill_from_meta(root)
    assert [p for p in validate_dataset(root) if p.severity == "error"] == []


EXAMPLES = {
    "examples_LIBERO_modality.json": "libero_panda",
    "examples_SimplerEnv_bridge_modality.json": "oxe_widowx",
    "examples_SimplerEnv_fractal_modality.json": "oxe_google",
    "examples_SO100_modality.json": "new_embodiment",
}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_example_modality_json_reads_with_its_embodiment(example, tmp_path):
    modality = json.loads((REAL_META / example).read_text())
    tag = EXAMPLES[example]

    def widths(m):
        return {k: e["end"] - e["start"] for k, e in modality[m].items()}

    cams = list(modality["video"])
    extra = [f"annotation.{k}" for k, e in modality["annotation"].items() if "original_key" not in e]
    writer = LeRobotWriter(tmp_path / "ds", 10, widths("state"), widths("action"), cams)
    rng = np.random.default_rng(0)
    for _ in range(2):
        n = 20
        writer.add_episode(
            EpisodeData(
                rng.standard_normal((n, sum(widths("state").values()))),
                rng.standard_normal((n, sum(widths("action").values()))),
                {c: moving_frames(n, (32, 32)) for c in cams},
                "put the cup on the plate",
                extra={c: np.zeros(n, np.int64) for c in extra},
            )
        )
    writer.finish(tag)
    (tmp_path / "ds/meta/modality.json").write_text(json.dumps(modality, indent=4))
    assert [p for p in validate_dataset(tmp_path / "ds") if p.severity == "error"] == []
    ds = Gr00tLeRobotDataset(tmp_path / "ds", tag)
    if tag in MODALITY_CONFIGS:
        assert ds.config.state.modality_keys == MODALITY_CONFIGS[tag].state.modality_keys
    sample = ds[0]
    assert sample.language == "put the cup on the plate"
    assert sample.action_mask.sum() == ds.config.action_horizon * sum(
        widths("action")[k] for k in ds.config.action.modality_keys
    )
