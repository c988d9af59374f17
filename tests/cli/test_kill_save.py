#!/usr/bin/python3
"""SIGKILL during training with a checkpoint saved after every step: whatever the moment
of the kill, the checkpoint on disk is a complete one, and temporary files do not pile
up.

    /usr/bin/python3 tests/cli/test_kill_save.py build/tools/cqat [KILLS]

Runs `cqat train --limit 512 --save-every 1` on a made-up 512-image IDX data set and
kills it with SIGKILL at random moments (KILLS times, 30 by default; the seed is printed,
and CQAT_KILL_SEED=N repeats a sequence). Each run after the first continues with
`--resume` from what the last kill left. After every kill:

  - the checkpoint (once one exists) evaluates with `cqat eval`, and its state is the
    one its "step" attribute says (bn1.num_batches_tracked == step: the datasets and
    the attributes come from the same save), and the step never goes back;
  - the only temporary file next to it, if any, is "<ckpt>.tmp-<pid>" of the process
    just killed (an older one is removed by the next save: nn/state_h5.c).

Finally the surviving checkpoint resumes and trains on. The last line is
"N passed, N failed". Takes well under two minutes; run it alone (is_parallel: false):
it measures nothing, but it keeps a core busy. Needs Debian's python3-h5py and numpy.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import h5py

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz"))
import make_corpus as mc  # noqa: E402  (the IDX writer)

CQAT = os.path.abspath(sys.argv[1])
KILLS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
SEED = int(os.environ.get("CQAT_KILL_SEED", random.randrange(1 << 30)))
TMP = tempfile.mkdtemp(prefix="cqat-kill-")
DATA = os.path.join(TMP, "data")
CKPT = os.path.join(TMP, "ck.h5")
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")  # no re-exec: the pid is the child's
# Small batches: a step is short next to a save, so kills often land in one.
ARGS = ["--data", DATA, "--limit", "512", "--batch-size", "4", "--epochs", "50",
        "--save-every", "1", "--out", CKPT, "--threads", "1", "--no-progress"]


def tmp_files():
    return sorted(n for n in os.listdir(TMP) if n.startswith("ck.h5.tmp-"))


def checkpoint_step():
    """The step of the checkpoint on disk, after checking it is whole; None if none."""
    if not os.path.exists(CKPT):
        return None
    with h5py.File(CKPT, "r") as f:
        step = int(f.attrs["step"])
        tracked = int(f["bn1.num_batches_tracked"][()])
    assert tracked == step, "state of step %d under the attributes of step %d" % (tracked, step)
    p = subprocess.run([CQAT, "eval", CKPT, "--data", DATA, "--limit", "32", "--threads", "1"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0, "cqat eval of the surviving checkpoint failed: %s" % p.stderr
    return step


def test_kill_at_random_moments_leaves_a_whole_checkpoint():
    rng = random.Random(SEED)
    print("seed %d (CQAT_KILL_SEED=%d repeats this run)" % (SEED, SEED))
    last_step, saw_tmp, resumed = -1, 0, 0
    for k in range(KILLS):
        # The resumed runs repeat every argument: a checkpoint saved by a resumed run
        # keeps only that run's own command line (see docs/RELIABILITY.md).
        resume = os.path.exists(CKPT)
        cmd = [CQAT, "train", *(["--resume", CKPT] if resume else []), *ARGS]
        resumed += resume
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env=ENV)
        time.sleep(rng.uniform(0.15, 1.2))
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, \
            "run %d ended before the kill (%d): %s" % (k, child.returncode, err.decode())
        tmps = tmp_files()
        assert tmps in ([], ["ck.h5.tmp-%d" % child.pid]), \
            "kill %d: temporary files %s (the killed process was %d)" % (k, tmps, child.pid)
        saw_tmp += bool(tmps)
        step = checkpoint_step()
        if step is not None:
            assert step >= last_step, "kill %d: the checkpoint went back from step %d to %d" % (
                k, last_step, step)
            last_step = step
    print("%d kills, %d resumed runs, %d kills left a temporary file, last step %d" % (
        KILLS, resumed, saw_tmp, last_step))
    assert last_step > 0, "no checkpoint was ever saved"


def test_the_surviving_checkpoint_resumes_and_cleans_up():
    step = checkpoint_step()
    p = subprocess.run([CQAT, "train", "--resume", CKPT, *ARGS, "--stop-after", str(step + 3)],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 0, p.stderr
    after = checkpoint_step()
    assert after == step + 3, "resumed at step %d with --stop-after %d, saved step %d\n%s" % (
        step, step + 3, after, p.stdout)
    assert tmp_files() == [], "stale temporary files after a clean save: %s" % tmp_files()


def main():
    rng = __import__("numpy").random.default_rng(5)
    os.makedirs(DATA)
    for split, n in (("train", 512), ("t10k", 64)):
        mc.write_idx(os.path.join(DATA, split + "-images-idx3-ubyte"),
                     rng.integers(0, 256, size=(n, 28, 28), dtype="uint8"))
        mc.write_idx(os.path.join(DATA, split + "-labels-idx1-ubyte"),
                     (rng.permutation(n) % 10).astype("uint8"))
    passed = failed = 0
    for name, fn in (("test_kill_at_random_moments_leaves_a_whole_checkpoint",
                      test_kill_at_random_moments_leaves_a_whole_checkpoint),
                     ("test_the_surviving_checkpoint_resumes_and_cleans_up",
                      test_the_surviving_checkpoint_resumes_and_cleans_up)):
        try:
            fn()
            passed += 1
            print("ok   %s" % name)
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print("FAIL %s\n%s" % (name, traceback.format_exc()))
            break  # the second test needs the first's checkpoint
    shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
