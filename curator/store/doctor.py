"""`curator doctor`: check every table of a store and, with `repair`, fix what can be fixed.

Checks, per table: it opens and its rows can be counted (at its latest version), its version count,
duplicate keys (fixed tables by their key, embedding tables by their id); and across tables:
the store marker, half-created table folders, fixed tables that are missing, candidates of match
runs that never finished (no `runs` row), set-table versions no catalog row names (a build killed
between its two writes), catalog rows whose rows are gone, vectors of ids no longer in `audio` /
`texts`. Repairs: write the marker (a store made before markers), remove half-created folders,
create missing fixed tables, delete duplicate rows (one row per key stays), delete the candidates
of unfinished runs. Orphaned set versions and orphan vectors are reported, not deleted: Lance
history is never rewritten, and a vector is harmless until its id is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from curator.store.marker import FORMAT_VERSION, MARKER, read_marker, write_marker
from curator.store.store import Store, half_made_tables
from schemas.errors import CuratorError
from schemas.tables import FIXED_TABLES

EMBEDDING_IDS = {"_audio": "audio_id", "_text": "text_id"}


@dataclass
class TableCheck:
    name: str
    rows: int | None
    version: int | None
    versions: int | None
    duplicates: int = 0
    error: str | None = None


@dataclass
class Report:
    tables: list[TableCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # still wrong
    repaired: list[str] = field(default_factory=list)  # what --repair did
    notes: list[str] = field(default_factory=list)  # harmless facts worth knowing

    @property
    def healthy(self) -> bool:
        return not self.problems


def key_of(name: str) -> tuple[str, ...]:
    """The key columns of a table (empty: rows have no identity, e.g. `errors` or a set's rows)."""
    if name in FIXED_TABLES:
        return FIXED_TABLES[name][1]
    if name.startswith("emb_"):
        return next((col,) for suffix, col in EMBEDDING_IDS.items() if name.endswith(suffix))
    return ()


def _duplicate_keys(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    counts = table.group_by(list(key)).aggregate([([], "count_all")])
    return counts.filter(pc.greater(counts.column("count_all"), 1))


def _where_keys(key: tuple[str, ...], dups: pa.Table) -> str:
    def lit(v):
        return "'" + str(v).replace("'", "''") + "'" if isinstance(v, str) else str(v)

    parts = [" and ".join(f"{k} = {lit(v)}" for k, v in zip(key, row)) for row in
             zip(*(dups.column(k).to_pylist() for k in key))]
    return " or ".join(f"({p})" for p in parts)


def _dedupe(store: Store, name: str, key: tuple[str, ...]) -> int:
    """Keep one row per duplicated key (the first read); returns rows removed. Under the table lock."""
    with store.lock(name):
        data = store.read(name)
        dups = _duplicate_keys(data.select(list(key)), key)
        if not dups.num_rows:
            return 0
        where = _where_keys(key, dups)
        rows = data.filter(pc.is_in(_joined(data, key), value_set=_joined(dups, key)))
        keep, seen = [], set()
        for i, k in enumerate(zip(*(rows.column(c).to_pylist() for c in key))):
            keep.append(k not in seen)
            seen.add(k)
        kept = rows.filter(pa.array(keep))
        store.delete(name, where)
        store.append(name, kept, data.schema)
        return rows.num_rows - kept.num_rows


def _joined(table: pa.Table, key: tuple[str, ...]) -> pa.Array:
    cols = [pc.cast(table.column(k), pa.string()) for k in key]
    return pc.binary_join_element_wise(*cols, "\x1f") if len(cols) > 1 else cols[0]


def check_store(uri: str, repair: bool = False) -> Report:
    """Check (and with `repair`, fix) the store at `uri`; see the module doc."""
    report = Report()
    marker = read_marker(uri)
    if marker is None:
        if not repair:
            report.problems.append(f"no {MARKER}: a store made before markers, or not a store (--repair writes "
                                   f"one if the folder holds only tables)")
        elif Store.open(uri, create=False, adopt=True):  # refuses a folder that is not a store of tables
            write_marker(uri)
            report.repaired.append(f"wrote {MARKER}: a store made before stores carried a marker")
    elif int(marker.get("format", FORMAT_VERSION)) > FORMAT_VERSION:
        Store.open(uri, create=False)  # raises, naming the version
    # without --repair nothing is changed: the store is looked at, not opened (opening cleans up)
    store = Store.open(uri, create=False) if repair else Store(uri)
    report.repaired += store.notes
    for name in half_made_tables(uri):
        report.problems.append(f"{name}: a half-created table folder with no committed version "
                               f"(--repair removes it; it holds nothing readable)")
    missing = [n for n in ("errors", "runs", "sets") if n not in store.names()]
    if missing and repair:
        made = store.create_fixed_tables()
        report.repaired.append(f"created missing table(s) {', '.join(made)} (empty)")
    elif missing:
        report.problems.append(f"missing table(s) {', '.join(missing)} (--repair creates them empty)")
    for name in store.names():
        report.tables.append(_check_table(store, name, repair, report))
    _orphans(store, repair, report)
    return report


def _check_table(store: Store, name: str, repair: bool, report: Report) -> TableCheck:
    try:
        ds = store.dataset(name)
        check = TableCheck(name, ds.count_rows(), int(ds.version), len(ds.versions()))
        key = key_of(name)
        if key and check.rows:
            dups = _duplicate_keys(store.read(name, columns=list(key)), key)
            check.duplicates = int(pc.sum(dups.column("count_all")).as_py() - dups.num_rows) if dups.num_rows else 0
    except (CuratorError, OSError, ValueError, RuntimeError) as exc:
        check = TableCheck(name, None, None, None, error=str(exc).splitlines()[0])
        report.problems.append(f"{name}: cannot be read ({check.error})")
        return check
    if check.duplicates:
        if repair:
            removed = _dedupe(store, name, key)
            report.repaired.append(f"{name}: removed {removed} duplicate row(s); one row per {', '.join(key)} kept")
        else:
            report.problems.append(f"{name}: {check.duplicates} duplicate row(s) by {', '.join(key)} "
                                   f"(--repair keeps one per key)")
    return check


def _orphans(store: Store, repair: bool, report: Report) -> None:
    names = set(store.names())
    if "candidates" in names:
        runs = set(store.read("runs", columns=["run_id"]).column(0).to_pylist()) if "runs" in names else set()
        stray = sorted(set(store.read("candidates", columns=["run_id"]).column(0).to_pylist()) - runs)
        for run_id in stray:
            if repair:
                store.delete("candidates", "run_id = '" + run_id.replace("'", "''") + "'")
                report.repaired.append(f"candidates: deleted the pairs of run {run_id!r}, which never finished")
            else:
                report.problems.append(f"candidates: pairs of run {run_id!r}, which never finished (no `runs` row; "
                                       f"--repair deletes them, or rerun the match)")
    catalog = store.read("sets").to_pylist() if "sets" in names else []
    for set_name in sorted({r["name"] for r in catalog}):
        table = f"set_{set_name}"
        if table not in names:
            report.problems.append(f"sets: catalog rows of {set_name!r} but no table {table}")
            continue
        named = {int(r.get("table_version") or r["version"]) for r in catalog if r["name"] == set_name}
        current = store.version(table)
        if current not in named and store.dataset(table).count_rows():
            report.notes.append(f"{table}: its latest version {current} is in no catalog row (a build stopped "
                                f"between its two writes; rerunning it reuses the version)")
    for name in sorted(n for n in names if n.startswith("emb_")):
        col = key_of(name)[0]
        source = "audio" if col == "audio_id" else "texts"
        if source in names:
            known = store.read(source, columns=[col]).column(0)
            ids = store.read(name, columns=[col]).column(0)
            orphan = int(pc.sum(pc.invert(pc.is_in(ids, value_set=known))).as_py() or 0)
            if orphan:
                report.notes.append(f"{name}: {orphan} vector(s) of ids not in `{source}` (harmless; never read)")
