"""`trainer eval` as one library call: which evaluation a request asks for, run, as one result dict."""

from __future__ import annotations

from schemas.errors import ParameterError
from schemas.sets import read_set
from schemas.tables import PROMPT_TEMPLATE
from trainer.device import resolve_device
from trainer.eval.classifier import evaluate_classifier, pseudo_accuracy
from trainer.eval.plots import plot_confusion
from trainer.eval.protocols import run_protocol
from trainer.eval.zero_shot import (
    eval_clips,
    evaluate_retrieval,
    evaluate_zero_shot,
    load_model,
    paired_captions,
    prompt_labels,
    resolve_model,
)


def evaluate(store_uri: str, model: str | None = None, *, classifier: str | None = None, label_set: str | None = None,
             labels: list[str] | None = None, audio_where: str | None = None, template: str = PROMPT_TEMPLATE,
             retrieval: bool = False, set_ref: str | None = None, truth: str | None = None,
             pseudo_set: str | None = None, device: str = "auto", batch_size: int = 32,
             plot: str | None = None, protocol: str | None = None) -> dict:
    """A classifier checkpoint's report (`classifier`: accuracy per class and city, pseudo-label
    accuracy of `pseudo_set`), or a model's {"model", "zero_shot", "retrieval"} results (zero-shot
    over `label_set`'s prompts or `labels`; recall@K on `set_ref`'s pairs or the store's captions).
    `plot` writes the confusion matrix as a PNG. `protocol` names a zero-shot protocol
    (`trainer.eval.protocols`; its result goes under "protocol"). Raises ParameterError for a request that asks
    for nothing or mixes the two kinds."""
    if classifier:
        return _classifier(store_uri, classifier, audio_where, truth, pseudo_set, batch_size, device, plot)
    if truth or pseudo_set:
        raise ParameterError("--truth and --pseudo-set go with --classifier")
    if not model:
        raise ParameterError("pass --model (zero-shot / retrieval) or --classifier (a classifier checkpoint)")
    if not (label_set or labels or retrieval or protocol):
        raise ParameterError("nothing to evaluate: pass --protocol, --label-set / --labels (zero-shot) or --retrieval")
    if set_ref and not retrieval:
        raise ParameterError("--set is only used with --retrieval")
    student = load_model(resolve_model(store_uri, model), device=str(resolve_device(device)))
    results = {"model": model}
    if protocol:
        classes = labels or (prompt_labels(store_uri, label_set) if label_set else None)
        # a named protocol fixes the prompt: only a template that differs from the default is a request
        given = template if (protocol == "custom" or template != PROMPT_TEMPLATE) else None
        results["protocol"] = run_protocol(store_uri, student, protocol, audio_where, classes, given, batch_size)
    elif label_set or labels:
        classes = labels or prompt_labels(store_uri, label_set)
        res = evaluate_zero_shot(student, eval_clips(store_uri, audio_where), classes, template, batch_size)
        res.update({"label_set": label_set, "audio_where": audio_where})
        if plot:
            res["plot"] = plot_confusion(res, plot)
        results["zero_shot"] = res
    if retrieval:
        pairs = (read_set(store_uri, set_ref)[0].select(["audio_id", "uri", "text"]) if set_ref
                 else paired_captions(store_uri, audio_where))
        results["retrieval"] = evaluate_retrieval(student, pairs, batch_size)
        results["retrieval"]["source"] = set_ref or "texts captions"
    return results


def _classifier(store_uri, ckpt, audio_where, truth, pseudo_set, batch_size, device, plot) -> dict:
    res = evaluate_classifier(ckpt, store_uri, audio_where, truth, batch_size, str(resolve_device(device)))
    if pseudo_set:
        res["pseudo_labels"] = pseudo_accuracy(store_uri, pseudo_set, truth)
    if plot:
        res["plot"] = plot_confusion(res, plot)
    return res
