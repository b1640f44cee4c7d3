"""The raw-text word splitter of NER serving: tricky cases, byte offsets, real CoNLL, op audit."""

import os

import pytest

import tfimitate  # noqa: F401
import tensorflow as tf

from helpers import SHARED_DATA
from tfimitate.tasks import ner_words

CASES = [
    # abbreviations and initials keep their periods; a sentence's last period is split off
    ("U.S. and U.N. troops met Acme Inc. and Mr. J. Smith at 3 p.m. in Paris.",
     "U.S. | and | U.N. | troops | met | Acme | Inc. | and | Mr. | J. | Smith | at | 3 | p.m. | in "
     "| Paris | ."),
    ("He works for Exxon Corp. in Calif. vs. Shell", "He | works | for | Exxon | Corp. | in | "
     "Calif. | vs. | Shell"),
    ("THE ST. LOUIS CO. said no.", "THE | ST. | LOUIS | CO. | said | no | ."),
    # contractions split the PTB way, also already split and upper case; names keep apostrophes
    ("John's dog doesn't bark, I'm sure they'll go", "John | 's | dog | does | n't | bark | , | "
     "I | 'm | sure | they | 'll | go"),
    ("can't won't DON'T SILVA'S", "ca | n't | wo | n't | DO | N'T | SILVA | 'S"),
    ("it does n't , John 's", "it | does | n't | , | John | 's"),
    ("O'Neill drank d'Italia at 9 o'clock in the 1990's", "O'Neill | drank | d'Italia | at | 9 | "
     "o'clock | in | the | 1990 | 's"),
    # numbers, dates, times, fractions, ranges, scores, signs; commas only inside numbers
    ("On 1996-12-06 at 10:30 it won 3-1 , 1/2 of 47,600 ( 3.5 % ) +0.7 .576 5-1/2 08/21/96",
     "On | 1996-12-06 | at | 10:30 | it | won | 3-1 | , | 1/2 | of | 47,600 | ( | 3.5 | % | ) | "
     "+0.7 | .576 | 5-1/2 | 08/21/96"),
    ("Paris,London cost $5.", "Paris | , | London | cost | $ | 5 | ."),
    # hyphenated words, a word cut at a hyphen, list numbers only at the start
    ("AL-AIN's 53-year-old U.S.-led anti- and pro-war Secretary-General",
     "AL-AIN | 's | 53-year-old | U.S.-led | anti- | and | pro-war | Secretary-General"),
    ("1. Jesper Parnevik 69", "1. | Jesper | Parnevik | 69"),
    ("1= Tiger Woods", "1= | Tiger | Woods"),
    ("He was born in 1996.", "He | was | born | in | 1996 | ."),
    # URLs, e-mail addresses, @mentions, #hashtags, currencies, punctuation runs
    ("See https://example.com/a?b=1, www.reuters.com. or mail jo.doe@mail.co.uk!",
     "See | https://example.com/a?b=1 | , | www.reuters.com | . | or | mail | "
     "jo.doe@mail.co.uk | !"),
    ("@jo_doe loves #NLP2024 and AT&T (@acme).", "@jo_doe | loves | #NLP2024 | and | AT&T | ( | "
     "@acme | ) | ."),
    ("US$ 5 and C$ 3 -- wait... (\"quoted\")", "US$ | 5 | and | C$ | 3 | -- | wait | ... | ( | "
     "\" | quoted | \" | )"),
    # Unicode quotes and dashes: curly apostrophes act like straight ones, en dash joins, em dash splits
    ("\u201cHello\u201d \u2018no\u2019 don\u2019t it\u2019s O\u2019Brien 1990\u20131995 "
     "war\u2014peace \u00abnon\u00bb",
     "\u201c | Hello | \u201d | \u2018 | no | \u2019 | do | n\u2019t | it | \u2019s | O\u2019Brien | "
     "1990\u20131995 | war | \u2014 | peace | \u00ab | non | \u00bb"),
    # accents, emoji (with modifiers, ZWJ families, flags), CJK ideographs one by one
    ("Z\u00fcrich caf\u00e9s na\u00efve.", "Z\u00fcrich | caf\u00e9s | na\u00efve | ."),
    ("great \U0001F600\U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467 "
     "\U0001F1EB\U0001F1F7!",
     "great | \U0001F600 | \U0001F44D\U0001F3FD | \U0001F468\u200d\U0001F469\u200d\U0001F467 | "
     "\U0001F1EB\U0001F1F7 | !"),
    ("\u6211\u4f4f\u5728\u5317\u4eac\u3002", "\u6211 | \u4f4f | \u5728 | \u5317 | \u4eac | \u3002"),
    ("\u6771\u4eac\u306b\u4f4f\u3093\u3067\u3044\u307e\u3059 \uc11c\uc6b8\uc5d0 \uc0b0\ub2e4",
     "\u6771 | \u4eac | \u306b | \u4f4f | \u3093\u3067\u3044\u307e\u3059 | \uc11c\uc6b8\uc5d0 | "
     "\uc0b0\ub2e4"),
    # whitespace of every kind; nothing at all
    ("  a\t\tb \n c\u00a0d\u3000e\x00f  ", "a | b | c | d | e | f"),
    ("   ", ""),
    ("", ""),
]


def split(texts):
    words, starts, ends = ner_words.split_words(tf.constant(texts))
    return words.to_list(), starts.to_list(), ends.to_list()


def test_tricky_cases_give_corpus_words_at_their_byte_offsets():
    words, starts, ends = split([text for text, _ in CASES])
    for (text, expected), row, row_starts, row_ends in zip(CASES, words, starts, ends):
        got = [w.decode() for w in row]
        assert got == (expected.split(" | ") if expected else []), text
        data = text.encode()
        assert [data[s:e] for s, e in zip(row_starts, row_ends)] == row, text


def test_each_sentence_of_a_batch_has_its_own_offsets():
    words, starts, ends = split(["Hi there", "", "J.R. Ewing's"])
    assert words == [[b"Hi", b"there"], [], [b"J.R.", b"Ewing", b"'s"]]
    assert starts == [[0, 3], [], [0, 5, 10]] and ends == [[2, 8], [], [4, 10, 12]]


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "conll2003")),
                    reason="needs ../shared/data/conll2003")
def test_conll2003_test_sentences_come_back_word_for_word():
    from tfimitate.data import conll
    from tfimitate.tasks import ner_skew

    sentences = conll.read_sentences(os.path.join(SHARED_DATA, "conll2003", "test.txt"), "test")
    assert ner_skew.word_match(sentences).share >= 0.99


def test_op_audit_accepts_a_saved_model_holding_the_splitter(tmp_path):
    from tfimitate.serving import op_audit

    class Splitter(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, text):
            words, starts, ends = ner_words.split_words(text)
            return {"words": words.to_tensor(""), "starts": starts.to_tensor(-1),
                    "ends": ends.to_tensor(-1)}

    path = str(tmp_path / "splitter")
    tf.saved_model.save(Splitter(), path)
    assert op_audit.audit_saved_model(path) == "2.12"  # the oldest TF Serving we know
    assert {"RegexSplitWithOffsets", "StaticRegexReplace"} <= op_audit.saved_model_ops(path)
    outputs = tf.saved_model.load(path).serve(tf.constant(["doesn't", "U.S. 1996-12-06"]))
    assert outputs["words"].numpy().tolist() == [[b"does", b"n't"], [b"U.S.", b"1996-12-06"]]
