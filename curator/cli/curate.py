"""`curator build du|ds|ads|pairs|labelled|union`, `curator pseudo-label`, `curator guard`."""

from __future__ import annotations

import click
import pyarrow as pa

from curator.cli.common import echo_report, format_option, option_group, pass_store
from curator.curate.balance import BalanceOptions
from curator.curate.catalog import write_set
from curator.curate.decisions import read_decisions
from curator.curate.guard import DEFAULT_THRESHOLD, find_contamination, record_contamination
from curator.curate.pseudo import PseudoOptions, build_pseudo
from curator.curate.strategies import DSOptions, MatchOptions, build_ads, build_ds, build_du
from curator.curate.thresholds import RULES
from curator.match.params import parse_memory
from schemas.errors import ParameterError

# Options every build shares: teacher, set name, contamination, decisions, empty result.
_common = option_group(
    click.option("--model", "model_name", required=True, help="Registered teacher whose vectors are used."),
    click.option("--name", "set_name", required=True, help="Set name; each build is a new version of it."),
    click.option("--allow-contaminated", is_flag=True,
                 help="Keep clips that `curator guard` recorded as duplicates of evaluation clips."),
    click.option("--decisions", "decisions_path", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Review decisions (CSV/JSON: text_id,audio_id,decision): rejected pairs are dropped."),
    click.option("--keep-accepted", is_flag=True, help="With --decisions: keep accepted pairs even below τ."),
    click.option("--allow-empty", is_flag=True, help="Write a version even when no row passes."),
    format_option(),
)


_match = option_group(
    click.option("--threshold", type=float, required=True, help="Keep pairs with teacher score ≥ τ (cosine)."),
    click.option("--top-k", type=int, default=None, help="Keep at most K clips per caption (see --per)."),
    click.option("--per", type=click.Choice(["text", "audio", "both"]), default="text", show_default=True,
                 help="Which side --top-k bounds."),
    click.option("--pool-where", required=True, metavar="SQL",
                 help="Wild pool: a SQL condition over `audio`, e.g. \"source = 'wild'\"."),
    click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N] for matching."),
    click.option("--max-memory", default="auto", show_default=True, metavar="SIZE",
                 help="A pool whose vectors exceed SIZE (e.g. 2GB) is streamed from the store; same rows."),
)


def _write(store, name, build, allow_empty, fmt="table"):
    resolved, written = write_set(store, name, build.rows, build.strategy, build.params, build.inputs, build.model,
                                  allow_empty=allow_empty)
    unchanged = not written
    lines = [f"{'unchanged' if unchanged else 'built'}: set {resolved.ref} strategy={resolved.strategy} "
             f"rows={resolved.rows} hash={resolved.content_hash[:12]}"
             + (" (same rows, params and inputs as the latest version; nothing written)" if unchanged else "")]
    lines += [f"  {key}: {value}" for key, value in sorted(build.stats.items()) if not isinstance(value, dict)]
    record = {"set": resolved.ref, "strategy": resolved.strategy, "rows": resolved.rows,
              "content_hash": resolved.content_hash, "written": bool(written), "stats": build.stats}
    echo_report(record, fmt, lines, _class_table(build.stats))
    return resolved


def _class_table(stats: dict):
    """Per-class counts of a build (and its candidates / confident clips / thresholds when it has them),
    as a table, or None."""
    counts = stats.get("per_class")
    if not counts:
        return None
    extra = [("candidates", "per_class_candidates"), ("confident", "per_class_confident"), ("threshold", "thresholds")]
    extra = [(title, stats[key]) for title, key in extra if key in stats]
    rows = [{"label": c, **{t: v.get(c) for t, v in extra}, "kept": n} for c, n in counts.items()]
    types = {"candidates": pa.int64(), "confident": pa.int64(), "threshold": pa.float64()}
    schema = pa.schema([("label", pa.string())] + [(t, types[t]) for t, _ in extra] + [("kept", pa.int64())])
    return pa.Table.from_pylist(rows, schema=schema)


def _decisions(path):
    return read_decisions(path) if path else None


_balance = option_group(
    click.option("--balance", "balance_set", metavar="LABEL_SET",
                 help="Class-balance the set: each pair goes to the label whose prompt is nearest its caption "
                      "(teacher text space, or --text-model), then each class keeps its best pairs up to a quota."),
    click.option("--per-class", type=int, metavar="K",
                 help="With --balance: at most K pairs per class (default: an equal quota, candidates / classes)."),
)


