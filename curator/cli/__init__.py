"""`curator`: the command-line face of the store. Only this package prints, exits and draws bars.

Commands are loaded lazily: `curator --help` reads the table below and imports no command module,
and `curator X` imports only the module that defines X. So starting the CLI costs click, not
LanceDB or torch (tests/test_cli_startup.py holds that line).
"""

from __future__ import annotations

import importlib
import sys

import click

from curator.cli.common import EXIT_CODES, StoreContext, run_main, script_friendly

# name -> (module under curator.cli, attribute, one-line help shown by `curator --help`).
# The one-line help must equal the command's own first docstring line (a test checks it).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ingest": ("ingest", "ingest",
              "Bring audio clips, captions and label prompts into the store."),
    "query": ("store", "query_cmd",
             "Run DuckDB SQL over the store: every table is a view of the same name."),
    "tables": ("store", "tables_cmd",
              "List the store's tables with rows, current version and size on disk."),
    "versions": ("store", "versions_cmd",
                "List the versions of a table (with tags); any of them can be read with `query --at`."),
    "tag": ("store", "tag_cmd",
           "Name a table version so it can be read as TABLE@TAG."),
    "doctor": ("store", "doctor_cmd",
              "Check every table of the store (opens, rows, versions, duplicate keys, orphans); --repair fixes."),
    "models": ("models", "models",
              "Register and list models (teachers, students, sentence encoders)."),
    "embed": ("embed", "embed",
             "Embed clips and/or texts with a registered model into emb_<model>_audio / emb_<model>_text."),
    "import-embeddings": ("embed", "import_embeddings",
                         "Import vectors made elsewhere: parquet (id + vector columns), .npy with --ids, or a folder of shards."),
    "match": ("match", "match",
             "Score every caption against every clip of a model and keep pairs >= THRESHOLD."),
    "sweep": ("match", "sweep",
             "Count the pairs a match would keep at each threshold, in one pass over all scores."),
    "build": ("curate", "build",
             "Build improvement sets from teacher vectors (DU, DS, ADS)."),
    "pseudo-label": ("curate", "pseudo_label",
                    "Pseudo-label unlabelled clips from zero-shot scores (or a classifier) and keep the confident ones."),
    "guard": ("curate", "guard",
             "Find pool clips that duplicate evaluation clips and exclude them from later builds."),
    "sets": ("catalog", "sets",
            "Improvement-set versions: list, lineage, diff, tag, export."),
    "review": ("review", "review",
              "Write a static review page for a match run or a set, with accept/reject decisions."),
    "demo": ("demo", "demo",
            "Synthetic corpora (captioned, unpaired, evaluation, scenes) for demos and tests."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (see the module docstring)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return script_friendly(getattr(importlib.import_module(f"curator.cli.{module}"), attr))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, short) for name, (_, _, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES)
@click.option("--store", "store_uri", envvar="CURATOR_STORE", default="./store", show_default=True,
              help="Store folder or URI (env CURATOR_STORE).")
@click.pass_context
def cli(ctx: click.Context, store_uri: str) -> None:
    """Embedding store and semi-supervised curation for audio-text models.

    --store may also follow the command (`curator tables --store S`). List and report commands take
    --format table|csv|json: csv has no trailing blank line, json is one JSON array of row objects.

    \b
    Example:
      curator --store ./store ingest audio ./clips --source esc50
      curator query "select source, count(*) from audio group by 1"
      curator query "select count(*) as n from audio" --format csv | tail -n 1
    """
    ctx.obj = StoreContext(store_uri)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_main(cli, argv))
