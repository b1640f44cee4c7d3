"""Pytest setup: make tests/helpers.py importable, keep absl quiet, and move a few costly
parametrized variants to `-m slow`."""

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
    # few-shot and adaptive pretraining: their phases are checked step by step in
    # test_few_shot.py / test_adapt_pretraining.py; the contract's train-resume-export of
    # self_training (also two phases) stays in the default run
    "test_technique_contract.py::test_technique_contract_trains_resumes_and_exports_with_parity"
    "[few_shot]",
    "test_technique_contract.py::test_technique_contract_trains_resumes_and_exports_with_parity"
    "[adapt_pretraining]",
}


def pytest_collection_modifyitems(items):
    import pytest

    for item in items:
        if item.nodeid.rsplit("/", 1)[-1] in SLOW_VARIANTS:
            item.add_marker(pytest.mark.slow)
