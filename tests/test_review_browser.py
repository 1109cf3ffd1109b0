"""The review page driven in headless Chromium from file://: rows, filter, audio, escaping, keys, export.

Needs Debian's chromium (`apt-get install -y chromium`) and the `playwright` Python package; it
never downloads a browser (`playwright install` is not used).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import curation_data
import pytest
from playwright import sync_api
from test_review import EVIL, read_data, write_big_run, write_run

from curator.curate.decisions import read_decisions
from curator.review.data import load_run
from curator.review.page import build_review

CHROMIUM = os.environ.get("CURATOR_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SCREENSHOT = os.environ.get("CURATOR_REVIEW_SCREENSHOT")  # e.g. docs/review.png, to refresh the docs image

# scripts/test.sh installs Chromium where apt can; under CI a missing browser is a failure, not a skip,
# so a broken install step cannot hide behind a green run.
if not Path(CHROMIUM).is_file():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{CHROMIUM} is not installed and CI=true: the review page's browser test cannot run")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get update && apt-get install -y chromium)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.js_errors = errors
    yield p
    context.close()


def row_count(page) -> int:
    return page.locator("#rows .row").count()


def set_range(page, lo: str, hi: str) -> None:
    page.fill("#score-min", lo)
    page.fill("#score-max", hi)


def export(page, button: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.click(button)
    download = info.value
    target = folder / download.suggested_filename
    download.save_as(target)
    return target


def test_review_page_in_chromium(page, store, tone, tmp_path):
    write_run(store, tone, tmp_path / "clips")
    built = build_review(load_run(store, "r1"), tmp_path / "page")
    data = read_data(built.out)
    page.goto(built.index.as_uri())
    page.wait_for_selector("#rows .row")
    assert row_count(page) == 16
    assert page.inner_text("#counts").startswith("16 of 16 rows")

    # The score filter hides rows outside the range (scores 0.10, 0.15, ... 0.85).
    set_range(page, "0.3", "0.5")
    page.wait_for_function("document.querySelectorAll('#rows .row').length === 5")
    shown = [float(s) for s in page.locator("#rows .row .score").all_inner_texts()]
    assert shown == [0.5, 0.45, 0.4, 0.35, 0.3]
    set_range(page, "0", "1")
    page.wait_for_function("document.querySelectorAll('#rows .row').length === 16")
    page.keyboard.press("Escape")  # leave the filter field so keys reach the page

    # Audio plays offline: the copied file's metadata loads and has the clip's duration.
    durations = page.evaluate("""() => Promise.all([...document.querySelectorAll('audio')].slice(0, 4).map(a =>
        a.readyState >= 1 ? a.duration : new Promise(ok => a.addEventListener('loadedmetadata', () => ok(a.duration)))))""")
    assert all(d > 0.9 for d in durations) and max(durations) == pytest.approx(2.5, abs=0.05)

    # A caption holding HTML is text, and its script never ran.
    captions = page.locator(".caption").evaluate_all("ps => ps.map(p => p.textContent)")
    assert EVIL in captions
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#rows script").count() == 0

    # Keys: a accepts and moves on, r rejects, j skips, k goes back.
    def marks():
        return page.locator("#rows .row").evaluate_all("rows => rows.slice(0, 5).map(r => r.dataset.decision)")

    for key in ("a", "r", "j", "a"):
        page.keyboard.press(key)
    assert marks() == ["accept", "reject", "", "accept", ""]
    for key in ("k", "ArrowUp", "k", "u"):  # back to row 1 and undo its reject
        page.keyboard.press(key)
    assert marks() == ["accept", "", "", "accept", ""]
    page.keyboard.press("r")
    assert marks() == ["accept", "reject", "", "accept", ""]
    rows = [(data["texts"]["id"][t], data["clips"]["id"][c]) for t, c in zip(data["rows"]["t"], data["rows"]["c"])]
    expected = [(*rows[0], "accept"), (*rows[1], "reject"), (*rows[3], "accept")]

    # Export: a Blob download in the exact format `curator build --decisions` reads.
    csv_path = export(page, "#export-csv", tmp_path)
    assert csv_path.name == "decisions-run_r1.csv"
    with csv_path.open(newline="") as fh:
        got = [tuple(r) for r in csv.reader(fh)]
    assert got == [("text_id", "audio_id", "decision"), *expected]
    json_path = export(page, "#export-json", tmp_path)
    assert [tuple(d.values()) for d in json.loads(json_path.read_text())] == expected
    for path in (csv_path, json_path):
        parsed = read_decisions(str(path))
        assert parsed.accepted == {expected[0][:2], expected[2][:2]} and parsed.rejected == {expected[1][:2]}

    # Decisions survive a reload (localStorage, keyed by run).
    page.reload()
    page.wait_for_selector("#rows .row")
    assert marks() == ["accept", "reject", "", "accept", ""]
    page.select_option("#show", "reject")
    page.wait_for_function("document.querySelectorAll('#rows .row').length === 1")
    page.select_option("#show", "all")

    # The histogram is drawn from the data: one bar per bin.
    assert page.locator("#histogram svg rect.bar").count() == len(data["summary"]["hist"]["counts"])
    # Re-sorting in the page: nearest the run's threshold (0.3) first.
    page.select_option("#sort", "near")
    page.wait_for_function("document.querySelector('#rows .row .score').textContent === '0.3000'")
    assert [float(x) for x in page.locator("#rows .row .score").all_inner_texts()[:3]] == [0.3, 0.35, 0.25]
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=False)
    assert page.js_errors == []


def test_hundred_thousand_pairs_paginate(page, store, tone, tmp_path):
    total = write_big_run(store, tone, tmp_path / "clips")
    built = build_review(load_run(store, "big"), tmp_path / "page", around=0.3, band=0.01)
    page.goto(built.index.as_uri())
    page.wait_for_selector("#rows .row")
    assert row_count(page) == 100
    visible = page.evaluate("window.curatorReview.visible()")
    scores = page.locator("#rows .row").evaluate_all("rows => rows.map(r => window.CURATOR_REVIEW.rows.s[+r.dataset.i])")
    distances = [round(abs(s - 0.3), 6) for s in scores]  # data.js keeps 5 decimals
    assert max(distances) <= 0.01 + 1e-6 and distances == sorted(distances)
    # Roughly 2 % of U(0.2, 0.6) scores lie within 0.01 of 0.3.
    assert 0.035 * total < visible < 0.065 * total
    assert page.inner_text("#page-info") == f"page 1 of {-(-visible // 100)}"
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('#page-info').textContent.startsWith('page 2 ')")
    assert page.locator("#rows .row").first.get_attribute("data-pos") == "100"
    set_range(page, "", "")
    page.wait_for_function(f"window.curatorReview.visible() === {total}")
    assert row_count(page) == 100 and page.js_errors == []


def test_exported_decisions_remove_exactly_the_rejected_pairs(page, store, cli, tmp_path):
    """Review a built set, reject two pairs, export, rebuild with --decisions: those two are gone."""
    from schemas.sets import read_set

    curation_data.build_world(store)
    build = ("build", "du", "--model", "teach", "--name", "du", "--threshold", "0.5", "--top-k", "3",
             "--pool-where", "source = 'wild'", "--pairs-where", "source = 'clotho'")
    assert cli.curator(*build).code == 0
    before, resolved = read_set(store.uri, "du")
    assert 3 < before.num_rows <= 100 and resolved.version >= 1
    out = tmp_path / "page"
    result = cli.curator("review", "--set", "du", "--out", out)
    assert result.code == 0, result.output
    page.goto((out / "index.html").as_uri())
    page.wait_for_selector("#rows .row")
    assert row_count(page) == before.num_rows
    for key in ("r", "a", "r"):
        page.keyboard.press(key)
    path = export(page, "#export-csv", tmp_path)
    with path.open(newline="") as fh:
        decided = list(csv.DictReader(fh))
    rejected = {(d["text_id"], d["audio_id"]) for d in decided if d["decision"] == "reject"}
    assert len(decided) == 3 and len(rejected) == 2

    rebuilt = cli.curator(*build, "--decisions", path)
    assert rebuilt.code == 0, rebuilt.output
    after, resolved_after = read_set(store.uri, "du")
    pairs = {(r["text_id"], r["audio_id"]) for r in before.select(["text_id", "audio_id"]).to_pylist()}
    assert resolved_after.version > resolved.version
    assert {(r["text_id"], r["audio_id"]) for r in after.select(["text_id", "audio_id"]).to_pylist()} == pairs - rejected
