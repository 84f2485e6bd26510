"""Write → read round trip, sample cutting (spec §7.3), statistics, and the model batch."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from svms.data import (
    ActionConfig,
    ActionRep,
    EmbodimentConfig,
    ModalityConfig,
    ProcessorSettings,
    compute_relative_stats,
    compute_stats,
)
from svms.data.lerobot import (
    Gr00tLeRobotDataset,
    decode_all,
    load_meta,
    moving_frames,
    write_stats,
    write_synthetic_dataset,
)

LENGTHS = (24, 30, 36)
INSTRUCTIONS = ("Pick the apple from the counter and place it in the sink.", "open the microwave door")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_ds")
    write_synthetic_dataset(root, LENGTHS, instructions=INSTRUCTIONS)
    return root


def _parquet(root, episode):
    table = pq.read_table(root / f"data/chunk-000/episode_{episode:06d}.parquet")
    return {c: table.column(c).to_pylist() for c in table.column_names}


def _config(
    state_deltas=(0,),
    action_deltas=tuple(range(16)),
    video_deltas=(0,),
    language="annotation.human.action.task_description",
    relative=(),
):
    return EmbodimentConfig(
        video=ModalityConfig(tuple(video_deltas), ("cam0", "cam1")),
        state=ModalityConfig(tuple(state_deltas), ("arm", "gripper")),
        action=ModalityConfig(
            tuple(action_deltas),
            ("arm", "gripper"),
            action_configs=tuple(
                ActionConfig(ActionRep.RELATIVE if k in relative else ActionRep.ABSOLUTE) for k in ("arm", "gripper")
            ),
        ),
        language=ModalityConfig((0,), (language,)),
    )


def test_round_trip_metadata_parquet_and_video(dataset_dir):
    meta = load_meta(dataset_dir)
    assert [e.length for e in meta.episodes] == list(LENGTHS)
    assert meta.version == "v2.1" and meta.fps == 20
    assert sorted(meta.tasks.values()) == sorted(INSTRUCTIONS)
    assert meta.modality["state"] == {"arm": {"start": 0, "end": 3}, "gripper": {"start": 3, "end": 4}}
    cols = _parquet(dataset_dir, 1)
    assert len(cols["observation.state"]) == 30 and len(cols["observation.state"][0]) == 4
    assert cols["episode_index"] == [1] * 30 and cols["index"][0] == 24
    frames = decode_all(meta.video_path(1, "cam1"))
    assert frames.shape == (30, 32, 32, 3)
    expected = moving_frames(30, (32, 32), seed=1 + 11).astype(int)
    assert np.abs(frames.astype(int) - expected).mean() < 12


def test_writer_is_deterministic(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", (10,), stats=True)
    b = write_synthetic_dataset(tmp_path / "b", (10,), stats=True)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    for rel in files:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel


def test_valid_steps_and_locate(dataset_dir):
    ds = Gr00tLeRobotDataset(dataset_dir)
    assert ds.config.action_horizon == 16
    assert len(ds) == sum(n - 16 + 1 for n in LENGTHS)
    assert ds.locate(0) == (0, 0) and ds.locate(8) == (0, 8) and ds.locate(9) == (1, 0)
    assert ds.locate(len(ds) - 1) == (2, 36 - 16)
    with pytest.raises(IndexError):
        ds.locate(len(ds))


def test_sample_rows_follow_delta_indices(dataset_dir):
    ds = Gr00tLeRobotDataset(dataset_dir)
    raw = ds.raw_sample(9 + 7)  # episode 1, step 7
    assert (raw.episode_index, raw.step) == (1, 7)
    cols = _parquet(dataset_dir, 1)
    state = np.asarray(cols["observation.state"], np.float32)
    action = np.asarray(cols["action"], np.float32)
    np.testing.assert_array_equal(raw.state["arm"], state[[7], 0:3])
    np.testing.assert_array_equal(raw.state["gripper"], state[[7], 3:4])
    np.testing.assert_array_equal(raw.action["arm"], action[7:23, 0:3])
    assert raw.action["gripper"].shape == (16, 1) and raw.action["arm"].dtype == np.float32
    frames = decode_all(ds.meta.video_path(1, "cam0"))
    np.testing.assert_array_equal(raw.video["cam0"][0], frames[7])
    assert raw.language == INSTRUCTIONS[1]


def test_negative_deltas_clamp_and_padding(dataset_dir):
    cfg = _config(state_deltas=(-2, 0), action_deltas=(0, 1, 2, 3), video_deltas=(-1, 0))
    ds = Gr00tLeRobotDataset(dataset_dir, config=cfg)
    assert len(ds) == sum(n - 4 + 1 for n in LENGTHS)
    raw = ds.raw_sample(0)
    state = np.asarray(_parquet(dataset_dir, 0)["observation.state"], np.float32)
    np.testing.assert_array_equal(raw.state["arm"], state[[0, 0], 0:3])  # row -2 clamped to 0
    assert len(raw.video["cam0"]) == 2
    padded = Gr00tLeRobotDataset(dataset_dir, config=cfg, allow_padding=True)
    assert len(padded) == sum(LENGTHS)
    last = padded.raw_sample(LENGTHS[0] - 1)
    action = np.asarray(_parquet(dataset_dir, 0)["action"], np.float32)
    np.testing.assert_array_equal(last.action["arm"], action[[23, 23, 23, 23], 0:3])


def test_language_from_episode_tasks_and_sub_tasks(tmp_path):
    root = tmp_path / "ds"
    write_synthetic_dataset(root, (20, 20), instructions=("pick the apple", "open the drawer"))
    ds = Gr00tLeRobotDataset(root, config=_config(action_deltas=(0, 1, 2, 3), language="task"))
    assert ds.raw_sample(0).language == "pick the apple"
    assert ds.raw_sample(len(ds) - 1).language == "open the drawer"
    lines = (root / "meta/episodes.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["sub_tasks"] = [{"start": 8, "end": 12, "text": "grasp the apple"}]
    (root / "meta/episodes.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    ds = Gr00tLeRobotDataset(root, config=_config(action_deltas=(0, 1, 2, 3), language="sub_task"))
    # span [8, 12) extended backwards by horizon // 2 = 2 frames covers steps 6..11
    assert [ds.raw_sample(i).language for i in (5, 6, 11, 12)] == ["", "grasp the apple", "grasp the apple", ""]


def test_stats_match_svms_data_stats(dataset_dir, tmp_path):
    meta = load_meta(dataset_dir)
    episodes = []
    for ep in meta.episodes:
        cols = _parquet(dataset_dir, ep.index)
        episodes.append({c: np.asarray(cols[c], np.float32) for c in ("observation.state", "action", "timestamp")})
    expected = compute_stats(episodes, ["observation.state", "action", "timestamp"])
    assert json.loads((dataset_dir / "meta/stats.json").read_text()) == json.loads(json.dumps(expected))
    assert json.loads((dataset_dir / "meta/relative_stats.json").read_text()) == {}
    # a relative config gets relative statistics (H_e, D) from the same windows
    cfg = _config(relative=("arm",))
    expected_rel = compute_relative_stats(episodes, meta.modality, cfg)
    copy = tmp_path / "copy"
    write_synthetic_dataset(copy, LENGTHS, instructions=INSTRUCTIONS, stats=False)
    write_stats(copy, config=cfg)
    got = json.loads((copy / "meta/relative_stats.json").read_text())
    assert got == json.loads(json.dumps(expected_rel))
    assert np.asarray(got["arm"]["mean"]).shape == (16, 3)


def test_missing_stats_are_computed_with_a_warning(tmp_path):
    root = tmp_path / "nostats"
    write_synthetic_dataset(root, (20,), stats=False)
    ds = Gr00tLeRobotDataset(root)
    with pytest.warns(UserWarning, match="svms data stats"):
        stats = ds.statistics
    assert set(stats["state"]) == {"arm", "gripper"}


def test_length_mismatch_is_tolerated_with_a_warning(tmp_path):
    root = tmp_path / "mismatch"
    write_synthetic_dataset(root, (20, 20))
    lines = (root / "meta/episodes.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["length"] = 25
    (root / "meta/episodes.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with pytest.warns(UserWarning, match="declares length 25"):
        ds = Gr00tLeRobotDataset(root)
    assert len(ds) == 5 + 5


def _check_batch(batch, batch_size, max_state_dim, max_action_dim, horizon, image=252):
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "pixel_values",
        "image_sizes",
        "state",
        "embodiment_id",
        "action",
        "action_mask",
        "aux_labels",
    }
    length = batch["input_ids"].shape[1]
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.int64
    assert batch["attention_mask"].shape == (batch_size, length)
    assert len(batch["pixel_values"]) == 2 * batch_size  # two cameras, one video step
    assert all(p.shape == (1, 3, image, image) and p.dtype == torch.float32 for p in batch["pixel_values"])
    assert batch["image_sizes"].tolist() == [[image, image]] * (2 * batch_size)
    assert batch["state"].shape == (batch_size, 1, max_state_dim) and batch["state"].dtype == torch.float32
    assert batch["action"].shape == (batch_size, horizon, max_action_dim)
    assert batch["action_mask"].shape == (batch_size, horizon, max_action_dim)
    assert batch["action_mask"].sum().item() == batch_size * 16 * 4
    assert batch["embodiment_id"].tolist() == [10] * batch_size
    labels = batch["aux_labels"]
    assert labels.shape == (batch_size, length, 3) and labels.dtype == torch.int64
    assert ((labels == -100).all(-1) == (batch["attention_mask"] == 0)).all()
    image = batch["input_ids"] == 151669
    assert (labels[image] == torch.tensor([1, 0, 0])).all()


def test_dataloader_batch_has_the_model_keys(dataset_dir):
    ds = Gr00tLeRobotDataset(dataset_dir)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, shuffle=True, collate_fn=ds.collator(), generator=torch.Generator().manual_seed(0)
    )
    batch = next(iter(loader))
    _check_batch(batch, 3, 128, 128, 50)
    # the instruction's words are labelled: "apple" visual, "pick"/"open" temporal
    assert (batch["aux_labels"][..., 1] == 1).any()


@pytest.mark.slow
def test_dataloader_with_workers(dataset_dir):
    """Workers are started with spawn: forking this test process, which already ran decoders,
    tokenizers and torch kernels, can deadlock in the child (see the report of issue #4)."""
    ds = Gr00tLeRobotDataset(dataset_dir)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=ds.collator(), multiprocessing_context="spawn"
    )
    batches = list(loader)
    assert sum(b["state"].shape[0] for b in batches) == len(ds)


def test_pipeline_batch_feeds_the_tiny_policy(dataset_dir):
    from svms.model import Gr00tN1d6, Gr00tN1d6Config

    config = replace(Gr00tN1d6Config.preset("tiny"), use_sheaf_streams=True)
    torch.manual_seed(0)
    model = Gr00tN1d6(config).eval()
    settings = ProcessorSettings(
        max_state_dim=config.max_state_dim,
        max_action_dim=config.max_action_dim,
        max_action_horizon=config.action_horizon,
        shortest_image_edge=56,
    )
    ds = Gr00tLeRobotDataset(dataset_dir, settings=settings)
    batch = ds.collator()([ds[0], ds[len(ds) - 1]])
    _check_batch(batch, 2, config.max_state_dim, config.max_action_dim, config.action_horizon, image=56)
    with torch.no_grad():
        out = model(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    assert out.svms is not None and out.svms.aux_loss is not None
