"""`curator review`: listen before you build."""

from __future__ import annotations

import re

import click

from curator.cli.common import fail, pass_store
from curator.review.data import load_run, load_set
from curator.review.page import DEFAULT_MEDIA, build_review, make_server, server_url


@click.command()
@click.option("--run", "run_id", metavar="RUN", help="Review the candidate pairs of this match run.")
@click.option("--set", "set_ref", metavar="REF", help="Review a set version: name, name@N or name@tag.")
@click.option("--around", type=float, metavar="T",
              help="Put the pairs nearest score T first and start the score filter at T ± band.")
@click.option("--band", type=float, default=0.05, show_default=True, help="Half-width of the --around window.")
@click.option("--sample", type=int, default=0, metavar="N",
              help="Put a uniform random sample of N pairs in the page (default 0 = every pair; "
                   "the summary always counts every pair).")
@click.option("--media", type=int, default=DEFAULT_MEDIA, show_default=True, metavar="N",
              help="Audio copies and spectrograms only for the first N distinct clips in page order "
                   "(best score first; with --around, nearest the threshold first); rows of other clips "
                   "show the clip's path only. Every pair is still in the page, 100 per page.")
@click.option("--link", is_flag=True,
              help="Link audio by a relative path instead of copying it into OUT/audio/.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Folder to write (default ./review_<run or set>). Rerunning reuses its media.")
@click.option("--serve", is_flag=True, help="Serve the page on 127.0.0.1 after writing it (Ctrl-C stops).")
@click.option("--port", type=int, default=8765, show_default=True, help="Port for --serve (0 = any free port).")
@pass_store
def review(ctx, run_id, set_ref, around, band, sample, media, link, seed, out_dir, serve, port):
    """Write a static review page for a match run or a set, with accept/reject decisions.

    Open OUT/index.html in a browser (it works from file://, offline) or add --serve. Keys:
    a accept, r reject, u undo, j/k or arrows move, left/right change page. Export the decisions
    as CSV or JSON (text_id,audio_id,decision) and pass the file to `curator build --decisions`.
    Decisions are also kept in the browser's localStorage per run or set.

    \b
    Example:
      curator review --run clap_t030 --around 0.30 --band 0.02 --out review_t030
      curator review --set du@3 --sample 500 --serve --port 8080
    """
    if bool(run_id) == bool(set_ref):
        fail("review: give exactly one of --run RUN or --set REF")
    store = ctx.store(create=False)
    data = load_run(store, run_id) if run_id else load_set(store, set_ref)
    out_dir = out_dir or "review_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id or set_ref)
    page = build_review(data, out_dir, around=around, band=band, sample=sample or None, media=media,
                        link=link, seed=seed)
    click.echo(f"wrote {page.index} ({page.rows} of {page.total} pairs; audio and spectrograms "
               f"for {page.media_clips} clips)")
    if page.skipped:
        click.echo(f"{len(page.skipped)} clips without media; first: {page.skipped[0]}", err=True)
    if serve:
        _serve(page.out, port)


def _serve(out, port: int) -> None:
    server = make_server(out, port)
    click.echo(f"serving {server_url(server)} (127.0.0.1 only; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
