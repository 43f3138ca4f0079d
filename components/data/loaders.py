"""Loaders for interaction logs on disk, and their staging into ordinal-id Parquet.

Formats (detected from a folder's files, or named):

* ``recbole``   – RecBole atomic files ``*.inter`` / ``*.item`` / ``*.user`` (header ``name:type``)
* ``movielens`` – raw MovieLens ``ratings.dat`` / ``movies.dat`` / ``users.dat`` (``::``-separated)
* ``amazon``    – ``user_sequence.txt`` (``user item item …``, chronological) + ``items.tsv``
* ``table``     – a user's own log: ``interactions.{csv,parquet}`` + ``items.{csv,parquet}``
  (+ optional ``users.*``), columns named through :class:`~components.config.ColumnMapping`
* ``staged``    – a folder already staged (``meta.json``), e.g. written by the generator

Every check names the file, the line (or row) and the column of the first offence.
"""
from __future__ import annotations

import csv
import io
import re
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import ColumnMapping
from components.data.filtering import drop_repeats
from components.data.tables import INTERACTION_SCHEMA, META, StagedMeta, behaviour_array, items_schema
from components.data.text import clean_text
from components.errors import InputError
from components.workspace import atomic_path

# Order-only datasets get one second per position after this instant (2014-01-01 UTC).
SYNTHETIC_EPOCH = 1_388_534_400


@dataclass
class RawDataset:
    """A dataset as read from disk: raw string ids, plus where each row came from."""

    format: str
    interactions: pd.DataFrame  # user_id, item_id, timestamp (int64 s), behaviour, line
    items: pd.DataFrame  # item_id, title, brand, categories (list), year, description, line
    users: pd.DataFrame | None
    interactions_path: Path
    items_path: Path
    category_style: str = "path"
    synthetic_timestamps: bool = False
    notes: tuple[str, ...] = ()  # what loading detected or changed, for `data stats` and stats.json


def detect_format(folder: Path) -> str:
    """Name the format of a dataset folder from the files it holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "dataset folder not found")
    checks = [
        ("staged", lambda: (folder / META).exists()),
        ("recbole", lambda: any(folder.glob("*.inter"))),
        ("movielens", lambda: (folder / "ratings.dat").exists()),
        ("amazon", lambda: (folder / "user_sequence.txt").exists()),
        ("table", lambda: any(folder.glob("interactions.csv")) or any(folder.glob("interactions.parquet"))),
        ("sequence", lambda: len(list(folder.glob("*.txt"))) == 1),
    ]
    for name, present in checks:
        if present():
            return name
    raise InputError(folder, "cannot tell the dataset format: expected *.inter (RecBole), ratings.dat (MovieLens), "
                             "user_sequence.txt (Amazon), interactions.csv|parquet (table), one *.txt of user item … lines "
                             "(sequence) or meta.json (staged); "
                             "name it with --format")


def load_dataset(folder: Path, fmt: str = "auto", columns: ColumnMapping | None = None,
                 timestamp_range: tuple[int, int | None] = (0, None)) -> RawDataset:
    """Read a dataset folder into memory (any format but ``staged``) and check it (interaction times
    within ``timestamp_range``, seconds since the epoch; an open end is a day from now)."""
    folder = Path(folder)
    fmt = detect_format(folder) if fmt == "auto" else fmt
    loaders = {"recbole": load_recbole, "movielens": load_movielens, "amazon": load_amazon, "sequence": load_sequence,
               "table": lambda f: load_table(f, columns or ColumnMapping())}
    if fmt not in loaders:
        raise ValueError(f"format '{fmt}' cannot be loaded into memory; choose one of {', '.join(loaders)}")
    raw = drop_unused_items(loaders[fmt](folder))
    check_raw(raw, timestamp_range)
    return raw


# --- reading text files -------------------------------------------------------------------

def read_text(path: Path, fallback_encoding: str | None = None) -> str:
    """The file's text, UTF-8 strictly (or ``fallback_encoding``); empty or undecodable files are errors."""
    if not path.exists():
        raise InputError(path, "file not found")
    data = path.read_bytes()
    if not data.strip():
        raise InputError(path, "file is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if fallback_encoding:
            return data.decode(fallback_encoding)
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(path, f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); re-encode the file as UTF-8",
                         line=line) from None


