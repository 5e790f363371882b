"""Interaction-log readers: MovieLens, MovieTweetings, any CSV/TSV/Parquet file, and RecBole atomic files.

Every reader returns an :class:`InteractionLog`: dense user and item ids, times in seconds sorted ascending,
optional ratings, and per-item metadata (title, first genre as the category, release time). :func:`load_log`
reads any of these layouts and detects which one a path holds:

==================  ========================================================================================
layout              files
==================  ========================================================================================
``movielens``       100K: ``u.data`` (+ ``u.item``, ``u.genre``); 1M/10M: ``ratings.dat`` (+ ``movies.dat``);
                    latest: ``ratings.csv`` (+ ``movies.csv``)
``movietweetings``  ``ratings.dat`` (+ ``movies.dat``); detected when the folder's name or README says so
``recbole``         a ``.inter`` file, or a folder holding one (+ the ``.item`` file of the same name)
``logged``          one ``.csv``, ``.tsv``/``.txt`` or ``.parquet`` file (+ ``items_path``), columns configurable
==================  ========================================================================================

The catalogue is the set of items that occur in the log. Items of the log missing from the metadata file keep
an empty title, category -1 and an unknown (NaN) release; nothing is dropped. Malformed input raises
``ValueError`` naming the file, the line (1-based) and what was expected.
"""

from __future__ import annotations

import glob
import inspect
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "movielens", "movietweetings", "logged", "recbole")
#: Suffixes :func:`load_logged` reads as one table, with their default field separator (None: Parquet).
TABLE_SUFFIXES: dict[str, str | None] = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".parquet": None, ".inter": "\t"}
#: First genres that mean "no category".
UNKNOWN_GENRES = frozenset({"", "unknown", "(no genres listed)", "nan", "none"})
#: Metadata columns looked for (in this order) when their name is not given.
TITLE_COLUMNS = ("title", "movie_title", "name")
CATEGORY_COLUMNS = ("category", "genre", "genres", "class")
RELEASE_COLUMNS = ("release_year", "release", "year", "release_date")
_SEPARATORS = {**TABLE_SUFFIXES, ".item": "\t"}
_TITLE_YEAR = r"\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$"  # "Heat (1995)", "Lost (2004-2010)"
_CACHE_SIZE = 4
#: Files of fixed layouts; a log read from one of them is named after its folder.
_FIXED_NAMES = frozenset({"u.data", "ratings.dat", "ratings.csv"})


