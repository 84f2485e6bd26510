"""The released GR00T-N1.6-3B checkpoint's own metadata (tests/fixtures/real_checkpoint/, no weights): the
preset builds exactly the model it stores, its processor files load and write back unchanged, and a fine-tune
from a checkpoint processes and saves with the checkpoint's key order and settings, not the dataset's."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from svms.cli import main
from svms.data.modality import MODALITY_CONFIGS
from svms.data.processor import ProcessorSettings
from svms.data.processor_files import load_processor, run_processor, save_processor
from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config

RELEASE = Path(__file__).parent / "fixtures" / "real_checkpoint"
TAG = "robocasa_panda_omron"
JITTER = {"brightness": 0.3, "contrast": 0.4, "saturation": 0.5, "hue": 0.08}


def release(name: str):
    return json.loads((RELEASE / name).read_text())


def release_kwargs() -> dict:
    return release("processor_config.json")["processor_kwargs"]


# ---- the n1d6-3b preset is the release's config.json and state dict ----------------------------------------
def test_preset_equals_every_field_of_the_released_config():
    ours = Gr00tN1d6Config.preset("n1d6-3b").to_dict()
    theirs = release("config.json")
    assert {k: ours[k] for k in theirs} == theirs
    assert ours["state_dropout_prob"] == 0.0


def test_manifest_prints_exactly_the_released_stored_tensors(capsys):
    assert main(["compat", "manifest", "--preset", "n1d6-3b"]) == 0
    names = [line.split(" [")[0] for line in capsys.readouterr().out.splitlines()]
    weight_map = release("model.safetensors.index.json")["weight_map"]
    assert len(names) == len(set(names)) == len(weight_map) == 1106
    assert set(names) == set(weight_map)
    assert "action_head.mask_token" not in names


def test_parameter_count_and_byte_size_agree_with_the_index():
    with torch.device("meta"):
        model = Gr00tN1d6(Gr00tN1d6Config.preset("n1d6-3b"))
    stored = sum(t.numel() for t in model.state_dict().values())  # the tied lm_head is stored too
    assert 2 * stored == release("model.safetensors.index.json")["metadata"]["total_size"] == 6_573_217_664
    assert sum(p.numel() for p in model.parameters()) == 2_975_968_192  # unique tensors


def test_project_manifest_fixture_is_the_release():
    manifest = json.loads((Path(__file__).parent / "fixtures/gr00t_n1d6/manifest_n1d6_3b.json").read_text())
    assert [e["name"] for e in manifest["entries"]] == list(_manifest_names())
    assert set(_manifest_names()) == set(release("model.safetensors.index.json")["weight_map"])
    assert manifest["param_counts_unique"]["total"] == 2_975_968_192


def _manifest_names():
    from svms.compat.manifest import state_dict_manifest

    return [n for n, _ in state_dict_manifest(Gr00tN1d6Config.preset("n1d6-3b"))]


# ---- the processor files: loaded with every field, written back unchanged -----------------------------------
def test_release_processor_loads_with_the_files_settings():
    p = load_processor(RELEASE)
    kwargs = release_kwargs()
    assert p.settings.to_dict() == {k: v for k, v in kwargs.items() if k != "modality_configs"}
    assert p.settings.color_jitter_params == JITTER
    assert {t: c.to_dict() for t, c in p.configs.items()} == kwargs["modality_configs"]
    assert list(p.configs) == list(kwargs["modality_configs"])
    assert p.statistics == release("statistics.json")
    assert p.declared_ids == release("embodiment_id.json")


def test_release_processor_files_round_trip_exactly(tmp_path):
    save_processor(load_processor(RELEASE), tmp_path)
    for name in ("processor_config.json", "statistics.json", "embodiment_id.json"):
        ours, theirs = json.loads((tmp_path / name).read_text()), release(name)
        assert ours == theirs, name
        assert json.dumps(ours) == json.dumps(theirs), f"{name}: key order differs"


def test_builtin_robocasa_config_equals_the_release():
    ours = MODALITY_CONFIGS[TAG].validate().to_dict()
    theirs = release_kwargs()["modality_configs"][TAG]
    assert ours == theirs
    assert ours["state"]["modality_keys"] == ["end_effector_position_relative", "end_effector_rotation_relative",
                                              "gripper_qpos", "base_position", "base_rotation"]
    assert {a["rep"] for a in ours["action"]["action_configs"]} == {"ABSOLUTE"}


@pytest.mark.parametrize(("field", "value"), [("image_crop_size", [224, 224]), ("image_target_size", [256, 256]),
                                              ("use_albumentations", False), ("model_type", "siglip"),
                                              ("crop_scale", 0.9)])
def test_unimplemented_processor_field_is_an_error_naming_it(tmp_path, field, value):
    for name in ("processor_config.json", "statistics.json", "embodiment_id.json"):
        shutil.copy(RELEASE / name, tmp_path / name)
    raw = release("processor_config.json")
    raw["processor_kwargs"][field] = value
    (tmp_path / "processor_config.json").write_text(json.dumps(raw))
    with pytest.raises(SvmsError, match=rf"processor_config.json: .*{field}"):
        load_processor(tmp_path)


def test_processor_and_model_config_must_agree_on_sizes(tmp_path):
    for name in ("processor_config.json", "statistics.json", "embodiment_id.json"):
        shutil.copy(RELEASE / name, tmp_path / name)
    Gr00tN1d6Config.preset("tiny").to_json_file(tmp_path / "config.json")  # 32-wide, horizon 16
    with pytest.raises(SvmsError, match="max_state_dim = 128 but the model's max_state_dim = 32"):
        load_processor(tmp_path)


def test_fresh_settings_come_from_the_model_config():
    config = replace(Gr00tN1d6Config.preset("tiny"), color_jitter_params={"hue": 0.1}, shortest_image_edge=56)
    s = ProcessorSettings.from_model_config(config.to_dict())
    assert (s.max_state_dim, s.max_action_dim, s.max_action_horizon) == (32, 32, 16)
    assert s.color_jitter_params == {"hue": 0.1} and s.shortest_image_edge == 56
    assert run_processor(TAG, config.to_dict()).configs == {TAG: MODALITY_CONFIGS[TAG].validate()}


# ---- fine-tuning from a checkpoint: its processing wins and is carried forward ------------------------------
DATASET_STATE = {"end_effector_position_relative": 3, "end_effector_rotation_relative": 4, "base_position": 3,
                 "base_rotation": 4, "gripper_qpos": 2}  # gripper last, unlike the release
ACTION = {"end_effector_position": 3, "end_effector_rotation": 3, "gripper_close": 1, "base_motion": 4,
          "control_mode": 1}


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory) -> Path:
    """A tiny model with the release's processor files (sizes cut to the tiny model, images to 56 px) and a
    config.json whose colour jitter (0.1 each, as the release's) differs from processor_config.json's."""
    folder = tmp_path_factory.mktemp("tiny_release")
    config = replace(Gr00tN1d6Config.preset("tiny"), shortest_image_edge=56,
                     color_jitter_params=release("config.json")["color_jitter_params"])
    torch.manual_seed(0)
    Gr00tN1d6(config).save_pretrained(folder)
    raw = release("processor_config.json")
    raw["processor_kwargs"].update(max_state_dim=32, max_action_dim=32, max_action_horizon=16, shortest_image_edge=56)
    (folder / "processor_config.json").write_text(json.dumps(raw, indent=2))
    for name in ("statistics.json", "embodiment_id.json"):
        shutil.copy(RELEASE / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def robocasa_data(tmp_path_factory) -> Path:
    from svms.data.lerobot import write_synthetic_dataset

    root = tmp_path_factory.mktemp("robocasa_ds")
    write_synthetic_dataset(root, (20, 20), cameras=MODALITY_CONFIGS[TAG].video.modality_keys, hw=(32, 32),
                            state_keys=DATASET_STATE, action_keys=ACTION)
    return root


def test_fine_tune_processes_in_the_checkpoints_order_with_its_jitter(tiny_release, robocasa_data, tmp_path):
    from svms.train import TrainConfig
    from svms.train.trainer import build_dataset

    order = release_kwargs()["modality_configs"][TAG]["state"]["modality_keys"]
    cfg = TrainConfig(dataset=robocasa_data, out=tmp_path, init=tiny_release, embodiment_tag=TAG, split=None)
    model = Gr00tN1d6.from_pretrained(tiny_release)
    dataset, _, processor = build_dataset(cfg, model, tiny_release)
    assert list(dataset.config.state.modality_keys) == order
    assert dataset.processor.settings.color_jitter_params == JITTER
    assert model.config.color_jitter_params["brightness"] == 0.1  # config.json's value is not what processes

    # state columns follow the checkpoint's order: rebuilt here from the parquet file and modality.json alone
    meta = json.loads((robocasa_data / "meta/modality.json").read_text())["state"]
    stats = json.loads((robocasa_data / "meta/stats.json").read_text())["observation.state"]
    import pyarrow.parquet as pq

    row = np.asarray(pq.read_table(robocasa_data / "data/chunk-000/episode_000000.parquet")
                     .column("observation.state")[0].as_py(), np.float64)
    lo, hi = np.asarray(stats["min"]), np.asarray(stats["max"])
    expected = np.concatenate([np.clip(2 * (row - lo) / (hi - lo) - 1, -1, 1)[meta[k]["start"]:meta[k]["end"]]
                               for k in order])
    state = dataset[(0, 0)].state
    np.testing.assert_allclose(state[0, :16], expected, atol=1e-6)
    assert not np.allclose(state[0, 7:9], np.clip(2 * (row - lo) / (hi - lo) - 1, -1, 1)[7:9])  # file order differs
    assert np.all(state[0, 16:] == 0)
    assert processor.settings.color_jitter_params == JITTER


def test_saved_checkpoint_carries_the_checkpoints_processor_forward(tiny_release, robocasa_data, tmp_path):
    from svms.train import TrainConfig
    from svms.train.trainer import train

    final = train(TrainConfig(dataset=robocasa_data, out=tmp_path / "run", init=tiny_release, embodiment_tag=TAG,
                              split=None, max_steps=1, global_batch_size=1, tensorboard=False, log_every=100))
    saved = json.loads((final / "processor_config.json").read_text())["processor_kwargs"]
    source = json.loads((tiny_release / "processor_config.json").read_text())["processor_kwargs"]
    assert json.dumps(saved) == json.dumps(source)  # every field, every tag, every key order
    assert saved["modality_configs"][TAG]["state"]["modality_keys"][2] == "gripper_qpos"
    stats = json.loads((final / "statistics.json").read_text())
    theirs = release("statistics.json")
    assert list(stats) == list(theirs)
    assert {t: s for t, s in stats.items() if t != TAG} == {t: s for t, s in theirs.items() if t != TAG}
    assert stats[TAG] != theirs[TAG]  # the trained tag's statistics are the dataset's
    assert json.loads((final / "embodiment_id.json").read_text()) == release("embodiment_id.json")
    assert load_processor(final).config(TAG).state.modality_keys == tuple(source["modality_configs"][TAG]["state"]
                                                                          ["modality_keys"])


def test_fine_tune_adds_only_a_new_tag(tiny_release, tmp_path):
    from svms.data.lerobot import write_synthetic_dataset
    from svms.train import TrainConfig
    from svms.train.trainer import train

    write_synthetic_dataset(tmp_path / "ds", (20,), hw=(32, 32))
    final = train(TrainConfig(dataset=tmp_path / "ds", out=tmp_path / "run", init=tiny_release, split=None,
                              max_steps=1, global_batch_size=1, tensorboard=False, log_every=100))
    saved = json.loads((final / "processor_config.json").read_text())["processor_kwargs"]
    source = json.loads((tiny_release / "processor_config.json").read_text())["processor_kwargs"]
    assert list(saved["modality_configs"]) == [*source["modality_configs"], "new_embodiment"]
    assert {t: saved["modality_configs"][t] for t in source["modality_configs"]} == source["modality_configs"]
    assert {k: v for k, v in saved.items() if k != "modality_configs"} == \
        {k: v for k, v in source.items() if k != "modality_configs"}
    assert json.loads((final / "embodiment_id.json").read_text()) == {**release("embodiment_id.json"),
                                                                      "new_embodiment": 10}


def test_fine_tune_overrides_only_what_the_reference_honours(tiny_release):
    config = Gr00tN1d6Config.from_json_file(tiny_release / "config.json").to_dict()
    p = run_processor(TAG, config, tiny_release, {"color_jitter_params": {"hue": 0.02}, "shortest_image_edge": 56})
    assert p.settings.color_jitter_params == {"hue": 0.02} and p.settings.shortest_image_edge == 56
    with pytest.raises(SvmsError, match=r"shortest_image_edge.*processor_config.json"):
        run_processor(TAG, config, tiny_release, {"shortest_image_edge": 128})


def test_eval_and_serve_use_the_checkpoints_processing(tiny_release):
    """`svms eval` and `svms serve` load through `Gr00tPolicy.from_checkpoint`: the release's order and every
    setting reach the policy; the tag must be named (the release has statistics for three)."""
    from svms.policy import Gr00tPolicy

    with pytest.raises(SvmsError, match="pass the embodiment tag"):
        Gr00tPolicy.from_checkpoint(tiny_release, device="cpu")
    policy = Gr00tPolicy.from_checkpoint(tiny_release, TAG, device="cpu")
    assert list(policy.config.state.modality_keys) == release_kwargs()["modality_configs"][TAG]["state"][
        "modality_keys"]
    assert policy.processor.settings.color_jitter_params == JITTER
    assert set(policy.processor.configs) == {"behavior_r1_pro", "gr1", TAG}
