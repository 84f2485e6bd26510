"""The one way to import an optional dependency: `require("submitit", extra="slurm", purpose=...)` returns the
module, or raises an `SvmsError` that names the extra to install (the only lazy imports left in the package
are these, and the heavy simulator's). A leaf module: it imports nothing of ours but the errors.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from svms.errors import SvmsError


def install_hint(extra: str) -> str:
    """How to install an extra: with pip, or through the set-up script (whose default extras are dev,sim)."""
    extras = "dev,sim" if extra in ("dev", "sim") else f"dev,sim,{extra}"
    return f"pip install 'svms-gr00t[{extra}]', or re-run `SVMS_EXTRAS={extras} scripts/bootstrap.sh`"


def require(module: str, extra: str, purpose: str, alternative: str | None = None) -> ModuleType:
    """Import `module`; if it is missing, an error naming `extra` (`pip install 'svms-gr00t[extra]'`), what
    needs it (`purpose`) and, when given, what to do instead (`alternative`)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        instead = f"; {alternative}" if alternative else ""
        raise SvmsError(f"{purpose} needs {module.split('.')[0]}, the `{extra}` extra: {install_hint(extra)}"
                        f"{instead}") from err
