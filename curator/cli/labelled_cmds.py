"""`curator build labelled` and `curator build union` (the scene workflow's round-0 and retraining sets)."""

from __future__ import annotations

import click

from curator.cli.common import echo_table, pass_store


@click.command("labelled")
@click.option("--name", "set_name", required=True, help="Set name; each build is a new version of it.")
@click.option("--audio-where", metavar="SQL", help="Clips to take: SQL over `audio` (only clips with a label "
              "are kept).")
@click.option("--label-set", help="Take each row's text (and text_id) from this label set's prompts.")
@click.option("--model", "model_name", help="Attach this model's clip and prompt vectors (needs --label-set).")
@click.option("--allow-contaminated", is_flag=True, help="Keep clips recorded by `curator guard`.")
@click.option("--allow-empty", is_flag=True, help="Write a version even when no row passes.")
@pass_store
def labelled_cmd(ctx, set_name, audio_where, label_set, model_name, allow_contaminated, allow_empty):
    """The labelled clips as a set: label = the clip's first label (round 0 of pseudo-labelling).

    \b
    Examples:
      curator build labelled --name scenes_lab --audio-where "source = 'scenes'"
      curator build labelled --name scenes_lab --label-set scenes --model clf_r0 \\
        --audio-where "source = 'scenes' and city = 'paris'"
    """
    from curator.cli.build_cmds import _write
    from curator.labelled import build_labelled

    store = ctx.store(create=False)
    b = build_labelled(store, audio_where, label_set, model_name, allow_contaminated)
    _write(store, set_name, b, allow_empty)
    _per_class(b.stats.get("per_class", {}))


@click.command("union")
@click.option("--name", "set_name", required=True, help="Set name; each build is a new version of it.")
@click.option("--from", "refs", multiple=True, required=True, metavar="REF",
              help="Input set (name, name@N, name@tag); repeat. A clip in several inputs keeps the first's rows.")
@click.option("--allow-empty", is_flag=True, help="Write a version even when no row passes.")
@pass_store
def union_cmd(ctx, set_name, refs, allow_empty):
    """Rows of several sets as one set (e.g. labelled + pseudo-labelled clips for retraining).

    Teacher vectors are kept when every input carries the same model's; otherwise they are
    dropped (classification and the hybrid loss do not need them).

    \b
    Example:
      curator build union --name scenes_r1 --from scenes_lab@1 --from scenes_pl@1
    """
    from curator.cli.build_cmds import _write
    from curator.labelled import build_union

    store = ctx.store(create=False)
    b = build_union(store, list(refs))
    _write(store, set_name, b, allow_empty)


def _per_class(counts: dict) -> None:
    import pyarrow as pa

    if counts:
        echo_table(pa.Table.from_pylist([{"label": k, "clips": v} for k, v in counts.items()],
                                        schema=pa.schema([("label", pa.string()), ("clips", pa.int64())])))


COMMANDS = (labelled_cmd, union_cmd)
