"""Pytest setup: make tests/helpers.py importable, keep absl quiet, move a few costly
parametrized variants to `-m slow`, and hand the longest test files out first."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


# Parametrized variants that cost the default run most for the least new coverage; they
# run with `-m slow`. (A fixture's parameters cannot carry marks per test.)
SLOW_VARIANTS = {
    # FGM + augmentation on NER word pieces; the text variant keeps the path in the default run
    "test_contract.py::test_contract_robust_techniques_train_a_text_task_or_are_refused"
    "[token_classification]",
    # a second NER export; test_token_classification.py reloads and checks one in the default run
    "test_contract.py::test_contract_export_reloads_with_parity_and_warmup_for_every_signature"
    "[token_classification]",
    # a second text export: test_text_classification.py::test_evaluate_predict_and_second_export
    # exports from the run directory (with parity), test_serving.py::
    # test_export_has_a_classify_signature_tf_serving_accepts checks warmup for both signatures;
    # the image variant keeps this check of the contract in the default run
    "test_contract.py::test_contract_export_reloads_with_parity_and_warmup_for_every_signature"
    "[text_classification]",
    # text_regression reads text as text_classification does (same front end, perturbation
    # and text techniques); test_text_regression.py checks its export, regress and parity
    "test_contract.py::test_contract_export_reloads_with_parity_and_warmup_for_every_signature"
    "[text_regression]",
    "test_contract.py::test_contract_robustness_report_of_the_checkpoint_and_of_the_export"
    "[text_regression]",
    "test_contract.py::test_contract_robust_techniques_train_a_text_task_or_are_refused"
    "[text_regression]",
    # few-shot and adaptive pretraining: their phases are checked step by step in
    # test_few_shot.py / test_adapt_pretraining.py; the contract's train-resume-export of
    # self_training (also two phases) stays in the default run
    "test_technique_contract_standalone.py::test_technique_contract_trains_resumes_and_exports_with_parity"
    "[few_shot]",
    "test_technique_contract_standalone.py::test_technique_contract_trains_resumes_and_exports_with_parity"
    "[adapt_pretraining]",
    # self-training's rounds are checked in tests/test_self_training.py (selection, balance,
    # resume of the saved pseudo-labels)
    "test_technique_contract.py::test_technique_contract_trains_resumes_and_exports_with_parity"
    "[self_training]",
}
# Tasks whose whole shared contract (tests/test_contract.py) runs with `-m slow`: their own
# test file trains, evaluates, predicts, exports (parity, warmup, Regress) and resumes them.
# text_regression: tests/test_text_regression.py.
SLOW_CONTRACT_TASKS = ("text_regression",)


# The default run's longest test files, longest first (their times in the run of
# 2026-12-07). `-n 2 --dist loadfile` hands whole files to the workers in collection order
# (pyproject turns off xdist's reordering by test count), so the long ones start first and
# the short ones fill in at the end: the two workers finish together.
LONGEST_FILES = (
    "test_technique_contract_standalone.py",
    "test_technique_contract.py",
    "test_contract.py",
    "test_distillation.py",
    "test_workflow_faults.py",
    "test_token_classification.py",
    "test_text_classification.py",
    "test_multi_task.py",
    "test_serving.py",
    "test_augment.py",
    "test_tfds.py",
    "test_integration.py",
)


def pytest_collection_modifyitems(items):
    import pytest

    for item in items:
        slow_task = item.path.name == "test_contract.py" and any(
            f"[{task}" in item.nodeid for task in SLOW_CONTRACT_TASKS)
        if item.nodeid.rsplit("/", 1)[-1] in SLOW_VARIANTS or slow_task:
            item.add_marker(pytest.mark.slow)
    first = {name: rank for rank, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: the rest keep their order
