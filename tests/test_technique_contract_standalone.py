"""The technique contract's training half for the techniques that read no trained run (every
SAMPLE_FLAGS entry of tests/test_technique_contract.py outside READS_THE_BASE_RUN): train a
few steps, resume, export with parity. A file of its own so that the test workers
(`-n 2 --dist loadfile`) run the two halves of the contract at once.
"""

import helpers
import pytest

import test_technique_contract as contract

STANDALONE = tuple(sorted(set(contract.SAMPLE_FLAGS) - set(contract.READS_THE_BASE_RUN)))


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Per task: flags of its sample data on a tiny backbone (no trained run to read), and
    a .txt of unlabelled texts."""
    directory = tmp_path_factory.mktemp("samples")
    unlabeled = helpers.write_lines(directory, "unlabeled.txt", ["a fun new story", "the worst plot"])
    return contract.sample_data(directory), {"{unlabeled}": unlabeled}


@pytest.fixture(scope="module", params=STANDALONE)
def trained(request, samples, tmp_path_factory):
    """The technique's sample run trained 2 steps (one per technique, shared)."""
    return contract.train_sample(request.param, samples, tmp_path_factory.mktemp(request.param))


def test_technique_contract_trains_resumes_and_exports_with_parity(trained, caplog):
    contract.check_trains_resumes_and_exports(trained, caplog)
