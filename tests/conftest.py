"""Fixtures the dataset tests share: a synthetic LeRobot v2 dataset written once per module, and a copy of it
per test that the test may break. Test modules with a `dataset` fixture of their own keep theirs."""

from __future__ import annotations

import shutil

import pytest

from svms.data.lerobot import write_synthetic_dataset


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Two 20-frame episodes, one camera; state and action: arm 3 + gripper 1."""
    root = tmp_path_factory.mktemp("pristine") / "ds"
    write_synthetic_dataset(root, (20, 20), cameras=("cam0",))
    return root


@pytest.fixture
def dataset(pristine, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    return root