def read_delimited(path: Path, sep: str, header: bool = True, names: list[str] | None = None,
                   fallback_encoding: str | None = None) -> pd.DataFrame:
    """Parse a delimited text file into string columns, plus its 1-based ``line`` numbers."""
    text = read_text(path, fallback_encoding)
    if header or names:
        _check_field_counts(text, sep, path, None if header else len(names or []))
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, header=0 if header else None, names=names, dtype=str,
                         keep_default_na=False, quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE,
                         engine="python" if len(sep) > 1 else "c")
    except pd.errors.ParserError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise InputError(path, f"malformed row ({exc})", line=int(match.group(1)) if match else None) from None
    if df.empty:
        raise InputError(path, "file has a header but no rows")
    df["line"] = np.arange(len(df)) + (2 if header else 1)
    return df


def _check_field_counts(text: str, sep: str, path: Path, names: int | None) -> None:
    """Every row as many fields as the header (or ``names``): pandas would shift a longer first row
    into an index and pad a shorter one, and a later check would then blame the wrong file."""
    lines = text.splitlines()
    quoted = sep == ","  # CSV may quote a field that holds commas
    width = (lambda line: len(next(csv.reader([line])))) if quoted else (lambda line: line.count(sep) + 1)
    first = 0 if names else 1
    expected = names or (width(lines[0]) if lines else 0)
    counts = np.fromiter((width(line) if line else expected for line in lines[first:]), np.int64,
                         max(len(lines) - first, 0))
    bad = _first(counts != expected)
    if bad is not None:
        raise InputError(path, f"{counts[bad]} fields where {'the header has' if not names else 'the format has'} "
                         f"{expected}", line=first + bad + 1)


def require_columns(df: pd.DataFrame, path: Path, wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        found = [c for c in df.columns if c != "line"]
        raise InputError(path, f"missing required column(s) {missing}; found {found}", column=missing[0])


def to_timestamps(values: pd.Series, lines: pd.Series, path: Path, column: str) -> np.ndarray:
    """Seconds since the epoch as int64; the first non-numeric value is named."""
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numeric) | (np.abs(numeric) >= 2.0**62)  # beyond int64 seconds: no instant at all
    if bad.any():
        first = int(np.argmax(bad))
        problem = "is not a number" if np.isnan(numeric[first]) else "is out of any range of times"
        raise InputError(path, f"timestamp {values.iloc[first]!r} {problem}", column=column,
                         line=int(lines.iloc[first]))
    return numeric.astype(np.int64)


def positional_timestamps(user_ids: pd.Series) -> np.ndarray:
    """Monotone per-user timestamps from row order, for logs that record order only."""
    return SYNTHETIC_EPOCH + user_ids.groupby(user_ids, sort=False).cumcount().to_numpy(np.int64)


def split_categories(value: str, style: str) -> list[str]:
    text = clean_text(value)
    if not text:
        return []
    if style == "path":  # "A > B > C", or levels separated by commas or bars
        parts = text.split(" > ") if " > " in text else re.split(r"\s*[|,]\s*", text)
    else:  # genres: separated by commas or bars (multi-word ones stay whole), else by spaces (RecBole token_seq)
        parts = re.split(r"\s*[|,]\s*", text) if re.search(r"[|,]", text) else text.split()
    return [p.strip() for p in parts if p.strip()]


