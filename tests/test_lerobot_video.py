"""Random-access video decoding equals sequential decoding (h264 and AV1), and its failure modes."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from svms.data.lerobot import DecoderCache, VideoDecoder, decode_all, moving_frames, probe_video, write_video
from svms.errors import SvmsError

HAS_AV1 = "libsvtav1" in av.codecs_available and ("libdav1d" in av.codecs_available or "av1" in av.codecs_available)


@pytest.fixture(
    scope="module",
    params=[
        "h264",
        pytest.param("av1", marks=pytest.mark.skipif(not HAS_AV1, reason="no AV1 encoder/decoder in this PyAV build")),
    ],
)
def video(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "episode_000000.mp4"
    frames = moving_frames(45, (64, 64))
    write_video(path, frames, fps=20, codec=request.param, gop=8)
    return path, request.param


def test_probe_reports_frames_size_codec(video):
    path, codec = video
    probe = probe_video(path)
    assert (probe.frames, probe.height, probe.width, probe.fps) == (45, 64, 64, 20.0)
    assert codec in probe.codec  # "h264", or "libdav1d"/"av1"


def test_random_access_equals_sequential(video):
    path, _ = video
    reference = decode_all(path)
    assert reference.shape == (45, 64, 64, 3)
    decoder = VideoDecoder(path)
    order = [17, 3, 3, 44, 0, 8, 9, 10, 30, 29, 7, 16, 15, 1]
    for index in order:
        np.testing.assert_array_equal(decoder.frame(index), reference[index], err_msg=f"frame {index}")
    got = decoder.frames([12, 5, 12, 40])
    for index, frame in zip([12, 5, 12, 40], got, strict=True):
        np.testing.assert_array_equal(frame, reference[index])


def test_decoded_frames_are_close_to_written(video):
    path, _ = video
    written = moving_frames(45, (64, 64)).astype(np.int16)
    decoded = decode_all(path).astype(np.int16)
    assert np.abs(decoded - written).mean() < 12  # lossy codec, but the right frames


def test_frame_past_the_end_names_the_file(video):
    path, _ = video
    with pytest.raises(SvmsError, match="shorter than its parquet") as err:
        VideoDecoder(path).frame(45)
    assert str(path) in str(err.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(SvmsError, match="does not exist"):
        VideoDecoder(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SvmsError, match="cannot be opened"):
        probe_video(bad)


def test_decoder_cache_reuses_and_evicts(video, tmp_path):
    path, _ = video
    cache = DecoderCache(capacity=1)
    first = cache.get(path)
    assert cache.get(path) is first
    other = tmp_path / "other.mp4"
    write_video(other, moving_frames(4, (32, 32)), fps=20)
    cache.get(other)
    assert cache.get(path) is not first


def test_decoder_cache_starts_empty_after_fork(video):
    path, _ = video
    cache = DecoderCache()
    parent = cache.get(path)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a new process must not reuse the parent's decoder
        fresh = cache.get(path)
        os.write(write, b"1" if fresh is not parent and fresh.frame(2).shape == (64, 64, 3) else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
