"""Options and command bodies of the scene workflow inside `trainer fit` / `trainer eval`.

Kept out of trainer/cli.py so that file only gains the decorators and one dispatch line each;
heavy imports stay inside the functions so `--help` is fast.
"""

from __future__ import annotations

import json

import click

from schemas.errors import ParameterError

HYBRID_DEFAULTS = {"classes": None, "lam": 0.1, "fuse_metadata": False,
                   "context_template": "{label}, recorded in {city} in the {part_of_day}",
                   "mixup": False, "mixup_alpha": 1.0, "spec_augment": False, "head_hidden": 256,
                   "balance_classes": False}
# FitConfig options that the hybrid loop does not use: giving one with --loss hybrid is an error.
NOT_HYBRID = {"replay_ref": None, "replay_ratio": 0.0, "resume": False, "checkpoint_every": 0, "eval_label_set": None,
              "stop_after": None}


def hybrid_options(f):
    """`trainer fit` options of --loss hybrid (scene classifier)."""
    options = [
        click.option("--classes", help="--loss hybrid: classes = a label set's prompt labels, or a file with one "
                                       "label per line."),
        click.option("--lambda", "lam", type=float, default=0.1, show_default=True,
                     help="--loss hybrid: weight of the context-text contrastive term (0 = audio-only classifier)."),
        click.option("--fuse-metadata", is_flag=True,
                     help="--loss hybrid: concatenate a city embedding and an MLP of time features to the audio vector."),
        click.option("--context-template", default=HYBRID_DEFAULTS["context_template"], show_default=True,
                     help="--loss hybrid: caption per clip; fields {label} {city} {part_of_day} {hour} {weekday}."),
        click.option("--mixup", is_flag=True, help="--loss hybrid: mixup of waves and class targets."),
        click.option("--mixup-alpha", type=float, default=1.0, show_default=True, help="Mixup Beta(α, α)."),
        click.option("--spec-augment", is_flag=True, help="SpecAugment time/frequency masks (compact student)."),
        click.option("--head-hidden", type=int, default=256, show_default=True, help="Classifier hidden width."),
        click.option("--balance-classes", is_flag=True,
                     help="--loss hybrid: oversample rows so every class is about as frequent as the largest."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def pop_hybrid(params: dict) -> dict:
    """Remove the hybrid options from `params` (FitConfig does not know them); refuse them without
    --loss hybrid, and refuse fit options the hybrid loop does not use."""
    hybrid = {k: params.pop(k) for k in list(HYBRID_DEFAULTS) if k in params}
    flag = {"lam": "lambda"}
    if params.get("loss") != "hybrid":
        given = [k for k, v in hybrid.items() if v != HYBRID_DEFAULTS[k]]
        if given:
            hint = (" (other losses: --student-config '{\"spec_augment\": true}')"
                    if given[0] == "spec_augment" else "")
            raise ParameterError(f"--{flag.get(given[0], given[0]).replace('_', '-')} needs --loss hybrid{hint}")
        return hybrid
    if not hybrid.get("classes"):
        raise ParameterError("--loss hybrid needs --classes (a label set name or a labels file)")
    used = [k for k, default in NOT_HYBRID.items() if params.get(k) not in (default, None)]
    if used:
        raise ParameterError(f"--{used[0].replace('_ref', '').replace('_', '-')} is not supported with --loss hybrid")
    return hybrid


def run_hybrid(store: str, params: dict, hybrid: dict, as_json: bool, on_step=None) -> None:
    from trainer.train.hybrid import HybridConfig, fit_hybrid

    keep = {k: params[k] for k in ("set_ref", "out", "init", "student", "student_config", "epochs", "batch_size",
                                   "lr", "weight_decay", "warmup_steps", "grad_clip", "device", "seed", "log_every",
                                   "num_workers", "cache_mb")}
    summary = fit_hybrid(HybridConfig(store=store, **keep, **hybrid), on_step=on_step)
    if as_json:
        click.echo(json.dumps(summary, default=str))
        return
    loss = f"{summary['final_loss']:.4f}" if summary["final_loss"] is not None else "n/a"
    click.echo(f"finished at step {summary['step']}/{summary['total_steps']}; last loss {loss}; "
               f"{summary['rows']} labelled rows, {len(summary['classes'])} classes; classifier: {summary['out']}")
    if summary["skipped_clips"]:
        click.echo(f"warning: skipped {summary['skipped_clips']} clip(s) that failed to decode", err=True)


def classifier_eval_options(f):
    options = [
        click.option("--classifier", metavar="CKPT", help="Evaluate a classifier checkpoint (trainer fit --loss "
                                                          "hybrid) instead of zero-shot."),
        click.option("--truth", metavar="CSV", help="With --classifier: ground truth (filename or audio_id, label "
                                                    "or scene_label) for clips whose labels the store lacks."),
        click.option("--pseudo-set", metavar="REF", help="With --classifier: also report the fraction of this "
                                                         "set's labels that match ground truth."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def run_classifier_eval(store: str, classifier: str, audio_where, truth, pseudo_set, batch_size, device, plot,
                        as_json) -> None:
    from trainer.device import resolve_device
    from trainer.eval.classifier import evaluate_classifier, pseudo_accuracy

    res = evaluate_classifier(classifier, store, audio_where, truth, batch_size, str(resolve_device(device)))
    if pseudo_set:
        res["pseudo_labels"] = pseudo_accuracy(store, pseudo_set, truth)
    if plot:
        from trainer.eval.zero_shot import plot_confusion

        res["plot"] = plot_confusion(res, plot)
    if as_json:
        click.echo(json.dumps(res, default=str))
        return
    print_report(res)


def print_report(res: dict) -> None:
    click.echo(f"classifier: accuracy {res['accuracy']:.4f} over {res['n']} clips, {len(res['labels'])} classes, "
               f"mean class accuracy {res['mean_class_accuracy']:.4f}")
    if res["excluded_no_truth"] or res["skipped"]:
        click.echo(f"  excluded {res['excluded_no_truth']} clip(s) without ground truth; skipped {res['skipped']} "
                   "undecodable")
    width = max(len(x) for x in list(res["labels"]) + list(res["per_city"]))
    for title, table in (("per class", res["per_class"]), ("per city", res["per_city"])):
        click.echo(f"{title}:")
        for key, v in table.items():
            acc = f"{v['accuracy']:.3f}" if v["accuracy"] is not None else "  -  "
            click.echo(f"  {key:<{width}}  {acc}  ({v['correct']}/{v['n']})")
    click.echo("confusion (rows = true, columns = predicted, in the class order above):")
    for lab, row in zip(res["labels"], res["confusion"]):
        click.echo(f"  {lab:<{width}}  " + " ".join(f"{v:4d}" for v in row))
    pl = res.get("pseudo_labels")
    if pl:
        acc = f"{pl['accuracy']:.4f}" if pl["accuracy"] is not None else "n/a"
        click.echo(f"pseudo-labels of {pl['set']}: {pl['correct']}/{pl['with_truth']} right ({acc}); "
                   f"{pl['rows']} rows")
    if res.get("plot"):
        click.echo(f"confusion matrix plot: {res['plot']}")
