"""Validation of Arrow data against the table schemas, with errors that name the column."""

from __future__ import annotations

import pyarrow as pa

from schemas.errors import ParameterError, SchemaError


def conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """Return `table` with exactly `schema`'s columns, in order, cast to its types.

    Missing nullable columns are filled with nulls; a missing non-nullable column, a null in a
    non-nullable column, an unknown column or an impossible cast raises SchemaError naming it.
    """
    extra = [n for n in table.column_names if schema.get_field_index(n) < 0]
    if extra:
        raise SchemaError(f"{what}: unknown column(s) {', '.join(extra)}; expected {', '.join(schema.names)}")
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaError(
                        f"{what}: column {field.name!r} has type {col.type}, expected {field.type} ({exc})"
                    ) from None
        elif field.nullable:
            col = pa.nulls(table.num_rows, type=field.type)
        else:
            raise SchemaError(f"{what}: required column {field.name!r} is missing")
        if not field.nullable and col.null_count:
            raise SchemaError(f"{what}: column {field.name!r} has {col.null_count} null value(s) but is required")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def check_threshold(value: float, name: str = "threshold") -> float:
    """Cosine scores live in [-1, 1]; anything else is a typo, not a choice."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SchemaError(f"{name} must be a number, got {value!r}") from None
    if not -1.0 <= v <= 1.0:
        raise ParameterError(f"{name} {v} is outside [-1, 1] (scores are cosine similarities)")
    return v


def check_vectors(table: pa.Table, dim: int, what: str) -> None:
    """Vectors must be fixed-size float32 lists of `dim` with no nulls."""
    if "vector" not in table.column_names:
        raise SchemaError(f"{what}: column 'vector' is missing")
    t = table.column("vector").type
    if not pa.types.is_fixed_size_list(t) or t.list_size != dim:
        raise SchemaError(f"{what}: column 'vector' has type {t}, expected fixed_size_list<float>[{dim}]")