def item_frame(item_ids: pd.Series, lines: pd.Series, title=None, brand=None, categories=None, year=None,
               description=None) -> pd.DataFrame:
    """The canonical item columns, text cleaned; absent fields become nulls."""
    n = len(item_ids)

    def text(col):
        return [clean_text(v) or None for v in col] if col is not None else [None] * n

    years = pd.array([pd.NA] * n, "Int32")
    if year is not None:  # an optional descriptive field: a value that is no year counts as missing
        numeric = pd.to_numeric(pd.Series(year), errors="coerce")
        years = numeric.where(numeric.between(0, 9999)).round().astype("Int32")
    return pd.DataFrame({
        "item_id": item_ids.astype(str).to_numpy(), "title": text(title), "brand": text(brand),
        "categories": list(categories) if categories is not None else [[] for _ in range(n)],
        "year": np.asarray(years), "description": text(description), "line": lines.to_numpy(),
    })


def id_only_items(interactions: pd.DataFrame) -> pd.DataFrame:
    """The catalogue of a dataset without an item table: each interacted item, with no text."""
    ids = interactions["item_id"].drop_duplicates()
    return item_frame(ids, pd.Series(np.zeros(len(ids), np.int64)))


# --- the formats ----------------------------------------------------------------------------

def _recbole_file(folder: Path, suffix: str, required: bool) -> Path | None:
    found = sorted(folder.glob(f"*.{suffix}"))
    if not found and required:
        raise InputError(folder, f"no *.{suffix} file")
    return found[0] if found else None


def _read_recbole(path: Path) -> pd.DataFrame:
    """An atomic file: ``name:type`` headers; ``float`` columns hold numbers (or nothing), checked here."""
    df = read_delimited(path, sep="\t")
    typed = [c.split(":", 1) if ":" in c else [c, "token"] for c in df.columns if c != "line"]
    df.columns = [name for name, _ in typed] + ["line"]
    for name, kind in typed:
        if kind in ("float", "float_seq"):
            values = df[name].str.split(" ").explode() if kind == "float_seq" else df[name]
            numeric = pd.to_numeric(values.replace("", np.nan), errors="coerce")
            bad = _first((numeric.isna() & (values != "")).to_numpy())
            if bad is not None:
                row = values.index[bad]
                raise InputError(path, f"{values.iloc[bad]!r} is not a number (the header types it '{kind}')",
                                 column=name, line=int(df["line"].loc[row]))
    return df


def _first_present(df: pd.DataFrame, names: tuple[str, ...]) -> pd.Series | None:
    return next((df[n] for n in names if n in df.columns), None)


def load_recbole(folder: Path) -> RawDataset:
    inter_path = _recbole_file(folder, "inter", True)
    inter = _read_recbole(inter_path)
    require_columns(inter, inter_path, ["user_id", "item_id"])
    has_time = "timestamp" in inter.columns
    timestamps = (to_timestamps(inter["timestamp"], inter["line"], inter_path, "timestamp") if has_time
                  else positional_timestamps(inter["user_id"]))
    interactions = pd.DataFrame({"user_id": inter["user_id"], "item_id": inter["item_id"], "timestamp": timestamps,
                                 "behaviour": "rating" if "rating" in inter.columns else "interaction",
                                 "line": inter["line"]})
    item_path = _recbole_file(folder, "item", False)
    if item_path is None:  # optional in RecBole too: ID-only
        items = id_only_items(interactions)
        return RawDataset("recbole", interactions, items, None, inter_path, inter_path, "tags", not has_time,
                          notes=(f"no .item file in {folder}: ID-only, item text unavailable",))
    item = _read_recbole(item_path)
    require_columns(item, item_path, ["item_id"])
    genres = _first_present(item, ("class", "genre", "genres"))
    category_path = _first_present(item, ("categories", "category"))
    style = "tags" if genres is not None else "path"
    cats = genres if genres is not None else category_path
    items = item_frame(item["item_id"], item["line"],
                       title=_first_present(item, ("title", "movie_title", "item_name", "name")),
                       brand=_first_present(item, ("brand",)),
                       categories=[split_categories(v, style) for v in cats] if cats is not None else None,
                       year=_first_present(item, ("release_year", "year")),
                       description=_first_present(item, ("description",)))
    user_path = _recbole_file(folder, "user", False)
    users = _read_recbole(user_path).drop(columns="line") if user_path else None
    return RawDataset("recbole", interactions, items, users, inter_path, item_path, style, not has_time)


