"""Camera frames → Eagle pixel values (spec §5.1–§5.2), bit-exact with the reference.

Two stages. The GR00T eval transform (shortest side → E with OpenCV INTER_AREA, centre crop of
fraction f, shortest side → E again) makes every camera the same size; Eagle's resize then snaps
each image to multiples of 28 with PIL bicubic and normalises it to [-1, 1]. Sizes use Python's
round-half-to-even on purpose: that is what the reference does (512×513 → 256×256).

The train transform replaces the centre crop by a random crop of the same size and may then rotate
(like albumentations' `Rotate(limit)`: about the centre, bilinear, reflect-101 border) and jitter
colours (like `ColorJitter`: brightness, contrast, saturation factors, a hue shift, in a random
order). Its parameters are drawn once per sample (`draw_augment`, an `AugmentDraw`) from a generator
the caller seeds, and replayed on every frame and camera of the sample (same crop offsets in pixels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

import cv2
import numpy as np
import torch
from PIL import Image

from svms.errors import SvmsError

EAGLE_FACTOR = 28
EAGLE_MIN_PIXELS = 4 * 28 * 28
EAGLE_MAX_PIXELS = 4096 * 28 * 28
EAGLE_MAX_RATIO = 200
EAGLE_MAX_SIDE = 7000
PIXELS_PER_TOKEN = 28 * 28
COLOR_JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")


@dataclass(frozen=True)
class Gr00tTransformPlan:
    """The sizes the GR00T eval transform goes through for one input size (all (h, w))."""

    in_hw: tuple[int, int]
    first_resize_hw: tuple[int, int]
    center_crop_yx_hw: tuple[int, int, int, int]
    out_hw: tuple[int, int]


def _shortest_side_size(h: int, w: int, edge: int) -> tuple[int, int]:
    scale = edge / min(h, w)
    if scale == 1.0:
        return h, w
    return round(h * scale), round(w * scale)


def gr00t_transform_plan(h: int, w: int, edge: int = 256, crop_fraction: float = 0.95) -> Gr00tTransformPlan:
    """Sizes of the eval transform, computed exactly as the reference does (float scale, half-even)."""
    rh, rw = _shortest_side_size(h, w, edge)
    ch, cw = max(1, int(rh * crop_fraction)), max(1, int(rw * crop_fraction))
    y0, x0 = (rh - ch) // 2, (rw - cw) // 2
    return Gr00tTransformPlan((h, w), (rh, rw), (y0, x0, ch, cw), _shortest_side_size(ch, cw, edge))


def check_rgb_uint8(frame: np.ndarray, what: str = "camera frame") -> np.ndarray:
    """Return `frame` as an array after checking it is uint8 RGB (H, W, 3); raise SvmsError otherwise."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise SvmsError(
            f"{what}: expected a uint8 RGB image of shape (H, W, 3), got dtype {arr.dtype} with shape "
            f"{arr.shape}. Decode video frames to RGB uint8 (channels last) before processing; float "
            "images, grayscale, RGBA or channel-first arrays are not accepted."
        )
    return arr


def _resize_area(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == hw:
        return img
    return cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def gr00t_transform(frame: np.ndarray, edge: int = 256, crop_fraction: float = 0.95) -> np.ndarray:
    """GR00T eval transform of one uint8 RGB frame (H, W, 3) → uint8 (H', W', 3), H' or W' = `edge`."""
    frame = check_rgb_uint8(frame)
    plan = gr00t_transform_plan(frame.shape[0], frame.shape[1], edge, crop_fraction)
    img = _resize_area(frame, plan.first_resize_hw)
    y0, x0, ch, cw = plan.center_crop_yx_hw
    img = np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw])
    return _resize_area(img, plan.out_hw)


# ---- train transform (spec §5.1): one random draw per sample, replayed on every frame ----------------
@dataclass(frozen=True)
class AugmentDraw:
    """The train-transform parameters of one sample, replayed on each of its frames and cameras.

    `crop_yx` is the random crop's top-left corner in pixels of the first shortest-side resize (drawn
    for the sample's first frame; clamped into range for a camera whose resize is smaller); `angle`
    the rotation in degrees (counter-clockwise, 0 = none); `jitter` the colour operations in the order
    applied, as (name, value): brightness, contrast and saturation factors (1 = unchanged) and the hue
    shift as a fraction of a full turn (0 = unchanged).
    """

    crop_yx: tuple[int, int]
    angle: float = 0.0
    jitter: tuple[tuple[str, float], ...] = ()


