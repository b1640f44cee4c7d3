"""Precision chosen by the CPU: --precision=auto from the CPU flags, and the export precisions
(float32, bfloat16, int8, auto) with their op audit, parity and accuracy gate."""

import dataclasses
import logging
import os

import keras
import pytest

from tfimitate import runtime

CPUINFO = "processor\t: 0\nmodel name\t: {model}\nflags\t\t: fpu sse4_2 avx avx2 fma {flags}\n\n"
EPYC_ZEN4 = CPUINFO.format(model="AMD EPYC 9R14", flags="avx512f avx512_bf16 avx512_vnni")
XEON_AMX = CPUINFO.format(model="Intel Xeon Platinum 8488C", flags="avx512f amx_tile amx_bf16")
ZEN3 = CPUINFO.format(model="AMD EPYC 7R13", flags="vaes")


@pytest.mark.parametrize("cpuinfo, policy, unit", [
    (EPYC_ZEN4, "mixed_bfloat16", "avx512_bf16"),
    (XEON_AMX, "mixed_bfloat16", "amx_bf16"),
    (ZEN3, "float32", "no AMX or AVX512-BF16"),
])
def test_auto_reads_the_bf16_units_from_the_cpu_flags(tmp_path, cpuinfo, policy, unit):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    resolved, reason = runtime.resolve_precision("auto", runtime.cpu_flags(str(path)))
    assert resolved == policy and unit in reason


def test_auto_keeps_float32_on_accelerators_and_explicit_choices_stand():
    bf16 = {"avx512_bf16"}
    assert runtime.resolve_precision("auto", bf16, "GPU")[0] == "float32"
    assert runtime.resolve_precision("auto", bf16, "TPU")[0] == "float32"
    assert runtime.resolve_precision("float32", bf16)[0] == "float32"
    assert runtime.resolve_precision("mixed_float16", set())[0] == "mixed_float16"
    assert runtime.cpu_flags("/nonexistent/cpuinfo") == set()


def test_explicit_bf16_without_bf16_units_is_set_with_a_warning_naming_its_cost(
        monkeypatch, caplog):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2"})
    try:
        with caplog.at_level(logging.INFO, logger="absl"):
            assert runtime.set_precision("mixed_bfloat16")[0] == "mixed_bfloat16"
            assert runtime.set_precision("auto")[0] == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "8% slower" in warnings[0] and "--precision=auto" in warnings[0]
    assert any("Precision float32 (--precision=auto: the CPU has no AMX" in r.getMessage()
               for r in caplog.records)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained tiny text classifier (float32) with its eval split and serving examples."""
    import tensorflow as tf

    import helpers
    from tfimitate import runs
    from tfimitate.tasks import base
    from tfimitate.tasks.text_classification import TextClassification

    root = tmp_path_factory.mktemp("precision")
    task = TextClassification()
    cfg = helpers.experiment(
        root, backbone=helpers.tiny_bert_preset(root), precision="float32",
        train_data=helpers.write_table(root, "train.csv", helpers.sentiment_rows(16)),
        eval_data=helpers.write_table(root, "eval.csv", helpers.sentiment_rows(24, seed=1)))
    data = task.load_data(cfg)
    cfg = cfg.replace(labels=data.labels)
    runtime.set_precision("float32")
    run = base.Run(cfg, runs.build_model(task, cfg, len(data.labels), []),
                   task.make_preprocessor(cfg), tf.distribute.get_strategy())
    return task, run, data.eval, root


def _export(tiny_run, precision, name=None):
    from tfimitate import workflow

    task, run, eval_split, root = tiny_run
    export_dir = str(root / (name or f"export_{precision}"))
    cfg = run.cfg.replace(export_dir=export_dir, export_precision=precision)
    run = dataclasses.replace(run, cfg=cfg)
    return workflow.export_model(task, run, task.serving_examples(eval_split), step=0,
                                 eval_split=eval_split), export_dir


@pytest.mark.parametrize("precision", ["int8", "bfloat16"])
def test_int8_and_bf16_exports_pass_audit_parity_and_gate_and_record_it(tiny_run, precision):
    import tensorflow as tf

    from tfimitate import export_precision
    from tfimitate.serving import export

    path, _ = _export(tiny_run, precision)
    record = export_precision.read(path)
    assert record["export_precision"] == precision and record["requested"] == precision
    assert record["candidates"][precision]["passed"] and record["eval_examples"] == 24
    assert record["candidates"][precision]["texts_per_s"] > 0
    assert os.path.isfile(os.path.join(path, export.SERVING_FILE))  # audited, parity checked
    graph = tf.saved_model.load(path)
    probabilities = graph.signatures["serving_default"](text=tf.constant(["good fun"]))
    assert probabilities["probabilities"].shape == [1, 2]
    run = tiny_run[1]
    assert run.model.compute_dtype == "float32"  # the trained model is left as it was
    assert not any(getattr(layer, "quantization_mode", None) for layer in run.model._flatten_layers())


def test_auto_keeps_the_fastest_precision_that_passes(tiny_run):
    from tfimitate import export_precision, runs

    task, run, eval_split, root = tiny_run
    examples = task.serving_examples(eval_split)
    choice = export_precision.choose(task, run, "auto", 0.5, eval_split, examples,
                                     runs.write_labels(str(root), run.labels))
    candidates = choice.record["candidates"]
    expected = {"float32", "int8"} | ({"bfloat16"} if runtime.has_bf16_units() else set())
    assert set(candidates) == expected
    passed = {name: c["texts_per_s"] for name, c in candidates.items() if c["passed"]}
    assert choice.precision == max(passed, key=passed.get)


def test_the_accuracy_gate_refuses_an_export_that_loses_accuracy_and_writes_nothing(
        tiny_run, monkeypatch):
    from tfimitate.errors import UserError
    from tfimitate.tasks.text_classification import TextClassification

    original = TextClassification.evaluate

    def int8_loses_a_point(task, run, split):  # a quantization that costs 1 point
        evaluation = original(task, run, split)
        quantized = any(getattr(layer, "quantization_mode", None) == "int8"
                        for layer in run.model._flatten_layers())
        return dataclasses.replace(evaluation, score=evaluation.score - 0.01 * quantized)

    monkeypatch.setattr(TextClassification, "evaluate", int8_loses_a_point)
    with pytest.raises(UserError, match=r"--export_precision=int8: .* 1\.00 points below "
                                        r"float32's .* more than --export_max_drop=0\.5;"):
        _export(tiny_run, "int8", name="refused")
    export_dir = str(tiny_run[3] / "refused")
    assert not os.path.exists(export_dir) or not os.listdir(export_dir)


def test_int8_of_a_model_without_dense_layers_is_one_sentence():
    from tfimitate import export_precision
    from tfimitate.errors import UserError

    model = keras.Sequential([keras.Input([8, 8, 3]), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(UserError, match="Keras cannot quantize this model"):
        export_precision._quantize(model)