def load_movielens(folder: Path) -> RawDataset:
    ratings_path, movies_path = folder / "ratings.dat", folder / "movies.dat"
    ratings = read_delimited(ratings_path, "::", header=False, names=["user_id", "item_id", "rating", "timestamp"])
    interactions = pd.DataFrame({
        "user_id": ratings["user_id"], "item_id": ratings["item_id"],
        "timestamp": to_timestamps(ratings["timestamp"], ratings["line"], ratings_path, "timestamp"),
        "behaviour": "rating", "line": ratings["line"]})
    # MovieLens 1M/10M ship movies.dat in Latin-1.
    movies = read_delimited(movies_path, "::", header=False, names=["item_id", "title", "genres"],
                            fallback_encoding="latin-1")
    year = movies["title"].str.extract(r"\((\d{4})\)\s*$")[0]
    title = movies["title"].str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)
    items = item_frame(movies["item_id"], movies["line"], title=title, year=year,
                       categories=[split_categories(g, "tags") for g in movies["genres"]])
    users_path = folder / "users.dat"
    users = (read_delimited(users_path, "::", header=False,
                            names=["user_id", "gender", "age", "occupation", "zip_code"]).drop(columns="line")
             if users_path.exists() else None)
    return RawDataset("movielens", interactions, items, users, ratings_path, movies_path, "tags")


def load_amazon(folder: Path) -> RawDataset:
    """The Amazon 5-core release: ``user_sequence.txt`` and ``items.tsv`` keyed by ``asin``."""
    return load_sequence(folder, folder / "user_sequence.txt", "amazon")


