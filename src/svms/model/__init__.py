"""GR00T N1.6 (`Gr00tN1d6`), checkpoint-compatible with nvidia/GR00T-N1.6-3B, with optional SVMS."""

from svms.model.config import Gr00tN1d6Config
from svms.model.policy import Gr00tN1d6, Gr00tN1d6Output

__all__ = ["Gr00tN1d6", "Gr00tN1d6Config", "Gr00tN1d6Output"]
