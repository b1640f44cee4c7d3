"""Raw text to words the way NER corpora (CoNLL-2003, Penn Treebank) split them, in TF ops.

`split_words` finds the words of raw sentences with byte offsets into the
text, using only core TensorFlow and TF Text ops, so the export graph that
runs it passes the op audit and TF Serving splits words exactly as `predict`.

Words kept whole: abbreviations (`U.S.`, `Inc.`, `E.`, `p.m.`), numbers, dates,
times, fractions, ranges and scores (`1996-12-06`, `1/2`, `3-1`, `10:30`,
`47,600`, `+0.7`, `.576`), hyphenated and apostrophe words (`AL-AIN`,
`O'Neill`), URLs, e-mail addresses, @mentions, #hashtags, currency prefixes
(`US$`), runs of one punctuation mark (`--`, `...`), a list number at the start
(`1.`, `1=`) and a word cut at a line-end hyphen (`anti-`). Contractions are
split the PTB way (`does n't`, `John 's`, `I 'm`). Other punctuation becomes a
word of its own; each Chinese/Japanese ideograph is a word (as BERT splits
them); an emoji with its modifiers is one word.

RE2 has no look-ahead, so the split runs in two steps: byte-length-preserving
`regex_replace` passes first mark the bytes whose role depends on what follows
(the `n` of `n't`, the apostrophe of `'s`, the period of `Inc.`, ...) with
control characters, then one `regex_split_with_offsets` matches the words of
the marked text; the words are cut from the original text at those offsets.

Example:
    words, starts, ends = split_words(tf.constant(["U.S. shares didn't move."]))
    # words  [[b"U.S.", b"shares", b"did", b"n't", b"move", b"."]]
    # starts [[0, 5, 12, 15, 19, 23]], ends [[4, 11, 15, 18, 23, 24]]
"""

from typing import NamedTuple

import tensorflow as tf

# Control characters the marking passes write in place of bytes of the text (same length).
NOT_MARK = "\x01"     # the `n` of a split-off `n't`
CLITIC_MARK = "\x02"  # an apostrophe that starts a split-off `'s`, `'re`, `'ve`, `'ll`, `'d`, `'m`
JOIN_MARK = "\x03"    # a period, `=` or hyphen that stays with the word before it

SPACE = r"\s\x{0B}\x{85}\p{Z}\x{200B}\x{FEFF}"  # ASCII and Unicode spaces, zero-width space, BOM
LETTER = r"[^\P{L}\p{Han}]"  # a letter, except ideographs (each of those is a word)
WORD_CHAR = rf"(?:{LETTER}|[\pN\pM{JOIN_MARK}])"
APOSTROPHE = "['\u2019]"
CLITICS = r"(?i:s|re|ve|ll|d|m)"
# Abbreviations that keep their period (AP style: titles, companies, months, US states, Latin).
ABBREVIATIONS = (
    "Mr Mrs Ms Dr Prof Rev Gen Col Lt Sgt Capt Cmdr Adm Maj Gov Sen Rep Pres Hon Fr Jr Sr St "
    "Mt Ft Inc Corp Co Cos Ltd Bros Assn Dept Univ No Nos Vol Fig Ave Blvd Rd "
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec "
    "Ala Ariz Ark Calif Colo Conn Del Fla Ga Ill Ind Kan Kans Ky La Md Mass Mich Minn Miss Mo "
    "Mont Neb Nev Okla Ore Pa Tenn Tex Vt Va Wash Wis Wyo").split()
LOWERCASE_ABBREVIATIONS = "vs etc vol pp approx cf al".split()

