"""Cameras stored as LeRobot `image` features: PNG/JPEG bytes in each parquet row, decoded with Pillow.

LeRobot writes such a cell as a struct {"bytes": encoded image, "path": its original file name}; the bytes
are what counts (the path names a temporary file the writer has deleted). A cell whose bytes are missing is
an error naming the file, column and row.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from svms.errors import SvmsError


def decode_image(cell: Any, where: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of one image cell ({"bytes", "path"} dict, or raw bytes); `where` names it in errors."""
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not isinstance(data, (bytes, bytearray)) or not data:
        path = cell.get("path") if isinstance(cell, dict) else None
        raise SvmsError(
            f"{where} holds no image bytes (path {path!r}); an image feature needs the encoded PNG/JPEG in the "
            "row's 'bytes' field, as LeRobot's writer embeds it. Re-write the dataset with its images embedded."
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise SvmsError(f"{where} holds bytes that are no readable image ({e}); re-encode it as PNG.") from None
