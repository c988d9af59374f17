#!/usr/bin/python3
"""End-to-end tests of the `cqat` command line: training, evaluation, exact resume,
and bad input (clear one-line errors, non-zero exit, nothing left behind).

    /usr/bin/python3 tests/cli/test_cli.py build/tools/cqat

Runs on a small slice of Debian's Fashion-MNIST (--limit) so that it takes seconds.
Needs Debian's python3-h5py and python3-numpy.
"""
import json
import os
import subprocess
import sys
import tempfile
import traceback

import h5py
import numpy as np

import cqat_cmd  # how cqat is started (directly, or under valgrind)

CQAT = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="cqat-cli-")
# 8 steps an epoch; under valgrind (20-100x slower) on a quarter of the images, same steps
LIMIT, BATCH = ("64", "8") if cqat_cmd.VALGRIND else ("256", "32")
SMALL = ["--limit", LIMIT, "--batch-size", BATCH, "--no-progress", "--threads", "1"]


def run(*args, ok=True):
    p = subprocess.run(cqat_cmd.command(CQAT, *args), capture_output=True, text=True, cwd=TMP,
                       timeout=cqat_cmd.timeout(600))
    cqat_cmd.check(args)
    if ok and p.returncode != 0:
        raise AssertionError("cqat %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
    return p


def state(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}


def expect_error(args, *needles):
    before = set(os.listdir(TMP))
    p = run(*args, ok=False)
    assert p.returncode != 0, "expected failure: cqat %s" % " ".join(args)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, "expected one error line, got: %r" % p.stderr
    for n in needles:
        assert n in lines[0], "%r not in %r" % (n, lines[0])
    after = set(os.listdir(TMP))
    assert after == before, "files left behind: %s" % (after - before)


def test_train_then_eval_reports_json():
    p = run("train", "--epochs", "1", "--out", "a.h5", "--json", *SMALL)
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["steps"] == 8, summary
    e = run("eval", "a.h5", "--limit", LIMIT, "--json")
    ev = json.loads(e.stdout.strip().splitlines()[-1])
    assert abs(ev["accuracy"] - summary["accuracy"]) < 1e-9, (ev, summary)
    with h5py.File(os.path.join(TMP, "a.h5"), "r") as f:
        assert f.attrs["model_name"] == b"refcnn" or f.attrs["model_name"] == "refcnn"
        assert "conv1.weight" in f and f["conv1.weight"].shape == (16, 1, 3, 3)
        assert f["bn1.num_batches_tracked"][()] == 8


def test_resume_is_bitwise_exact():
    run("train", "--epochs", "2", "--out", "full.h5", *SMALL)
    run("train", "--epochs", "2", "--out", "part.h5", "--stop-after", "5", *SMALL)
    mid = state(os.path.join(TMP, "part.h5"))
    # two interruptions: the second resume must still know the whole recipe
    run("train", "--resume", "part.h5", "--stop-after", "10", "--no-progress")
    run("train", "--resume", "part.h5", "--no-progress")
    a, b = state(os.path.join(TMP, "full.h5")), state(os.path.join(TMP, "part.h5"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), "resumed run differs at %s" % k
    assert not np.array_equal(mid["fc2.weight"], b["fc2.weight"])


def test_qat_resume_is_bitwise_exact():
    # observers, fake-quant scales, BN freezing (from epoch 1) and the optimizer resume
    run("qat", "--init", "a.h5", "--epochs", "2", "--out", "qfull.h5", *SMALL)
    run("qat", "--init", "a.h5", "--epochs", "2", "--out", "qpart.h5", "--stop-after", "5",
        *SMALL)
    run("qat", "--resume", "qpart.h5", "--no-progress")
    a, b = state(os.path.join(TMP, "qfull.h5")), state(os.path.join(TMP, "qpart.h5"))
    assert a.keys() == b.keys() and "conv1.weight_fake_quant.scale" in a
    for k in a:
        assert np.array_equal(a[k], b[k]), "resumed QAT run differs at %s" % k


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_convert_eval_infer_inspect_compare():
    # A save killed earlier left its temporary file; the next save to the same path
    # removes it, but not the file of a process that is still alive.
    stale = os.path.join(TMP, "m8.h5.tmp-%d" % dead_pid())
    live = os.path.join(TMP, "m8.h5.tmp-%d" % os.getpid())
    for path in (stale, live):
        with open(path, "wb") as f:
            f.write(b"half a model")
    run("convert", "qfull.h5", "--out", "m8.h5")
    assert not os.path.exists(stale), "stale temporary file left by a dead writer survived"
    assert os.path.exists(live), "a live writer's temporary file was removed"
    os.unlink(live)
    ev = json.loads(run("eval", "m8.h5", "--limit", "256", "--json").stdout.splitlines()[-1])
    assert ev["kind"] == "int8" and ev["n"] == 256, ev
    images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    run("infer", "m8.h5", "--input", images, "--output", "inf.h5")
    with h5py.File(os.path.join(TMP, "inf.h5"), "r") as f:
        assert f["logits"].shape == (10000, 10) and f["predictions"].shape == (10000,)
    # an HDF5 file of images alone (no labels dataset) is enough for inference
    with h5py.File(os.path.join(TMP, "imgs.h5"), "w") as f:
        f["images"] = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    out = run("infer", "m8.h5", "--input", "imgs.h5").stdout.split("\n")
    assert [l.split()[0] for l in out if l.strip()] == ["0", "1", "2", "3", "4"], out
    assert "conv2d" in run("inspect", "m8.h5").stdout
    assert "conv1.weight_fake_quant.scale" in run("inspect", "qfull.h5").stdout
    c = run("compare", "qfull.h5", "m8.h5", "--limit", "256", "--json")
    cmp = json.loads(c.stdout.splitlines()[-1])
    # a model trained on 256 images for 16 steps has many near-ties between classes; the
    # agreement that matters is measured on trained models (test_convert.c, PERFORMANCE.md)
    assert cmp["identical_predictions"] >= 0.95, cmp
    assert abs(cmp["int8_accuracy"] - ev["accuracy"]) < 1e-9, (cmp, ev)
    expect_error(["convert", "a.h5", "--out", "x8.h5"], "float weights")


def test_eval_of_plain_state_dict_needs_model():
    with h5py.File(os.path.join(TMP, "a.h5"), "r") as src, \
            h5py.File(os.path.join(TMP, "sd.h5"), "w") as dst:
        for k in src:
            if isinstance(src[k], h5py.Dataset):
                dst[k] = src[k][()]
    expect_error(["eval", "sd.h5"], "--model")
    run("eval", "--model", "refcnn", "--weights", "sd.h5", "--limit", "64")


def test_bad_command_lines_fail_clearly():
    expect_error(["train", "--bogus"], "unknown option '--bogus'")
    expect_error(["train", "--batch-size", "0"], "--batch-size")
    expect_error(["train", "--epochs", "-1"], "--epochs")
    expect_error(["train", "--lr", "abc"], "--lr", "abc")
    expect_error(["train", "--lr"], "--lr: missing value")
    expect_error(["train", "--optimizer", "rmsprop"], "sgd|adam|adamw")
    expect_error(["train", "--model", "resnet50", *SMALL], "resnet50")
    expect_error(["eval", "missing.h5"], "missing.h5")
    expect_error(["frobnicate"], "unknown command")


def test_bad_files_fail_clearly():
    with open(os.path.join(TMP, "text.h5"), "w") as f:
        f.write("not hdf5 at all\n")
    expect_error(["eval", "text.h5"], "text.h5", "not an HDF5 file")
    with open(os.path.join(TMP, "a.h5"), "rb") as f:
        head = f.read(3000)
    with open(os.path.join(TMP, "trunc.h5"), "wb") as f:
        f.write(head)
    expect_error(["eval", "trunc.h5"], "trunc.h5")
    expect_error(["train", "--data", "/nonexistent", *SMALL], "/nonexistent",
                 "dataset-fashion-mnist")
    expect_error(["train", "--resume", "text.h5"], "text.h5")


def test_nan_loss_stops_naming_the_layer_and_keeps_the_checkpoint():
    before = state(os.path.join(TMP, "a.h5"))
    # Whichever shows first names a layer: the first parameter whose gradient went
    # non-finite, or the first module whose output did.
    expect_error(["train", "--epochs", "1", "--lr", "100000", "--out", "a.h5", *SMALL],
                 "step ", "last checkpoint is intact")
    p = run("train", "--epochs", "1", "--lr", "100000", "--out", "a.h5", *SMALL, ok=False)
    assert ("the gradient of '" in p.stderr or "went non-finite first" in p.stderr), p.stderr
    after = state(os.path.join(TMP, "a.h5"))
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_unwritable_output_leaves_nothing():
    expect_error(["train", "--epochs", "1", "--out", "/nonexistent/dir/x.h5", *SMALL],
                 "/nonexistent/dir/x.h5")


def test_failed_save_keeps_previous_checkpoint():
    before = state(os.path.join(TMP, "a.h5"))
    os.chmod(TMP, 0o500)  # the directory refuses the temporary file
    try:
        if os.access(TMP, os.W_OK):  # root ignores permissions: nothing to test then
            return
        p = run("train", "--epochs", "1", "--out", "a.h5", *SMALL, ok=False)
        assert p.returncode != 0
    finally:
        os.chmod(TMP, 0o700)
    after = state(os.path.join(TMP, "a.h5"))
    assert all(np.array_equal(before[k], after[k]) for k in before)


def main():
    tests = [(n, f) for n, f in sorted(globals().items(), key=lambda kv: kv[1].__code__.co_firstlineno
                                       if callable(kv[1]) and hasattr(kv[1], "__code__") else 0)
             if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
            passed += 1
            print("ok   %s" % name)
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print("FAIL %s\n%s" % (name, traceback.format_exc()))
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
