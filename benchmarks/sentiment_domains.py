"""A second labelled sentiment domain, built offline: the human-rated snippets that the
vaderSentiment source distribution (PyPI) ships (Hutto & Gilbert, ICWSM 2014).

Its additional_resources/hutto_ICWSM_2014.tar.gz holds, among others, 3,708 sentences of
Amazon product reviews (Hu & Liu, 2004; 309 reviews of 5 products, id REVIEW_SENTENCE) and
4,200 tweets, each with the mean sentiment of 20 raters on [-4, 4]. A snippet with
|mean| < 0.8 is neutral and dropped (SST-2's binarisation dropped the middle band [0.4, 0.6]
of its [0, 1] scale: the same band); the others become 1 (positive) or 0 (negative), as in
SST-2. Repeated texts keep their first occurrence. Whole reviews (a tweet is its own) are
held out in a seeded order until `test_size` snippets: test.tsv; the others are train.tsv
(labelled: the target-supervised upper bound) and unlabeled.txt (the same texts, no labels).

The sdist is fetched with pip (`pip download --no-deps --no-binary=:all:
vaderSentiment==3.3.2`, pinned in benchmarks/data-packages.txt) unless the folder has it.

Example:
    paths = build("amazon", "runs/label_efficiency/data")
    # {"train": ".../amazon/train.tsv", "test": ".../amazon/test.tsv",
    #  "unlabeled": ".../amazon/unlabeled.txt", "counts": {...}}
"""

import io
import json
import os
import random
import subprocess
import sys
import tarfile

PACKAGE, VERSION = "vaderSentiment", "3.3.2"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
ARCHIVE = f"{PACKAGE}-{VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
DOMAINS = {"amazon": "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
           "tweets": "hutto_ICWSM_2014/tweets_GroundTruth.txt"}
NEUTRAL = 0.8  # |mean rating| below this is neutral
SPLIT_SEED = 29


def sdist(folder):
    """The path of the pinned vaderSentiment sdist in `folder`, downloaded with pip if absent."""
    path = os.path.join(folder, SDIST)
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                        "--no-binary=:all:", f"{PACKAGE}=={VERSION}", "-d", folder], check=True)
    return path


def ratings(archive_path, domain):
    """[(review id, mean rating, text)] of `domain` read from the sdist at `archive_path`."""
    with tarfile.open(archive_path, "r:gz") as outer:
        inner = io.BytesIO(outer.extractfile(ARCHIVE).read())
    with tarfile.open(fileobj=inner, mode="r:gz") as resources:
        lines = resources.extractfile(DOMAINS[domain]).read().decode("utf-8").splitlines()
    return parse(lines)


def parse(lines):
    """[(review id, mean rating, text)] of ground-truth lines "ID<TAB>MEAN<TAB>TEXT" (the id's
    part before "_" names the review).

    Example:
        parse(["12_3\\t-1.5\\tit broke."])   # [("12", -1.5, "it broke.")]
    """
    rows = []
    for line in lines:
        parts = line.rstrip("\r\n").split("\t", 2)
        if len(parts) == 3 and parts[2].strip():
            text = " ".join(parts[2].split())  # no tab or line break survives
            rows.append((parts[0].split("_")[0], float(parts[1]), text))
    return rows


def binary(rows):
    """[(review, text, "1"/"0")] of non-neutral `rows`, repeated texts dropped."""
    seen, kept = set(), []
    for review, rating, text in rows:
        if abs(rating) >= NEUTRAL and text not in seen:
            seen.add(text)
            kept.append((review, text, "1" if rating > 0 else "0"))
    return kept


def split(rows, test_size, seed=SPLIT_SEED):
    """(train, test) rows of `binary`: whole reviews, in a seeded order, go to test until it
    has at least `test_size` rows."""
    reviews = sorted({review for review, _, _ in rows})
    random.Random(seed).shuffle(reviews)
    held, count = set(), 0
    sizes = {}
    for review, _, _ in rows:
        sizes[review] = sizes.get(review, 0) + 1
    for review in reviews:
        if count >= test_size:
            break
        held.add(review)
        count += sizes[review]
    return ([r for r in rows if r[0] not in held], [r for r in rows if r[0] in held])


def _write(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def build(domain, folder, test_size=500):
    """Writes <folder>/<domain>/{train.tsv,test.tsv,unlabeled.txt} (kept if already there)
    and returns their paths and counts."""
    target = os.path.join(folder, domain)
    paths = {name: os.path.join(target, name)
             for name in ("train.tsv", "test.tsv", "unlabeled.txt", "counts.json")}
    if not os.path.isfile(paths["counts.json"]):
        train, test = split(binary(ratings(sdist(folder), domain)), test_size)
        os.makedirs(target, exist_ok=True)
        _write(paths["train.tsv"], [f"{text}\t{label}" for _, text, label in train])
        _write(paths["test.tsv"], [f"{text}\t{label}" for _, text, label in test])
        _write(paths["unlabeled.txt"], [text for _, text, _ in train])
        counts = {name: {"rows": len(part), "positive": sum(r[2] == "1" for r in part)}
                  for name, part in (("train", train), ("test", test))}
        _write(paths["counts.json"], [json.dumps(counts)])  # last: marks the folder complete
    with open(paths["counts.json"], encoding="utf-8") as f:
        counts = json.load(f)
    return {"train": paths["train.tsv"], "test": paths["test.tsv"],
            "unlabeled": paths["unlabeled.txt"], "counts": counts}
