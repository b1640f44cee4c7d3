"""Hold-out splits and the rare-class warning, on plain lists (no TensorFlow)."""

from absl import logging

from tfimitate.data import splits


class Items(list):
    """A split: len(), a source name and subset(indices, source)."""

    def __init__(self, values, source="t.csv"):
        super().__init__(values)
        self.source = source

    def subset(self, indices, source):
        return Items([self[i] for i in indices], source)


def test_hold_out_is_seeded_in_file_order_and_names_its_size():
    train, evaluation = splits.hold_out(Items(range(20)), 0.2, seed=3, train_data="t.csv")
    again, _ = splits.hold_out(Items(range(20)), 0.2, seed=3, train_data="t.csv")
    assert len(evaluation) == 4 and sorted(train + evaluation) == list(range(20))
    assert train == again and train == sorted(train) and evaluation == sorted(evaluation)
    assert evaluation.source == "t.csv (held out: 4 of 20)"


def test_a_tiny_fraction_holds_out_one_example_and_says_so():
    train, evaluation = splits.hold_out(Items(range(10)), 0.001, seed=0, train_data="t.csv")
    assert len(train) == 9 and evaluation.source == "t.csv (held out: 1 of 10)"


def test_classes_with_one_example_are_warned_about(monkeypatch):
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda message, *args: warnings.append(message % args))
    assert splits.warn_rare_labels(["pos", "neg", "pos", "odd", "neg"], "t.csv") == ["odd"]
    assert warnings == [
        "t.csv: 1 classes have a single example (odd); the model can hardly learn them and a "
        "hold-out may leave them out of training. Add examples or check --label_column."]
    assert splits.warn_rare_labels(["pos", "neg", "pos", "neg"], "t.csv") == []
    assert len(warnings) == 1
