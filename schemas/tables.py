"""Arrow schemas of every table in the store (DESIGN.md section 3).

Table names and key columns are a public contract: users query them by name with
`curator query`. Columns may be added; none may be renamed or removed without a migration.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.errors import SchemaError

TS = pa.timestamp("us", tz="UTC")


def vector_type(dim: int) -> pa.DataType:
    """Fixed-size list so LanceDB can index it and readers get a zero-copy (n, dim) buffer."""
    if dim <= 0:
        raise SchemaError(f"vector dimension must be positive, got {dim}")
    return pa.list_(pa.float32(), dim)


AUDIO = pa.schema(
    [
        pa.field("audio_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("fold", pa.int32()),
        pa.field("city", pa.string()),
        pa.field("recorded_at", TS),
        pa.field("sha1", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("ingested_at", TS),
    ]
)

TEXTS = pa.schema(
    [
        pa.field("text_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # caption | prompt
        pa.field("source", pa.string(), nullable=False),
        pa.field("audio_id", pa.string()),  # paired clip, null for prompts / unpaired text
        pa.field("label_set", pa.string()),
        pa.field("label", pa.string()),
        pa.field("ingested_at", TS),
    ]
)

# The one prompt template: label prompts in `texts`, zero-shot evaluation, pseudo-labels and the
# labelled sets all phrase a class this way unless told otherwise (DESIGN 6.4 and 6.6).
PROMPT_TEMPLATE = "this is a sound of {label}"


def check_template(template: str, option: str = "--template") -> str:
    """A prompt template names `{label}` and no other field (`{0}`, `{x}`, a lone brace are refused)."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise SchemaError(f"{option} {template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    other = ["{" + f + "}" for f in fields if f != "label"]
    if other or "label" not in fields:
        found = f" (found {other[0]})" if other else ""
        raise SchemaError(f"{option} {template!r} must contain {{label}} and no other field{found}")
    return template

MODELS = pa.schema(
    [
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # clap-hf | checkpoint | sentence | external
        pa.field("path", pa.string(), nullable=False),  # "" for external (no weights here)
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("dim", pa.int32(), nullable=False),
        pa.field("logit_scale", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("modalities", pa.list_(pa.string())),
        pa.field("trained_on", pa.string()),  # set ref name@version, null for external teachers
        pa.field("added_at", TS),
    ]
)

CANDIDATES = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("text_id", pa.string(), nullable=False),
        pa.field("audio_id", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),  # 1 = best clip for this caption
    ]
)

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("threshold", pa.float64()),
        pa.field("top_k", pa.int32()),
        pa.field("per", pa.string()),
        pa.field("params", pa.string()),  # JSON
        pa.field("inputs", pa.list_(pa.string())),  # table@version
        pa.field("n_texts", pa.int64()),
        pa.field("n_audio", pa.int64()),
        pa.field("pairs", pa.int64()),
        pa.field("recall", pa.float64()),  # ann only: measured against exact on a sample
        pa.field("duration_s", pa.float64()),
        pa.field("created_at", TS),
    ]
)

SETS = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),  # the set's number, decided by this catalog
        pa.field("strategy", pa.string(), nullable=False),  # du | ds | ads | pseudo | ...
        pa.field("params", pa.string()),  # JSON
        pa.field("inputs", pa.list_(pa.string())),  # table@version, and parent set refs
        pa.field("model_id", pa.string()),
        pa.field("model_sha256", pa.string()),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("created_at", TS),
        pa.field("table_version", pa.int64()),  # Lance version of set_<name> (null: = version)
    ]
)

ERRORS = pa.schema(
    [
        pa.field("item_id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # ingest | embed | train ...
        pa.field("message", pa.string(), nullable=False),
        pa.field("at", TS),
    ]
)

CONTAMINATION = pa.schema(
    [
        pa.field("audio_id", pa.string(), nullable=False),  # pool clip to exclude
        pa.field("eval_audio_id", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # sha1 | similarity
        pa.field("similarity", pa.float32()),
        pa.field("model_id", pa.string()),
        pa.field("at", TS),
    ]
)


# One row per vector shard imported by `curator import-embeddings FOLDER`: a rerun skips the shards
# listed here for the same model, modality and fingerprint (size + head and tail bytes of its files).
IMPORTS = pa.schema(
    [
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),  # path relative to the imported folder
        pa.field("rows", pa.int64()),
        pa.field("imported", pa.int64()),  # rows new to the embedding table
        pa.field("at", TS),
    ]
)


def set_rows(audio_dim: int, text_dim: int) -> pa.Schema:
    """Rows of `set_<name>`: self-contained, so training never re-runs the teacher."""
    return pa.schema(
        [
            pa.field("audio_id", pa.string(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("text_id", pa.string()),
            pa.field("text", pa.string()),
            pa.field("score", pa.float32()),
            pa.field("label", pa.string()),
            pa.field("confidence", pa.float32()),
            pa.field("margin", pa.float32()),
            pa.field("entropy", pa.float32()),
            pa.field("city", pa.string()),
            pa.field("recorded_at", TS),
            pa.field("teacher_audio", vector_type(audio_dim)),
            pa.field("teacher_text", vector_type(text_dim)),
        ]
    )


def embeddings(id_column: str, dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field(id_column, pa.string(), nullable=False),
            pa.field("vector", vector_type(dim), nullable=False),
        ]
    )


def embedding_table_name(model_slug: str, modality: str) -> str:
    if modality not in ("audio", "text"):
        raise SchemaError(f"modality must be 'audio' or 'text', got {modality!r}")
    return f"emb_{model_slug}_{modality}"


def set_table_name(name: str) -> str:
    return f"set_{name}"


# Fixed tables: name -> (schema, key columns for idempotent upsert)
FIXED_TABLES: dict[str, tuple[pa.Schema, tuple[str, ...]]] = {
    "audio": (AUDIO, ("audio_id",)),
    "texts": (TEXTS, ("text_id",)),
    "models": (MODELS, ("model_id",)),
    "candidates": (CANDIDATES, ("run_id", "text_id", "audio_id")),
    "runs": (RUNS, ("run_id",)),
    "sets": (SETS, ("name", "version")),
    "errors": (ERRORS, ()),
    "contamination": (CONTAMINATION, ("audio_id", "eval_audio_id")),
    "imports": (IMPORTS, ("model_id", "modality", "fingerprint")),
}