def _balance_options(balance_set, per_class, text_model):
    if balance_set is None:
        if per_class is not None:
            raise ParameterError("--per-class needs --balance LABEL_SET")
        return None
    return BalanceOptions(balance_set, per_class, text_model).check()


@click.group()
def build():
    """Build improvement sets from teacher vectors (DU, DS, ADS).

    \b
    Example:
      curator build du --model clap --name du --threshold 0.3 --top-k 50 \\
        --pairs-where "source in ('clotho')" --pool-where "source = 'wild'"
    """


@build.command("du")
@_common
@_match
@click.option("--pairs-where", metavar="SQL", help="Teacher-training captions: SQL over `texts` (default: all "
              "captions with a paired clip).")
@click.option("--text-model", metavar="NAME", help="With --balance: text model that assigns captions to classes "
              "(default: the teacher's text tower).")
@_balance
@pass_store
def du_cmd(ctx, model_name, set_name, allow_contaminated, decisions_path, keep_accepted, allow_empty, fmt,
           threshold, top_k, per, pool_where, device, max_memory, pairs_where, text_model, balance_set, per_class):
    """Domain-unspecific: teacher-training captions × wild clips, score ≥ τ.

    \b
    Examples:
      curator build du --model clap --name du --threshold 0.3 --top-k 50 \\
        --pairs-where "source = 'clotho'" --pool-where "source = 'wild'"
      curator build du --model clap --name du_bal --threshold 0.3 --top-k 1 --per audio \\
        --pool-where "source = 'wild'" --balance esc50 --per-class 40 --text-model minilm
    """
    balance = _balance_options(balance_set, per_class, text_model)
    if text_model and balance is None:
        raise ParameterError("du: --text-model is only used with --balance")
    store = ctx.store(create=False)
    opts = MatchOptions(threshold, top_k, per, device, parse_memory(max_memory))
    b = build_du(store, model_name, opts, pool_where, pairs_where,
                 allow_contaminated, _decisions(decisions_path), keep_accepted, balance)
    _write(store, set_name, b, allow_empty, fmt)


@build.command("pairs")
@click.option("--name", "set_name", required=True, help="Set name; each build is a new version of it.")
@click.option("--pairs-where", metavar="SQL", help="Captions to take: SQL over `texts` (default: every caption "
              "with a paired clip).")
@click.option("--model", "model_name", help="Attach this model's vectors (needed for soft-label replay).")
@click.option("--allow-contaminated", is_flag=True, help="Keep clips recorded by `curator guard`.")
@click.option("--allow-empty", is_flag=True, help="Write a version even when no row passes.")
@format_option()
@pass_store
def pairs_cmd(ctx, set_name, pairs_where, model_name, allow_contaminated, allow_empty, fmt):
    """The captioned training pairs themselves, as a set (to train a first teacher, or to replay).

    \b
    Examples:
      curator build pairs --name teacher_pairs --pairs-where "source = 'clotho'"
      curator build pairs --name replay --model teacher --pairs-where "source = 'clotho'"
    """
    from curator.curate.pairs import build_pairs

    store = ctx.store(create=False)
    _write(store, set_name, build_pairs(store, pairs_where, model_name, allow_contaminated), allow_empty, fmt)


_ds_options = option_group(
    click.option("--pairs-where", metavar="SQL", help="Teacher-training pairs: SQL over `texts` (default: "
                 "all captions with a paired clip)."),
    click.option("--text-model", metavar="NAME", help="Text model for caption-prompt similarity (default: "
                 "the teacher's text tower); its emb_<name>_text must hold captions and prompts."),
)


@build.command("ds")
@_common
@_ds_options
@click.option("--label-set", required=True, help="Label set whose prompts define the target domain.")
@click.option("--threshold", type=float, required=True, help="Keep pairs whose caption's best prompt similarity ≥ τ_ds "
              "(0.6-0.75 in the paper).")
@pass_store
def ds_cmd(ctx, model_name, set_name, allow_contaminated, decisions_path, keep_accepted, allow_empty, fmt,
           pairs_where, text_model, label_set, threshold):
    """Domain-specific: teacher-training pairs whose caption is close to a label prompt.

    \b
    Example:
      curator build ds --model clap --name ds_esc --label-set esc50 --threshold 0.65 \\
        --pairs-where "source in ('clotho', 'audiocaps')"
    """
    store = ctx.store(create=False)
    b = build_ds(store, model_name, DSOptions(label_set, threshold, pairs_where, text_model), allow_contaminated,
                 _decisions(decisions_path), keep_accepted)
    _write(store, set_name, b, allow_empty, fmt)


