"""The CoNLL/JSONL sentence reader: formats, repairs and file:line errors (pure Python, fast)."""

import json
import os
from unittest import mock

import pytest

from helpers import SHARED_DATA, write_lines
from tfimitate.data import conll
from tfimitate.errors import UserError


def write_bytes(tmp_path, name, data):
    path = os.path.join(str(tmp_path), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_two_column_space_separated_with_docstart_and_blank_runs(tmp_path):
    path = write_lines(tmp_path, "a.txt", [
        "-DOCSTART- O", "", "EU B-ORG", "rejects O", "", "", "Peter B-PER", "Blackburn I-PER"])
    sentences = conll.read_sentences(path, "--train_data")
    assert [s.words for s in sentences] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert [s.lines for s in sentences] == [[3, 4], [7, 8]]


def test_four_column_tab_separated_with_crlf(tmp_path):
    path = write_bytes(tmp_path, "b.txt",
                       b"-DOCSTART- -X- -X- O\r\n\r\nEU\tNNP\tB-NP\tB-ORG\r\nrejects\tVBZ\tB-VP\tO\r\n")
    (sentence,) = conll.read_sentences(path, "--train_data")
    assert sentence.words == ["EU", "rejects"] and sentence.tags == ["B-ORG", "O"]


def test_jsonl_tokens_and_tags(tmp_path):
    path = write_lines(tmp_path, "c.jsonl", [
        json.dumps({"tokens": ["Paris", "is", "big"], "tags": ["S-LOC", "O", "O"]})])
    (sentence,) = conll.read_sentences(path, "--train_data")
    assert sentence.tags == ["S-LOC", "O", "O"] and sentence.lines == [1, 1, 1]


def test_column_count_change_names_the_line(tmp_path):
    path = write_lines(tmp_path, "d.txt", ["EU NNP B-ORG", "rejects VBZ O", "", "call O"])
    with pytest.raises(UserError, match=r"d\.txt:4: line has 2 columns but line 2 has 3"):
        conll.read_sentences(path, "--train_data")


def test_one_column_line_is_refused(tmp_path):
    path = write_lines(tmp_path, "e.txt", ["EU B-ORG", "rejects"])
    with pytest.raises(UserError, match=r"e\.txt:2: line has one column"):
        conll.read_sentences(path, "--train_data")


@pytest.mark.parametrize("tag", ["PER", "B_PER", "X-PER", "B-", "o"])
def test_badly_shaped_tag_names_the_line(tmp_path, tag):
    path = write_lines(tmp_path, "f.txt", ["EU B-ORG", f"Peter {tag}"])
    with pytest.raises(UserError, match=rf"f\.txt:2: tag '{tag}' is not O or B-/I-/E-/S-TYPE"):
        conll.read_sentences(path, "--train_data")


def test_empty_file_is_refused(tmp_path):
    path = write_lines(tmp_path, "g.txt", ["", "-DOCSTART- O", ""])
    with pytest.raises(UserError, match="holds no sentences"):
        conll.read_sentences(path, "--train_data")


def test_empty_jsonl_sentence_names_the_line(tmp_path):
    path = write_lines(tmp_path, "h.jsonl", [
        json.dumps({"tokens": ["a"], "tags": ["O"]}), json.dumps({"tokens": [], "tags": []})])
    with pytest.raises(UserError, match=r"h\.jsonl:2: the sentence has no tokens"):
        conll.read_sentences(path, "--train_data")


def test_jsonl_length_mismatch_names_the_line(tmp_path):
    path = write_lines(tmp_path, "i.jsonl", [json.dumps({"tokens": ["a", "b"], "tags": ["O"]})])
    with pytest.raises(UserError, match=r"i\.jsonl:1: 2 tokens but 1 tags"):
        conll.read_sentences(path, "--train_data")


def test_iob1_starts_are_repaired_with_one_counted_warning():
    sentences = [conll.Sentence(["a", "b", "c", "d"], ["I-PER", "I-PER", "O", "I-LOC"], [1, 2, 3, 4]),
                 conll.Sentence(["e", "f"], ["B-ORG", "I-LOC"], [6, 7])]
    with mock.patch.object(conll.logging, "warning") as warning:
        fixed = conll.repair(sentences, "iob2", "x.txt")
    assert [s.tags for s in fixed] == [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "B-LOC"]]
    assert warning.call_count == 1 and warning.call_args.args[2] == 3


def test_valid_iob2_and_iobes_are_left_alone():
    sentences = [conll.Sentence(["a", "b", "c"], ["B-PER", "E-PER", "S-LOC"], [1, 2, 3])]
    with mock.patch.object(conll.logging, "warning") as warning:
        assert conll.repair(sentences, "iobes", "x.txt") == sentences
    assert warning.call_count == 0


def test_iobes_tags_under_iob2_scheme_are_refused():
    sentences = [conll.Sentence(["a", "b"], ["O", "S-LOC"], [5, 6])]
    with pytest.raises(UserError, match=r"x\.txt:6: tag 'S-LOC' is IOBES"):
        conll.repair(sentences, "iob2", "x.txt")


def test_scheme_detection():
    assert conll.detect_scheme(["O", "B-PER", "I-PER"]) == "iob2"
    assert conll.detect_scheme(["O", "B-PER", "E-PER"]) == "iobes"


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "conll2003")),
                    reason="needs ../shared/data/conll2003")
def test_reads_the_shared_conll2003_test_split():
    sentences = conll.read_sentences(os.path.join(SHARED_DATA, "conll2003", "test.txt"), "--test_data")
    assert len(sentences) == 3453
    assert sentences[0].words[:3] == ["SOCCER", "-", "JAPAN"]


def test_a_pattern_or_list_joins_the_files_and_messages_name_the_real_file(tmp_path):
    write_lines(tmp_path, "train-01.txt", ["Paris B-LOC", "", "Smith B-PER"])
    write_lines(tmp_path, "train-00.txt", ["EU B-ORG", "rejects O"])
    jsonl = write_lines(tmp_path, "extra.jsonl", [json.dumps({"tokens": ["Bonn"], "tags": ["B-LOC"]})])
    pattern = os.path.join(str(tmp_path), "train-*.txt")
    sentences = conll.read_sentences(f"{pattern},{jsonl}", "--train_data")
    assert [s.words for s in sentences] == [["EU", "rejects"], ["Paris"], ["Smith"], ["Bonn"]]
    assert [(os.path.basename(s.file), s.lines) for s in sentences] == [
        ("train-00.txt", [1, 2]), ("train-01.txt", [1]), ("train-01.txt", [3]), ("extra.jsonl", [1])]
    write_lines(tmp_path, "train-02.txt", ["Bonn B-LOC", "", "Rome S-LOC"])
    with pytest.raises(UserError, match=r"train-02\.txt:3: tag 'S-LOC' is IOBES"):
        conll.repair(conll.read_sentences(pattern, "--train_data"), "iob2", pattern)
    write_lines(tmp_path, "train-03.txt", ["Bonn B-LOC", "Rome LOC"])
    with pytest.raises(UserError, match=r"train-03\.txt:2: tag 'LOC' is not O or B-"):
        conll.read_sentences(pattern, "--train_data")
    with pytest.raises(UserError, match=r"--eval_data=.*dev-\*\.txt: the pattern .* matches no file"):
        conll.read_sentences(os.path.join(str(tmp_path), "dev-*.txt"), "--eval_data")
