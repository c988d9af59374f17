#!/usr/bin/python3
"""test_q8_reference.py — the C runtime and tools/q8_reference.py (numpy, written from
docs/FORMAT.md) must produce identical integers (and identical float bits) for every
value of the same model and input.

    test_q8_reference.py PATH/TO/q8_run [--keep]

For u8 and i8 activations: q8_run --make-demo writes a model that uses every op; a
random float batch (with values placed on quantization ties) is run by q8_run with each
GEMM kernel and by q8_reference.py; every value is compared. Exit status 0 if all agree.
"""
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:  # meson reads exit status 77 as "skipped"
    print(f"test_q8_reference: skipped, {e} (apt-get install python3-numpy python3-h5py)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "tools", "q8_reference.py")


def make_input(path, seed, batch):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3.0, 3.0, size=(batch, 3, 12, 11)).astype(np.float32)
    # exact ties of the first quantize (scale 1/32): k/32 + 1/64
    flat = x.reshape(-1)
    flat[:40] = (rng.integers(-90, 90, size=40) / 32.0 + 1 / 64.0).astype(np.float32)
    flat[40:50] = np.float32([0, -0.0, 100, -100, 4, -4, 3.984375, 1e-9, -1e-9, 0.5])
    with h5py.File(path, "w") as f:
        f.create_dataset("input_0", data=x)


def read_values(path):
    with h5py.File(path, "r") as f:
        return {int(k): np.array(v) for k, v in f["values"].items()}


def compare(c_vals, py_vals, label):
    bad = 0
    if sorted(c_vals) != sorted(py_vals):
        print(f"{label}: value ids differ: C {sorted(c_vals)} vs numpy {sorted(py_vals)}")
        return 1
    for vid in sorted(c_vals):
        a, b = c_vals[vid], py_vals[vid]
        if a.dtype != b.dtype or a.shape != b.shape:
            print(f"{label}: value {vid}: C {a.dtype}{a.shape} vs numpy {b.dtype}{b.shape}")
            bad += 1
            continue
        same = (a.view(np.uint32) == b.view(np.uint32)) if a.dtype == np.float32 else (a == b)
        if not np.all(same):
            idx = np.argwhere(~same)
            first = tuple(idx[0])
            print(f"{label}: value {vid}: {len(idx)} of {a.size} differ, first at {first}: "
                  f"C {a[first]!r} vs numpy {b[first]!r}")
            bad += 1
    return bad


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    q8_run = os.path.abspath(argv[1])
    keep = "--keep" in argv
    tmp = tempfile.mkdtemp(prefix="q8ref-")
    failures = 0
    for act in ("u8", "i8"):
        model = os.path.join(tmp, f"demo_{act}.h5")
        inp = os.path.join(tmp, f"input_{act}.h5")
        subprocess.run([q8_run, "--make-demo", model, act], check=True)
        make_input(inp, 7 if act == "u8" else 8, batch=3)
        py_out = os.path.join(tmp, f"numpy_{act}.h5")
        subprocess.run([sys.executable, REFERENCE, model, inp, py_out], check=True)
        py_vals = read_values(py_out)
        for kernel in ("reference", "avx2"):
            c_out = os.path.join(tmp, f"c_{act}_{kernel}.h5")
            env = dict(os.environ, CQAT_Q8_GEMM=kernel)
            subprocess.run([q8_run, model, inp, c_out], check=True, env=env)
            bad = compare(read_values(c_out), py_vals, f"{act}/{kernel}")
            print(f"{act} activations, {kernel} GEMM: {len(py_vals)} values, "
                  f"{'all identical' if bad == 0 else f'{bad} differ'}")
            failures += bad
    if keep:
        print(f"files kept in {tmp}")
    else:
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
