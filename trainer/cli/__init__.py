"""`trainer`: fit students on curated sets and evaluate them. Only trainer.cli prints and exits.

Library modules (trainer.train, trainer.eval) are imported inside the command bodies: they import
torch, and `trainer --help` must stay instant.
"""

from __future__ import annotations

import json
import os
import sys

import click

from schemas.errors import ParameterError
from schemas.exits import run_click_group
from schemas.filters import where_clause
from schemas.tables import PROMPT_TEMPLATE, check_template
from trainer.cli.report import print_eval, print_fit
from trainer.cli.scene import classifier_eval_options, hybrid_options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.option("--store", "store_uri", envvar="CURATOR_STORE", default="./store", show_default=True,
              help="Store folder or URI (env CURATOR_STORE).")
@click.pass_context
def cli(ctx: click.Context, store_uri: str) -> None:
    """Train students on improvement sets and evaluate them zero-shot.

    \b
    Example:
      trainer --store ./store fit --set ads --replay ds --replay-ratio 0.5 --out runs/s1
      trainer --store ./store eval --model runs/s1 --label-set esc50 --audio-where "source = 'esc50'"
    """
    ctx.obj = {"store": store_uri}


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _json_option(text: str | None, what: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(open(text).read() if os.path.isfile(text) else text)
    except (json.JSONDecodeError, OSError) as exc:
        raise ParameterError(f"{what}: not valid JSON or a readable JSON file ({exc})") from None
    if not isinstance(value, dict):
        raise ParameterError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


@cli.command(context_settings=CONTEXT)
@click.option("--set", "set_ref", help="Set to train on: name, name@VERSION or name@TAG (bare name = latest).")
@click.option("--replay", "replay_ref", help="Replay set (e.g. the teacher's training pairs).")
@click.option("--replay-ratio", type=float, default=0.0, show_default=True,
              help="Fraction of batches replaced whole by replay-set batches.")
@click.option("--init", help="Start from: a student checkpoint folder, a ClapModel folder (clap-hf student), "
                             "or a BERT-family text model folder (compact student; default: bundled MiniLM); "
                             "or the name of a model registered with `curator models add`.")
@click.option("--student", type=click.Choice(["compact", "clap-hf"]), default=None,
              help="Student kind (default: inferred from --init).")
@click.option("--student-config", help="JSON object (or file) of student options, e.g. '{\"dim\": 256}'.")
@click.option("--loss", type=click.Choice(["clap", "soft", "multi", "hybrid"]), default="soft", show_default=True,
              help="clap = hard contrastive, soft = soft-label (teacher vectors), multi = shared-label positives, "
                   "hybrid = scene classifier CE + λ·context-text contrastive (docs/SCENES.md).")
@click.option("--alpha", type=float, default=0.3, show_default=True, help="Soft-label weight.")
@click.option("--tau-s", type=float, default=0.1, show_default=True, help="Soft-label temperature.")
@click.option("--soft-source", type=click.Choice(["cross", "same"]), default="cross", show_default=True,
              help="Which teacher similarity softens which direction.")
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--steps", type=int, default=None,
              help="Optimiser steps in all, overriding --epochs (the same budget whatever the set's size).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Per process (rank).")
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--warmup-steps", type=int, default=0, show_default=True)
@click.option("--grad-clip", type=float, default=1.0, show_default=True, help="Max grad norm (0 = off).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", required=True, help="Checkpoint folder to write (registrable as a model).")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it was saved.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-every", type=int, default=0, show_default=True,
              help="Also checkpoint every this many steps (0 = off). Every epoch's end is always one.")
@click.option("--checkpoint-minutes", type=float, default=10.0, show_default=True,
              help="Also checkpoint this often (0 = off). Ctrl-C / SIGTERM save one too, then print the "
                   "resume command.")
@click.option("--log-every", type=int, default=10, show_default=True, help="Steps per metrics.jsonl line.")
@click.option("--num-workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--cache-mb", type=int, default=0, show_default=True, help="Keep up to this much decoded audio in memory.")
@click.option("--eval-label-set", help="Zero-shot evaluate at each checkpoint on this label set's prompts.")
@click.option("--eval-where", help="SQL over `audio` choosing the evaluation clips (--loss hybrid: the classifier's "
                                   "accuracy on them is evaluated at each checkpoint).")
@click.option("--eval-template", default=PROMPT_TEMPLATE, show_default=True)
@click.option("--val-fraction", type=float, default=0.0, show_default=True,
              help="Hold out this share of the set's clips (all their rows) as validation data.")
@click.option("--val-set", help="Validate on this set version instead (never the evaluation split).")
@click.option("--val-every", type=int, default=0, show_default=True, help="Steps between validations (0 = each epoch).")
@click.option("--patience", type=int, default=None,
              help="Stop after N validations without a lower validation loss; the best weights are saved.")
