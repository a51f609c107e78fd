import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from earlybird.errors import EarlyBirdError
from earlybird.records import HEADER_BYTES, CoefficientRecorder, Records, _npy_header, load_records

L, H, I = 2, 3, 5


def coefs(step):
    """Deterministic per-step coefficients so any row can be checked against its step."""
    msa = torch.arange(L * H, dtype=torch.float32).reshape(L, H) + step
    mlp = -torch.arange(L * I, dtype=torch.float32).reshape(L, I) - step
    return msa, mlp


def write_run(path, steps, chunk=4, **kwargs):
    with CoefficientRecorder(path, chunk=chunk, **kwargs) as recorder:
        for step in steps:
            recorder.record(step, *coefs(step))
    return recorder


def assert_rows_match_steps(records):
    for row, step in enumerate(records.steps):
        msa, mlp = coefs(int(step))
        np.testing.assert_array_equal(records.msa[row], msa.numpy())
        np.testing.assert_array_equal(records.mlp[row], mlp.numpy())


def test_round_trip_and_plain_numpy_files(tmp_path):
    write_run(tmp_path / "run", range(10), meta={"model_type": "vit", "flags": {"self_slimming": True}})
    records = load_records(tmp_path / "run")
    assert records.msa.shape == (10, L, H) and records.mlp.shape == (10, L, I)
    np.testing.assert_array_equal(records.steps, np.arange(10))
    assert records.total_steps == 10 and records.blocks == ["msa", "mlp"]
    assert_rows_match_steps(records)
    # plain .npy arrays, step-major, readable by anyone with numpy
    assert np.load(tmp_path / "run" / "msa.npy").shape == (10, L, H)
    assert np.load(tmp_path / "run" / "steps.npy").dtype == np.int64
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["layers"] == L and meta["heads"] == H and meta["neurons"] == I
    assert meta["every"] == 1 and meta["dtype"] == "float32" and meta["model_type"] == "vit"
    assert meta["flags"] == {"self_slimming": True}
    assert records.meta["model_type"] == "vit"


def test_fixed_header_is_valid_npy(tmp_path):
    header = _npy_header(np.dtype("float32"), (123456789, 12, 3072))
    assert len(header) == HEADER_BYTES
    path = tmp_path / "x.npy"
    path.write_bytes(_npy_header(np.dtype("<i8"), (3,)) + np.arange(3, dtype="<i8").tobytes())
    np.testing.assert_array_equal(np.load(path), [0, 1, 2])


def test_chunked_flush_appends_and_buffer_stays_fixed(tmp_path):
    recorder = CoefficientRecorder(tmp_path / "run", chunk=4)
    recorder.record(0, *coefs(0))
    buffers = {name: buf for name, buf in recorder._buffers.items()}
    for step in range(1, 11):
        recorder.record(step, *coefs(step))
        # the buffer is preallocated once; record() keeps no per-step objects
        assert all(recorder._buffers[n] is buffers[n] and recorder._buffers[n].shape[0] == 4 for n in buffers)
        assert recorder.pending < 4
    assert recorder.committed == 8 and recorder.pending == 3
    assert load_records(tmp_path / "run").total_steps == 8  # only flushed rows are on disk
    recorder.flush()
    assert load_records(tmp_path / "run").total_steps == 11
    recorder.close()
    assert_rows_match_steps(load_records(tmp_path / "run"))


def test_record_copies_the_tensor(tmp_path):
    source = torch.ones(L, H)
    with CoefficientRecorder(tmp_path / "run", chunk=4) as recorder:
        recorder.record(0, msa=source)
        source.fill_(5.0)  # the training loop updates the parameter in place
    np.testing.assert_array_equal(load_records(tmp_path / "run").msa[0], np.ones((L, H)))


def test_every_k_records_only_multiples(tmp_path):
    write_run(tmp_path / "run", range(20), every=5)
    records = load_records(tmp_path / "run")
    np.testing.assert_array_equal(records.steps, [0, 5, 10, 15])
    assert records.meta["every"] == 5
    assert_rows_match_steps(records)


def test_either_block_may_be_absent(tmp_path):
    with CoefficientRecorder(tmp_path / "run", chunk=3) as recorder:
        for step in range(5):
            recorder.record(step, mlp=coefs(step)[1])
        with pytest.raises(EarlyBirdError):
            recorder.record(5, *coefs(5))  # blocks cannot change mid-run
    records = load_records(tmp_path / "run")
    assert records.msa is None and records.mlp.shape == (5, L, I)
    assert not (tmp_path / "run" / "msa.npy").exists()
    with pytest.raises(EarlyBirdError, match="no msa"):
        records.block("msa")


