"""Camera frames → Eagle pixel values (spec §5.1–§5.2), bit-exact with the reference.

Two stages. The GR00T eval transform (shortest side → E with OpenCV INTER_AREA, centre crop of
fraction f, shortest side → E again) makes every camera the same size; Eagle's resize then snaps
each image to multiples of 28 with PIL bicubic and normalises it to [-1, 1]. Sizes use Python's
round-half-to-even on purpose: that is what the reference does (512×513 → 256×256).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
    frames: Sequence[np.ndarray], edge: int = 256, crop_fraction: float = 0.95
) -> list[np.ndarray]:
    """GR00T transform then Eagle resize on ordered frames; all cameras must come out the same size."""
    out = [gr00t_transform(f, edge, crop_fraction) for f in frames]
    sizes = {o.shape for o in out}
    if len(sizes) > 1:
        raise SvmsError(
            f"the camera frames of one sample come out of the GR00T transform with different sizes "
            f"{sorted(s[:2] for s in sizes)}; the reference stacks them, so all cameras of an embodiment "
            "must share an aspect ratio."
        )
    return [eagle_resize(o) for o in out]
