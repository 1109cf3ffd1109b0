"""`curator embed` and `curator import-embeddings`."""

from __future__ import annotations

import os

import click

from curator.cli.common import pass_store, progress
from schemas.errors import ParameterError


class _Bar:
    """tqdm (clips/s and ETA on a terminal) behind the callable(n) + close() the library expects."""

    def __init__(self, total: int, desc: str, unit: str):
        self.bar = progress(total=total, desc=desc, unit=unit)

    def __call__(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _bar_factory(unit: str):
    return lambda total, desc: _Bar(total, desc, unit)


@click.command("embed")
@click.option("--model", "model", required=True, help="Registered model name (curator models list).")
@click.option("--audio", "do_audio", is_flag=True, help="Embed clips of the audio table.")
@click.option("--texts", "do_texts", is_flag=True, help="Embed rows of the texts table.")
@click.option("--where", default=None, help="SQL filter on the table being embedded (audio or texts).")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Clips / texts per forward pass and per write.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (auto honours LOCAL_RANK).")
@click.option("--shard", default=None, metavar="I/N",
              help="Embed only ids with sha1(id) mod N == I; default RANK/WORLD_SIZE from the environment, else 0/1.")
@click.option("--long", "long_rule", type=click.Choice(["average", "crop"]), default="average", show_default=True,
              help="Clips longer than the model window: average consecutive windows, or take the centre crop.")
@click.option("--workers", default=min(4, os.cpu_count() or 1), show_default=True, type=int,
              help="Decoder threads (decode the next batch while the model runs).")
@click.option("--bf16", is_flag=True, help="bf16 autocast on CUDA (vectors re-normalised in float32).")
@click.option("--flush-rows", default=2048, show_default=True, type=int,
              help="Append vectors to the store every N rows (or every 10 s): fewer, larger Lance commits.")
@pass_store
def embed(ctx, model, do_audio, do_texts, where, batch_size, device, shard, long_rule, workers, bf16, flush_rows):
    """Embed clips and/or texts with a registered model into emb_<model>_audio / emb_<model>_text.

    Only items without a vector are embedded, so rerunning after a crash resumes. Clips that fail to
    decode are recorded in `errors` (stage embed); the run goes on and exits 1 with a summary.
    Without --audio / --texts, every modality the model has is embedded.

    \b
    Examples:
      curator embed --model clap --audio --texts
      curator embed --model clap --audio --where "source = 'wild'" --device cuda --batch-size 128
      curator embed --model clap --audio --shard 0/4 &  curator embed --model clap --audio --shard 1/4 &
      torchrun --nproc-per-node 8 --no-python curator embed --model clap --audio  # shards = ranks
    """
    from curator.embed.pending import parse_shard
    from curator.embed.run import embed as run_embed
    from curator.models.registry import get_model

    store = ctx.store(create=False)
    record = get_model(store, model)
    modalities = [m for m, on in (("audio", do_audio), ("text", do_texts)) if on] or list(record.modalities)
    if where and len(modalities) > 1:
        raise ParameterError("--where applies to one table; pass --audio or --texts with it")
    spec = parse_shard(shard)
    failed = 0
    for modality in modalities:
        summary = run_embed(store, model, modality, where=where, batch_size=batch_size, device=device, shard=spec,
                            long_rule=long_rule, workers=workers, amp=bf16, flush_rows=flush_rows,
                            progress_factory=_bar_factory("clip" if modality == "audio" else "text"))
        click.echo(summary.line(), err=bool(summary.failures))
        failed += summary.failed
    if failed:
        raise click.exceptions.Exit(1)


@click.command("import-embeddings")
@click.option("--model", required=True, help="Registered model (name or folder) the vectors come from.")
@click.option("--modality", required=True, type=click.Choice(["audio", "text"]))
@click.option("--ids", "ids_path", type=click.Path(exists=True, dir_okay=False),
              help="For a .npy file: ids, one per line, in row order.")
@click.option("--id-column", help="Id column of the parquet files (default: id, else audio_id / text_id).")
@click.argument("path", type=click.Path(exists=True))
@pass_store
def import_embeddings(ctx, model, modality, ids_path, id_column, path):
    """Import vectors made elsewhere: parquet (id + vector columns), .npy with --ids, or a folder of shards.

    Checks that every id exists in audio / texts and the dimension is the model's; vectors are
    L2-normalised; ids that already have a vector are skipped.

    A folder is read shard by shard in bounded memory: NAME.npy with the parquet of ids NAME.parquet
    beside it, or ..._K.npy with metadata/metadata_K.parquet (the clip-retrieval / embedding-reader
    layout), and parquet shards with id + vector columns. Each shard is checked whole before it is
    written; finished shards are recorded in the `imports` table and skipped by a rerun.

    \b
    Examples:
      curator import-embeddings --model clap --modality audio vectors.parquet
      curator import-embeddings --model clap --modality text vecs.npy --ids text_ids.txt
      curator models add teamclap --kind external --dim 512
      curator import-embeddings --model teamclap --modality audio ./embeddings/   # audio_emb/*.npy + metadata/
    """
    from curator.embed.importing import import_embeddings as run_import

    bar = progress(desc="shards", unit="shard")
    try:
        summary = run_import(ctx.store(create=False), model, modality, path, ids_path, id_column,
                             progress=lambda _name: bar.update(1))
    finally:
        bar.close()
    click.echo(summary.line())
