"""Shared test setup: offline, deterministic, small."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite's runs are CPU runs, on a GPU machine too (the bitwise resume tests need the CPU's deterministic kernels,
# the two-process tests one device per process): the bash scripts (launch.bash's DEVICE) and accelerate (every
# Accelerator and Trainer, in this process and in the processes it starts) are pinned to the CPU. Tests marked
# `cuda` get the environment as it was and are skipped without CUDA.
USER_DEVICE_ENV = {name: os.environ.get(name) for name in ("DEVICE", "ACCELERATE_USE_CPU")}
os.environ.update(DEVICE="cpu", ACCELERATE_USE_CPU="1")

import pytest  # noqa: E402
import torch  # noqa: E402

from earlybird import transformers_patch  # noqa: E402

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: a GPU and a CUDA build of torch (bash setup.sh --cuda)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _cuda_tests_see_the_gpu(request, monkeypatch):
    """A `cuda` test runs with the user's DEVICE / ACCELERATE_USE_CPU, not the suite's CPU pin."""
    if request.node.get_closest_marker("cuda"):
        for name, value in USER_DEVICE_ENV.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
    yield


@pytest.fixture
def fake_gpu(tmp_path, monkeypatch):
    """A GPU machine as the bash scripts see it: an `nvidia-smi` on PATH that lists one GPU (torch stays as it is)."""
    bin_dir = tmp_path / "fake-gpu-bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/bin/sh\nif [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA H200 (UUID: GPU-0000-1111)"; '
                   'else echo "NVIDIA-SMI 580.00  Driver Version: 580.00  CUDA Version: 13.0"; fi\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return smi


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
