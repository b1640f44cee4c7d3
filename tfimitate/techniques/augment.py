"""Text augmentation of the training data (`--augment`, `--augment_prob`).

    word_dropout:R  delete each word with probability R      (changes the words)
    swap:R          swap each word with the next one, prob. R (changes the words)
    char_noise:R    one typo in each word with probability R  (keeps the words)
    mask:R          each word piece becomes [MASK], prob. R   (keeps the words)
    unk:R           each word piece becomes [UNK], prob. R    (keeps the words)

A training example is augmented on a pass with probability --augment_prob (drawn
separately for the word operations and for the word-piece ones). Word operations
change raw texts before tokenization (`text_transform`, applied by the task's
training pipeline every pass); word-piece operations change the batches
(`adapt_dataset`), so they need a task that trains on text, and on word pieces (declared
as `inputs`; other tasks refuse them before any work). Every draw comes from a stateless seed (the run's seed, the pass
or batch, the example), so a resumed run replays the stream of an uninterrupted
one. Tasks whose labels follow the words (NER) take only the operations that keep
them. Evaluation, prediction and export never see augmentation.

Example:
    python -m tfimitate.train --flagfile=configs/sst2_minilm.cfg \\
        --augment=word_dropout:0.1,swap:0.05,mask:0.1,char_noise:0.05 --augment_prob=0.5
"""

from tfimitate import options
from tfimitate.errors import UserError
from tfimitate.training.hooks import Technique

OPTIONS = (
    options.string(
        "augment", "",
        "Text augmentation of the training data, NAME:RATE,...: word_dropout (delete words), "
        "swap (swap neighbouring words), char_noise (a typo in a word), mask / unk (replace "
        "word pieces with [MASK] / [UNK]); RATE is per word or piece. token_classification "
        "takes only char_noise, mask and unk (they keep words and tags aligned). Seeded, "
        "new every pass, training only."),
    options.number(
        "augment_prob", 0.5,
        "Probability that a training example is augmented on a pass."),
)

WORD_OPERATIONS = ("word_dropout", "swap", "char_noise")  # in the order they are applied
PIECE_OPERATIONS = ("mask", "unk")
# Word operations that change the number or order of words.
MOVES_WORDS = ("word_dropout", "swap")


def parse_rates(spec, flag, known, defaults=None):
    """Parses `NAME:RATE,NAME:RATE` into {name: rate}; UserError naming `flag` if a name
    is unknown or repeated or a rate is not a number in [0, 1].

    Example:
        parse_rates("swap:0.05,mask:0.1", "--augment", ("swap", "mask"))  # {"swap": 0.05, "mask": 0.1}
    """
    defaults = defaults or {}
    rates = {}
    for item in [part.strip() for part in spec.split(",") if part.strip()]:
        name, _, rate = item.partition(":")
        name = name.strip()
        if name not in known:
            raise UserError(f"{flag}={spec}: '{name}' is unknown; use {', '.join(known)}.")
        if name in rates:
            raise UserError(f"{flag}={spec}: '{name}' is given twice; give it once.")
        if not rate and name in defaults:
            rates[name] = defaults[name]
            continue
        try:
            value = float(rate)
        except ValueError:
            raise UserError(f"{flag}={spec}: '{item}' needs a rate, a number from 0 to 1 "
                            f"(e.g. {name}:0.1).") from None
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag}={spec}: the rate of {name} is {rate}, outside [0, 1]; "
                            "give a probability.")
        rates[name] = value
    if not rates:
        raise UserError(f"{flag}={spec}: names no operation; use {', '.join(known)}.")
    return rates


class Augment(Technique):
    """Word-level noise on raw texts and word-piece masking on batches."""

    name, flag, order = "augment", "--augment", 100
    claims = {"changed_inputs"}

    def __init__(self, rates, probability, seed):
        self.rates, self.probability, self.seed = rates, probability, seed
        # Word operations change raw texts, word-piece ones the batches' token_ids.
        self.inputs = ({"text"} if any(name in rates for name in WORD_OPERATIONS) else set()) | (
            {"word_pieces"} if any(name in rates for name in PIECE_OPERATIONS) else set())

    def text_transform(self, cfg, keep_word_count):
        import tensorflow as tf

        from tfimitate.data import noise

        moving = [name for name in MOVES_WORDS if name in self.rates]
        if keep_word_count and moving:
            raise UserError(
                f"--augment={cfg.augment}: {' and '.join(moving)} change the words, which "
                f"would misalign the per-word labels of --task={cfg.task}; use char_noise, "
                "mask or unk.")
        operations = {"word_dropout": noise.drop_words, "swap": noise.swap_words,
                      "char_noise": noise.typos}
        chosen = [(operations[name], self.rates[name]) for name in WORD_OPERATIONS
                  if name in self.rates]
        if not chosen:
            return None

        def transform(words, seed):
            def augmented():
                changed = words
                for index, (operation, rate) in enumerate(chosen):
                    changed = operation(changed, rate,
                                        tf.random.experimental.stateless_fold_in(seed, index + 1))
                return changed

            picked = tf.random.stateless_uniform([], seed) < self.probability
            return tf.cond(picked, augmented, lambda: words)

        return transform

    def adapt_dataset(self, dataset, cfg):
        import tensorflow as tf

        from tfimitate import backbones
        from tfimitate.data import noise

        chosen = [name for name in PIECE_OPERATIONS if name in self.rates]
        if not chosen:
            return dataset
        tokenizer = backbones.load_tokenizer(cfg.backbone)
        special = tf.constant(sorted(tokenizer.special_token_ids), tf.int32)
        unk_id = tokenizer.token_to_id(tokenizer.oov_token)
        replacement = {"mask": getattr(tokenizer, "mask_token_id", None) or unk_id, "unk": unk_id}

        def augment(index, batch):
            inputs, labels = batch
            seed = tf.stack([tf.constant(self.seed, tf.int64), index])
            token_ids = inputs["token_ids"]
            is_special = tf.reduce_any(tf.equal(tf.cast(token_ids, tf.int32)[..., None], special), -1)
            picked = tf.random.stateless_uniform(tf.shape(token_ids)[:1], seed) < self.probability
            maskable = inputs["padding_mask"] & ~is_special & picked[:, None]
            for number, name in enumerate(chosen):
                token_ids = noise.mask_pieces(
                    token_ids, maskable, self.rates[name], replacement[name],
                    tf.random.experimental.stateless_fold_in(seed, number + 1))
            return dict(inputs, token_ids=token_ids), labels

        return dataset.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)


def from_config(cfg):
    """The technique asked for by --augment, or None; UserError for bad settings."""
    if not cfg.augment:
        return None
    rates = parse_rates(cfg.augment, "--augment", WORD_OPERATIONS + PIECE_OPERATIONS)
    if not 0.0 <= cfg.augment_prob <= 1.0:
        raise UserError(f"--augment_prob={cfg.augment_prob} is outside [0, 1]; give the "
                        "probability that an example is augmented (e.g. 0.5).")
    return Augment(rates, cfg.augment_prob, cfg.seed)
