"""How `trainer fit` and `trainer eval` results read on a terminal."""

from __future__ import annotations

import click


def print_fit(result) -> None:
    state = "stopped early at" if result.stopped_early else "finished at"
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    details = result.details
    where = (f"{details['rows']} labelled rows, {len(details['classes'])} classes; classifier: {result.out}"
             if "classes" in details else f"checkpoint: {result.out}")
    click.echo(f"{state} step {result.step}/{result.total_steps}; last loss {loss}; {where}")
    val = result.validation
    if val and val.get("curve"):
        curve = ", ".join(f"{p['step']}: {p['val_loss']:.4f}" for p in val["curve"])
        stop = (f"early stopping at step {val['stopped_at']} (patience {val['patience']}); "
                if val.get("stopped_at") is not None else "")
        kept = f"; weights of step {val['kept_step']} saved" if val.get("kept_step") is not None else ""
        click.echo(f"validation ({val['data'].get('rows')} rows): {stop}best loss {val['best_loss']:.4f} "
                   f"at step {val['best_step']}{kept}")
        click.echo(f"  curve (step: loss): {curve}")
    if result.skipped_clips:
        click.echo(f"warning: skipped {result.skipped_clips} clip(s) that failed to decode "
                   f"(ids in {result.out}/checkpoint.json)", err=True)


def _accuracies(title: str | None, table: dict, width: int) -> None:
    if title:
        click.echo(f"{title}:")
    for key, v in table.items():
        acc = f"{v['accuracy']:.3f}" if v["accuracy"] is not None else "  -  "
        click.echo(f"  {key:<{width}}  {acc}  ({v['correct']}/{v['n']})")


def _confusion(res: dict, width: int) -> None:
    click.echo("confusion (rows = true, columns = predicted, in the class order above):")
    for lab, row in zip(res["labels"], res["confusion"]):
        click.echo(f"  {lab:<{width}}  " + " ".join(f"{v:4d}" for v in row))


def print_eval(results: dict) -> None:
    if results.get("task") == "classifier":
        print_classifier(results)
        return
    if results.get("protocol"):
        _protocol(results["protocol"])
    zs = results.get("zero_shot")
    if zs:
        acc = zs["accuracy"]
        click.echo(f"zero-shot: accuracy {acc:.4f} over {zs['n']} clips, {len(zs['labels'])} classes, "
                   f"mean class accuracy {zs['mean_class_accuracy']:.4f}" if acc is not None else "zero-shot: no clips")
        if zs["excluded_unknown_label"] or zs["skipped"]:
            click.echo(f"  excluded {zs['excluded_unknown_label']} clip(s) with a label outside the classes; "
                       f"skipped {zs['skipped']} undecodable")
        width = max(len(lab) for lab in zs["labels"])
        _accuracies(None, zs["per_class"], width)
        if len(zs["labels"]) <= 20:
            _confusion(zs, width)
        if zs.get("plot"):
            click.echo(f"confusion matrix plot: {zs['plot']}")
    rt = results.get("retrieval")
    if rt:
        click.echo(f"retrieval on {rt['source']}: {rt['n_texts']} texts, {rt['n_audio']} clips")
        for direction in ("text_to_audio", "audio_to_text"):
            vals = "  ".join(f"{k} {v:.3f}" for k, v in rt[direction].items())
            click.echo(f"  {direction.replace('_', ' ')}: {vals}")


def _protocol(pr: dict) -> None:
    metrics = "  ".join(f"{k} {pr[k]:.4f}" for k in ("accuracy", "mean_class_accuracy", "R@1", "R@5", "R@10", "mAP@10")
                        if pr[k] is not None)
    click.echo(f"protocol {pr['protocol']} ({pr['comparable_with']}): prompt {pr['template']!r}, "
               f"{len(pr['labels'])} classes, {pr['n']} clips, {pr['aggregate']}")
    click.echo(f"  {metrics}")
    for g in pr["groups"] if len(pr["groups"]) > 1 else []:
        acc = f"{g['accuracy']:.4f}" if g["accuracy"] is not None else "-"
        click.echo(f"  {g['group']}: accuracy {acc} over {g['n']} clips")


def print_classifier(res: dict) -> None:
    click.echo(f"classifier: accuracy {res['accuracy']:.4f} over {res['n']} clips, {len(res['labels'])} classes, "
               f"mean class accuracy {res['mean_class_accuracy']:.4f}")
    if res["excluded_no_truth"] or res["skipped"]:
        click.echo(f"  excluded {res['excluded_no_truth']} clip(s) without ground truth; skipped {res['skipped']} "
                   "undecodable")
    width = max(len(x) for x in list(res["labels"]) + list(res["per_city"]))
    _accuracies("per class", res["per_class"], width)
    _accuracies("per city", res["per_city"], width)
    _confusion(res, width)
    pl = res.get("pseudo_labels")
    if pl:
        acc = f"{pl['accuracy']:.4f}" if pl["accuracy"] is not None else "n/a"
        click.echo(f"pseudo-labels of {pl['set']}: {pl['correct']}/{pl['with_truth']} right ({acc}); "
                   f"{pl['rows']} rows")
    if res.get("plot"):
        click.echo(f"confusion matrix plot: {res['plot']}")
