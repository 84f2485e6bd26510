"""Episode parquet files → numpy columns: vectors (T, D) and scalars (T,), with errors naming the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from svms.errors import SvmsError


def _missing(path: Path) -> SvmsError:
    return SvmsError(
        f"parquet file {path} does not exist; every episode of meta/episodes.jsonl needs one at "
        "info.json's data_path (or remove the episode from episodes.jsonl)."
    )


def parquet_rows(path: Path) -> int:
    """Row count from the footer, without reading data."""
    if not path.is_file():
        raise _missing(path)
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowInvalid, OSError) as e:
        raise SvmsError(f"parquet file {path} cannot be read ({e}); rewrite it.") from None


def column_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A list column → (T, D); a scalar column → (T,)."""
    array = column.combine_chunks()
    if (
        pa.types.is_list(array.type)
        or pa.types.is_fixed_size_list(array.type)
        or pa.types.is_large_list(array.type)
    ):
        n = len(array)
        values = array.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(n, -1) if n else values.reshape(0, 0)
    return array.to_numpy(zero_copy_only=False)


def read_columns(path: Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Read `columns` of one episode file; a missing column is an SvmsError listing the present ones."""
    if not path.is_file():
        raise _missing(path)
    try:
        schema = pq.read_schema(path)
        absent = [c for c in columns if c not in schema.names]
        if absent:
            raise SvmsError(
                f"parquet file {path} has no column(s) {absent} (it has {schema.names}); meta/modality.json "
                "and the embodiment's language key must name existing columns."
            )
        table = pq.read_table(path, columns=list(dict.fromkeys(columns)))
    except (pa.ArrowInvalid, OSError) as e:
        raise SvmsError(f"parquet file {path} cannot be read ({e}); rewrite it.") from None
    return {c: column_to_numpy(table.column(c)) for c in columns}
