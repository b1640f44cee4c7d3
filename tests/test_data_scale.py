"""benchmarks/data_scale.py's parts: the generated data, the process-tree watcher, the table."""

import glob
import os
import sys

from benchmarks import data_scale, proc_tree, scale_data

SENTENCES = ["a gripping film", "one long string of cliches", "the cast is superb",
             "dull , dull , dull", "an utterly charming comedy"]
LABELS = [1, 0, 1, 0, 1]


def _rows(path):
    with open(path, "rb") as f:
        header, *rows = f.read().splitlines(keepends=True)
    assert header == scale_data.HEADER
    return rows


def test_rows_recombine_real_sentences_nest_and_shard_identically(tmp_path, monkeypatch):
    monkeypatch.setattr(scale_data, "BLOCK", 70)  # several blocks, cut across shards
    source = scale_data.Sentences(SENTENCES, LABELS)
    small = _rows(scale_data.write_tsv(source, 90, str(tmp_path / "small.tsv")))
    whole = _rows(scale_data.write_tsv(source, 400, str(tmp_path / "whole.tsv")))
    assert len(small) == 90 and len(whole) == 400 and small == whole[:90]
    pattern = scale_data.write_shards(source, 400, str(tmp_path / "shards"), 16)
    files = sorted(glob.glob(pattern))
    assert [os.path.basename(f) for f in files[:2]] == ["train-00000-of-00016.tsv",
                                                        "train-00001-of-00016.tsv"]
    assert [len(_rows(f)) for f in files] == [25] * 16
    assert [row for f in files for row in _rows(f)] == whole
    words = [sentence.split() for sentence in SENTENCES]
    for row in whole:
        text, label = row.decode().rstrip("\n").split("\t")
        first = [i for i, w in enumerate(words) if w[0] == text.split()[0]][0]
        assert int(label) == LABELS[first]
        assert any(text == " ".join(words[first][:k] + other[j:])  # start + end, cut at words
                   for k in range(1, len(words[first]) + 1)
                   for other in words for j in range(len(other) + 1)), row
    assert len(set(whole)) > 40  # recombined, not five sentences repeated


def test_watch_sums_the_tree_and_notes_marks(tmp_path):
    child = ("import subprocess, sys, time\n"
             "keep = bytearray(150 * 2**20)\n"
             "grandchild = subprocess.Popen([sys.executable, '-c', "
             "'import time; x = bytearray(150 * 2**20); time.sleep(1.0)'])\n"
             "time.sleep(0.6)\n"
             "print('ready to go', file=sys.stderr, flush=True)\n"
             "grandchild.wait()\n")
    run = proc_tree.watch([sys.executable, "-c", child], marks={"ready": "ready to"},
                          log=str(tmp_path / "child.log"))
    assert run["returncode"] == 0
    assert run["peak_rss_gib"] > 0.29  # both processes' 150 MiB at once
    assert run["max_rss_gib"] > 0.14  # the kernel's figure: the largest process (of any child)
    assert 0.5 < run["marks"]["ready"]["wall_s"] < run["wall_s"]
    middle = run["cpu_series"][len(run["cpu_series"]) // 2][0]
    assert 0 < proc_tree.cpu_at(run["cpu_series"], middle) <= run["cpu_s"]
    assert "ready to go" in (tmp_path / "child.log").read_text()


def test_ratios_and_table_say_which_targets_are_met():
    def row(peak, first_wall, first_cpu, rate):
        return {"data": {"files": 1, "megabytes": 1.0},
                "train": {"peak_rss_gib": peak, "cpu_s": 60.0, "data_path": "in memory",
                          "marks": {"first_step": {"wall_s": first_wall, "cpu_s": first_cpu}}},
                "steady": {"steady_ex_per_s": rate}, "steady_cpu": rate / 100}

    rows = {"10k": row(2.0, 40.0, 30.0, 50.0), "1m": row(2.5, 50.0, 40.0, 50.0),
            "4m_16": row(2.2, 44.0, 50.0, 48.0)}
    rows["4m"] = {"data": {"files": 1, "megabytes": 427.0},
                  "train": {"peak_rss_gib": 4.5, "error": "error: out of | memory"}}
    rows["1m_memory"] = rows.pop("1m")
    targets = data_scale.ratios(rows, "1m_memory")
    assert targets["peak_memory_4m_16_over_10k"] == 1.1
    assert targets["first_step_cpu_4m_16_over_10k"] == 1.667
    assert targets["steady_streamed_over_in_memory"] == 0.96
    assert targets["steady_per_cpu_streamed_over_in_memory"] == 0.96
    assert data_scale.ratios({"10k": rows["10k"]}, "1m_memory")["peak_memory_4m_16_over_10k"] is None
    info = {"cpu_model": "CPU", "cpu_vendor": "V", "cpu_family": "1", "cpu_model_number": "2",
            "cpu_class": "AVX2", "vector_extensions": ["avx2"], "cores": 2,
            "virtual_machine": False}
    text = data_scale.markdown({"rows": rows, "machine": info, "max_steps": 5, "steady_steps": 60,
                                "load_before": [1, 1, 1], "load_after": [2, 2, 2],
                                "lscpu_model": "CPU", "uptime_before": "u", "uptime_after": "u",
                                "commands": ["c"], "targets": targets})
    assert "| peak memory, 4 M rows in 16 shards / 10 k | 1.10 | <= 1.2 | yes |" in text
    assert "| CPU s to the first step, 4 M in 16 shards / 10 k | 1.67 | <= 1.5 | no |" in text
    assert "failed: error: out of / memory" in text
