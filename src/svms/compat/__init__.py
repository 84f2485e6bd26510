"""Parity with NVIDIA's reference implementation, checked on the fixture folders it produced.

`svms compat check DIR` recognises a folder by its content and runs the matching checker:
a model fixture (`config.json` + `weights.safetensors` + `io.safetensors`) or a processor
fixture (`prompt.json` + `images.json` + `state_action.json`).
"""

from svms.compat.tolerance import CompatRow, compare_tensor

__all__ = ["CompatRow", "compare_tensor"]
