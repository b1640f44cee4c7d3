"""benchmarks/label_efficiency.py's plan and gap share, and sentiment_domains.py's target
data (parsing, neutral band, dedup, review-grouped split, the nested sdist archive)."""

import io
import json
import os
import tarfile

from benchmarks import label_efficiency, sentiment_domains

LINES = ["1_1\t-0.9\tno picture at all.\r\n", "1_2\t0.2\trepost from january.\r\n",
         "1_3\t2.5\ti love\tit!\r\n", "2_1\t-2.0\tit broke.\r\n", "2_2\t-2.0\tit broke.\r\n",
         "3_1\t0.8\tworks fine.\r\n", "4_1\t1.0\tgreat value.\r\n", "bad line\r\n"]


def test_neutral_snippets_repeats_and_bad_lines_are_dropped_and_labels_follow_sst2():
    rows = sentiment_domains.binary(sentiment_domains.parse(LINES))
    assert rows == [("1", "no picture at all.", "0"), ("1", "i love it!", "1"),
                    ("2", "it broke.", "0"), ("3", "works fine.", "1"), ("4", "great value.", "1")]


def test_split_holds_out_whole_reviews_seeded():
    rows = sentiment_domains.binary(sentiment_domains.parse(LINES))
    train, test = sentiment_domains.split(rows, test_size=2, seed=1)
    assert len(test) >= 2 and len(train) + len(test) == len(rows)
    assert not {r[0] for r in train} & {r[0] for r in test}
    assert (train, test) == sentiment_domains.split(rows, test_size=2, seed=1)


def _fake_sdist(folder):
    """A tar.gz laid out like vaderSentiment's sdist, holding LINES as the Amazon file."""
    def tar_gz(members):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    inner = tar_gz({sentiment_domains.DOMAINS["amazon"]: "".join(LINES).encode()})
    with open(os.path.join(folder, sentiment_domains.SDIST), "wb") as f:
        f.write(tar_gz({sentiment_domains.ARCHIVE: inner}))


def test_build_writes_test_train_and_unlabelled_text_from_the_sdist(tmp_path):
    _fake_sdist(tmp_path)  # present: nothing is downloaded
    paths = sentiment_domains.build("amazon", str(tmp_path), test_size=2)
    test = open(paths["test"], encoding="utf-8").read().splitlines()
    train = open(paths["train"], encoding="utf-8").read().splitlines()
    unlabeled = open(paths["unlabeled"], encoding="utf-8").read().splitlines()
    assert len(test) >= 2 and len(test) + len(train) == 5
    assert unlabeled == [line.split("\t")[0] for line in train]
    assert not set(unlabeled) & {line.split("\t")[0] for line in test}
    assert paths["counts"]["test"]["rows"] == len(test)
    assert json.load(open(tmp_path / "amazon" / "counts.json"))["train"]["rows"] == len(train)


def test_heldout_rows_are_the_last_ones_less_the_sampled_ones():
    rows = [[f"text {i}", str(i % 2)] for i in range(10)]
    picked = label_efficiency.sample(rows, "2", seed=1)
    held = label_efficiency.heldout(rows, picked, 6)
    assert held == [row for row in rows[4:] if row not in picked]
    assert not {tuple(r) for r in held} & {tuple(r) for r in picked}


def test_few_shot_plan_and_gap_share():
    assert label_efficiency.few_shot_plan(16, "8", 40, 16, 600) == (80, 640)
    assert label_efficiency.few_shot_plan(6920, "all", 40, 16, 600) == (600, 4800)
    assert abs(label_efficiency.gap_share(0.86, 0.80, 0.90) - 0.6) < 1e-9