def test_rows_beyond_the_committed_count_are_ignored(tmp_path):
    run = tmp_path / "run"
    write_run(run, range(8))
    # A kill mid-append: rows written after the committed ones, headers not yet updated.
    with open(run / "msa.npy", "ab") as f:
        f.write(np.full((2, L, H), 99, np.float32).tobytes())
    with open(run / "steps.npy", "ab") as f:
        f.write(np.array([8], np.int64).tobytes())
    assert load_records(run).total_steps == 8
    # ... and killed after msa.npy's header was rewritten but before steps.npy's.
    with open(run / "msa.npy", "r+b") as f:
        f.write(_npy_header(np.dtype("float32"), (10, L, H)))
    records = load_records(run)
    assert records.total_steps == 8 and records.msa.shape == (8, L, H)
    assert_rows_match_steps(records)
    # Resuming drops the torn tail and continues after the last committed step.
    write_run(run, range(8, 12), resume=True)
    records = load_records(run)
    np.testing.assert_array_equal(records.steps, np.arange(12))
    assert_rows_match_steps(records)


def test_resume_ignores_already_recorded_steps(tmp_path):
    run = tmp_path / "run"
    write_run(run, range(10))
    with pytest.warns(UserWarning, match="ignoring step 5"):
        recorder = write_run(run, range(5, 15), resume=True)  # resumed from a checkpoint at step 5
    assert recorder.ignored == 5
    records = load_records(run)
    np.testing.assert_array_equal(records.steps, np.arange(15))  # no gap, no duplicate
    assert_rows_match_steps(records)


def test_resume_warns_about_a_gap(tmp_path):
    run = tmp_path / "run"
    write_run(run, range(4))
    with pytest.warns(UserWarning, match="gap"):
        write_run(run, range(9, 12), resume=True)


def test_existing_records_need_resume(tmp_path):
    write_run(tmp_path / "run", range(3))
    with pytest.raises(EarlyBirdError, match="resume=True"):
        CoefficientRecorder(tmp_path / "run")


def test_resume_refuses_files_it_cannot_append_to(tmp_path):
    run = tmp_path / "run"
    write_run(run, range(4))
    np.save(run / "msa.npy", np.asfortranarray(np.load(run / "msa.npy")))  # not appendable row by row
    np.testing.assert_array_equal(load_records(run).msa, np.stack([coefs(s)[0].numpy() for s in range(4)]))
    with pytest.raises(EarlyBirdError, match="cannot append"):
        CoefficientRecorder(run, resume=True)


def test_non_main_process_writes_nothing(tmp_path):
    run = tmp_path / "run"
    with CoefficientRecorder(run, chunk=2, is_main_process=False) as recorder:
        for step in range(7):
            assert recorder.record(step, *coefs(step)) is False
        recorder.flush()
    assert not run.exists()


def test_shape_change_is_an_error(tmp_path):
    with CoefficientRecorder(tmp_path / "run") as recorder:
        recorder.record(0, msa=torch.zeros(L, H))
        with pytest.raises(EarlyBirdError, match="shape"):
            recorder.record(1, msa=torch.zeros(L, H + 1))


KILL_CHILD = textwrap.dedent(
    """
    import sys, torch
    from earlybird.records import CoefficientRecorder
    recorder = CoefficientRecorder(sys.argv[1], chunk=4)
    step = 0
    while True:
        recorder.record(step, msa=torch.full((2, 3), float(step)), mlp=torch.full((2, 5), -float(step)))
        if recorder.pending == 0:
            print(step, flush=True)
        step += 1
    """
)


@pytest.mark.parametrize("flushes_before_kill", [3, 11])
def test_sigkill_leaves_flushed_records_readable(tmp_path, flushes_before_kill):
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(flushes_before_kill):
            assert child.stdout.readline(), "recorder child exited early"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    records = load_records(run)
    assert records.total_steps >= 4 * flushes_before_kill
    assert records.total_steps % 4 == 0  # commits happen a whole chunk at a time
    np.testing.assert_array_equal(records.steps, np.arange(records.total_steps))
    np.testing.assert_array_equal(records.msa[:, 0, 0], records.steps.astype(np.float32))
    np.testing.assert_array_equal(records.mlp[:, 1, 4], -records.steps.astype(np.float32))


def write_original(directory, names, msa, mlp):
    directory.mkdir()
    np.save(directory / names[0], msa)
    np.save(directory / names[1], mlp)


