"""Arrow columns to and from PostgreSQL's COPY in bulk, with no Python code per row:
:func:`encode` builds a binary COPY stream with numpy, :func:`decode_csv` parses COPY's CSV
output with Arrow's reader.

Both directions are exact: binary COPY carries each double's eight bytes, and COPY's CSV
writes doubles in their shortest form that reads back to the same bits (with
``extra_float_digits`` above 0), which Arrow parses correctly rounded. CSV is used for
reading because a binary COPY stream cannot be cut into rows without walking it field by
field (each field says its own length).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from h3pipe.errors import StoreError

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
TRAILER = b"\xff\xff"

# A column's PostgreSQL type -> how its values travel in binary COPY (big-endian).
_FIXED = {"double precision": ">f8", "bigint": ">i8", "smallint": ">i2", "integer": ">i4",
          "boolean": "u1"}
_VARIABLE = {"text", "bytea", "geometry"}
_ARROW = {"double precision": pa.float64(), "bigint": pa.int64(), "integer": pa.int64(),
          "smallint": pa.int64(), "real": pa.float64(), "text": pa.string(),
          "boolean": pa.bool_(), "bytea": pa.binary()}


def arrow_type(pg_type: str) -> pa.DataType:
    """The Arrow type a column of ``pg_type`` reads back as."""
    return _ARROW.get(pg_type, pa.string())


def encode(columns: list[tuple[pa.Array | pa.ChunkedArray, str]]) -> tuple[bytes, list[int]]:
    """The binary COPY stream (header to trailer) of equally long columns, each with the
    PostgreSQL type of its target column; and where each row starts in it."""
    n = len(columns[0][0]) if columns else 0
    fields = [_fields(values, pg) for values, pg in columns]
    sizes = np.empty((n, len(fields)), dtype=np.int64)
    for j, (lengths, _) in enumerate(fields):
        sizes[:, j] = 4 + np.maximum(lengths, 0)
    row_sizes = 2 + sizes.sum(axis=1)
    starts = np.empty(n + 1, dtype=np.int64)
    starts[0] = len(HEADER)
    np.cumsum(row_sizes, out=starts[1:])
    starts[1:] += len(HEADER)
    out = np.empty(int(starts[-1]) + len(TRAILER), dtype=np.uint8)
    out[:len(HEADER)] = np.frombuffer(HEADER, dtype=np.uint8)
    out[-len(TRAILER):] = np.frombuffer(TRAILER, dtype=np.uint8)
    _put(out, starts[:-1], np.full(n, len(fields), dtype=">i2"))
    field_at = starts[:-1] + 2
    for j, (lengths, data) in enumerate(fields):
        _put(out, field_at, lengths.astype(">i4"))
        valid = lengths >= 0
        if data.size:
            lens = lengths[valid]
            src = np.cumsum(lens) - lens  # where each value starts in ``data``
            dst = field_at[valid] + 4
            out[np.repeat(dst - src, lens) + np.arange(data.size)] = data
        field_at = field_at + sizes[:, j]
    return out.tobytes(), [int(s) for s in starts]


def _put(out: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """Write fixed-size big-endian ``values`` at byte offsets ``at``."""
    width = values.dtype.itemsize
    out[at[:, None] + np.arange(width)] = values.view(np.uint8).reshape(-1, width)


def _fields(values: pa.Array | pa.ChunkedArray, pg: str) -> tuple[np.ndarray, np.ndarray]:
    """One column as COPY fields: each row's data length (-1 for null) and the bytes of its
    non-null values, one after another."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    if pa.types.is_null(values.type):
        return np.full(n, -1, dtype=np.int64), np.empty(0, dtype=np.uint8)
    valid = np.ones(n, dtype=bool) if values.null_count == 0 else \
        values.is_valid().to_numpy(zero_copy_only=False)
    present = values.drop_null() if values.null_count else values
    if pg in _FIXED:
        dtype = np.dtype(_FIXED[pg])
        target = {"f": pa.float64(), "i": pa.int64(), "u": pa.bool_()}[dtype.kind]
        arr = present.cast(target) if present.type != target else present
        raw = arr.to_numpy(zero_copy_only=False).astype(dtype)
        return np.where(valid, dtype.itemsize, -1).astype(np.int64), raw.view(np.uint8)
    if pg in _VARIABLE:
        offsets, data = _values(present.cast(pa.large_binary()))
        lengths = np.full(n, -1, dtype=np.int64)
        lengths[valid] = np.diff(offsets)
        return lengths, data
    raise StoreError(f"cannot copy a column of type {pg} to PostgreSQL")


def _values(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A large binary or string array's offsets and its values' bytes, one after another."""
    if len(arr) == 0:
        return np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.uint8)
    _, offsets_buffer, data_buffer = arr.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    if data_buffer is None:
        return offsets, np.empty(0, dtype=np.uint8)
    return offsets, np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]:offsets[-1]]


def decode_csv(blocks: Iterable[bytes | memoryview], columns: list[tuple[str, str]]
               ) -> pa.Table:
    """Rows from ``COPY (...) TO STDOUT (FORMAT csv)``, read as the blocks arrive (never
    the whole text at once), as a table; ``columns`` are the selected columns' names and
    PostgreSQL types, with bytea selected as ``encode(col, 'hex')``."""
    import pyarrow.csv as csv

    types = {name: (pa.string() if pg == "bytea" else arrow_type(pg)) for name, pg in columns}
    stream = _Blocks(blocks)
    if not stream.peek():
        table = pa.table({name: pa.array([], t) for name, t in types.items()})
    else:
        reader = csv.open_csv(
            io.BufferedReader(stream, 1 << 20),
            read_options=csv.ReadOptions(column_names=[name for name, _ in columns],
                                         block_size=1 << 22),
            parse_options=csv.ParseOptions(newlines_in_values=True),
            convert_options=csv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]))
        table = reader.read_all()
    for i, (name, pg) in enumerate(columns):
        if pg == "bytea":
            table = table.set_column(i, name, _unhex(table.column(i)))
    return table


class _Blocks(io.RawIOBase):
    """The blocks COPY sends, as a file to read from."""

    def __init__(self, blocks: Iterable[bytes | memoryview]) -> None:
        self._blocks = iter(blocks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def peek(self) -> bytes:
        while not self._pending:
            block = next(self._blocks, None)
            if block is None:
                return b""
            self._pending = bytes(block)
        return self._pending

    def readinto(self, buffer: Any) -> int:
        pending = self.peek()
        n = min(len(buffer), len(pending))
        buffer[:n] = pending[:n]
        self._pending = pending[n:]
        return n


def _unhex(column: pa.ChunkedArray) -> pa.Array:
    """PostgreSQL's hex text of bytea values back to bytes, all at once."""
    arr = column.combine_chunks().cast(pa.large_string())
    if len(arr) == 0:
        return pa.array([], pa.binary())
    offsets, text = _values(arr)
    nibble = np.zeros(256, dtype=np.uint8)
    nibble[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10)
    nibble[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16)
    raw = (nibble[text[0::2]] << 4) | nibble[text[1::2]]
    new_offsets = ((offsets - offsets[0]) // 2).astype(np.int64)
    out = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(arr), [None, pa.py_buffer(new_offsets), pa.py_buffer(raw)])
    if arr.null_count:
        out = pc.if_else(arr.is_valid(), out, pa.scalar(None, pa.large_binary()))
    return out.cast(pa.binary())
