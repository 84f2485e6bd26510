"""Train image transform (spec §5.1): random crop, rotation, colour jitter, one draw per sample,
seeded by (seed, sample position) so training stays resumable; the eval transform is untouched."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from svms.data import ActionConfig, ActionRep, EmbodimentConfig, Gr00tProcessor, ModalityConfig, ProcessorSettings
from svms.data.images import (
    AugmentDraw,
    draw_augment,
    gr00t_train_transform,
    gr00t_transform,
    gr00t_transform_plan,
    process_frames,
)
from svms.data.lerobot import Gr00tLeRobotDataset, write_synthetic_dataset
from svms.data.processor_files import load_processor, save_processor
from svms.errors import SvmsError
from svms.train.sampling import StepBatchSampler, micro_positions


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth but everywhere-different RGB image (so that any shift of the crop changes pixels)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    img = np.stack([120 + 60 * np.sin(x / 7 + p) + 40 * np.cos(y / 5 - p) for p in rng.uniform(0, 3, 3)], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def manual_train(frame: np.ndarray, y0: int, x0: int, edge: int = 256, f: float = 0.95) -> np.ndarray:
    plan = gr00t_transform_plan(*frame.shape[:2], edge, f)
    rh, rw = plan.first_resize_hw
    _, _, ch, cw = plan.center_crop_yx_hw
    img = cv2.resize(frame, (rw, rh), interpolation=cv2.INTER_AREA) if (rh, rw) != frame.shape[:2] else frame
    img = np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw])
    oh, ow = plan.out_hw
    return cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA) if (oh, ow) != img.shape[:2] else img


# ---- random crop ------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw, y_max, x_max", [((256, 256), 13, 13), ((480, 640), 13, 18), ((32, 32), 13, 13)])
def test_crop_offsets_are_uniform_integers_over_the_whole_range(hw, y_max, x_max):
    rng = np.random.default_rng(0)
    draws = [draw_augment(rng, hw) for _ in range(3000)]
    ys = np.array([d.crop_yx[0] for d in draws])
    xs = np.array([d.crop_yx[1] for d in draws])
    assert set(ys.tolist()) == set(range(y_max + 1))  # every offset, both extremes included, nothing beyond
    assert set(xs.tolist()) == set(range(x_max + 1))
    assert abs(ys.mean() - y_max / 2) < 0.5 and abs(xs.mean() - x_max / 2) < 0.5
    assert all(d.angle == 0.0 and d.jitter == () for d in draws)


@pytest.mark.parametrize("hw", [(256, 256), (480, 640), (256, 320)])
def test_train_crop_is_the_drawn_window_at_the_eval_size(hw):
    frame = textured(*hw)
    plan = gr00t_transform_plan(*hw)
    rh, rw = plan.first_resize_hw
    _, _, ch, cw = plan.center_crop_yx_hw
    for y0, x0 in [(0, 0), (rh - ch, rw - cw), (0, rw - cw), (3, 1)]:
        out = gr00t_train_transform(frame, AugmentDraw((y0, x0)))
        assert out.shape[:2] == plan.out_hw
        np.testing.assert_array_equal(out, manual_train(frame, y0, x0))
    # the centre crop's offsets give exactly the eval transform; other offsets give other pixels
    centre = plan.center_crop_yx_hw[:2]
    np.testing.assert_array_equal(gr00t_train_transform(frame, AugmentDraw(centre)), gr00t_transform(frame))
    assert not np.array_equal(gr00t_train_transform(frame, AugmentDraw((0, 0))), gr00t_transform(frame))


def test_full_crop_without_rotation_or_jitter_equals_the_eval_transform():
    frames = [textured(480, 640, s) for s in range(3)]
    rng = np.random.default_rng(1)
    for _ in range(5):
        draw = draw_augment(rng, (480, 640), crop_fraction=1.0)
        assert draw.crop_yx == (0, 0)
        train = process_frames(frames, 256, 1.0, augment=draw)
        evals = process_frames(frames, 256, 1.0)
        for a, b in zip(train, evals, strict=True):
            np.testing.assert_array_equal(a, b)


# ---- one draw per sample -------------------------------------------------------------------------------
def _processor(settings: ProcessorSettings | None = None) -> Gr00tProcessor:
    config = EmbodimentConfig(
        video=ModalityConfig((0, 1), ("cam0", "cam1")),
        state=ModalityConfig((0,), ("arm",)),
        action=ModalityConfig((0,), ("arm",), action_configs=(ActionConfig(ActionRep.ABSOLUTE),)),
        language=ModalityConfig((0,), ("annotation.human.action.task_description",)),
    )
    return Gr00tProcessor({"new_embodiment": config}, settings=settings)


def test_one_draw_is_replayed_on_every_camera_and_timestep():
    settings = ProcessorSettings(random_rotation_angle=15.0,
                                 color_jitter_params={"brightness": 0.3, "contrast": 0.3, "saturation": 0.3,
                                                      "hue": 0.05})
    processor = _processor(settings)
    a0, a1 = textured(240, 320, 0), textured(240, 320, 1)
    video = {"cam0": [a0, a1], "cam1": [a0.copy(), a1.copy()]}  # identical content on both cameras
    out = processor("new_embodiment", video, "pick", rng=np.random.default_rng(7))
    images = out.images  # time-major: (t0 cam0, t0 cam1, t1 cam0, t1 cam1)
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[2], images[3])
    # every frame went through the draw taken from the same generator for the first frame
    draw = draw_augment(np.random.default_rng(7), (240, 320), 256, 0.95, 15.0, settings.color_jitter_params)
    assert draw.angle != 0 and len(draw.jitter) == 4
    expected = process_frames([a0, a0, a1, a1], 256, 0.95, augment=draw)
    for got, want in zip(images, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # another generator seed draws another crop; no generator is the eval transform
    other = processor("new_embodiment", video, "pick", rng=np.random.default_rng(8)).images
    assert not np.array_equal(other[0], images[0])
    plain = processor("new_embodiment", video, "pick").images
    np.testing.assert_array_equal(plain[0], process_frames([a0], 256, 0.95)[0])


def test_cameras_of_another_resolution_replay_the_same_pixel_offsets():
    big, small = textured(480, 640, 3), None
    small = cv2.resize(big, (320, 240), interpolation=cv2.INTER_AREA)  # same aspect ratio, same first resize
    draw = AugmentDraw((11, 2))
    out = process_frames([big, small], augment=draw)
    assert out[0].shape == out[1].shape
    np.testing.assert_array_equal(gr00t_train_transform(small, draw), manual_train(small, 11, 2))
    np.testing.assert_array_equal(gr00t_train_transform(big, draw), manual_train(big, 11, 2))


# ---- rotation -----------------------------------------------------------------------------------------------
def test_rotation_by_zero_is_identity_and_a_quarter_turn_is_exact():
    frame = textured(256, 256)
    centre = gr00t_transform_plan(256, 256).center_crop_yx_hw[:2]
    np.testing.assert_array_equal(gr00t_train_transform(frame, AugmentDraw(centre, angle=0.0)), gr00t_transform(frame))
    quarter = gr00t_train_transform(frame, AugmentDraw(centre, angle=90.0))
    np.testing.assert_array_equal(quarter, np.rot90(gr00t_transform(frame)))  # about the pixel centre, CCW
    tilted = gr00t_train_transform(textured(480, 640), AugmentDraw((0, 0), angle=7.5))
    assert tilted.shape == (256, 340, 3) and tilted.dtype == np.uint8
    assert not np.array_equal(tilted, gr00t_train_transform(textured(480, 640), AugmentDraw((0, 0))))


def test_rotation_angle_is_drawn_within_the_limit_both_ways():
    rng = np.random.default_rng(2)
    angles = np.array([draw_augment(rng, (256, 256), rotation=10.0).angle for _ in range(500)])
    assert np.all(np.abs(angles) <= 10.0) and angles.min() < -9 and angles.max() > 9
    assert all(draw_augment(rng, (256, 256), rotation=0.0).angle == 0.0 for _ in range(5))


# ---- colour jitter ---------------------------------------------------------------------------------------------
def test_jitter_factors_ranges_and_random_order():
    params = {"brightness": 0.2, "contrast": 0.3, "saturation": 1.5, "hue": 0.1}
    rng = np.random.default_rng(3)
    draws = [dict(draw_augment(rng, (64, 64), jitter=params).jitter) for _ in range(400)]
    orders = {tuple(draw_augment(rng, (64, 64), jitter=params).jitter[i][0] for i in range(4)) for _ in range(200)}
    assert len(orders) > 12  # 24 possible orders
    for name, lo, hi in [("brightness", 0.8, 1.2), ("contrast", 0.7, 1.3), ("saturation", 0.0, 2.5),
                         ("hue", -0.1, 0.1)]:
        values = np.array([d[name] for d in draws])
        assert values.min() >= lo and values.max() <= hi
        assert values.min() < lo + 0.1 * (hi - lo) and values.max() > hi - 0.1 * (hi - lo)


def test_brightness_scales_the_mean_and_neutral_values_keep_pixels():
    frame = np.clip(textured(256, 256) // 2 + 40, 0, 255).astype(np.uint8)  # no clipping at 1.3x
    centre = gr00t_transform_plan(256, 256).center_crop_yx_hw[:2]
    base = gr00t_transform(frame).astype(np.float64)
    for factor in (0.6, 1.3):
        out = gr00t_train_transform(frame, AugmentDraw(centre, jitter=(("brightness", factor),)))
        assert abs(out.mean() - factor * base.mean()) < 1.0
    neutral = AugmentDraw(centre, jitter=(("hue", 0.0), ("saturation", 1.0), ("contrast", 1.0), ("brightness", 1.0)))
    np.testing.assert_array_equal(gr00t_train_transform(frame, neutral), gr00t_transform(frame))
    gray = gr00t_train_transform(frame, AugmentDraw(centre, jitter=(("saturation", 0.0),)))
    assert np.abs(gray.astype(int) - gray[..., :1].astype(int)).max() <= 1  # saturation 0: grey
    flat = gr00t_train_transform(frame, AugmentDraw(centre, jitter=(("contrast", 0.0),)))
    assert flat.max() - flat.min() <= 1  # contrast 0: the grey mean everywhere
    red = np.zeros((256, 256, 3), np.uint8)
    red[..., 0] = 200
    cyan = gr00t_train_transform(red, AugmentDraw(centre, jitter=(("hue", 0.5),)))
    assert cyan[..., 0].max() < 10 and cyan[..., 1].min() > 190 and cyan[..., 2].min() > 190


@pytest.mark.parametrize("params", [{}, {"hue": 0.0, "saturation": 0.0}, {"brightness": 0, "contrast": 0}])
def test_zero_jitter_parameters_are_identity(params):
    frame = textured(240, 320)
    draw = draw_augment(np.random.default_rng(4), (240, 320), jitter=params)
    assert len(draw.jitter) == 4
    np.testing.assert_array_equal(gr00t_train_transform(frame, draw), manual_train(frame, *draw.crop_yx))


# ---- settings ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"color_jitter_params": {"gamma": 0.1}}, r"unknown key\(s\) \['gamma'\].*brightness, contrast, saturation, hue"),
    ({"color_jitter_params": {"brightness": -0.1}}, r"color_jitter_params\['brightness'\] = -0.1.*>= 0"),
    ({"color_jitter_params": {"hue": 0.6}}, r"\[0, 0.5\]"),
    ({"color_jitter_params": {"contrast": "high"}}, "number >= 0"),
    ({"color_jitter_params": [0.1, 0.2]}, "give a dict"),
    ({"random_rotation_angle": -5.0}, "random_rotation_angle = -5.0"),
    ({"random_rotation_angle": float("nan")}, "random_rotation_angle"),
])
def test_bad_augmentation_settings_are_clear_errors(kwargs, message):
    with pytest.raises(SvmsError, match=message):
        ProcessorSettings(**kwargs)


def test_processor_files_round_trip_the_augmentation_settings(tmp_path):
    settings = ProcessorSettings(random_rotation_angle=5.0, color_jitter_params={"brightness": 0.3, "hue": 0.05})
    save_processor(_processor(settings), tmp_path)
    kwargs = json.loads((tmp_path / "processor_config.json").read_text())["processor_kwargs"]
    assert kwargs["random_rotation_angle"] == 5.0
    assert kwargs["color_jitter_params"] == {"brightness": 0.3, "hue": 0.05}
    assert load_processor(tmp_path).settings == settings
    kwargs["color_jitter_params"] = {"bright": 0.3}
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_kwargs": kwargs}))
    with pytest.raises(SvmsError, match=r"processor_config.json: color_jitter_params has unknown key"):
        load_processor(tmp_path)


# ---- training: seeded by (seed, sample position) -------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment_ds")
    write_synthetic_dataset(root, (24, 24), hw=(48, 64))
    lines = (root / "meta/episodes.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["tasks"] = ["pick the apple", "open the drawer"]  # a multi-task episode: the instruction is drawn
    (root / "meta/episodes.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    tasks = (root / "meta/tasks.jsonl").read_text().splitlines()
    extra = [json.dumps({"task_index": len(tasks) + i, "task": t}) for i, t in enumerate(first["tasks"])]
    (root / "meta/tasks.jsonl").write_text("\n".join(tasks + extra) + "\n")
    return root


SETTINGS = ProcessorSettings(shortest_image_edge=56, random_rotation_angle=5.0, color_jitter_params={"brightness": 0.2})


def test_sample_pixels_depend_only_on_seed_and_position(dataset_dir):
    one = Gr00tLeRobotDataset(dataset_dir, settings=SETTINGS, seed=5, train_augment=True)
    two = Gr00tLeRobotDataset(dataset_dir, settings=SETTINGS, seed=5, train_augment=True)
    two[(1, 0)]  # a different history of calls must not matter
    a, b = one[(3, 17)], two[(3, 17)]
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(x, y)
    others = [one[(3, p)].images[0] for p in (18, 19, 20)]
    assert all(not np.array_equal(o, a.images[0]) for o in others)
    reseeded = Gr00tLeRobotDataset(dataset_dir, settings=SETTINGS, seed=6, train_augment=True)[(3, 17)]
    assert not np.array_equal(reseeded.images[0], a.images[0])
    # integer keys (evaluation) and train_augment=False use the eval transform
    evaluated = one[3].images
    plain = Gr00tLeRobotDataset(dataset_dir, settings=SETTINGS, seed=5)[(3, 17)].images
    for x, y in zip(evaluated, plain, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(evaluated[0], a.images[0])
    assert a.images[0].shape == evaluated[0].shape


def test_instruction_of_a_multi_task_episode_is_seeded_by_position(dataset_dir):
    config = EmbodimentConfig(
        video=ModalityConfig((0,), ("cam0", "cam1")),
        state=ModalityConfig((0,), ("arm", "gripper")),
        action=ModalityConfig(tuple(range(16)), ("arm", "gripper"),
                              action_configs=(ActionConfig(ActionRep.ABSOLUTE),) * 2),
        language=ModalityConfig((0,), ("task",)),
    )
    one = Gr00tLeRobotDataset(dataset_dir, config=config, seed=1)
    two = Gr00tLeRobotDataset(dataset_dir, config=config, seed=1)
    texts = [one.raw_sample(0, position=p).language for p in range(40)]
    assert set(texts) == {"pick the apple", "open the drawer"}
    assert texts == [two.raw_sample(0, position=p).language for p in range(40)]


def test_sampler_hands_positions_that_resume_exactly():
    full = list(StepBatchSampler(10, 3, 0, 6, 0, 1, 4, 2))
    resumed = list(StepBatchSampler(10, 3, 2, 6, 0, 1, 4, 2))  # resumed after step 2
    assert resumed == full[2 * 2 :]
    assert [p for _, p in full[3]] == micro_positions(2, 1, 0, 1, 4, 2)
    first_epoch = [i for batch in full for i, p in batch if p < 10]
    assert sorted(first_epoch) == list(range(10))  # positions 0..9 visit every sample once


def test_trainer_takes_augmentation_from_the_model_config(dataset_dir, tmp_path):
    from dataclasses import replace
    from types import SimpleNamespace

    from svms.model import Gr00tN1d6Config
    from svms.train import TrainConfig
    from svms.train.trainer import build_dataset

    config = replace(Gr00tN1d6Config.preset("tiny"), shortest_image_edge=56, random_rotation_angle=4.0,
                     color_jitter_params={"hue": 0.02})
    settings = ProcessorSettings.from_model_config(config.to_dict())
    assert settings.random_rotation_angle == 4.0 and settings.color_jitter_params == {"hue": 0.02}
    model = SimpleNamespace(config=config, svms=None)
    for augment in (True, False):
        cfg = TrainConfig(dataset=dataset_dir, out=tmp_path, seed=9, augment=augment, split=None)
        dataset, _, processor = build_dataset(cfg, model)
        assert dataset.train_augment is augment and dataset.seed == 9
        assert processor.settings == settings
    with pytest.raises(SvmsError, match="--seed must be >= 0"):
        TrainConfig(dataset=dataset_dir, out=tmp_path, seed=-1)
