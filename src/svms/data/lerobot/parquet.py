"""Episode parquet files → numpy columns: vectors (T, D) and scalars (T,), with errors naming the file.

A vector column whose rows differ in width cannot become one (T, D) array; that is an error naming the
file, the column and the widths found, not numpy's reshape failure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svms.errors import SvmsError


def _missing(path: Path) -> SvmsError:
    return SvmsError(
        f"parquet file {path} does not exist; every episode the dataset lists needs its rows in the file "
        "info.json's data_path names (or remove the episode from meta/episodes.jsonl or meta/episodes/)."
    )


def parquet_rows(path: Path) -> int:
    """Row count from the footer, without reading data."""
    if not path.is_file():
        raise _missing(path)
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowInvalid, OSError) as e:
        raise SvmsError(f"parquet file {path} cannot be read ({e}); rewrite it.") from None


def read_schema_names(path: Path) -> list[str]:
    """Column names from the footer."""
    if not path.is_file():
        raise _missing(path)
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError) as e:
        raise SvmsError(f"parquet file {path} cannot be read ({e}); rewrite it.") from None


def is_list_type(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)


def column_to_numpy(column: pa.ChunkedArray, where: str = "a parquet column") -> np.ndarray:
    """A list column → (T, D); a scalar column → (T,). Rows of unequal width (or empty rows) are an
    SvmsError naming `where` (the file and column)."""
    array = column.combine_chunks()
    if is_list_type(array.type):
        n = len(array)
        widths = pc.fill_null(pc.list_value_length(array), -1).to_numpy(zero_copy_only=False)  # null row: -1
        if n and widths.min() != widths.max():
            first = int(np.flatnonzero(widths != widths[0])[0])
            found = ", ".join("null" if w < 0 else str(w) for w in sorted(set(widths.tolist()))[:6])
            raise SvmsError(
                f"{where} has rows of different widths ({found}; row {first} differs from row 0); every "
                "row of a vector column needs the same number of values, the width info.json's features "
                "declare. Rewrite the column."
            )
        values = array.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(n, -1) if n else values.reshape(0, 0)
    if pa.types.is_struct(array.type):
        values = np.empty(len(array), dtype=object)
        values[:] = array.to_pylist()
        return values
    return array.to_numpy(zero_copy_only=False)


def read_table_rows(path: Path, columns: Sequence[str], rows: tuple[int, int] | None = None) -> pa.Table:
    """`columns` of a parquet file, only rows [a, b) when `rows` is given: just the row groups that hold
    them are read, so an episode of a file shared by many (LeRobot v3.0) costs its own rows, not the file's."""
    if not path.is_file():
        raise _missing(path)
    try:
        file = pq.ParquetFile(path)
        names = file.schema_arrow.names
        absent = [c for c in columns if c not in names]
        if absent:
            raise SvmsError(
                f"parquet file {path} has no column(s) {absent} (it has {names}); meta/modality.json "
                "and the embodiment's language key must name existing columns."
            )
        columns = list(dict.fromkeys(columns))
        if rows is None:
            return file.read(columns=columns)
        sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        groups = [g for g in range(len(sizes)) if starts[g] < rows[1] and starts[g + 1] > rows[0]]
        if not groups:
            return file.schema_arrow.empty_table().select(columns)
        table = file.read_row_groups(groups, columns=columns)
        first = int(starts[groups[0]])
        return table.slice(rows[0] - first, max(0, rows[1] - rows[0]))
    except (pa.ArrowInvalid, OSError) as e:
        raise SvmsError(f"parquet file {path} cannot be read ({e}); rewrite it.") from None


def read_columns(path: Path, columns: Sequence[str], episode: int | None = None,
                 rows: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Read `columns` of one episode (rows [a, b) of the file when `rows` is given, else all of them); a missing
    column is an SvmsError listing the present ones. `episode` (its index) is named in errors about a column's
    rows. Image columns (LeRobot's {bytes, path} structs) come back as object arrays of those dicts."""
    table = read_table_rows(path, columns, rows)
    owner = f" (episode {episode})" if episode is not None else ""
    return {c: column_to_numpy(table.column(c), f"parquet file {path}{owner}: column {c!r}") for c in columns}
