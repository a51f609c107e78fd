"""Shared test setup: offline, deterministic, small."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from earlybird import transformers_patch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def one_thread_only():
    """Torch on one thread for the test (modules that train: `pytestmark = pytest.mark.usefixtures(...)`)."""
    from test_training_support import one_thread

    with one_thread():
        yield


@pytest.fixture(scope="session")
def pristine_dir():
    """The pristine transformers files that `setup.sh` kept before patching."""
    path = transformers_patch.installed_transformers_dir() / transformers_patch.BACKUP
    if not path.exists():
        pytest.fail(f"{path} missing: run `bash setup.sh`")
    return path


@pytest.fixture(scope="session")
def pristine_modeling(pristine_dir):
    """Import the *unpatched* 5.23.0 modeling module of a model ('vit', 'bert', 'llama', 'qwen3') beside the patched one."""
    return transformers_patch.import_pristine_modeling