def load_sequence(folder: Path, seq_path: Path | None = None, fmt: str = "sequence") -> RawDataset:
    """The layout of public sequential-recommendation releases: one line per user, ``user item item …``
    (or one ``user item`` pair per line) in time order, and an optional item table (``items.tsv`` or
    ``.csv``, or the one ``*item*`` table) keyed by ``asin``/``item_id``/``item``/``id`` with a
    ``title``/``name``/``item_name``/``keywords`` column."""
    seq_path = seq_path or _sequence_file(folder)
    users, items, lines = [], [], []
    for number, line in enumerate(read_text(seq_path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise InputError(seq_path, "a user with no items", line=number)
        users.extend([fields[0]] * (len(fields) - 1))
        items.extend(fields[1:])
        lines.extend([number] * (len(fields) - 1))
    user_ids = pd.Series(users)
    interactions = pd.DataFrame({"user_id": user_ids, "item_id": items, "timestamp": positional_timestamps(user_ids),
                                 "behaviour": "review" if fmt == "amazon" else "interaction", "line": lines})
    items_path = _item_table(folder)
    if items_path is None:
        return RawDataset(fmt, interactions, id_only_items(interactions), None, seq_path,
                          seq_path, "path", synthetic_timestamps=True,
                          notes=(f"no item table in {folder}: ID-only, item text unavailable",))
    meta = read_delimited(items_path, "\t" if items_path.suffix == ".tsv" else ",")
    key = _first_present(meta, ("asin", "item_id", "item", "id"))
    if key is None:
        raise InputError(items_path, "needs an item id column: asin, item_id, item or id", column="item_id")
    title = _first_present(meta, ("title", "name", "item_name", "keywords"))
    if title is None:
        raise InputError(items_path, "needs a title column: title, name, item_name or keywords", column="title")
    cats = _first_present(meta, ("categories", "category"))
    items_df = item_frame(key, meta["line"], title=title, brand=_first_present(meta, ("brand",)),
                          categories=[split_categories(c, "path") for c in cats] if cats is not None else None,
                          description=_first_present(meta, ("description",)))
    return RawDataset(fmt, interactions, items_df, None, seq_path, items_path, "path", synthetic_timestamps=True)


def _sequence_file(folder: Path) -> Path:
    found = sorted(folder.glob("*.txt"))
    if len(found) != 1:
        raise InputError(folder, f"expected one sequence file (*.txt), found {len(found)}")
    return found[0]


def _item_table(folder: Path) -> Path | None:
    named = [folder / f"items{suffix}" for suffix in (".tsv", ".csv")]
    found = [p for p in named if p.exists()] or sorted(p for p in folder.iterdir() if "item" in p.name.lower()
                                                       and p.suffix in (".tsv", ".csv"))
    return found[0] if found else None


def _read_table(path_stem: Path, required: bool) -> tuple[pd.DataFrame | None, Path]:
    for suffix, reader in ((".parquet", _read_parquet), (".csv", lambda p: read_delimited(p, ","))):
        path = path_stem.with_suffix(suffix)
        if path.exists():
            return reader(path), path
    if required:
        raise InputError(path_stem.with_suffix(".csv"), "file not found (.csv or .parquet)")
    return None, path_stem


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise InputError(path, f"not a readable Parquet file ({exc})") from None
    if df.empty:
        raise InputError(path, "table has no rows")
    df = df.astype({c: str for c in df.columns if df[c].dtype == object})
    df["line"] = np.arange(len(df))  # for Parquet 'line' is the 0-based row
    return df


def load_table(folder: Path, columns: ColumnMapping) -> RawDataset:
    inter, inter_path = _read_table(folder / "interactions", True)
    wanted = [columns.user_id, columns.item_id, columns.timestamp] + ([columns.behaviour] if columns.behaviour else [])
    require_columns(inter, inter_path, wanted)
    interactions = pd.DataFrame({
        "user_id": inter[columns.user_id].astype(str), "item_id": inter[columns.item_id].astype(str),
        "timestamp": to_timestamps(inter[columns.timestamp], inter["line"], inter_path, columns.timestamp),
        "behaviour": inter[columns.behaviour].astype(str) if columns.behaviour else "interaction",
        "line": inter["line"]})
    item, item_path = _read_table(folder / "items", False)
    style, notes = "tags", ()
    if item is None:  # ID-only, as a RecBole dataset without .item
        items, item_path = id_only_items(interactions), inter_path
        notes = (f"no items table in {folder}: ID-only, item text unavailable",)
    else:
        require_columns(item, item_path, [columns.item_id])
        cats = item["categories"].astype(str) if "categories" in item.columns else None
        style = "path" if cats is not None and cats.str.contains(" > ", regex=False).any() else "tags"
        items = item_frame(item[columns.item_id], item["line"], title=item.get("title"), brand=item.get("brand"),
                           categories=[split_categories(c, style) for c in cats] if cats is not None else None,
                           year=item.get("year"), description=item.get("description"))
    users, _ = _read_table(folder / "users", False)
    if users is not None:
        users = users.drop(columns="line").rename(columns={columns.user_id: "user_id"})
    return RawDataset("table", interactions, items, users, inter_path, item_path, style, notes=notes)


# --- checks and staging ---------------------------------------------------------------------

def _first(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def drop_unused_items(raw: RawDataset) -> RawDataset:
    """Catalogue items that no interaction mentions carry nothing to learn from: dropped, and said."""
    used = raw.items["item_id"].isin(raw.interactions["item_id"]).to_numpy()
    if used.all():
        return raw
    first = raw.items["item_id"].iloc[int(np.argmax(~used))]
    note = (f"{int((~used).sum()):,} of {len(used):,} items in {raw.items_path.name} appear in no interaction "
            f"(first {first!r}): dropped")
    return dataclasses.replace(raw, items=raw.items[used].reset_index(drop=True), notes=(*raw.notes, note))


def check_raw(raw: RawDataset, timestamp_range: tuple[int, int | None] = (0, None)) -> None:
    """Reject bad input with one error naming file, line and column of the first offence."""
    inter, items = raw.interactions, raw.items
    if not raw.synthetic_timestamps:
        earliest, latest = timestamp_range
        latest = int(time.time()) + 86_400 if latest is None else latest
        times = inter["timestamp"].to_numpy()
        bad = _first((times < earliest) | (times > latest))
        if bad is not None:
            when = pd.Timestamp(int(times[bad]), unit="s") if abs(int(times[bad])) < 2**33 else "far outside any calendar"
            raise InputError(raw.interactions_path, f"timestamp {int(times[bad])} ({when}) is outside the plausible range "
                             f"[{earliest}, {latest}]; fix the row or set data.timestamp_range",
                             column="timestamp", line=int(inter["line"].iloc[bad]))
    for column in ("user_id", "item_id"):
        bad = _first((inter[column].astype(str).str.strip() == "").to_numpy())
        if bad is not None:
            raise InputError(raw.interactions_path, "empty id", column=column, line=int(inter["line"].iloc[bad]))
    dup = _first(inter.duplicated(["user_id", "item_id", "timestamp", "behaviour"]).to_numpy())
    if dup is not None:
        raise InputError(raw.interactions_path, f"duplicate row (user {inter['user_id'].iloc[dup]}, item "
                         f"{inter['item_id'].iloc[dup]}, same timestamp)", line=int(inter["line"].iloc[dup]))
    dup_item = _first(items["item_id"].duplicated().to_numpy())
    if dup_item is not None:
        raise InputError(raw.items_path, f"item {items['item_id'].iloc[dup_item]!r} described twice",
                         column="item_id", line=int(items["line"].iloc[dup_item]))
    known = pd.Index(items["item_id"])
    unknown = _first(known.get_indexer(inter["item_id"]) < 0)
    if unknown is not None:
        raise InputError(raw.interactions_path, f"item {inter['item_id'].iloc[unknown]!r} has no metadata in "
                         f"{raw.items_path.name}", column="item_id", line=int(inter["line"].iloc[unknown]))


def stage(raw: RawDataset, folder: Path, source: str) -> StagedMeta:
    """Write ``raw`` as a staged dataset: ordinal ids, sorted by user then time, repeats dropped."""
    inter = raw.interactions
    user_ord, user_ids = pd.factorize(inter["user_id"], sort=False)
    item_ord = pd.Index(raw.items["item_id"]).get_indexer(inter["item_id"])
    order = np.lexsort((np.arange(len(inter)), inter["timestamp"].to_numpy(), user_ord))
    user_ord, item_ord = user_ord[order], item_ord[order]
    keep = drop_repeats(user_ord, item_ord)
    behaviour_codes, behaviours = pd.factorize(inter["behaviour"].to_numpy()[order][keep])
    table = pa.Table.from_arrays([
        pa.array(user_ord[keep].astype(np.int64)), pa.array(item_ord[keep].astype(np.int64)),
        pa.array(inter["timestamp"].to_numpy()[order][keep]), behaviour_array(behaviour_codes, list(behaviours)),
    ], schema=INTERACTION_SCHEMA)
    items = raw.items.drop(columns="line").assign(item=np.arange(len(raw.items), dtype=np.int64))
    users = pd.DataFrame({"user": np.arange(len(user_ids), dtype=np.int64), "user_id": user_ids.astype(str)})
    if raw.users is not None:
        users = users.merge(raw.users.astype(str), on="user_id", how="left")
    meta = StagedMeta(format=raw.format, source=source, n_users=len(user_ids), n_items=len(items),
                      rows=table.num_rows, behaviours=[str(b) for b in behaviours],
                      category_style=raw.category_style, synthetic_timestamps=raw.synthetic_timestamps,
                      repeats_dropped=int((~keep).sum()), extra={"notes": list(raw.notes)} if raw.notes else {})
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        pq.write_table(table, tmp / "interactions.parquet")
        pq.write_table(pa.Table.from_pandas(items, schema=items_schema("item"), preserve_index=False),
                       tmp / "items.parquet")
        pq.write_table(pa.Table.from_pandas(users, preserve_index=False), tmp / "users.parquet")
        meta.save(tmp)
    return meta
