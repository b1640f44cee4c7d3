"""benchmarks/movies.py's data: the pinned tarball check and the CSVs, on a fake movies.json."""

import csv
import hashlib
import io
import json
import tarfile

import pytest

from benchmarks import movies


def film(title, rating, **fields):
    record = {"Title": title, "IMDB Rating": rating, "Production Budget": 1000,
              "Running Time min": None, "Release Date": "Jun 12 1998", "US Gross": 10,
              "Worldwide Gross": 20, "Rotten Tomatoes Rating": None, "MPAA Rating": "R",
              "Major Genre": None, "Creative Type": "Fantasy", "Source": None,
              "Distributor": "Strand", "IMDB Votes": 99, "Director": None}
    return dict(record, **fields)


def write_json(path, films):
    path.write_text(json.dumps(films))
    return str(path)


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_build_keeps_rated_titled_films_as_csv_rows_with_empty_missing_cells(tmp_path):
    films = [film(f"Film {i}", 5.0 + i / 10) for i in range(17)]
    films += [film(1776, 7.0, **{"Rotten Tomatoes Rating": 88, "Release Date": "Mar 16 1972"}),
              film(None, 6.0), film("  ", 6.0), film("Unrated", None)]
    counts = movies.build(write_json(tmp_path / "movies.json", films), str(tmp_path))
    assert counts == {"train": 13, "dev": 2, "test": 3}
    rows = {split: read_csv(tmp_path / f"{split}.csv") for split in counts}
    assert {split: len(part) for split, part in rows.items()} == counts
    every = [r for part in rows.values() for r in part]
    assert sorted(r["title"] for r in every) == sorted([f"Film {i}" for i in range(17)] + ["1776"])
    assert list(every[0]) == list(movies.COLUMNS)  # no IMDB Votes, no Director
    musical = next(r for r in every if r["title"] == "1776")
    assert (musical["imdb_rating"], musical["year"], musical["rotten_tomatoes"]) == ("7.0", "1972", "88")
    assert (musical["running_time"], musical["genre"], musical["source"]) == ("", "", "")
    assert (musical["budget"], musical["mpaa_rating"]) == ("1000", "R")
    again = tmp_path / "again"
    again.mkdir()
    movies.build(str(tmp_path / "movies.json"), str(again))
    assert read_csv(again / "test.csv") == rows["test"]  # the split is seeded


def test_every_side_column_of_the_configs_is_a_csv_column():
    for _, flags in movies.CONFIGS.values():
        for flag in flags:
            names = flag.split("=", 1)[1].split(",")
            assert set(names) <= set(movies.COLUMNS) - {"title", "imdb_rating"}
    assert "rotten_tomatoes" not in movies.CATALOGUE_NUMERIC


def fake_tarball(directory, films):
    data = json.dumps(films).encode()
    with tarfile.open(directory / movies.TARBALL, "w:gz") as archive:
        info = tarfile.TarInfo(movies.MEMBER)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256((directory / movies.TARBALL).read_bytes()).hexdigest()


def test_fetch_refuses_a_tarball_whose_sha256_differs_and_extracts_a_matching_one(tmp_path,
                                                                                 monkeypatch):
    digest = fake_tarball(tmp_path, [film("Heat", 8.2)])
    with pytest.raises(SystemExit, match="sha256"):
        movies.fetch(str(tmp_path))
    assert not (tmp_path / "movies.json").exists()
    monkeypatch.setattr(movies, "SHA256", digest)
    path = movies.fetch(str(tmp_path))
    assert json.load(open(path))[0]["Title"] == "Heat"


def test_side_only_encoding_follows_the_missing_value_rule():
    train = [{"budget": "1", "genre": "Drama"}, {"budget": "3", "genre": "Comedy"},
             {"budget": "", "genre": ""}]
    rows = train + [{"budget": "5", "genre": "Western"}]
    x = movies.encoded(rows, train, ["budget"], ["genre"])
    # constant, budget (mean 2, std 1 of the present values), missing, Comedy, Drama, OOV, missing
    assert x.tolist() == [[1, -1, 0, 0, 1, 0, 0], [1, 1, 0, 1, 0, 0, 0], [1, 0, 1, 0, 0, 0, 1],
                          [1, 3, 0, 0, 0, 1, 0]]
