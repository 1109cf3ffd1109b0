"""`curator ingest audio|captions|labels`."""

from __future__ import annotations

import click

from curator.cli.common import pass_store, progress
from curator.ingest.audio import ingest_audio
from curator.ingest.sources import PRESETS, find_clips, manifest_columns
from curator.ingest.texts import ingest_captions, ingest_labels, read_labels_file
from schemas.errors import CuratorError
from schemas.tables import PROMPT_TEMPLATE


@click.group()
def ingest() -> None:
    """Bring audio clips, captions and label prompts into the store."""


@ingest.command("audio")
@click.argument("src")
@click.option("--source", help="Source name (dataset); part of each clip's stable id. Default: folder/CSV name.")
@click.option("--split", help="Split for every clip (e.g. train, eval, wild).")
@click.option("--labels-from-dirs", is_flag=True, help="Use each clip's parent folder name as its label.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Manifest layout (auto-detected from the header).")
@click.option("--audio-root", type=click.Path(file_okay=False), help="Folder manifest paths are relative to.")
@click.option("--path-column", "path_template", help="Path template over CSV columns, e.g. 'fold{fold}/{slice_file_name}'.")
@click.option("--label-column", help="CSV column holding the label.")
@click.option("--fold-column", help="CSV column holding the fold number.")
@click.option("--split-column", help="CSV column holding the split.")
@click.option("--city-column", help="CSV column holding the recording city.")
@click.option("--time-column", help="CSV column holding the recording timestamp (ISO 8601 or epoch seconds).")
@click.option("--id-column", help="CSV column holding your own audio_id.")
@click.option("--labelled-column", help="CSV column saying whether the label may be used (0/1, true/false).")
@click.option("--allow-outside-root", is_flag=True, help="Keep manifest rows whose path leaves --audio-root, with "
              "their absolute path as identity (default: refused).")
@click.option("--workers", type=int, help="Threads reading headers and hashing (default: one per core; more for "
              "network storage).")
@pass_store
def ingest_audio_cmd(ctx, src, source, split, labels_from_dirs, preset, audio_root, path_template, label_column,
                     fold_column, split_column, city_column, time_column, id_column, labelled_column, allow_outside_root,
                     workers):
    """Ingest a folder (recursively: wav, flac, ogg, mp3) or a manifest CSV.

    Reads only headers and a content hash; re-ingesting the same files adds nothing. Unreadable
    files are listed, recorded in the `errors` table, and the rest is ingested (exit code 1).

    \b
    Examples:
      curator ingest audio ./wild --source audioset --split wild
      curator ingest audio ESC-50/meta/esc50.csv --source esc50 --split eval
      curator ingest audio UrbanSound8K/metadata/UrbanSound8K.csv --source us8k
      curator ingest audio scenes.csv --source scenes   # filename, scene_label, city, timestamp
    """
    columns = manifest_columns(preset, path=path_template, label=label_column, fold=fold_column, split=split_column,
                               city=city_column, time=time_column, audio_id=id_column, labelled=labelled_column)
    source, specs = find_clips(src, source, split, labels_from_dirs, preset, audio_root, columns, allow_outside_root)
    store = ctx.store()
    with progress(total=len(specs), desc="ingest", unit="clip") as bar:
        report = ingest_audio(store, specs, workers=workers, on_progress=bar.update)
    for uri, reason in report.failed:
        click.echo(f"error: {uri}: {reason}", err=True)
    where = store.table_ref("audio") if store.has("audio") else "no audio table yet"
    changed = f", {len(report.changed)} changed since last ingest" if report.changed else ""
    click.echo(f"audio: {report.added} added, {report.existing} already in store{changed}, {len(report.failed)} failed "
               f"(source {source!r}, {where})")
    if report.changed:
        shown = ", ".join(report.changed[:3]) + (" ..." if len(report.changed) > 3 else "")
        click.echo(f"note: new content recorded for {shown}; their old vectors were dropped (run `curator embed` "
                   "again)", err=True)
    if report.failed:
        click.echo(f"{len(report.failed)} file(s) could not be read; see `curator query \"select * from errors\"`",
                   err=True)
        raise click.exceptions.Exit(1)


@ingest.command("captions")
@click.argument("csv_path", metavar="CSV")
@click.option("--source", required=True, help="Caption source name, e.g. clotho, audiocaps.")
@click.option("--file-column", help="Column naming the clip (default: file_name, filename, audio_id, youtube_id...).")
@click.option("--caption-column", "caption_columns", multiple=True,
              help="Caption column(s); default: every column starting with 'caption'.")
@click.option("--audio-source", help="Only link to clips of this source (default: any).")
@pass_store
def ingest_captions_cmd(ctx, csv_path, source, file_column, caption_columns, audio_source):
    """Ingest a Clotho / AudioCaps style captions CSV into `texts`, linked to clips in the store.

    \b
    Examples:
      curator ingest captions clotho_captions_development.csv --source clotho
      curator ingest captions audiocaps_train.csv --source audiocaps --file-column youtube_id
    """
    store = ctx.store()
    report = ingest_captions(store, csv_path, source, file_column, list(caption_columns) or None, audio_source)
    click.echo(f"texts: {report.added} captions added, {report.existing} already in store; "
               f"{report.linked} clips linked, {len(report.unlinked)} not in the store ({store.table_ref('texts')})")
    if report.unlinked:
        shown = ", ".join(report.unlinked[:5]) + (" ..." if len(report.unlinked) > 5 else "")
        click.echo(f"note: captions of clips not in the store stay unlinked until their audio is ingested: {shown}",
                   err=True)


@ingest.command("labels")
@click.option("--label-set", required=True, help="Name of the downstream label set, e.g. esc50.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), help="File with one label per line.")
@click.option("--label", "labels", multiple=True, help="A label (repeatable).")
@click.option("--template", default=PROMPT_TEMPLATE, show_default=True, help="Prompt template with {label}.")
@pass_store
def ingest_labels_cmd(ctx, label_set, labels_file, labels, template):
    """Ingest label prompts (kind 'prompt') for zero-shot classification and domain curation.

    \b
    Examples:
      curator ingest labels --label-set esc50 --labels esc50_labels.txt
      curator ingest labels --label-set demo --label siren --label "dog bark"
    """
    if not labels_file and not labels:
        raise CuratorError("give --labels FILE or at least one --label")
    all_labels = (read_labels_file(labels_file) if labels_file else []) + list(labels)
    store = ctx.store()
    report = ingest_labels(store, label_set, all_labels, template)
    click.echo(f"texts: {report.added} prompts added, {report.existing} already in store "
               f"(label set {label_set!r}, {store.table_ref('texts')})")