@build.command("ads")
@_common
@_match
@_ds_options
@click.option("--from-set", metavar="DS_REF", help="DS set whose captions are matched (name, name@N, name@tag).")
@click.option("--label-set", help="Compute DS on the fly from this label set instead of --from-set.")
@click.option("--ds-threshold", type=float, help="τ_ds for the on-the-fly DS step.")
@_balance
@pass_store
def ads_cmd(ctx, model_name, set_name, allow_contaminated, decisions_path, keep_accepted, allow_empty, fmt,
            threshold, top_k, per, pool_where, device, max_memory, pairs_where, text_model, from_set, label_set, ds_threshold,
            balance_set, per_class):
    """Augmented domain-specific: DS captions × wild clips, score ≥ τ.

    \b
    Examples:
      curator build ads --model clap --name ads_esc --from-set ds_esc@2 --threshold 0.3 \\
        --top-k 20 --pool-where "source = 'wild'"
      curator build ads --model clap --name ads_esc --label-set esc50 --ds-threshold 0.65 \\
        --threshold 0.3 --pool-where "source = 'wild'"
      curator build ads --model clap --name ads_bal --from-set ds_esc --threshold 0.3 --top-k 1 \\
        --per audio --pool-where "source = 'wild'" --balance esc50 --text-model minilm
    """
    ds = None
    if label_set is not None or ds_threshold is not None:
        if label_set is None or ds_threshold is None:
            raise ParameterError("ads: --label-set and --ds-threshold go together")
        ds = DSOptions(label_set, ds_threshold, pairs_where, text_model)
    store = ctx.store(create=False)
    opts = MatchOptions(threshold, top_k, per, device, parse_memory(max_memory))
    b = build_ads(store, model_name, opts, pool_where, from_set, ds,
                  allow_contaminated, _decisions(decisions_path), keep_accepted,
                  _balance_options(balance_set, per_class, text_model))
    _write(store, set_name, b, allow_empty, fmt)


@click.command("pseudo-label")
@click.option("--model", "model_name", required=True, help="Teacher (or student) whose vectors score the clips.")
@click.option("--label-set", required=True, help="Label set whose prompts are the classes.")
@click.option("--name", "set_name", required=True, help="Set name; each run is a new version of it.")
@click.option("--min-confidence", type=float, default=0.9, show_default=True, help="Keep clips with max p ≥ this.")
@click.option("--audio-where", metavar="SQL", help="Clips to label: SQL over `audio` (default: all clips).")
@click.option("--max-per-class", type=int, help="Keep at most N clips per class (most confident first).")
@click.option("--per-class-threshold", type=click.Choice(RULES), default=None,
              help="Class-wise thresholds from --min-confidence τ. flexmatch: τ_c = τ·β_c/(2−β_c), β_c = class c's "
                   "confident clips over the largest class's; quantile: every class keeps the share of its own "
                   "predictions that τ keeps overall.")
@click.option("--temperature", type=float, help="Use softmax(a·p / T) instead of the model's logit scale.")
@click.option("--classifier", type=click.Path(file_okay=False), metavar="CKPT",
              help="Take p(c|x) from a trained classifier checkpoint instead of zero-shot scores.")
@click.option("--allow-contaminated", is_flag=True, help="Keep clips recorded by `curator guard`.")
@click.option("--allow-empty", is_flag=True, help="Write a version even when no clip passes.")
@format_option()
@pass_store
def pseudo_label(ctx, model_name, label_set, set_name, min_confidence, audio_where, max_per_class,
                 per_class_threshold, temperature, classifier, allow_contaminated, allow_empty, fmt):
    """Pseudo-label unlabelled clips from zero-shot scores (or a classifier) and keep the confident ones.

    \b
    Example:
      curator pseudo-label --model student_r1 --label-set tut --min-confidence 0.9 \\
        --name pl_r2 --audio-where "source = 'scenes' and labels is null" --max-per-class 200
      curator pseudo-label --model teacher --label-set esc50 --min-confidence 0.9 --name pl_flex \\
        --per-class-threshold flexmatch --max-per-class 100 --audio-where "split = 'wild'"
    """
    store = ctx.store(create=False)
    opts = PseudoOptions(label_set, min_confidence, audio_where, max_per_class, temperature, classifier,
                         per_class_threshold)
    b = build_pseudo(store, model_name, opts, allow_contaminated)
    _write(store, set_name, b, allow_empty, fmt)


