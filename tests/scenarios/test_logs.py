"""Interaction-log readers: every layout on tiny hand-written files, detection, caching, and every bad input."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenarios.logs import InteractionLog, detect_layout, load_log

ML_100K_GENRES = "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy".split() + (
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western".split()
)


def seconds(*date: int) -> float:
    return datetime(*date, tzinfo=timezone.utc).timestamp()  # type: ignore[misc]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def flags(*genres: str) -> str:
    return "|".join("1" if name in genres else "0" for name in ML_100K_GENRES)


@pytest.fixture
def ml_100k(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    write(folder / "u.data", "1\t10\t4\t880000000\n2\t10\t5\t880000100\n1\t20\t3\t879999000\n3\t30\t1\t880000050\n")
    write(
        folder / "u.item",
        f"10|Café Story (1995)|01-Jan-1995||http://x|{flags('Animation', 'Comedy')}\n"
        f"20|Old (1920)|||http://y|{flags('unknown')}\n"
        f"40|Never Rated (1990)|01-Jan-1990||http://z|{flags('Drama')}\n",
        "latin-1",
    )
    write(folder / "u.genre", "".join(f"{name}|{i}\n" for i, name in enumerate(ML_100K_GENRES)) + "\n")
    return folder


def check_ids(log: InteractionLog) -> None:
    """Dense ids, time order and read-only arrays hold for every log."""
    assert log.users.dtype == log.items.dtype == np.int64
    assert (np.diff(log.times) >= 0).all()
    assert set(log.users) == set(range(log.num_users)) and set(log.items) == set(range(log.num_items))
    assert not log.users.flags.writeable and not log.item_titles.flags.writeable


def test_movielens_100k(ml_100k):
    log = load_log(ml_100k)
    check_ids(log)
    # time order: (1, 20) 879999000, (1, 10) 880000000, (3, 30) 880000050, (2, 10) 880000100
    np.testing.assert_array_equal(log.user_ids, [1, 2, 3])
    np.testing.assert_array_equal(log.item_ids, ["10", "20", "30"])  # 40 is never rated: not in the catalogue
    np.testing.assert_array_equal(log.users, [0, 0, 2, 1])
    np.testing.assert_array_equal(log.items, [1, 0, 2, 0])
    np.testing.assert_array_equal(log.ratings, [3, 4, 1, 5])
    np.testing.assert_array_equal(log.times, [879999000, 880000000, 880000050, 880000100])
    assert log.rating_range == (1.0, 5.0) and log.source == str(ml_100k)
    np.testing.assert_array_equal(log.item_titles, ["Café Story (1995)", "Old (1920)", ""])  # latin-1 decoded
    assert log.category_names == ("Animation",)  # first flagged genre; "unknown" is no category
    np.testing.assert_array_equal(log.item_category, [0, -1, -1])
    np.testing.assert_array_equal(log.item_release, [seconds(1995, 1, 1), seconds(1920, 1, 1), np.nan])  # date, title, none
    assert "4 interactions, 3 users, 3 items" in repr(log) and "time span" in log.describe()


def test_movielens_1m_latin1(tmp_path):
    folder = tmp_path / "ml-1m"
    write(folder / "ratings.dat", "1::1193::5::978300760\r\n1::661::3::978302109\r\n2::1193::4::978298413\r\n")  # CRLF
    write(folder / "movies.dat", "1193::Vol au-dessus (1975)::Drama\n661::Pêche géante (1996)::Animation|Children's\n", "latin-1")
    assert detect_layout(folder) == "movielens"
    log = load_log(folder)
    check_ids(log)
    np.testing.assert_array_equal(log.item_ids, ["661", "1193"])  # sorted by number, not as text
    np.testing.assert_array_equal(log.users, [1, 0, 0])  # user 2 rated first
    np.testing.assert_array_equal(log.items, [1, 1, 0])
    np.testing.assert_array_equal(log.ratings, [4, 5, 3])
    assert log.rating_range == (1.0, 5.0) and log.category_names == ("Animation", "Drama")
    np.testing.assert_array_equal(log.item_titles, ["Pêche géante (1996)", "Vol au-dessus (1975)"])
    np.testing.assert_array_equal(log.item_category, [0, 1])
    np.testing.assert_array_equal(log.item_release, [seconds(1996, 1, 1), seconds(1975, 1, 1)])


def test_movielens_latest_small(tmp_path):
    folder = tmp_path / "ml-latest-small"
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,0.5,964981247\n7,1,5.0,964982224\n")
    write(
        folder / "movies.csv",
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama\n2,Untitled,(no genres listed)\n',
    )
    log = load_log(folder)
    check_ids(log)
    assert log.rating_range == (0.5, 5.0)
    np.testing.assert_array_equal(log.users, [0, 1, 0])
    np.testing.assert_array_equal(log.items, [1, 0, 0])
    np.testing.assert_array_equal(log.ratings, [0.5, 5.0, 4.0])
    np.testing.assert_array_equal(log.item_titles, ["American President, The (1995)", "Untitled"])
    assert log.category_names == ("Comedy",)
    np.testing.assert_array_equal(log.item_category, [0, -1])
    np.testing.assert_array_equal(log.item_release, [seconds(1995, 1, 1), np.nan])


@pytest.fixture
def movietweetings(tmp_path: Path) -> Path:
    folder = tmp_path / "MovieTweetings-tiny"
    write(folder / "ratings.dat", "1::0104257::10::1365029107\n2::0104257::0::1365029000\n\n2::1074638::7::1366576639\n")
    write(folder / "movies.dat", "0104257::A Few Good Men (1992)::Crime|Drama\n1074638::Película (2013)::\n")
    return folder


def test_movietweetings(movietweetings):
    assert detect_layout(movietweetings) == "movietweetings"
    log = load_log(movietweetings)
    check_ids(log)
    assert log.rating_range == (0.0, 10.0)
    np.testing.assert_array_equal(log.item_ids, ["0104257", "1074638"])  # ids as written (IMDb ids keep their zeros)
    np.testing.assert_array_equal(log.users, [1, 0, 1])
    np.testing.assert_array_equal(log.ratings, [0, 10, 7])
    np.testing.assert_array_equal(log.item_titles, ["A Few Good Men (1992)", "Película (2013)"])
    assert log.category_names == ("Crime",)
    np.testing.assert_array_equal(log.item_category, [0, -1])  # an empty genre field is no category
    np.testing.assert_array_equal(log.item_release, [seconds(1992, 1, 1), seconds(2013, 1, 1)])


def test_csv_with_dates_tokens_and_metadata_in_rows(tmp_path):
    path = write(
        tmp_path / "log.csv",
        "user_id,item_id,timestamp,rating,genre,title\n"
        "u2,b,2020-01-02 10:00:00,2,Drama|Crime,B (2001)\n"
        "u1,a,2020-01-01 00:00:00,4,Action,A\n"
        "u1,b,2020-01-03T00:00:00,5,Drama,B (2001)\n",
    )
    log = load_log(path)
    check_ids(log)
    np.testing.assert_array_equal(log.user_ids, ["u1", "u2"])
    np.testing.assert_array_equal(log.times, [seconds(2020, 1, 1), seconds(2020, 1, 2, 10), seconds(2020, 1, 3)])
    np.testing.assert_array_equal(log.users, [0, 1, 0])
    np.testing.assert_array_equal(log.items, [0, 1, 1])
    assert log.rating_range == (2.0, 5.0)  # observed (min, max) when not given
    assert log.category_names == ("Action", "Drama")  # the item's first row wins
    np.testing.assert_array_equal(log.item_category, [0, 1])
    np.testing.assert_array_equal(log.item_release, [np.nan, seconds(2001, 1, 1)])
    assert load_log(path, rating_range=(0, 5), layout="logged").rating_range == (0.0, 5.0)


def test_tsv_implicit_with_items_file_and_custom_columns(tmp_path):
    path = write(tmp_path / "clicks.tsv", "uid\tiid\tts\n7\t1\t30\n7\t2\t10\n8\t3\t20\n")
    items = write(tmp_path / "items.csv", "iid,name,kind,year\n1,First,toys,2001\n2,Second,books|toys,\n9,Unused,x,1999\n")
    log = load_log(path, user_col="uid", item_col="iid", time_col="ts", title_col="name", category_col="kind", items_path=items)
    check_ids(log)
    assert log.ratings is None and log.rating_range is None  # no rating column: implicit
    np.testing.assert_array_equal(log.items, [1, 2, 0])
    np.testing.assert_array_equal(log.item_titles, ["First", "Second", ""])  # item 3 is not in the items file
    assert log.category_names == ("books", "toys")
    np.testing.assert_array_equal(log.item_category, [1, 0, -1])
    np.testing.assert_array_equal(log.item_release, [seconds(2001, 1, 1), np.nan, np.nan])  # "year" found by default


def test_parquet_with_datetime_column(tmp_path):
    path = tmp_path / "log.parquet"
    frame = pd.DataFrame(
        {
            "user_id": [5, 6, 5],
            "item_id": [100, 100, 200],
            "timestamp": pd.to_datetime(["2021-05-01", "2021-04-01", "2021-06-01"]),
            "rating": [1.0, 3.0, 2.0],
            "category": ["x", "x", "y"],
        }
    )
    frame.to_parquet(path)
    log = load_log(path)
    check_ids(log)
    np.testing.assert_array_equal(log.times, [seconds(2021, 4, 1), seconds(2021, 5, 1), seconds(2021, 6, 1)])
    np.testing.assert_array_equal(log.users, [1, 0, 0])
    np.testing.assert_array_equal(log.item_ids, ["100", "200"])
    np.testing.assert_array_equal(log.ratings, [3.0, 1.0, 2.0])
    assert log.category_names == ("x", "y")


def test_recbole_atomic_files(tmp_path):
    folder = tmp_path / "ml-tiny"
    write(
        folder / "ml-tiny.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t300\n2\t20\t2\t100\n1\t30\t5\t200\n",
    )
    write(
        folder / "ml-tiny.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Comedy\n20\tHeat\t1995\tAction Crime\n",
    )
    assert detect_layout(folder) == "recbole" and detect_layout(folder / "ml-tiny.inter") == "recbole"
    log = load_log(folder)
    check_ids(log)
    np.testing.assert_array_equal(log.items, [1, 2, 0])
    np.testing.assert_array_equal(log.item_titles, ["Toy Story", "Heat", ""])
    assert log.category_names == ("Action", "Animation")  # first token of the genre sequence
    np.testing.assert_array_equal(log.item_category, [1, 0, -1])
    np.testing.assert_array_equal(log.item_release, [seconds(1995, 1, 1), seconds(1995, 1, 1), np.nan])
    assert log.rating_range == (2.0, 5.0)
    assert load_log(folder / "ml-tiny.inter", layout="recbole").num_items == 3


def test_cache_reads_once_and_notices_changes(movietweetings):
    first = load_log(movietweetings)
    assert load_log(movietweetings) is first
    ratings = movietweetings / "ratings.dat"
    ratings.write_text(ratings.read_text() + "3::0104257::5::1366576640\n")
    os.utime(ratings, ns=(ratings.stat().st_atime_ns, ratings.stat().st_mtime_ns + 10**9))
    again = load_log(movietweetings)
    assert again is not first and len(again) == len(first) + 1


# ------------------------------------------------------------------------------------------------------------------
# Bad input.


def test_missing_paths_and_unknown_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist; expected one of these logs.*movielens: u\.data"):
        load_log(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"unknown log layout 'imdb'; allowed: \['auto', 'movielens'"):
        load_log(tmp_path, layout="imdb")
    write(tmp_path / "notes.md", "hello")
    with pytest.raises(ValueError, match=r"matches no log layout \(files: \['notes.md'\]\).*u\.data.*ratings\.dat.*\.inter"):
        load_log(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no MovieLens ratings file; expected u.data"):
        load_log(tmp_path, layout="movielens")
    with pytest.raises(FileNotFoundError, match=r"ratings\.dat does not exist; expected ratings\.dat"):
        load_log(tmp_path, layout="movietweetings")
    with pytest.raises(FileNotFoundError, match=r"holds no \.inter file; expected RecBole"):
        load_log(tmp_path, layout="recbole")
    with pytest.raises(ValueError, match=r"log\.json: cannot tell the layout of a \.json file"):
        load_log(write(tmp_path / "log.json", "{}"))
    with pytest.raises(ValueError, match=r"cannot read a \.json file as a log"):
        load_log(tmp_path / "log.json", layout="logged")


def test_unknown_reader_options(movietweetings):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['user_col'\] for the movietweetings layout.*allowed: none"):
        load_log(movietweetings, user_col="uid")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['usr_col'\] for the logged layout.*'user_col'"):
        load_log(write(movietweetings / "log.csv", "user_id,item_id,timestamp\n1,2,3\n"), usr_col="uid")


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        ("1::2::3::4\n1::2::3\n", r"ratings\.dat, line 2: 3 fields in '1::2::3'; expected 4: user::item::rating::timestamp"),
        ("1::2::3::4\n\n1::2::3::4::5\n", r"ratings\.dat, line 3: 5 fields"),  # blank lines still count
        ("1::2::3::4\n1::2::good::4\n", r"ratings\.dat, line 2: rating 'good' is not a number; expected user::item"),
        ("abc::2::3::4\n", r"ratings\.dat, line 1: user 'abc' is not an integer"),
        ("1::2::3::4\n1::2::3::soon\n", r"ratings\.dat, line 2: timestamp 'soon' is not a number"),
        ("1::2::3::4\n1::2::11::5\n", r"ratings\.dat, line 2: rating 11 is outside the rating range \[0, 10\]"),
        ("", r"ratings\.dat is empty; expected lines of user::item::rating::timestamp"),
        ("\n \n", r"ratings\.dat is empty"),
    ],
)
def test_malformed_movietweetings_lines(tmp_path, ratings, message):
    write(tmp_path / "movietweetings" / "ratings.dat", ratings)
    with pytest.raises(ValueError, match=message):
        load_log(tmp_path / "movietweetings")


def test_bad_encoding_and_movielens_scale(tmp_path):
    folder = tmp_path / "movietweetings"
    write(folder / "ratings.dat", "1::2::3::4\n")
    (folder / "movies.dat").write_bytes(b"2::Fine (2000)::Drama\n3::Caf\xe9 (2001)::Drama\n")
    with pytest.raises(ValueError, match=r"movies\.dat, line 2: not valid utf-8 text"):
        load_log(folder)
    write(tmp_path / "ml" / "ratings.dat", "1::2::3::4\n1::3::8::5\n")
    with pytest.raises(ValueError, match=r"ratings reach 8, beyond MovieLens's 5 stars; .*layout='movietweetings'"):
        load_log(tmp_path / "ml")


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("user_id,item_id\n1,2\n", {}, r"log\.csv: no column\(s\) \['timestamp'\].*columns found: \['user_id', 'item_id'\]"),
        ("u,i,t\n1,2,3\n", {"user_col": "u", "item_col": "i", "time_col": "t", "rating_col": "r"}, r"no column\(s\) \['r'\]"),
        ("user_id,item_id,timestamp\n1,2,3\n1,2,3,4\n", {}, r"log\.csv: malformed file: .*Expected 3 fields in line 3, saw 4"),
        ("user_id,item_id,timestamp\n1,2,3\n1,,5\n", {}, r"log\.csv, line 3: empty item_id"),
        ("user_id,item_id,timestamp\n1,2,2020-01-01\n1,3,someday\n", {}, r"log\.csv, line 3: timestamp 'someday' is neither"),
        ("user_id,item_id,timestamp,rating\n1,2,3,4\n1,2,3,x\n", {}, r"log\.csv, line 3: rating 'x' is not a number"),
        (
            "user_id,item_id,timestamp,rating\n1,2,3,4\n",
            {"rating_range": (1, 3)},
            r"line 2: rating 4 is outside the rating range",
        ),
        ("user_id,item_id,timestamp\n", {}, r"log\.csv holds no interactions; expected one per line: user_id,item_id,timestamp"),
        ("", {}, r"log\.csv is empty; expected a header line"),
        ("user_id,item_id,timestamp\n1,2,3\n", {"category_col": "genre"}, r"no column\(s\) \['genre'\] in this log file"),
    ],
)
def test_bad_csv_logs(tmp_path, text, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_log(write(tmp_path / "log.csv", text), **kwargs)


def test_items_file_errors(tmp_path):
    log = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,2,3\n")
    with pytest.raises(FileNotFoundError, match="items.csv does not exist"):
        load_log(log, items_path=tmp_path / "items.csv")
    items = write(tmp_path / "items.csv", "id,title\n2,Two\n")
    with pytest.raises(ValueError, match=r"items\.csv: no column\(s\) \['item_id'\] in this items file; columns found"):
        load_log(log, items_path=items)
