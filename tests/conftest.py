"""Fixtures shared by the tests: the backend list and random Hugging Face checkpoints."""

import pytest

from oracle import BACKENDS, CHECKPOINTS, hf_model


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """Factory: name -> (folder, transformers model)."""
    made = {}

    def make(name):
        if name not in made:
            model = hf_model(CHECKPOINTS[name], seed=len(made) + 1)
            folder = tmp_path_factory.mktemp(f"hf-{name}")
            model.save_pretrained(folder)
            made[name] = (folder, model)
        return made[name]

    return make
