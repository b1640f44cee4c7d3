"""What the techniques on a text classifier's training texts share (few_shot,
adapt_pretraining, self_training): their base class, and the texts and flags they need.

Example:
    class FewShot(PhasedTextTechnique):
        def adapt_examples(self, examples, task, data, cfg):
            split = texts_in_memory(examples.split, FLAG, cfg)
"""

from tfimitate.errors import UserError
from tfimitate.training.hooks import Technique


class PhasedTextTechnique(Technique):
    """A technique on raw or tokenized texts that sets the run's phases and takes the
    student's forward pass (the step's loss) over for its first phase."""

    inputs = frozenset({"text", "word_pieces"})
    claims = {"trainable_weights", "student_forward"}


def texts_in_memory(split, flag, cfg):
    """`split`, or UserError naming `flag` when its texts are streamed (not in memory)."""
    if not hasattr(split, "texts"):
        raise UserError(f"{flag} needs the training texts in memory, but --train_data="
                        f"{cfg.train_data} is streamed; give one file under 64 MiB.")
    return split


def with_unlabeled(task, split, data, cfg):
    """`split` followed by the --unlabeled_data texts that are in no training, eval or test
    split (the task's `add_unlabeled`)."""
    return task.add_unlabeled(split, cfg.unlabeled_data, cfg, "--unlabeled_data",
                              cfg.unlabeled_column,
                              exclude=[s for s in (data.eval, data.test) if s is not None])


def text_classification_only(cfg, flag, purpose, mismatch="is not text classification"):
    """UserError "`flag` `purpose`, but --task=... `mismatch`; drop `flag`." unless the task
    is text classification."""
    if cfg.task != "text_classification":
        raise UserError(f"{flag} {purpose}, but --task={cfg.task} {mismatch}; drop {flag}.")


def positive_rate(cfg, name):
    """The learning rate option `name` of `cfg`, or UserError when it is not positive."""
    rate = getattr(cfg, name)
    if rate <= 0:
        raise UserError(f"--{name}={rate:g}: give a positive rate.")
    return rate
