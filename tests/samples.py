"""Sample data for every registered task, shared by the task contract and the tests that
run a technique over several tasks. A new task adds its entry to TASK_DATA.

Example:
    flags, predict_input = TASK_DATA["text_classification"](tmp_path)
    cfg = helpers.experiment(tmp_path, task="text_classification", **flags)
"""

import random

import helpers


def text_classification_data(directory):
    """Flags and a predict input for a small sentiment task."""
    return dict(
        train_data=helpers.write_table(directory, "train.csv", helpers.sentiment_rows(48)),
        eval_data=helpers.write_table(directory, "eval.csv", helpers.sentiment_rows(16, seed=1)),
        test_data=helpers.write_table(directory, "test.csv", helpers.sentiment_rows(8, seed=2)),
    ), helpers.write_lines(directory, "input.txt", ["a good film", "an awful plot"])


def token_classification_data(directory):
    """Flags and a predict input for a small NER task (CoNLL files)."""
    rng = random.Random(0)

    def sentences(n):
        rows = []
        for _ in range(n):
            name, place = rng.choice(["john", "smith"]), rng.choice(["paris", "london"])
            rows += [f"{name} B-PER", "said O", "in O", f"{place} B-LOC", ". O", ""]
        return rows

    return dict(
        train_data=helpers.write_lines(directory, "train.txt", sentences(40)),
        eval_data=helpers.write_lines(directory, "dev.txt", sentences(8)),
        test_data=helpers.write_lines(directory, "test.txt", sentences(4)),
    ), helpers.write_lines(directory, "input.txt", ["john said hello in paris .", "the eu"])


def image_classification_data(directory):
    """Flags (a tiny image backbone too) and a predict input for a small image task."""
    import image_helpers

    counts = {"dark": 8, "light": 8}
    image_helpers.write_image_folder(directory / "input", {"any": 2})
    return dict(
        backbone=image_helpers.tiny_image_preset(directory),
        train_data=image_helpers.write_image_folder(directory / "train", counts),
        eval_data=image_helpers.write_image_folder(directory / "eval", {"dark": 3, "light": 3}),
        test_data=image_helpers.write_image_folder(directory / "test", {"dark": 2, "light": 2}),
    ), str(directory / "input")


def multi_task_data(directory):
    """Flags (two subtask flagfiles: sentiment, NER) and a predict input for both."""
    subtasks = []
    for name, make, task in (("sentiment", text_classification_data, "text_classification"),
                             ("entities", token_classification_data, "token_classification")):
        (directory / name).mkdir()
        data, _ = make(directory / name)
        lines = [f"--task={task}", f"--subtask_name={name}"]
        lines += [f"--{flag}={path}" for flag, path in data.items()]
        subtasks.append(helpers.write_lines(directory, f"{name}.cfg", lines))
    return dict(subtasks=tuple(subtasks)), helpers.write_lines(
        directory, "input.txt", ["john said a good film in paris", "an awful plot"])


def text_regression_data(directory):
    """Flags and a predict input for a small text-pair regression (the score: how many
    words two texts share, out of 4, plus 1 for genre "news"), with side features: a
    categorical `genre` and a numeric `votes`, each sometimes missing (empty)."""
    rng = random.Random(0)
    words = ["good", "film", "plot", "cast", "music", "story", "scene", "actor"]

    def rows(n):
        lines = ["text,pair,genre,votes,label"]
        for i in range(n):
            first = rng.sample(words, 4)
            shared = i % 5
            second = first[:shared] + [w for w in words if w not in first][:4 - shared]
            genre = ["news", "forum", ""][i % 3]
            votes = "" if i % 7 == 3 else str(rng.randint(0, 90))
            lines.append(f"{' '.join(first)},{' '.join(second)},{genre},{votes},"
                         f"{shared * 1.25 + (genre == 'news'):.2f}")
        return lines

    return dict(
        train_data=helpers.write_lines(directory, "train.csv", rows(40)),
        eval_data=helpers.write_lines(directory, "eval.csv", rows(16)),
        test_data=helpers.write_lines(directory, "test.csv", rows(8)),
        text_pair_column="pair", normalize_targets=True, categorical_columns=("genre",),
        numeric_columns=("votes",),
    ), helpers.write_lines(directory, "input.csv", ["text,pair,genre,votes",
                                                     "good film,good film,news,12",
                                                     "plot cast,music story,sports,"])


def image_regression_data(directory):
    """Flags (a tiny image backbone too) and a predict input for a small image regression
    with side features: a listing of images, a plan (categorical) and an age (numeric, some
    missing) whose target is their mean brightness (0-1), plus 0.3 on the pro plan."""
    import image_helpers

    def listing(name, count, seed, labelled=True):
        (directory / name).mkdir()
        lines = ["path,plan,age" + (",label" if labelled else "")]
        for i in range(count):
            array = image_helpers.image_array(seed + i, i)
            image_helpers.save_image(array, str(directory / name / f"{i}.png"))
            plan = ["pro", "free", ""][i % 3]
            age = "" if i % 5 == 2 else str(3 * i + seed % 7)
            target = array.mean() / 255 + 0.3 * (plan == "pro")
            lines.append(f"{name}/{i}.png,{plan},{age}" + (f",{target:.4f}" if labelled else ""))
        return helpers.write_lines(directory, f"{name}.csv", lines)

    return dict(
        backbone=image_helpers.tiny_image_preset(directory),
        train_data=listing("train", 16, 0), eval_data=listing("eval", 6, 100),
        test_data=listing("test", 4, 200), normalize_targets=True,
        categorical_columns=("plan",), numeric_columns=("age",),
    ), listing("input", 2, 300, labelled=False)


TASK_DATA = {
    "text_classification": text_classification_data,
    "token_classification": token_classification_data,
    "image_classification": image_classification_data,
    "multi_task": multi_task_data,
    "text_regression": text_regression_data,
    "image_regression": image_regression_data,
}
# Tasks on a transformer text backbone (LoRA targets, layers to freeze, text to replay).
TEXT_TASKS = ("text_classification", "token_classification")