@click.option("--stop-after", type=int, default=None, hidden=True, help="Stop after this step without saving.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@hybrid_options
@click.pass_context
def fit(ctx: click.Context, as_json: bool, **params) -> None:
    """Train a student on a set version; writes a checkpoint folder.

    \b
    Example:
      trainer fit --set ads@3 --replay ds --replay-ratio 0.5 --loss soft --epochs 5 \\
          --batch-size 64 --lr 1e-4 --warmup-steps 500 --checkpoint-every 1000 --out runs/ads-s1
      trainer fit --resume --out runs/ads-s1
      trainer fit --set teacher_pairs --loss clap --epochs 30 --val-fraction 0.1 --patience 3 --out runs/teacher
      trainer fit --set ads --replay ds --replay-ratio 0.25 --steps 60 --init runs/teacher --out runs/ads
      torchrun --nproc-per-node 4 -m trainer fit --set ads --init teacher_clap/ --out runs/ddp
      trainer fit --loss hybrid --classes scenes --lambda 0.1 --set scenes_train --lr 1e-3 --out runs/clf
    """
    from trainer.train.config import FitConfig
    from trainer.train.loop import fit as run_fit
    from trainer.train.resume import resume_options

    check_template(params["eval_template"], "--eval-template")
    if params["eval_where"]:
        where_clause(params["eval_where"], "--eval-where")
    params["student_config"] = _json_option(params["student_config"], "--student-config")
    if params["resume"]:
        given = {name for name in params
                 if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)}
        params = resume_options(params["out"], params, given)
    result = run_fit(FitConfig(store=ctx.obj["store"], **params), on_step=_progress_bar())
    if not _is_main_rank():
        return
    if as_json:
        fields = {k: v for k, v in result.__dict__.items() if k != "details"}
        click.echo(json.dumps({**fields, **result.details}, default=str))
        return
    print_fit(result)


def _progress_bar():
    """tqdm on a terminal (rank 0), nothing otherwise; fed by the loop's per-log-step callback."""
    if not sys.stderr.isatty() or not _is_main_rank():
        return None
    from tqdm import tqdm

    bar = {"tqdm": None, "last": 0}

    def on_step(row: dict) -> None:
        if bar["tqdm"] is None:
            bar["tqdm"] = tqdm(desc="fit", unit="step", dynamic_ncols=True, initial=row["step"] - 1)
            bar["last"] = row["step"] - 1
        bar["tqdm"].update(row["step"] - bar["last"])
        bar["last"] = row["step"]
        bar["tqdm"].set_postfix(loss=f"{row['loss']:.4f}" if row["loss"] is not None else "-",
                                lr=f"{row['lr']:.2e}")

    return on_step


@cli.command("eval", context_settings=CONTEXT)
@click.option("--model", help="Checkpoint / ClapModel folder, or a registered model name.")
@click.option("--label-set", help="Classes = labels of this label set's prompts in `texts`.")
@click.option("--labels", help="Comma-separated classes instead of --label-set.")
@click.option("--audio-where", help="SQL over `audio` choosing the clips (truth = first of `labels`).")
@click.option("--template", default=PROMPT_TEMPLATE, show_default=True)
@click.option("--protocol", type=click.Choice(["esc50-fold1", "esc50-all", "esc50-5fold", "us8k-10fold", "tut17",
                                              "custom"]),
              help="A named zero-shot protocol fixing clips, folds, prompt and label spelling, reported with "
                   "accuracy, mean class accuracy, R@1/5/10 and mAP@10 (docs/EVALUATION.md). custom = "
                   "--label-set/--labels, --template and --audio-where as given.")
@click.option("--retrieval", is_flag=True, help="Also report text<->audio recall@1/5/10 on paired data.")
@click.option("--set", "set_ref", help="Paired rows for --retrieval (default: captions in `texts`).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--plot", help="Write the confusion matrix as a PNG here.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@classifier_eval_options
@click.pass_context
def eval_cmd(ctx, model, label_set, labels, audio_where, template, protocol, retrieval, set_ref, device, batch_size,
             plot, as_json, classifier, truth, pseudo_set) -> None:
    """Zero-shot classification and retrieval, the same protocol every time.

    \b
    Example:
      trainer eval --model runs/ads-s1 --label-set esc50 --audio-where "source = 'esc50' and fold = 5" \\
          --plot esc50.png
      trainer eval --model student_v2 --retrieval --set ds@2 --json
      trainer eval --model clap --protocol esc50-fold1 --json     # LAION-CLAP's ESC-50 protocol
      trainer eval --classifier runs/clf --audio-where "source = 'scenes'" --truth ground_truth.csv \\
          --pseudo-set scenes_pl
    """
    from trainer.eval.evaluate import evaluate

    results = evaluate(ctx.obj["store"], model, classifier=classifier, label_set=label_set,
                       labels=[c.strip() for c in labels.split(",") if c.strip()] if labels else None,
                       audio_where=audio_where, template=template, retrieval=retrieval, set_ref=set_ref, truth=truth,
                       pseudo_set=pseudo_set, device=device, batch_size=batch_size, plot=plot, protocol=protocol)
    if as_json:
        click.echo(json.dumps(results, default=str))
    else:
        print_eval(results)


INTERRUPTED = "interrupted; if a checkpoint was saved, `trainer fit --resume --out DIR` continues from it"


def run_main(group: click.Group, argv: list[str] | None = None) -> int:
    """Run trainer's click group: errors, Ctrl-C and a full disk end with one line (`schemas.exits`);
    an interrupted fit says what was saved and the exact resume command."""
    return run_click_group(group, argv, INTERRUPTED)


EXIT_CODES = ("Exit codes: 0 ok; 1 the run finished but some items failed (recorded); 2 bad input (one "
              "`error: ...` line on stderr); 130 interrupted (rerun with --resume to continue).")


def _late_store(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.obj["store"] = value


# `trainer eval --store S` = `trainer --store S eval`; the exit codes in every --help.
cli.epilog = EXIT_CODES
for _command in cli.commands.values():
    _command.params.append(click.Option(["--store", "late_store"], expose_value=False, callback=_late_store,
                                        metavar="URI", help="Store folder or URI (same as `trainer --store`)."))
    _command.epilog = _command.epilog or EXIT_CODES


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_main(cli, argv))