@dataclass(frozen=True, eq=False, repr=False)
class InteractionLog:
    """A log of user-item interactions with dense ids and item metadata, sorted by time (E interactions).

    Arrays are read-only: logs are cached and shared between scenarios.
    """

    users: NDArray[np.int64]
    """``(E,)`` dense user id of each interaction, in ``[0, num_users)``; every id occurs."""
    items: NDArray[np.int64]
    """``(E,)`` dense item id of each interaction, in ``[0, num_items)``; every id occurs."""
    times: NDArray[np.float64]
    """``(E,)`` time of each interaction in seconds (Unix time for dates), ascending; ties keep the file order."""
    ratings: NDArray[np.float64] | None
    """``(E,)`` explicit ratings, or None for an implicit log (every interaction counts as a positive)."""
    rating_range: tuple[float, float] | None
    """``(low, high)`` of the rating scale (e.g. ``(1, 5)``), None for an implicit log."""
    user_ids: NDArray
    """``(U,)`` original id of each dense user id."""
    item_ids: NDArray
    """``(I,)`` original id of each dense item id, as written in the interactions file."""
    item_titles: NDArray[np.str_]
    """``(I,)`` title of each item, ``""`` when unknown."""
    item_category: NDArray[np.int64]
    """``(I,)`` category (first listed genre) of each item: an index into ``category_names``, -1 when unknown."""
    category_names: tuple[str, ...]
    """Name of each category, sorted."""
    item_release: NDArray[np.float64]
    """``(I,)`` release time in seconds (Jan 1 of the year when only the year is known), NaN when unknown."""
    source: str
    """Where the log comes from (its path), for messages."""

    def __post_init__(self) -> None:
        e, u, i = len(self.users), len(self.user_ids), len(self.item_ids)
        assert e > 0 and self.users.shape == self.items.shape == self.times.shape == (e,)
        assert self.users.dtype == np.int64 and self.items.dtype == np.int64 and self.times.dtype == np.float64
        assert (self.ratings is None) == (self.rating_range is None)
        assert self.ratings is None or self.ratings.shape == (e,)
        assert np.array_equal(np.unique(self.users), np.arange(u)) and np.array_equal(np.unique(self.items), np.arange(i))
        assert np.isfinite(self.times).all() and (np.diff(self.times) >= 0).all()
        assert self.item_titles.shape == self.item_category.shape == self.item_release.shape == (i,)
        assert self.item_category.dtype == np.int64 and (self.item_category >= -1).all()
        assert (self.item_category < len(self.category_names)).all()
        for value in (self.users, self.items, self.times, self.ratings, self.user_ids, self.item_ids):
            if value is not None:
                value.flags.writeable = False
        for value in (self.item_titles, self.item_category, self.item_release):
            value.flags.writeable = False

    @property
    def num_users(self) -> int:
        """Number of distinct users, U."""
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Number of distinct items, I (the catalogue)."""
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        kind = "implicit" if self.rating_range is None else f"ratings {self.rating_range[0]:g}-{self.rating_range[1]:g}"
        size = f"{len(self):,} interactions, {self.num_users:,} users, {self.num_items:,} items"
        return f"InteractionLog({self.source}: {size}, {kind})"

    def describe(self) -> str:
        """A few lines about the log: size, time span, rating scale and how much item metadata is known."""
        start, end = (pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%d") for t in (self.times[0], self.times[-1]))
        known = (
            f"titles {np.mean(self.item_titles != ''):.0%}, categories {np.mean(self.item_category >= 0):.0%}, "
            f"release {np.mean(np.isfinite(self.item_release)):.0%}"
        )
        names = ", ".join(self.category_names[:8]) + (", ..." if len(self.category_names) > 8 else "")
        return "\n".join(
            [
                repr(self),
                f"  time span: {start} .. {end} ({(self.times[-1] - self.times[0]) / 86_400:.0f} days)",
                f"  {len(self.category_names)} categories: {names}",
                f"  items with known {known}",
            ]
        )


# ----------------------------------------------------------------------------------------------------------------
# Reading tables with line numbers.


@dataclass
class _Table:
    """A parsed file whose index holds the 1-based line (or Parquet row) number of each row, for error messages."""

    frame: pd.DataFrame
    path: Path
    unit: str = "line"
    expected: str = ""
    """What a row should look like, for messages."""

    def where(self, row: int) -> str:
        return f"{self.path}, {self.unit} {self.frame.index[row]}"

    def require(self, *columns: str | None, role: str = "log") -> None:
        missing = [c for c in columns if c is not None and c not in self.frame.columns]
        if missing:
            raise ValueError(
                f"{self.path}: no column(s) {missing} in this {role} file; columns found: {list(self.frame.columns)} "
                "(name the right ones with user_col=, item_col=, time_col=, ...)"
            )

    def numbers(self, column: str, integer: bool = False) -> NDArray[np.float64]:
        raw = self.frame[column]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values) | (integer & (values != np.round(values)))
        if bad.any():
            row = int(np.argmax(bad))
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{self.where(row)}: {column} {raw.iat[row]!r} is not {kind}; expected {self.expected}")
        return values

    def keys(self, column: str, numeric: bool) -> NDArray:
        """Ids of a column: integers if ``numeric`` (so "0042" and "42" match), else stripped strings."""
        if numeric:
            return self.numbers(column, integer=True).astype(np.int64)
        raw = self.frame[column]
        keys = raw.astype(str).str.strip()
        missing = (raw.isna() | (keys == "")).to_numpy()
        if missing.any():
            raise ValueError(f"{self.where(int(np.argmax(missing)))}: empty {column}; expected {self.expected}")
        return keys.to_numpy(dtype=object)

    def seconds(self, column: str) -> NDArray[np.float64]:
        """Times as seconds: numbers are seconds, anything else is parsed as a date (naive dates are UTC)."""
        raw = self.frame[column]
        is_date = pd.api.types.is_datetime64_any_dtype(raw)
        if not is_date and (pd.api.types.is_numeric_dtype(raw) or pd.to_numeric(raw, errors="coerce").notna().mean() >= 0.5):
            return self.numbers(column)  # in a column of mostly numbers, the others are errors
        values = _date_seconds(raw)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"{self.where(row)}: {column} {raw.iat[row]!r} is neither seconds nor a date; expected {self.expected}"
            )
        return values


def _date_seconds(raw: pd.Series) -> NDArray[np.float64]:
    """Seconds since 1970 of dates (NaN where unparseable); one inferred format first, then each leftover alone."""
    stamps = pd.to_datetime(raw, errors="coerce", utc=True)
    retry = stamps.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if retry.any():
        stamps[retry] = pd.to_datetime(raw[retry], errors="coerce", utc=True, format="mixed")
    return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)


def _encoding(path: Path, data: bytes, encodings: Sequence[str]) -> str:
    """The first of ``encodings`` that decodes ``data``; an error naming the line if the last one fails too."""
    for encoding in encodings[:-1]:
        try:
            data.decode(encoding)
            return encoding
        except UnicodeDecodeError:
            continue
    try:
        data.decode(encodings[-1])
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not valid {encodings[-1]} text ({error.reason})") from None
    return encodings[-1]


def _read_fields(
    path: Path, sep: str, names: Sequence[str], encodings: Sequence[str] = ("utf-8",), text: Sequence[str] = ()
) -> _Table:
    """A header-less file of ``sep``-separated fields; a line with another field count is an error.

    Columns in ``text`` stay strings, the others are numbers where every value is one. Blank lines are skipped.
    """
    expected = sep.join(names)
    data = path.read_bytes()
    encoding = _encoding(path, data, encodings)
    data = data.replace(sep.encode(), b"\x1f")  # one byte the C parser splits on; "::" cannot be a separator there
    raw = np.frombuffer(data, dtype=np.uint8)
    line_of = np.cumsum(raw == ord("\n")) - (raw == ord("\n"))  # (bytes,) 0-based line of each byte
    num_lines = int(line_of[-1]) + 1 if len(raw) else 0
    counts = np.bincount(line_of, weights=raw == 0x1F, minlength=num_lines).astype(np.int64) + 1  # (lines,)
    filled = np.bincount(line_of, weights=~np.isin(raw, list(b" \t\r\n")), minlength=num_lines) > 0
    if not filled.any():
        raise ValueError(f"{path} is empty; expected lines of {expected}")
    bad = np.flatnonzero(filled & (counts != len(names)))
    if len(bad):
        line = data.split(b"\n")[bad[0]].replace(b"\x1f", sep.encode()).decode(encoding).strip()
        raise ValueError(
            f"{path}, line {bad[0] + 1}: {counts[bad[0]]} fields in {line[:80]!r}; expected {len(names)}: {expected}"
        )
    body = raw[filled[line_of] & (raw != ord("\r"))].tobytes()
    frame = pd.read_csv(
        io.BytesIO(body), sep="\x1f", header=None, names=list(names), dtype=dict.fromkeys(text, str), quoting=3,
        keep_default_na=False, lineterminator="\n", encoding=encoding, engine="c",
    )  # fmt: skip
    assert len(frame) == int(filled.sum()), (path, len(frame), int(filled.sum()))
    frame.index = np.flatnonzero(filled) + 1
    return _Table(frame, path, expected=expected)


def _read_table(path: Path, sep: str | None = None, numeric: Sequence[str] = (), encoding: str = "utf-8") -> _Table:
    """A CSV/TSV file with a header or a Parquet file; text columns stay strings except those in ``numeric``.

    Blank lines are skipped; RecBole's ``name:type`` headers become ``name``.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
        frame.index = np.arange(len(frame)) + 1
        return _Table(frame, path, unit="row", expected=f"columns {list(frame.columns)}")
    sep = sep or _SEPARATORS.get(suffix) or ","
    options: dict[str, Any] = {"sep": sep, "quoting": 3 if sep == "\t" else 0, "encoding": encoding}  # 3: csv.QUOTE_NONE
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0, **options).columns]
        names = [c.split(":")[0].strip() if suffix in (".inter", ".item") else c.strip() for c in header]
        text = {raw: str for raw, name in zip(header, names, strict=True) if name not in numeric}
        frame = pd.read_csv(path, dtype=text, keep_default_na=False, skip_blank_lines=False, **options)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; expected a header line and one interaction per line") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"{path}: malformed file: {str(error).strip()} (the header has the expected field count)") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not valid {encoding} text ({error.reason})") from None
    frame.columns, frame.index = names, np.arange(len(frame)) + 2
    frame = frame[~(frame.isna() | (frame == "")).all(axis=1)]
    return _Table(frame, path, expected=sep.join(names))


