"""`curator`: the command-line face of the store. Only this package prints and exits."""

from __future__ import annotations

import sys

import click

from curator.cli.common import StoreContext, run_main
from schemas.errors import CuratorError  # noqa: F401  (re-exported for command modules)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--store", "store_uri", envvar="CURATOR_STORE", default="./store", show_default=True,
              help="Store folder or URI (env CURATOR_STORE).")
@click.pass_context
def cli(ctx: click.Context, store_uri: str) -> None:
    """Embedding store and semi-supervised curation for audio-text models.

    \b
    Example:
      curator --store ./store ingest audio ./clips --source esc50
      curator query "select source, count(*) from audio group by 1"
    """
    ctx.obj = StoreContext(store_uri)


def _register() -> None:
    # Each topic lives in its own module; importing it adds its commands to `cli`.
    from curator.cli import ingest, store_cmds

    cli.add_command(ingest.ingest)
    for command in (store_cmds.query_cmd, store_cmds.tables_cmd, store_cmds.versions_cmd, store_cmds.tag_cmd):
        cli.add_command(command)
    from curator.cli import review_cmds; cli.add_command(review_cmds.review)  # noqa: E702
    from curator.cli import build_cmds, sets_cmds; [cli.add_command(c) for c in build_cmds.COMMANDS + sets_cmds.COMMANDS]  # noqa: E702,E501
    from curator.cli import embed_cmds, models_cmds; [cli.add_command(c) for c in (models_cmds.models, embed_cmds.embed, embed_cmds.import_embeddings)]  # noqa: E702,E501
    from curator.cli import demo_cmds; [cli.add_command(c) for c in demo_cmds.COMMANDS]  # noqa: E702
    from curator.cli import match_cmds; cli.add_command(match_cmds.match); cli.add_command(match_cmds.sweep)  # noqa: E702


_register()


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_main(cli, argv))
