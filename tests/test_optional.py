"""Optional dependencies fail with the extra to install, never a bare ImportError."""

from __future__ import annotations

import sys

import pytest

from svms.errors import SvmsError
from svms.optional import require


def test_a_missing_optional_module_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # makes `import submitit` fail
    with pytest.raises(SvmsError, match=r'\[launcher\] kind = "slurm" needs submitit, the `slurm` extra: pip install '
                                        r"'svms-gr00t\[slurm\]', or re-run `SVMS_EXTRAS=dev,sim,slurm"):
        require("submitit", "slurm", '[launcher] kind = "slurm"')
    with pytest.raises(SvmsError, match=r"svms-gr00t\[quant\].*; or use --optimizer adamw$"):
        require("no_such_module_here", "quant", "--optimizer adamw8bit", "or use --optimizer adamw")


def test_an_installed_module_is_returned():
    import json

    assert require("json", "dev", "reading plans") is json