# ----------------------------------------------------------------------------------------------------------------
# From parsed tables to a log.


def _dense(keys: NDArray) -> tuple[NDArray, NDArray[np.int64], NDArray[np.int64]]:
    """Sorted distinct keys (numerically when all are numbers), the dense id of each key, each id's first row."""
    uniques, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    if uniques.dtype == object:
        numeric = pd.to_numeric(pd.Series(uniques), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(numeric).all():
            order = np.argsort(numeric, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            uniques, first, codes = uniques[order], first[order], rank[codes]
    return uniques, codes.reshape(-1).astype(np.int64), first


def _first_genre(genres: pd.Series, sep: str | None) -> pd.Series:
    """The first of each item's listed genres (``sep``-separated; None: whitespace-separated)."""
    text = genres.fillna("").astype(str).str.strip()
    return text.str.split(sep, n=1, regex=False).str[0].fillna("").str.strip()


def _categories(genres: NDArray) -> tuple[NDArray[np.int64], tuple[str, ...]]:
    """Category index of each genre name (-1 for unknown ones) and the sorted category names."""
    genres = np.asarray(genres, dtype=str)
    known = ~np.isin(np.char.lower(genres), list(UNKNOWN_GENRES))
    names, codes = np.unique(genres[known], return_inverse=True)
    category = np.full(len(genres), -1, dtype=np.int64)
    category[known] = codes.reshape(-1)
    return category, tuple(str(n) for n in names)


def _years_to_seconds(years: NDArray[np.float64]) -> NDArray[np.float64]:
    """Seconds since 1970 of January 1 of each year (NaN stays NaN)."""
    out = np.full(years.shape, np.nan)
    ok = np.isfinite(years)
    out[ok] = (years[ok].astype(np.int64) - 1970).astype("datetime64[Y]").astype("datetime64[s]").astype(np.float64)
    return out


def _title_release(titles: pd.Series) -> NDArray[np.float64]:
    """Release from a trailing "(1995)" in the title; NaN without one."""
    years = pd.to_numeric(titles.str.extract(_TITLE_YEAR, expand=False), errors="coerce")
    return _years_to_seconds(years.to_numpy(dtype=np.float64, na_value=np.nan))


def _release_seconds(raw: pd.Series) -> NDArray[np.float64]:
    """Release times from years (numbers up to 3000), seconds (larger numbers) or dates; NaN where unknown."""
    numeric = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    given = raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    if given.any() and np.isfinite(numeric[given]).all():
        return _years_to_seconds(numeric) if np.nanmax(np.abs(numeric)) <= 3000 else numeric
    return _date_seconds(raw)


def _column(table: _Table, given: str | None, defaults: Sequence[str], role: str) -> str | None:
    """The metadata column to use: the given one (which must exist) or the first default present."""
    if given is not None:
        table.require(given, role=role)
        return given
    return next((c for c in defaults if c in table.frame.columns), None)


@dataclass(frozen=True)
class _Columns:
    """Column names of a log file and of its items file (the items file uses ``item`` too)."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    rating: str | None = None
    category: str | None = None
    title: str | None = None
    release: str | None = None
    genre_sep: str | None = "|"
    numeric_ids: bool = False
    """Ids must be integers (fixed layouts): checked line by line, and "0042" matches "42"."""
    metadata_in_items: bool = False
    """The metadata columns name columns of the items file (fixed layouts), which may be absent."""


def _item_info(table: _Table, columns: _Columns, role: str) -> pd.DataFrame:
    """Title, first genre and release of each item of ``table``, indexed by item key (an item's first row wins)."""
    frame = table.frame
    title_col = _column(table, columns.title, TITLE_COLUMNS, role)
    category_col = _column(table, columns.category, CATEGORY_COLUMNS, role)
    release_col = _column(table, columns.release, RELEASE_COLUMNS, role)
    empty = pd.Series("", index=frame.index, dtype=object)
    titles = frame[title_col].fillna("").astype(str).str.strip() if title_col else empty
    genres = _first_genre(frame[category_col], columns.genre_sep) if category_col else empty
    release = _release_seconds(frame[release_col]) if release_col else np.full(len(frame), np.nan)
    release = np.where(np.isnan(release), _title_release(titles), release)
    info = pd.DataFrame(
        {"title": titles.to_numpy(dtype=object), "genre": genres.to_numpy(dtype=object), "release": release},
        index=table.keys(columns.item, columns.numeric_ids),
    )
    duplicated = info.index.duplicated()
    if role == "items" and duplicated.any():
        logger.warning("%s: %d repeated item ids; the first entry of each is used", table.path, int(duplicated.sum()))
    return info[~duplicated]


def _ratings(
    table: _Table, column: str | None, given: tuple[float, float] | None
) -> tuple[NDArray[np.float64] | None, tuple[float, float] | None]:
    """Ratings and their scale: ``given`` (every rating must lie in it) or the observed (min, max); None if implicit."""
    if column is None:
        return None, None
    ratings = table.numbers(column)
    if given is None:
        low, high = float(ratings.min()), float(ratings.max())
        if low == high:
            logger.warning("%s: every rating is %g; reading the log as implicit (pass rating_range= to keep it)", table.path, low)
            return None, None
        return ratings, (low, high)
    low, high = (float(v) for v in given)
    if not low < high:
        raise ValueError(f"rating_range={given!r}; expected (low, high) with low < high")
    outside = (ratings < low) | (ratings > high)
    if outside.any():
        row = int(np.argmax(outside))
        raise ValueError(f"{table.where(row)}: {column} {ratings[row]:g} is outside the rating range [{low:g}, {high:g}]")
    return ratings, (low, high)


def _from_tables(
    log: _Table, items: _Table | None, columns: _Columns, rating_range: tuple[float, float] | None = None
) -> InteractionLog:
    """Build the log from an interactions table and an optional items table."""
    c = columns
    log.require(c.user, c.item, c.time, c.rating)
    if not len(log.frame):
        raise ValueError(f"{log.path} holds no interactions; expected one per line: {log.expected}")
    ratings, scale = _ratings(log, c.rating or ("rating" if "rating" in log.frame.columns else None), rating_range)
    times = log.seconds(c.time)
    user_keys, users, _ = _dense(log.keys(c.user, c.numeric_ids))
    item_keys, item_codes, first = _dense(log.keys(c.item, c.numeric_ids))
    if items is not None:
        items.require(c.item, role="items")
        info = _item_info(items, c, "items")
    else:
        info = _item_info(log, replace(c, title=None, category=None, release=None) if c.metadata_in_items else c, "log")
    meta = info.reindex(pd.Index(item_keys))  # NaN for items the items file lacks
    unknown = int(meta["title"].isna().sum())
    if items is not None and unknown:
        logger.info("%s: %d of %d items of the log have no entry in %s", log.path, unknown, len(item_keys), items.path)
    category, names = _categories(meta["genre"].fillna("").to_numpy(dtype=str))
    order = np.argsort(times, kind="stable")
    return InteractionLog(
        users=users[order],
        items=item_codes[order],
        times=times[order],
        ratings=None if ratings is None else ratings[order],
        rating_range=scale,
        user_ids=np.asarray(user_keys),
        item_ids=log.frame[c.item].astype(str).str.strip().to_numpy(dtype=object)[first],  # as written in the log
        item_titles=meta["title"].fillna("").to_numpy(dtype=str),
        item_category=category,
        category_names=names,
        item_release=meta["release"].to_numpy(dtype=np.float64, na_value=np.nan),
        source=str(log.path.parent if log.path.name in _FIXED_NAMES else log.path),
    )


# ----------------------------------------------------------------------------------------------------------------
# Layouts.

#: MovieLens 100K's genres in the order of its ``u.item`` flags (used when ``u.genre`` is absent).
ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_DAT_COLUMNS = _Columns("user", "item", "timestamp", "rating", "genres", numeric_ids=True, metadata_in_items=True)
_EXPECTED = {
    "movielens": "u.data (100K), ratings.dat (1M/10M) or ratings.csv (latest), each with its movies file",
    "movietweetings": "ratings.dat (+ movies.dat), in a folder whose name or README says MovieTweetings",
    "recbole": "<name>.inter (+ <name>.item), or the .inter file itself",
    "logged": "a .csv, .tsv, .txt or .parquet file (the file itself, not its folder)",
}


def _expected_layouts() -> str:
    return "; ".join(f"{layout}: {files}" for layout, files in _EXPECTED.items())


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; expected one of these logs ({_expected_layouts()})")
    return path


def _existing_folder(path: str | Path, layout: str) -> Path:
    path = _existing(path)
    if path.is_file() and path.name in _FIXED_NAMES:
        return path.parent
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder; the {layout} layout is a folder holding {_EXPECTED[layout]}")
    return path


def _movielens_100k(folder: Path) -> InteractionLog:
    log = _read_fields(folder / "u.data", "\t", ("user", "item", "rating", "timestamp"), ("latin-1",), ("item",))
    items = _movielens_100k_items(folder) if (folder / "u.item").is_file() else None
    columns = _Columns("user", "item", "timestamp", "rating", "genre", numeric_ids=True, metadata_in_items=True)
    return _from_tables(log, items, columns, (1.0, 5.0))


def _movielens_100k_items(folder: Path) -> _Table:
    """``u.item`` as a table of item, title, first flagged genre and release date (seconds)."""
    genres = ML_100K_GENRES
    if (folder / "u.genre").is_file():
        listed = _read_fields(folder / "u.genre", "|", ("genre", "index"), ("latin-1",), ("genre",))
        genres = tuple(listed.frame["genre"].to_numpy()[np.argsort(listed.numbers("index", integer=True), kind="stable")])
    names = ("item", "title", "release", "video_release", "url", *(f"flag_{i}" for i in range(len(genres))))
    table = _read_fields(folder / "u.item", "|", names, ("latin-1",), names)
    flag_columns = list(names[5:])
    flags = table.frame[flag_columns].to_numpy() == "1"  # (I, G)
    flags[:, np.isin(np.char.lower(np.asarray(genres, dtype=str)), list(UNKNOWN_GENRES))] = False
    first = np.where(flags.any(axis=1), np.asarray(genres, dtype=object)[flags.argmax(axis=1)], "")
    dates = pd.to_datetime(table.frame["release"], format="%d-%b-%Y", errors="coerce", utc=True)
    release = (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    frame = pd.DataFrame({"item": table.frame["item"], "title": table.frame["title"], "genre": first, "release": release})
    return _Table(frame, table.path, expected=table.expected)


def _movielens_dat(folder: Path) -> InteractionLog:
    log = _read_fields(folder / "ratings.dat", "::", ("user", "item", "rating", "timestamp"), ("utf-8", "latin-1"), ("item",))
    ratings = log.numbers("rating")
    if ratings.max() > 5:
        raise ValueError(
            f"{log.path}: ratings reach {ratings.max():g}, beyond MovieLens's 5 stars; "
            "for MovieTweetings (0-10) pass layout='movietweetings'"
        )
    whole_stars = bool((ratings >= 1).all() and (ratings == np.round(ratings)).all())
    return _from_tables(log, _movies_dat(folder, ("utf-8", "latin-1")), _DAT_COLUMNS, (1.0, 5.0) if whole_stars else (0.5, 5.0))


def _movies_dat(folder: Path, encodings: Sequence[str]) -> _Table | None:
    path = folder / "movies.dat"
    return (
        _read_fields(path, "::", ("item", "title", "genres"), encodings, ("item", "title", "genres")) if path.is_file() else None
    )


def _movielens_latest(folder: Path) -> InteractionLog:
    movies = folder / "movies.csv"
    columns = _Columns("userId", "movieId", "timestamp", "rating", "genres", numeric_ids=True, metadata_in_items=True)
    items = _read_table(movies) if movies.is_file() else None
    return _from_tables(_read_table(folder / "ratings.csv", numeric=("rating", "timestamp")), items, columns, (0.5, 5.0))


def load_movielens(path: str | Path) -> InteractionLog:
    """MovieLens from its folder: 100K (``u.data``), 1M/10M (``ratings.dat``) or latest/25M (``ratings.csv``).

    Movie files are optional. Rating scales: (1, 5), or (0.5, 5) where half stars occur (10M, latest).
    """
    folder = _existing_folder(path, "movielens")
    readers: dict[str, Callable[[Path], InteractionLog]] = {
        "u.data": _movielens_100k,
        "ratings.dat": _movielens_dat,
        "ratings.csv": _movielens_latest,
    }
    for name, reader in readers.items():
        if (folder / name).is_file():
            return reader(folder)
    raise FileNotFoundError(f"{folder} holds no MovieLens ratings file; expected {_EXPECTED['movielens']}")


def load_movietweetings(path: str | Path) -> InteractionLog:
    """MovieTweetings from its folder: ``ratings.dat`` (user::item::rating::timestamp, 0-10) and ``movies.dat``."""
    folder = _existing_folder(path, "movietweetings")
    if not (folder / "ratings.dat").is_file():
        raise FileNotFoundError(f"{folder / 'ratings.dat'} does not exist; expected {_EXPECTED['movietweetings']}")
    log = _read_fields(folder / "ratings.dat", "::", ("user", "item", "rating", "timestamp"), text=("item",))
    return _from_tables(log, _movies_dat(folder, ("utf-8",)), _DAT_COLUMNS, (0.0, 10.0))


def _recbole_inter(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("*.inter"))
    if len(found) != 1:
        what = f"several .inter files {[p.name for p in found]}" if found else "no .inter file"
        raise (ValueError if found else FileNotFoundError)(
            f"{path} holds {what}; expected RecBole atomic files {_EXPECTED['recbole']} (pass the .inter file to choose)"
        )
    return found[0]


def load_logged(
    path: str | Path,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    rating_col: str | None = None,
    category_col: str | None = None,
    title_col: str | None = None,
    release_col: str | None = None,
    sep: str | None = None,
    rating_range: tuple[float, float] | None = None,
    items_path: str | Path | None = None,
) -> InteractionLog:
    """Any log: a CSV/TSV/Parquet file, or RecBole atomic files (a ``.inter`` file or a folder holding one).

    ``rating_col`` None uses a ``rating`` column if there is one (else the log is implicit); ``rating_range``
    None takes the observed (min, max). Metadata (``category_col``, ``title_col``, ``release_col``; by default
    the first present of :data:`CATEGORY_COLUMNS`, :data:`TITLE_COLUMNS`, :data:`RELEASE_COLUMNS`) come from the
    items file (``items_path``, or RecBole's ``.item`` next to the ``.inter``) keyed by ``item_col``, else from
    the log's own rows. Times are seconds or dates; releases are years, seconds or dates; genres are
    ``|``-separated (RecBole: space-separated) and the first one is the category. ``sep`` overrides the
    separator implied by the suffixes of both files (``.csv``: ``,``; ``.tsv``, ``.txt``, ``.inter``: tab). RecBole's
    ``:token``-style type suffixes are stripped from column names.
    """
    path = _existing(path)
    recbole = path.is_dir() or path.suffix.lower() == ".inter"
    if recbole:
        path = _recbole_inter(path)
        sibling = path.with_suffix(".item")
        items_path = items_path or (sibling if sibling.is_file() else None)
    elif path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: cannot read a {path.suffix or 'suffix-less'} file as a log; expected {_EXPECTED['logged']}")
    columns = _Columns(user_col, item_col, time_col, rating_col, category_col, title_col, release_col, None if recbole else "|")
    numeric = (time_col, rating_col or "rating", release_col or "", *RELEASE_COLUMNS)
    items = _read_table(_existing(items_path), sep, numeric) if items_path is not None else None
    return _from_tables(_read_table(path, sep, numeric), items, columns, rating_range)


def load_recbole(path: str | Path, **options: Any) -> InteractionLog:
    """RecBole atomic files: a ``.inter`` file or a folder holding one; options as :func:`load_logged`."""
    path = _existing(path)
    if not (path.is_dir() or path.suffix.lower() == ".inter"):
        raise ValueError(f"{path} is not RecBole data; expected {_EXPECTED['recbole']}")
    return load_logged(path, **options)


# ----------------------------------------------------------------------------------------------------------------
# Detection and the cached entry point.

_LOADERS: dict[str, Callable[..., InteractionLog]] = {
    "movielens": load_movielens,
    "movietweetings": load_movietweetings,
    "logged": load_logged,
    "recbole": load_recbole,
}
_LOGGED_OPTIONS = tuple(name for name in inspect.signature(load_logged).parameters if name != "path")
#: Keyword options each layout's reader accepts.
LOADER_OPTIONS: dict[str, tuple[str, ...]] = {
    "auto": _LOGGED_OPTIONS,
    "movielens": (),
    "movietweetings": (),
    "logged": _LOGGED_OPTIONS,
    "recbole": _LOGGED_OPTIONS,
}
_CACHE: dict[tuple[Any, ...], InteractionLog] = {}


def _mentions_movietweetings(folder: Path) -> bool:
    if "movietweetings" in folder.name.lower():
        return True
    readmes = [p for p in folder.iterdir() if p.is_file() and p.name.lower().startswith(("readme", "source"))]
    return any("movietweetings" in p.read_bytes()[:4096].decode("utf-8", "replace").lower() for p in readmes)


def detect_layout(path: str | Path) -> str:
    """The layout of a log folder or file (see the module docstring); ``ValueError`` if it matches none."""
    path = _existing(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if path.name in _FIXED_NAMES:
            return detect_layout(path.parent)
        if suffix in TABLE_SUFFIXES:
            return "recbole" if suffix == ".inter" else "logged"
        raise ValueError(f"{path}: cannot tell the layout of a {suffix or 'suffix-less'} file; expected {_expected_layouts()}")
    names = {p.name for p in path.iterdir()}
    if names & {"u.data", "ratings.csv"}:
        return "movielens"
    if "ratings.dat" in names:
        return "movietweetings" if _mentions_movietweetings(path) else "movielens"
    if any(name.endswith(".inter") for name in names):
        return "recbole"
    shown = sorted(names)[:12]
    raise ValueError(f"{path} matches no log layout (files: {shown}); expected {_expected_layouts()}")


def _stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, modification times and sizes of the files a log is read from, so a changed file is read again."""
    files = sorted(path.iterdir()) if path.is_dir() else sorted(path.parent.glob(f"{glob.escape(path.stem)}.*"))
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.is_file())


def load_log(path: str | Path, layout: str = "auto", **options: Any) -> InteractionLog:
    """Read a log of any layout (``"auto"`` detects it, see the module docstring); ``options`` go to the reader.

    Logs are cached in memory by path, layout, options and the files' modification times (the last few are kept),
    so building several scenarios from one file parses it once.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown log layout {layout!r}; allowed: {list(LAYOUTS)}")
    path = _existing(path)
    path = path.parent if path.is_file() and path.name in _FIXED_NAMES else path  # the folder holds the movies file
    chosen = detect_layout(path) if layout == "auto" else layout
    unknown = sorted(set(options) - set(LOADER_OPTIONS[chosen]))
    if unknown:
        allowed = list(LOADER_OPTIONS[chosen]) or "none"
        raise ValueError(f"unknown option(s) {unknown} for the {chosen} layout of {path}; allowed: {allowed}")
    items_path = options.get("items_path")
    stamps = (_stamp(path), _stamp(_existing(items_path)) if items_path is not None else ())
    key = (str(path.resolve()), chosen, repr(sorted(options.items())), stamps)
    if key not in _CACHE:
        log = _LOADERS[chosen](path, **options)
        while len(_CACHE) >= _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
        _CACHE[key] = log
        logger.info("read %r", log)
    return _CACHE[key]


def clear_log_cache() -> None:
    """Forget every cached log."""
    _CACHE.clear()
