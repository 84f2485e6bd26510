"""svms-gr00t: GR00T N1.6 with sheaf-based multi-stream (SVMS) refinement."""

from svms.errors import SvmsError

__version__ = "0.1.0"
__all__ = ["SvmsError", "__version__"]
