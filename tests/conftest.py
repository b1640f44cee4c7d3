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
    # text_regression reads text as text_classification does (same front end, perturbation
    # and text techniques); test_text_regression.py checks its export, regress and parity
    "test_contract.py::test_contract_export_reloads_with_parity_and_warmup_for_every_signature"
    "[text_regression]",
    "test_contract.py::test_contract_robustness_report_of_the_checkpoint_and_of_the_export"
    "[text_regression]",
    "test_contract.py::test_contract_robust_techniques_train_a_text_task_or_are_refused"
    "[text_regression]",
}


def pytest_collection_modifyitems(items):
    import pytest

    for item in items:
        if item.nodeid.rsplit("/", 1)[-1] in SLOW_VARIANTS:
            item.add_marker(pytest.mark.slow)