def check_augment_settings(rotation: float | None, jitter: Mapping[str, float] | None) -> None:
    """Raise SvmsError on a `random_rotation_angle` / `color_jitter_params` the train transform cannot use."""

    def number(v) -> bool:
        return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)

    if rotation is not None and not (number(rotation) and rotation >= 0):
        raise SvmsError(
            f"random_rotation_angle = {rotation!r}: set a rotation limit in degrees >= 0 (the angle is drawn "
            "in [-limit, limit]), or null / 0 for no rotation."
        )
    if jitter is None:
        return
    if not isinstance(jitter, Mapping):
        raise SvmsError(
            f"color_jitter_params = {jitter!r}: give a dict with any of the keys {', '.join(COLOR_JITTER_KEYS)} "
            "(missing ones mean 0), or null for no colour jitter."
        )
    unknown = sorted(str(k) for k in jitter if k not in COLOR_JITTER_KEYS)
    if unknown:
        raise SvmsError(
            f"color_jitter_params has unknown key(s) {unknown}; the allowed keys are "
            f"{', '.join(COLOR_JITTER_KEYS)} (missing ones mean 0)."
        )
    for key, value in jitter.items():
        if not (number(value) and value >= 0):
            raise SvmsError(
                f"color_jitter_params[{key!r}] = {value!r}: it must be a number >= 0 (factors are drawn in "
                "[max(0, 1 - v), 1 + v], the hue shift in [-v, v])."
            )
    if jitter.get("hue", 0) > 0.5:
        raise SvmsError(
            f"color_jitter_params['hue'] = {jitter['hue']!r}: the hue shift is a fraction of a full turn and "
            "must lie in [0, 0.5]."
        )


def draw_augment(
    rng: np.random.Generator,
    hw: tuple[int, int],
    edge: int = 256,
    crop_fraction: float = 0.95,
    rotation: float | None = None,
    jitter: Mapping[str, float] | None = None,
) -> AugmentDraw:
    """Draw one sample's train-transform parameters for a first frame of size `hw` = (h, w).

    Crop offsets are uniform integers in [0, h' − ch] and [0, w' − cw] of the first resize (h', w');
    the angle uniform in [−rotation, rotation] when rotation is set and non-zero; with `jitter`, the
    brightness, contrast and saturation factors uniform in [max(0, 1 − v), 1 + v], the hue shift in
    [−v, v] (missing keys: v = 0), applied in a random order.
    """
    check_augment_settings(rotation, jitter)
    plan = gr00t_transform_plan(hw[0], hw[1], edge, crop_fraction)
    (rh, rw), (_, _, ch, cw) = plan.first_resize_hw, plan.center_crop_yx_hw
    crop_yx = (int(rng.integers(0, rh - ch + 1)), int(rng.integers(0, rw - cw + 1)))
    angle = float(rng.uniform(-rotation, rotation)) if rotation else 0.0
    ops: tuple[tuple[str, float], ...] = ()
    if jitter is not None:
        v = [float(jitter.get(k, 0.0)) for k in COLOR_JITTER_KEYS]
        values = [float(rng.uniform(max(0.0, 1.0 - x), 1.0 + x)) for x in v[:3]] + [float(rng.uniform(-v[3], v[3]))]
        ops = tuple((COLOR_JITTER_KEYS[i], values[i]) for i in rng.permutation(len(COLOR_JITTER_KEYS)))
    return AugmentDraw(crop_yx, angle, ops)


def _lut(img: np.ndarray, values: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, np.clip(values, 0, 255).astype(np.uint8))


def _brightness(img: np.ndarray, factor: float) -> np.ndarray:
    return img if factor == 1.0 else _lut(img, np.arange(256) * factor)


def _contrast(img: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return img
    mean = float(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).mean())
    return _lut(img, np.arange(256) * factor + mean * (1.0 - factor))


def _saturation(img: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return img
    gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(img, factor, gray, 1.0 - factor, 0.0)


def _hue(img: np.ndarray, shift: float) -> np.ndarray:
    if shift == 0.0:
        return img  # the uint8 HSV round trip is lossy, so no shift must skip it
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # OpenCV's uint8 hue runs over 0..179
    lut = np.mod(np.arange(256, dtype=np.int16) + 180 * shift, 180).astype(np.uint8)
    hsv[..., 0] = cv2.LUT(hsv[..., 0], lut)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


_JITTER = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation, "hue": _hue}


def _rotate(img: np.ndarray, angle: float) -> np.ndarray:
    h, w = img.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, 1.0)
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def gr00t_train_transform(
    frame: np.ndarray, draw: AugmentDraw, edge: int = 256, crop_fraction: float = 0.95
) -> np.ndarray:
    """GR00T train transform of one uint8 RGB frame with a sample's `draw`: shortest side → `edge`,
    crop at `draw.crop_yx`, shortest side → `edge`, then the draw's rotation and colour jitter.
    Same output size as `gr00t_transform`; equal to it when the offsets are the centre crop's and
    there is no rotation or jitter."""
    frame = check_rgb_uint8(frame)
    plan = gr00t_transform_plan(frame.shape[0], frame.shape[1], edge, crop_fraction)
    (rh, rw), (_, _, ch, cw) = plan.first_resize_hw, plan.center_crop_yx_hw
    y0 = min(max(draw.crop_yx[0], 0), rh - ch)
    x0 = min(max(draw.crop_yx[1], 0), rw - cw)
    img = _resize_area(frame, plan.first_resize_hw)
    img = _resize_area(np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw]), plan.out_hw)
    if draw.angle:
        img = _rotate(img, draw.angle)
    for name, value in draw.jitter:
        img = _JITTER[name](img, value)
    return img


