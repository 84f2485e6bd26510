"""Frame-accurate random access into episode videos with PyAV (h264, AV1, anything FFmpeg decodes).

A training sample needs one or a few frames of an episode. Decoding from the start costs O(frame
index) per sample; instead a decoder seeks to the keyframe at or before the wanted time and decodes
forward, and keeps its position so that a later, slightly larger index continues without seeking.
Decoders stay open in a small per-process LRU cache (re-created after a DataLoader worker forks).
Frame i of an episode is the frame whose presentation time rounds to i / fps.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from svms.errors import SvmsError

#: Keyframe distance assumed until one is observed; below it, decoding forward beats seeking.
DEFAULT_GOP = 16


@dataclass(frozen=True)
class VideoProbe:
    """What a video file holds: frame count, rate, size and codec name (from the container)."""

    frames: int
    fps: float
    height: int
    width: int
    codec: str


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise SvmsError(
            f"video file {path} does not exist; every camera of modality.json needs one mp4 per "
            "episode at info.json's video_path."
        )
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise SvmsError(
            f"video file {path} cannot be opened ({e}); re-encode it as h264 or AV1 mp4."
        ) from None


def probe_video(path: str | Path) -> VideoProbe:
    """Frame count (the container's, else counted by demuxing, never decoding), fps, size, codec."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise SvmsError(f"video file {path} has no video stream; re-encode the camera frames.")
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        rate = stream.average_rate or stream.guessed_rate or 0
        ctx = stream.codec_context
        return VideoProbe(int(frames), float(rate), ctx.height, ctx.width, ctx.name)


def decode_all(path: str | Path) -> np.ndarray:
    """Every frame of a file in order, uint8 RGB (N, H, W, 3): the slow reference for checks."""
    with _open(Path(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


class VideoDecoder:
    """One open video with a decode position; `frames(indices)` returns RGB uint8 (H, W, 3) arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.container = _open(self.path)
        self.stream = self.container.streams.video[0]
        self.n_frames = self.stream.frames  # from the container; 0 when it does not say
        rate = self.stream.average_rate or self.stream.guessed_rate
        if not rate:
            raise SvmsError(
                f"video file {self.path} declares no frame rate; re-encode it with a constant fps."
            )
        self.fps = float(rate)
        self.time_base = float(self.stream.time_base)
        self.start = self.stream.start_time or 0
        self.gop = DEFAULT_GOP
        self._frames: Iterator[av.VideoFrame] | None = None
        self._last_index = -1
        self._last_key = -1
        self._last_rgb: np.ndarray | None = None

    def close(self) -> None:
        self.container.close()

    def _index(self, frame: av.VideoFrame) -> int:
        return round((frame.pts - self.start) * self.time_base * self.fps)

    def _seek(self, index: int) -> None:
        pts = self.start + int(index / self.fps / self.time_base)
        self.container.seek(max(pts, self.start), stream=self.stream, backward=True, any_frame=False)
        self._frames = self.container.decode(self.stream)
        self._last_index = self._last_key = -1

    def _next(self) -> av.VideoFrame | None:
        frame = next(self._frames, None)
        if frame is not None:
            index = self._index(frame)
            if frame.key_frame:
                if self._last_key >= 0 and index > self._last_key:
                    self.gop = index - self._last_key
                self._last_key = index
            self._last_index = index
        return frame

    def _decode_until(self, index: int) -> av.VideoFrame | None:
        while (frame := self._next()) is not None and self._last_index < index:
            pass
        return frame

    def frame(self, index: int) -> np.ndarray:
        """Frame `index`, decoding forward from the current position or from the keyframe before it."""
        if index == self._last_index and self._last_rgb is not None:
            return self._last_rgb
        self._last_rgb = None
        if self._frames is None or not (self._last_index < index <= self._last_index + self.gop):
            self._seek(index)
        frame = self._decode_until(index)
        back = 1
        while frame is not None and self._last_index > index and back <= 2 * index:
            # Landed past the wanted frame (a demuxer seeking by decode time): start further back.
            self._seek(max(0, index - back))
            back *= 2
            frame = self._decode_until(index)
        if frame is None:
            raise SvmsError(
                f"video file {self.path} has no frame {index} (it ends at frame {self._last_index}); "
                "the video is shorter than its parquet file. Re-encode it with one frame per "
                "parquet row, or drop the extra rows."
            )
        if self._last_index != index:
            raise SvmsError(
                f"video file {self.path} has no frame at index {index} (timestamps jump to "
                f"{self._last_index}); re-encode it at a constant frame rate."
            )
        self._last_rgb = frame.to_ndarray(format="rgb24")
        return self._last_rgb

    def frames(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Frames at `indices` (any order, repeats allowed), decoded in increasing order."""
        got = {i: self.frame(i) for i in sorted(set(indices))}
        return [got[i] for i in indices]


#: Decoders a forked child inherited from its parent. They are kept referenced and never closed:
#: freeing them would join FFmpeg threads that exist only in the parent, and hang the child.
_INHERITED: list[VideoDecoder] = []


class DecoderCache:
    """The open decoders of this process, least recently used closed first.

    Keyed by path; after `fork` (DataLoader workers) the child starts empty instead of sharing the
    parent's FFmpeg state.
    """

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._pid = os.getpid()
        self._decoders: OrderedDict[Path, VideoDecoder] = OrderedDict()

    def get(self, path: str | Path) -> VideoDecoder:
        if os.getpid() != self._pid:
            _INHERITED.extend(self._decoders.values())
            self._pid, self._decoders = os.getpid(), OrderedDict()
        path = Path(path)
        decoder = self._decoders.pop(path, None) or VideoDecoder(path)
        self._decoders[path] = decoder
        while len(self._decoders) > self.capacity:
            self._decoders.popitem(last=False)[1].close()
        return decoder

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"])