# Marking passes: (pattern, rewrite), applied in order; each keeps every byte offset.
MARKS = (
    (r"\x00", " "),  # regex_split reads a text only up to its first NUL byte: make NULs spaces
    (rf"(?i)(\pL)n({APOSTROPHE}t)\b", rf"\1{NOT_MARK}\2"),
    (rf"([\pL\pN])'({CLITICS}\b)", rf"\1{CLITIC_MARK}\2"),
    (rf"([\pL\pN])\x{{2019}}({CLITICS}\b)", rf"\1{CLITIC_MARK * 3}\2"),  # U+2019 is 3 bytes
    (rf"^([{SPACE}]*\d+)[.=]([{SPACE}]|$)", rf"\1{JOIN_MARK}\2"),
    (r"(^|[^\pL\pN\pM])(" + "|".join(
        ABBREVIATIONS + [a.upper() for a in ABBREVIATIONS] + LOWERCASE_ABBREVIATIONS) + r")\.",
     rf"\1\2{JOIN_MARK}"),
    (rf"([\pL\pN])-([{SPACE}]|$)", rf"\1{JOIN_MARK}\2"),
)

UNIT = rf"(?:{LETTER}\.)+|(?:\d,\d|{WORD_CHAR})+"  # `U.S.`-style initials, or letters/digits
CONNECTOR = r"[-\x{2010}\x{2011}\x{2013}/:.'\x{2019}&=+_@]"  # inside a word: 3-1, 1/2, O'Neill
TAIL = rf"(?:{CONNECTOR}?(?:{UNIT}))*\+*"
URL_END = rf"[^{SPACE}<>\"'\x{{2019}}\x{{201D}}.,;:!?)\]}}]"
EMOJI = r"\x{1F3FB}-\x{1F3FF}\x{FE0F}"  # skin tones and the emoji variation selector
WORD_PATTERNS = (
    rf"(?i:https?://|ftp://|www\.)[^{SPACE}<>\"]*{URL_END}",              # URLs
    rf"(?:{NOT_MARK}|[nN]){APOSTROPHE}[tT]\b",                             # n't
    rf"(?:{CLITIC_MARK * 3}|{CLITIC_MARK}|{APOSTROPHE}){CLITICS}\b",       # 's 're 've 'll 'd 'm
    r"\.{2,}|-{2,}|\*{2,}|={2,}|_{2,}|~{2,}|!{2,}|\?{2,}|'{2,}|`{2,}",     # --  ...  ''
    r"\p{Lu}{1,3}\$",                                                      # US$ C$
    rf"[+.](?:\d,\d|\d){TAIL}",                                            # +0.7 .576
    rf"[@#]?(?:{UNIT}){TAIL}",                                             # words, numbers, e-mail
    r"\p{Han}",                                                            # one ideograph
    rf"[\x{{1F1E6}}-\x{{1F1FF}}]{{2}}|\p{{So}}[{EMOJI}]*(?:\x{{200D}}\p{{So}}[{EMOJI}]*)*",
    rf"[^{SPACE}]",                                                        # any other mark
)
# regex_split: spaces and words are delimiters; words are kept as tokens, spaces dropped.
DELIMITERS = rf"[{SPACE}]+|" + "|".join(WORD_PATTERNS)
KEPT = rf"[^{SPACE}]+"


class Words(NamedTuple):
    words: tf.RaggedTensor   # string [B, (W)]: the words, as they appear in the text
    starts: tf.RaggedTensor  # int64 [B, (W)]: byte offset of each word's first byte
    ends: tf.RaggedTensor    # int64 [B, (W)]: byte offset just after its last byte


def split_words(text):
    """Splits raw sentences (string [B]) into words with byte offsets (see module doc)."""
    import tensorflow_text as tf_text

    text = tf.convert_to_tensor(text, tf.string)
    marked = text
    for pattern, rewrite in MARKS:
        marked = tf.strings.regex_replace(marked, pattern, rewrite)
    _, starts, ends = tf_text.regex_split_with_offsets(marked, DELIMITERS, KEPT)
    flat_words = tf.strings.substr(tf.gather(text, starts.value_rowids()), starts.flat_values,
                                   ends.flat_values - starts.flat_values)
    return Words(starts.with_flat_values(flat_words), starts, ends)
