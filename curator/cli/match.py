"""`curator match` and `curator sweep`: find caption-clip pairs above a threshold."""

from __future__ import annotations

import click
import pyarrow as pa

from curator.cli.common import echo_table, pass_store, progress

FORMATS = click.Choice(["table", "csv", "json"])


def _block(value: str | None):
    if not value:
        return None
    try:
        parts = [int(x) for x in value.lower().split("x")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected ROWS or ROWSxCOLS, e.g. 2048x4096") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise click.BadParameter(f"{value!r}: expected ROWS or ROWSxCOLS, e.g. 2048x4096")
    return (parts[0], parts[-1])


class _Bar:
    """Adapts a `(done, total)` callback to a tqdm bar (silent off a terminal)."""

    def __init__(self, desc: str):
        self.bar, self.desc, self.done = None, desc, 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress(total=total, desc=self.desc, unit="caption")
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command("match")
@click.option("--model", required=True, help="Registered model whose embedding tables are matched.")
@click.option("--threshold", required=True, type=float, help="Keep pairs with score >= T (cosine, in [-1, 1]).")
@click.option("--top-k", type=int, default=None, help="At most K pairs per caption / clip (see --per).")
@click.option("--per", type=click.Choice(["text", "audio", "both"]), default="text", show_default=True,
              help="Where --top-k applies; both = the pair is in the caption's AND the clip's top-k.")
@click.option("--method", type=click.Choice(["exact", "ann", "sql"]), default="exact", show_default=True,
              help="exact: blocked matrix products; ann: LanceDB index + exact refine; sql: DuckDB reference.")
@click.option("--texts-where", default=None, help="SQL condition on table `texts` selecting the captions.")
@click.option("--audio-where", default=None, help="SQL condition on table `audio` selecting the clips.")
@click.option("--run", "run_name", required=True, help="Name of this run (the run_id in candidates / runs).")
@click.option("--replace", is_flag=True, help="Replace an existing run of the same name.")
@click.option("--device", default="auto", show_default=True, help="auto (GPU when present), cpu, cuda, cuda:1 ...")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="Block precision (auto: bf16 on GPU, fp32 on CPU); decisions are re-checked exactly either way.")
@click.option("--block", default=None, help="Score block ROWSxCOLS (default 2048x4096 CPU, 16384x65536 GPU).")
@click.option("--nprobes", type=int, default=None, help="ann: IVF partitions probed per caption (default 16).")
@click.option("--index-type", type=click.Choice(["IVF_FLAT", "IVF_PQ"]), default=None, help="ann: index kind.")
@click.option("--recall-sample", type=int, default=None, help="ann: captions sampled to measure recall (256).")
@click.option("--max-memory", default="auto", show_default=True, metavar="SIZE",
              help="exact: a pool whose vectors exceed SIZE (e.g. 2GB) is streamed from the store in blocks "
                   "of SIZE; same pairs. auto = half the machine's RAM.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@pass_store
def match(ctx, model, threshold, top_k, per, method, texts_where, audio_where, run_name, replace, device,
          precision, block, nprobes, index_type, recall_sample, max_memory, fmt):
    """Score every caption against every clip of a model and keep pairs >= THRESHOLD.

    Pairs go to table `candidates` (run_id, text_id, audio_id, score, rank); one row describing the
    run (method, model, parameters, input table versions, counts, recall for ann) goes to `runs`.

    \b
    Example:
      curator match --model clap --threshold 0.45 --top-k 50 --run du1 \\
          --texts-where "source = 'clotho'" --audio-where "split = 'train'"
      curator query "select * from candidates where run_id = 'du1' order by score desc limit 5"
    """
    from curator.match.params import parse_memory
    from curator.match.run import run_match

    ann = {k: v for k, v in (("nprobes", nprobes), ("index_type", index_type), ("recall_sample", recall_sample))
           if v is not None}
    bar = _Bar(f"match {run_name}")
    try:
        s = run_match(ctx.store(), model, threshold, top_k, per, method, texts_where, audio_where, run_name,
                      replace=replace, device=device, block=_block(block), precision=precision, ann=ann,
                      progress=bar, max_memory=parse_memory(max_memory))
    finally:
        bar.close()
    if s.reused:
        click.echo(f"run {s.run_id!r} is already complete with these parameters and inputs; nothing written "
                   f"(pass --replace to redo it)", err=True)
    echo_table(pa.Table.from_pylist([{
        "run": s.run_id, "method": s.method, "model": s.model_id, "threshold": s.threshold, "top_k": s.top_k,
        "per": s.per, "texts": s.n_texts, "clips": s.n_audio, "pairs": s.pairs, "recall": s.recall,
        "seconds": s.duration_s,
    }]), fmt)


@click.command("sweep")
@click.option("--model", required=True, help="Registered model whose embedding tables are scored.")
@click.option("--thresholds", default="0.3:0.9:0.05", show_default=True,
              help="START:STOP:STEP (stop included) or a comma list.")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False),
              help="Also write a PNG: pairs and matched captions per threshold, best-score histogram.")
@click.option("--texts-where", default=None, help="SQL condition on table `texts` selecting the captions.")
@click.option("--audio-where", default=None, help="SQL condition on table `audio` selecting the clips.")
@click.option("--device", default="auto", show_default=True, help="auto (GPU when present), cpu, cuda ...")
@click.option("--max-memory", default="auto", show_default=True, metavar="SIZE",
              help="A pool whose vectors exceed SIZE (e.g. 2GB) is streamed from the store in blocks of SIZE.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@pass_store
def sweep(ctx, model, thresholds, plot_path, texts_where, audio_where, device, max_memory, fmt):
    """Count the pairs a match would keep at each threshold, in one pass over all scores.

    Prints, per threshold, the pairs kept and the captions with at least one match; --plot adds
    a histogram of each caption's best-match score. Writes nothing to the store.

    \b
    Example:
      curator sweep --model clap --thresholds 0.3:0.9:0.05 --plot sweep.png
    """
    from curator.match.params import parse_memory
    from curator.match.run import load_pool
    from curator.match.sweep import parse_thresholds, plot
    from curator.match.sweep import sweep as run_sweep

    ts = parse_thresholds(thresholds)
    limit = parse_memory(max_memory)
    tv, av, info = load_pool(ctx.store(), model, texts_where, audio_where, limit)
    bar = _Bar(f"sweep {model}")
    try:
        result = run_sweep(tv.vecs, getattr(av, "vecs", av), ts, device=device, progress=bar, max_memory=limit)
    finally:
        bar.close()
    echo_table(result["table"], fmt)
    if plot_path:
        plot(result, plot_path, title=f"{info.model_id}: {len(tv)} captions x {len(av)} clips")
        click.echo(f"wrote {plot_path}", err=True)
