import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import tiny


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def splade_dir():
    from mezo.models.embedded import embedded_model_dir
    return embedded_model_dir()


@pytest.fixture(scope="session")
def bert_tokenizer(splade_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(splade_dir)


@pytest.fixture(scope="session")
def roberta_tokenizer(tmp_path_factory):
    return tiny.build_roberta_tokenizer(str(tmp_path_factory.mktemp("roberta_tok")))


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory):
    return tiny.build_tiny_roberta(str(tmp_path_factory.mktemp("tiny_roberta")))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    return tiny.build_tiny_bert(str(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: intra-op threads only add synchronisation cost (large on a shared CPU)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
