"""A checkpoint's processor files: written in the reference layout and read back unchanged."""

from __future__ import annotations

import json

import pytest

from svms.data import MODALITY_CONFIGS, Gr00tProcessor, ProcessorSettings
from svms.data.processor_files import load_processor, save_processor
from svms.errors import SvmsError


def make_processor() -> Gr00tProcessor:
    stats = {"robocasa_panda_omron": {"state": {"x": {"min": [0.0], "max": [1.0]}}, "action": {}}}
    return Gr00tProcessor({"robocasa_panda_omron": MODALITY_CONFIGS["robocasa_panda_omron"]}, stats,
                          ProcessorSettings(max_state_dim=32, max_action_dim=32, max_action_horizon=16))


def test_round_trip(tmp_path):
    processor = make_processor()
    save_processor(processor, tmp_path)
    raw = json.loads((tmp_path / "processor_config.json").read_text())
    assert raw["processor_class"] == "Gr00tN1d6Processor"
    assert raw["processor_kwargs"]["max_action_horizon"] == 16
    assert "robocasa_panda_omron" in raw["processor_kwargs"]["modality_configs"]
    loaded = load_processor(tmp_path)
    assert loaded.settings == processor.settings
    assert loaded.configs == processor.configs
    assert loaded.statistics == processor.statistics
    assert loaded.ids == processor.ids
    assert json.loads((tmp_path / "embodiment_id.json").read_text())["robocasa_panda_omron"] == 13


def test_missing_and_malformed_files_are_clear_errors(tmp_path):
    with pytest.raises(SvmsError, match="processor_config.json"):
        load_processor(tmp_path)
    (tmp_path / "processor_config.json").write_text("{not json")
    with pytest.raises(SvmsError, match="not valid JSON"):
        load_processor(tmp_path)
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_kwargs": {}}))
    with pytest.raises(SvmsError, match="modality_configs"):
        load_processor(tmp_path)
    (tmp_path / "processor_config.json").write_text(json.dumps(
        {"processor_kwargs": {"modality_configs": {"gr1": {"video": {}}}}}))
    with pytest.raises(SvmsError, match="gr1"):
        load_processor(tmp_path)
