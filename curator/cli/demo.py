"""`curator demo generate|scenes`: write deterministic synthetic corpora to try the whole loop on."""

from __future__ import annotations

import click

from curator.cli.common import progress
from curator.demo import corpus, scenes


@click.group()
def demo() -> None:
    """Synthetic corpora (captioned, unpaired, evaluation, scenes) for demos and tests."""


def _families(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


@demo.command("generate")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--scale", type=click.Choice(list(corpus.SCALES)), default="tiny", show_default=True,
              help="tiny: ~60/100/40 clips of 1-2 s (tests); small: 600/1500/300 of 2-4 s (CPU demo); "
                   "default: 2000/8000/500 of 2-5 s.")
@click.option("--paired", type=int, help="Captioned clips (overrides the scale).")
@click.option("--wild", type=int, help="Unpaired clips (overrides the scale).")
@click.option("--eval", "eval_", type=int, help="Evaluation clips (overrides the scale).")
@click.option("--sample-rate", type=int, help="Hz (default 16000).")
@click.option("--min-seconds", type=float, help="Shortest clip.")
@click.option("--max-seconds", type=float, help="Longest clip.")
@click.option("--captions-per-clip", type=int, help="Paraphrases per paired clip (tiny 2, else 5).")
@click.option("--rare", help=f"Comma-separated families kept rare in `paired` (default: {', '.join(corpus.DEFAULT_RARE)}).")
@click.option("--families", help="Comma-separated subset of families (default: all available).")
@click.option("--mix-fraction", type=float, help="Share of paired/wild clips mixing two families (default 0.15).")
@click.option("--speech", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Speech family via espeak-ng: auto = only if installed.")
@click.option("--force", is_flag=True, help="Replace a corpus previously generated in OUT.")
def generate_cmd(out, seed, scale, paired, wild, eval_, sample_rate, min_seconds, max_seconds, captions_per_clip,
                 rare, families, mix_fraction, speech, force):
    """Write a captioned `paired` set, an unpaired `wild` pool and an ESC-50-style `eval` set.

    Some families (--rare) are scarce in `paired` and plentiful in `wild`, so curation has
    something to find. Labels of `wild` clips are kept only in OUT/ground_truth.csv.

    \b
    Example:
      curator demo generate ./demo --scale small --seed 1
      curator ingest audio ./demo/paired/audio --source demo_paired --split paired
      curator ingest captions ./demo/paired/captions.csv --source demo_paired --audio-source demo_paired
      curator ingest audio ./demo/wild/audio --source demo_wild --split wild
      curator ingest audio ./demo/eval/meta.csv --source demo_eval --split eval
      curator ingest labels --label-set demo --labels ./demo/eval/labels.txt
    """
    cfg = corpus.CorpusConfig.for_scale(
        scale, seed=seed, paired=paired, wild=wild, eval=eval_, sample_rate=sample_rate, min_seconds=min_seconds,
        max_seconds=max_seconds, captions_per_clip=captions_per_clip, rare=_families(rare),
        families=_families(families), mix_fraction=mix_fraction, speech=speech)
    with progress(total=corpus.total_clips(cfg), desc="demo", unit="clip") as bar:
        manifest = corpus.generate_corpus(out, cfg, progress=bar.update, force=force)
    for split, info in manifest["splits"].items():
        fams = ", ".join(f"{k} {v}" for k, v in info["families"].items())
        click.echo(f"{split}: {info['clips']} clips ({info['mixtures']} mixtures): {fams}")
    click.echo(f"rare in paired: {', '.join(manifest['rare_classes']) or 'none'}")
    for fam, why in manifest["skipped_families"].items():
        click.echo(f"skipped family {fam!r}: {why}")
    click.echo(f"wrote {out} ({manifest['captions']['total']} captions; see manifest.json)")


@demo.command("scenes")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--clips", default=500, show_default=True, help="Number of scene clips.")
@click.option("--labelled-fraction", default=0.1, show_default=True, help="Share of clips whose label is given.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--seconds", default=3.0, show_default=True, help="Clip length.")
@click.option("--sample-rate", default=16000, show_default=True, help="Hz.")
@click.option("--force", is_flag=True, help="Replace scenes previously generated in OUT.")
def scenes_cmd(out, clips, labelled_fraction, seed, seconds, sample_rate, force):
    """Write acoustic scenes recorded in several cities at all hours, few of them labelled.

    Class priors depend on city and part of day, and 'shopping mall' / 'airport' sound alike, so
    context (city, time) helps. True labels of unlabelled clips are in OUT/ground_truth.csv.

    \b
    Example:
      curator demo scenes ./scenes --clips 400 --labelled-fraction 0.1
      curator ingest audio ./scenes/scenes.csv --source scenes
    """
    with progress(total=clips, desc="scenes", unit="clip") as bar:
        m = scenes.generate_scenes(out, clips, labelled_fraction, seed, sample_rate, seconds, progress=bar.update,
                                   force=force)
    click.echo(f"scenes: {m['clips']} clips, {m['labelled']} labelled: "
               + ", ".join(f"{k} {v}" for k, v in m["scenes"].items()))
    click.echo(f"wrote {out} (scenes.csv, ground_truth.csv, labels.txt, manifest.json)")


@demo.command("report")
@click.argument("demo_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--aggregate", is_flag=True,
              help="Fold several demo folders (seeds) into mean ± 95 % t-interval per row and paired differences "
                   "per claim.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Report folder (default DEMO_DIR/report; with --aggregate: required).")
def report_cmd(demo_dirs, aggregate, out):
    """Print the comparison table of a demo run and write its report folder.

    Reads DEMO_DIR/evals/<model>.json (`trainer eval --json`), runs/<model>/ (checkpoint.json,
    metrics.jsonl), sweep.png, the store's sets and corpus/ground_truth.csv; writes report.md,
    report.json, sweep.png, curves.png and per_class.png. With --aggregate, reads each
    DEMO_DIR/report/report.json (or builds it) and writes aggregate.md / aggregate.json: every row's
    mean ± 95 % Student-t interval over the seeds, and for each claim "A > B" the per-seed paired
    difference A − B with its mean, interval and the number of seeds it held on.

    \b
    Examples:
      curator demo report ./demo_out
      curator demo report --aggregate demo_s0 demo_s1 demo_s2 --out experiment
    """
    import json
    from pathlib import Path

    from curator.demo import aggregate as over_seeds
    from curator.demo import report
    from schemas.errors import ParameterError

    if not aggregate:
        if len(demo_dirs) != 1:
            raise ParameterError("report: give one DEMO_DIR (or --aggregate with several)")
        data = report.collect(demo_dirs[0])
        md = report.write_report(data, out or Path(demo_dirs[0]) / "report")
        click.echo(report.table(data["models"]))
        click.echo("")
        for c in data["claims"]:
            click.echo(f"{c['claim']}: {'yes' if c['holds'] else 'no'}")
        click.echo(f"report: {md}")
        return
    if not out:
        raise ParameterError("report --aggregate: --out is required")
    reports = []
    for d in demo_dirs:
        saved = Path(d) / "report" / "report.json"
        reports.append(json.loads(saved.read_text()) if saved.exists() else report.collect(d))
    agg = over_seeds.aggregate(reports)
    md = over_seeds.write_aggregate(agg, out)
    click.echo(over_seeds.aggregate_table(agg))
    click.echo("")
    click.echo(over_seeds.claims_table(agg))
    click.echo(f"report: {md}")


COMMANDS = [demo]
