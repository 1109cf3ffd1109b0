"""`curator sets list | show | diff | tag | export`."""

from __future__ import annotations

import click

from curator.cli.common import echo_report, echo_table, format_option, pass_store
from curator.curate.catalog import EXPORT_FORMATS, diff_sets, export_set, format_lineage, list_sets, show_set, tag_set
from curator.curate.counts import format_counts, label_counts

DIFF_COLUMNS = ["audio_id", "text_id", "text", "score", "label"]


@click.group()
def sets():
    """Improvement-set versions: list, lineage, diff, tag, export.

    A reference is NAME (latest), NAME@VERSION or NAME@TAG.

    \b
    Example:
      curator sets list
      curator sets diff du@1 du@2
    """


@sets.command("list")
@format_option()
@pass_store
def list_cmd(ctx, fmt):
    """List every set version with strategy, rows, model, tags and content hash.

    \b
    Example:
      curator sets list --format csv
    """
    table = list_sets(ctx.store(create=False))
    if table.num_rows == 0 and fmt == "table":
        click.echo("no sets yet; build one with `curator build du|ds|ads` or `curator pseudo-label`")
        return
    echo_table(table, fmt)


@sets.command("show")
@click.argument("ref")
@format_option(("table", "json"))
@pass_store
def show_cmd(ctx, ref, fmt):
    """Show a set version's lineage (params, inputs, model, parent sets back to round 0) and, for a
    set with labels, its per-class counts.

    \b
    Example:
      curator sets show pl_r2@latest-good
      curator sets show ads_esc@3 --format json
    """
    store = ctx.store(create=False)
    lineage = show_set(store, ref)
    counts = label_counts(store, ref)
    if fmt == "json":  # the same tree: a set's parents are sets and models, a model's the set it was trained on
        import dataclasses
        import json

        click.echo(json.dumps({**dataclasses.asdict(lineage), "per_class_counts": counts}, default=str))
        return
    click.echo("\n".join(format_lineage(lineage)))
    if counts:
        click.echo(f"per-class counts (label): {format_counts(counts)}")


@sets.command("diff")
@click.argument("ref_a")
@click.argument("ref_b")
@click.option("--limit", type=int, default=20, show_default=True, help="Rows of each side to print (0: counts only).")
@format_option()
@pass_store
def diff_cmd(ctx, ref_a, ref_b, limit, fmt):
    """Rows added and removed from REF_A to REF_B, keyed by (audio_id, text_id).

    \b
    Example:
      curator sets diff du@1 du@2 --limit 5
    """
    d = diff_sets(ctx.store(create=False), ref_a, ref_b)
    if fmt != "table":  # csv / json: the changed rows (up to --limit per side), with a `change` column
        import pyarrow as pa

        parts = [rows.select(DIFF_COLUMNS).slice(0, limit).append_column(
            "change", pa.array([change] * min(limit, rows.num_rows), pa.string())) for change, rows in
            (("added", d.added), ("removed", d.removed))]
        echo_report({"a": d.a.ref, "b": d.b.ref, "added": d.added.num_rows, "removed": d.removed.num_rows,
                     "common": d.common}, fmt, [], pa.concat_tables(parts))
        return
    click.echo(f"{d.a.ref} -> {d.b.ref}: +{d.added.num_rows} added, -{d.removed.num_rows} removed, "
               f"{d.common} in both")
    for title, rows in (("added", d.added), ("removed", d.removed)):
        if limit and rows.num_rows:
            click.echo(f"{title}:")
            echo_table(rows.select(DIFF_COLUMNS).slice(0, limit))


@sets.command("tag")
@click.argument("ref")
@click.argument("tag")
@pass_store
def tag_cmd(ctx, ref, tag):
    """Name a set version; `NAME@TAG` then resolves to it (re-tagging moves the tag).

    \b
    Example:
      curator sets tag du@3 baseline
    """
    resolved = tag_set(ctx.store(create=False), ref, tag)
    click.echo(f"tagged {resolved.ref} as {resolved.name}@{tag}")


@sets.command("export")
@click.argument("ref")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), help="Default: from PATH's suffix.")
@pass_store
def export_cmd(ctx, ref, path, fmt):
    """Write a set version to parquet, csv or jsonl (teacher vectors included).

    \b
    Example:
      curator sets export ads_esc@2 ads_esc_v2.parquet
      curator sets export du du.csv
    """
    resolved, fmt = export_set(ctx.store(create=False), ref, path, fmt)
    click.echo(f"wrote {resolved.ref} ({resolved.rows} rows) to {path} as {fmt}")


COMMANDS = (sets,)