def eagle_smart_resize(h: int, w: int) -> tuple[int, int]:
    """Eagle's target size (h̄, w̄): multiples of 28, clamped to 7000 and to the pixel budget.

    The max-pixel branch scales the rounded size, the min-pixel branch the raw one (as the reference).
    """
    ratio = max(h, w) / min(h, w)
    if ratio > EAGLE_MAX_RATIO:
        raise SvmsError(
            f"image of size {h}x{w}: absolute aspect ratio must be smaller than {EAGLE_MAX_RATIO}, "
            f"got {ratio}. Eagle cannot tokenise such an image; crop or pad the camera frame to a "
            "less extreme aspect ratio."
        )
    hb = min(max(EAGLE_FACTOR, round(h / EAGLE_FACTOR) * EAGLE_FACTOR), EAGLE_MAX_SIDE)
    wb = min(max(EAGLE_FACTOR, round(w / EAGLE_FACTOR) * EAGLE_FACTOR), EAGLE_MAX_SIDE)
    if hb * wb > EAGLE_MAX_PIXELS:
        beta = math.sqrt(hb * wb / EAGLE_MAX_PIXELS)
        hb = math.floor(hb / beta / EAGLE_FACTOR) * EAGLE_FACTOR
        wb = math.floor(wb / beta / EAGLE_FACTOR) * EAGLE_FACTOR
    elif hb * wb < EAGLE_MIN_PIXELS:
        beta = math.sqrt(EAGLE_MIN_PIXELS / (h * w))
        hb = math.ceil(h * beta / EAGLE_FACTOR) * EAGLE_FACTOR
        wb = math.ceil(w * beta / EAGLE_FACTOR) * EAGLE_FACTOR
    return hb, wb


def num_image_tokens(hw: tuple[int, int]) -> int:
    """Number of `<IMG_CONTEXT>` tokens for an Eagle-resized image of size (h̄, w̄)."""
    return hw[0] * hw[1] // PIXELS_PER_TOKEN


def eagle_resize(image: np.ndarray) -> np.ndarray:
    """Resize a uint8 RGB image to Eagle's size with PIL bicubic (unchanged when already there)."""
    image = check_rgb_uint8(image, "image")
    hb, wb = eagle_smart_resize(image.shape[0], image.shape[1])
    if (hb, wb) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((wb, hb), Image.Resampling.BICUBIC))


def eagle_normalize(image: np.ndarray) -> torch.Tensor:
    """uint8 (h̄, w̄, 3) → float32 (1, 3, h̄, w̄) as (x − 127.5)/127.5, bit-exact with the reference."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float()
    return ((x - 127.5) / 127.5).unsqueeze(0)


def order_frames(video: Mapping[str, Sequence[np.ndarray]], camera_keys: Sequence[str]) -> list[np.ndarray]:
    """Flatten {camera: [frame per timestep]} time-major, cameras in config order (spec §5.1)."""
    missing = [k for k in camera_keys if k not in video]
    if missing:
        raise SvmsError(
            f"video frames for camera(s) {missing} are missing: the modality config lists "
            f"{list(camera_keys)} but the sample has {list(video)}. Provide one frame list per camera key."
        )
    steps = {len(video[k]) for k in camera_keys}
    if len(steps) > 1:
        raise SvmsError(
            f"cameras {list(camera_keys)} have different numbers of timesteps "
            f"{[len(video[k]) for k in camera_keys]}; every camera needs one frame per video delta index."
        )
    n_steps = steps.pop() if steps else 0
    return [video[k][t] for t in range(n_steps) for k in camera_keys]


def process_frames(
    frames: Sequence[np.ndarray], edge: int = 256, crop_fraction: float = 0.95, augment: AugmentDraw | None = None
) -> list[np.ndarray]:
    """GR00T transform then Eagle resize on ordered frames; all cameras must come out the same size.

    Without `augment` the eval transform; with it the train transform, the same draw on every frame.
    """
    if augment is None:
        out = [gr00t_transform(f, edge, crop_fraction) for f in frames]
    else:
        out = [gr00t_train_transform(f, augment, edge, crop_fraction) for f in frames]
    sizes = {o.shape for o in out}
    if len(sizes) > 1:
        raise SvmsError(
            f"the camera frames of one sample come out of the GR00T transform with different sizes "
            f"{sorted(s[:2] for s in sizes)}; the reference stacks them, so all cameras of an embodiment "
            "must share an aspect ratio."
        )
    return [eagle_resize(o) for o in out]