@pytest.mark.parametrize(
    "names",
    [
        ("self_slimming_coef_records.npy", "inter_slimming_coef_records.npy"),
        ("msa_slimming_coefs.npy", "mlp_slimming_coefs.npy"),
    ],
)
def test_original_layouts_are_layer_major(tmp_path, names):
    rng = np.random.default_rng(0)
    msa = rng.normal(size=(L, 7, H)).astype(np.float32)  # (layers, steps, heads)
    mlp = rng.normal(size=(L, 7, I)).astype(np.float32)
    write_original(tmp_path / "orig", names, msa, mlp)
    records = load_records(tmp_path / "orig")
    assert records.msa.shape == (7, L, H) and records.mlp.shape == (7, L, I)
    np.testing.assert_array_equal(records.msa[4, 1], msa[1, 4])
    np.testing.assert_array_equal(records.mlp[6, 0], mlp[0, 6])
    np.testing.assert_array_equal(records.steps, np.arange(7))
    single = load_records(tmp_path / "orig" / names[1])
    assert single.msa is None and single.mlp.shape == (7, L, I)
    np.testing.assert_array_equal(single.mlp[2, 1], mlp[1, 2])


def test_one_of_our_files_loads_its_block(tmp_path):
    write_run(tmp_path / "run", range(6))
    records = load_records(tmp_path / "run" / "mlp.npy")
    assert records.msa is None and records.mlp.shape == (6, L, I)
    np.testing.assert_array_equal(records.steps, np.arange(6))
    loose = tmp_path / "loose"
    loose.mkdir()
    np.save(loose / "msa.npy", np.zeros((4, L, H), np.float32))  # no steps.npy beside it
    np.testing.assert_array_equal(load_records(loose / "msa.npy").steps, np.arange(4))


def test_from_arrays_validates():
    with pytest.raises(EarlyBirdError, match="3-D"):
        Records.from_arrays(msa=np.zeros((3, 4)))
    with pytest.raises(EarlyBirdError, match="NaN"):
        Records.from_arrays(msa=np.full((2, 1, 2), np.inf))
    with pytest.raises(EarlyBirdError, match="increasing"):
        Records.from_arrays(msa=np.zeros((3, 1, 2)), steps=[0, 2, 2])
    with pytest.raises(EarlyBirdError, match="steps"):
        Records.from_arrays(msa=np.zeros((3, 1, 2)), steps=[0, 1])


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "missing"),
        ("empty_dir", "not a records directory"),
        ("garbage", "not a readable .npy"),
        ("truncated", "truncated"),
        ("two_d", "3-D"),
        ("nan", "NaN"),
        ("steps_longer", "mismatched"),
        ("no_steps", "steps.npy"),
        ("float_steps", "integer"),
        ("bad_meta", "JSON"),
        ("unknown_file", "which block"),
        ("original_mismatch", "mismatched"),
    ],
)
def test_bad_records_raise_clear_errors(tmp_path, case, match):
    run = tmp_path / "run"
    if case == "missing":
        target = tmp_path / "nowhere"
    elif case == "empty_dir":
        run.mkdir()
        (run / "notes.txt").write_text("hello")
        target = run
    elif case == "unknown_file":
        target = tmp_path / "coefs.npy"
        np.save(target, np.zeros((2, 2, 2)))
    elif case == "original_mismatch":
        target = tmp_path / "orig"
        write_original(target, ("self_slimming_coef_records.npy", "inter_slimming_coef_records.npy"),
                       np.zeros((L, 5, H)), np.zeros((L, 6, I)))
    else:
        write_run(run, range(8))
        target = run
        if case == "garbage":
            (run / "msa.npy").write_bytes(b"this is not numpy at all" * 10)
        elif case == "truncated":
            with open(run / "msa.npy", "r+b") as f:
                f.truncate(HEADER_BYTES + 5 * L * H * 4 + 3)
        elif case == "two_d":
            (run / "msa.npy").unlink()
            np.save(run / "msa.npy", np.zeros((8, L * H), np.float32))
        elif case == "nan":
            data = np.load(run / "mlp.npy")
            data[3, 1, 2] = np.nan
            np.save(run / "mlp.npy", data)
        elif case == "steps_longer":
            np.save(run / "steps.npy", np.arange(9, dtype=np.int64))
        elif case == "no_steps":
            (run / "steps.npy").unlink()
        elif case == "float_steps":
            np.save(run / "steps.npy", np.arange(8, dtype=np.float64))
        elif case == "bad_meta":
            (run / "meta.json").write_text("{not json")
    with pytest.raises(EarlyBirdError, match=match) as info:
        load_records(target)
    assert isinstance(info.value, ValueError)
    if case not in ("missing",):
        assert str(target.name) in str(info.value) or str(target) in str(info.value) or "npy" in str(info.value)


def test_load_does_not_warn(tmp_path):
    write_run(tmp_path / "run", range(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_records(tmp_path / "run")