@click.command("guard")
@click.option("--model", "model_name", help="Model whose audio vectors find near-duplicates (omit: sha1 only).")
@click.option("--pool-where", required=True, metavar="SQL", help="Wild pool: SQL over `audio`.")
@click.option("--eval-where", required=True, metavar="SQL", help="Evaluation clips: SQL over `audio`.")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="Audio-audio cosine at or above which a pool clip counts as a duplicate.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N].")
@format_option()
@pass_store
def guard(ctx, model_name, pool_where, eval_where, threshold, device, fmt):
    """Find pool clips that duplicate evaluation clips and exclude them from later builds.

    Duplicates: same clip, same sha1 content hash, or audio-vector cosine ≥ threshold. Findings
    are added to the `contamination` table; builds skip them unless --allow-contaminated.

    \b
    Example:
      curator guard --model clap --pool-where "source = 'wild'" \\
        --eval-where "source = 'esc50'" --threshold 0.98
    """
    from curator.models.registry import get_model

    store = ctx.store(create=False)
    model = get_model(store, model_name) if model_name else None
    rows = find_contamination(store, pool_where, eval_where, model, threshold, device)
    added = record_contamination(store, rows) if rows.num_rows else 0
    excluded = len(set(rows.column("audio_id").to_pylist()))
    echo_report({"found": rows.num_rows, "new": added, "excluded_clips": excluded}, fmt,
                [f"{rows.num_rows} contaminated pair(s) found, {added} new; {excluded} pool clip(s) excluded "
                 f"from builds"], rows.select(["audio_id", "eval_audio_id", "reason", "similarity"]))


@build.command("labelled")
@click.option("--name", "set_name", required=True, help="Set name; each build is a new version of it.")
@click.option("--audio-where", metavar="SQL", help="Clips to take: SQL over `audio` (only clips with a label "
              "are kept).")
@click.option("--label-set", help="Take each row's text (and text_id) from this label set's prompts.")
@click.option("--model", "model_name", help="Attach this model's clip and prompt vectors (needs --label-set).")
@click.option("--allow-contaminated", is_flag=True, help="Keep clips recorded by `curator guard`.")
@click.option("--allow-empty", is_flag=True, help="Write a version even when no row passes.")
@format_option()
@pass_store
def labelled_cmd(ctx, set_name, audio_where, label_set, model_name, allow_contaminated, allow_empty, fmt):
    """The labelled clips as a set: label = the clip's first label (round 0 of pseudo-labelling).

    \b
    Examples:
      curator build labelled --name scenes_lab --audio-where "source = 'scenes'"
      curator build labelled --name scenes_lab --label-set scenes --model clf_r0 \\
        --audio-where "source = 'scenes' and city = 'paris'"
    """
    from curator.curate.labelled import build_labelled

    store = ctx.store(create=False)
    b = build_labelled(store, audio_where, label_set, model_name, allow_contaminated)
    _write(store, set_name, b, allow_empty, fmt)


@build.command("union")
@click.option("--name", "set_name", required=True, help="Set name; each build is a new version of it.")
@click.option("--from", "refs", multiple=True, required=True, metavar="REF",
              help="Input set (name, name@N, name@tag); repeat. A clip in several inputs keeps the first's rows.")
@click.option("--allow-empty", is_flag=True, help="Write a version even when no row passes.")
@format_option()
@pass_store
def union_cmd(ctx, set_name, refs, allow_empty, fmt):
    """Rows of several sets as one set (e.g. labelled + pseudo-labelled clips for retraining).

    Teacher vectors are kept when every input carries the same model's; otherwise they are
    dropped (classification and the hybrid loss do not need them).

    \b
    Example:
      curator build union --name scenes_r1 --from scenes_lab@1 --from scenes_pl@1
    """
    from curator.curate.labelled import build_union

    store = ctx.store(create=False)
    b = build_union(store, list(refs))
    _write(store, set_name, b, allow_empty, fmt)


COMMANDS = (build, pseudo_label, guard)
