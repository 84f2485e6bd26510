"""Input processing matches NVIDIA's reference on the processor fixture, and the check can fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from svms.compat.processor import check_images, check_processor_fixture, check_prompt, check_state_action
from svms.errors import SvmsError

FIXTURE = Path(__file__).parent / "fixtures" / "gr00t_n1d6" / "processor"


@pytest.fixture(scope="module")
def rows():
    return check_processor_fixture(FIXTURE)


def test_every_row_passes(rows):
    failed = [r.format() for r in rows if not r.passed]
    assert not failed, "\n".join(failed)


def test_rows_cover_every_case_and_output(rows):
    cases = {r.case for r in rows}
    meta = {s: json.loads((FIXTURE / f"{s}.json").read_text()) for s in ("images", "prompt", "state_action")}
    assert {f"images/{c['name']}" for c in meta["images"]["cases"]} <= cases
    assert {f"prompt/{b}" for b in meta["prompt"]["batches"]} <= cases
    assert {f"state_action/{c}" for c in meta["state_action"]["cases"]} <= cases
    names = {(r.case, r.name) for r in rows}
    assert len([n for c, n in names if c == "images/gr00t_transform_shapes"]) == len(
        meta["images"]["gr00t_transform_shapes"]
    )
    assert len([n for c, n in names if c == "images/eagle_smart_resize"]) == len(
        meta["images"]["eagle_smart_resize"]
    )
    tensors = load_file(str(FIXTURE / "state_action.safetensors"))
    outputs = [
        k
        for k in tensors
        if ".dataset." not in k and not k.endswith(".model_output") and ".inference.raw_state." not in k
    ]
    for key in outputs:
        case, name = key.split(".", 1)
        assert (f"state_action/{case}", name) in names, key


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "processor"
    shutil.copytree(FIXTURE, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def _alter_tensor(folder: Path, stem: str, key: str, index: tuple, delta: float) -> None:
    path = folder / f"{stem}.safetensors"
    tensors = load_file(str(path))
    tensors[key][index] += delta
    save_file(tensors, str(path))


def _failed(rows) -> set[tuple[str, str]]:
    return {(r.case, r.name) for r in rows if not r.passed}


def test_altered_normalised_state_fails(tmp_path):
    folder = _copy(tmp_path)
    _alter_tensor(folder, "state_action", "so101_relative.state", (1, 0, 2), 2e-6)  # just over atol 1e-6
    assert _failed(check_state_action(folder)) == {("state_action/so101_relative", "state")}


def test_altered_decoded_action_fails(tmp_path):
    folder = _copy(tmp_path)
    _alter_tensor(folder, "state_action", "robocasa_absolute.decode.action.base_motion", (0, 3, 1), 1e-5)
    assert _failed(check_state_action(folder)) == {
        ("state_action/robocasa_absolute", "decode.action.base_motion")
    }


def test_altered_image_pixel_fails(tmp_path):
    folder = _copy(tmp_path)
    _alter_tensor(folder, "images", "portrait_upscale_120x100.gr00t_image", (100, 50, 1), 1)
    assert _failed(check_images(folder)) == {("images/portrait_upscale_120x100", "gr00t_image")}


def test_altered_token_id_fails(tmp_path):
    folder = _copy(tmp_path)
    meta = json.loads((folder / "prompt.json").read_text())
    meta["batches"]["raw_language"]["samples"][0]["token_ids"][30] = 15757
    (folder / "prompt.json").write_text(json.dumps(meta))
    assert _failed(check_prompt(folder)) == {("prompt/raw_language", "token_ids")}


def test_altered_statistic_fails(tmp_path):
    folder = _copy(tmp_path)
    meta = json.loads((folder / "state_action.json").read_text())
    meta["cases"]["robocasa_absolute"]["stats_json"]["action"]["max"][6] = 0.9999999
    (folder / "state_action.json").write_text(json.dumps(meta))
    assert ("state_action/robocasa_absolute", "stats_json.max") in _failed(check_state_action(folder))


def test_folder_without_fixture_files_is_a_clear_error(tmp_path):
    with pytest.raises(SvmsError, match="not a processor fixture"):
        check_processor_fixture(tmp_path)
