#!/usr/bin/python3
"""test_q8_reference.py — the C runtime and tools/q8_reference.py (numpy, written from
docs/FORMAT.md) must produce identical integers (and identical float bits) for every
value of the same model and input.

    test_q8_reference.py PATH/TO/q8_run [--keep]

q8_run --make-demo writes four models, each run by q8_run with each GEMM kernel and by
q8_reference.py on the same random batch; every value is compared:
  u8, i8    every quantized op, restricted clamp ranges, requantize; the input has
            values placed on quantization ties. Identical integers and float bits.
  dynamic   every float op with dyadic weights on a dyadic input (no float sum can
            round, in any order), ending in linear_dynamic: identical bits throughout.
  float     every float op on random floats: the float sums' order is the runtime's,
            so values agree within 1e-5 relative (to the value's largest magnitude).
Exit status 0 if all agree.
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
sys.path.insert(0, os.path.join(HERE, "cli"))
import cqat_cmd  # noqa: E402  (how the C program is started: directly or under valgrind)


def make_input(path, seed, batch, kind):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3.0, 3.0, size=(batch, 3, 12, 11)).astype(np.float32)
    if kind == "dynamic":
        x = (np.rint(x * 8) / 8).astype(np.float32)  # k/8: every float sum stays exact
    elif kind != "float":
        # exact ties of the first quantize (scale 1/32): k/32 + 1/64
        flat = x.reshape(-1)
        flat[:40] = (rng.integers(-90, 90, size=40) / 32.0 + 1 / 64.0).astype(np.float32)
        flat[40:50] = np.float32([0, -0.0, 100, -100, 4, -4, 3.984375, 1e-9, -1e-9, 0.5])
    with h5py.File(path, "w") as f:
        f.create_dataset("input_0", data=x)


def read_values(path):
    with h5py.File(path, "r") as f:
        return {int(k): np.array(v) for k, v in f["values"].items()}


def close(a, b):
    """Float values of the float demo: within 1e-5 of the value's largest magnitude, or
    relative; NaN where the other has NaN."""
    nan = np.isnan(a) | np.isnan(b)
    scale = np.max(np.abs(b[~np.isnan(b)]), initial=0.0)
    tol = 1e-5 * (np.abs(b) + scale)
    with np.errstate(invalid="ignore"):
        ok = np.abs(a.astype(np.float64) - b) <= tol
    return np.where(nan, np.isnan(a) & np.isnan(b), ok)


def compare(c_vals, py_vals, label, tolerant):
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
        if a.dtype != np.float32:
            same = a == b
        elif tolerant:
            same = close(a, b)
        else:
            same = a.view(np.uint32) == b.view(np.uint32)
        if not np.all(same):
            idx = np.argwhere(~same)
            first = tuple(idx[0])
            print(f"{label}: value {vid}: {len(idx)} of {a.size} differ, first at {first}: "
                  f"C {a[first]!r} vs numpy {b[first]!r}")
            bad += 1
    return bad


def run_q8(q8_run, *args, env=None):
    """q8_run, directly or under valgrind (meson test --setup valgrindcli)."""
    subprocess.run(cqat_cmd.command(q8_run, *args), check=True, env=env)
    cqat_cmd.check(args)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    q8_run = os.path.abspath(argv[1])
    keep = "--keep" in argv
    tmp = tempfile.mkdtemp(prefix="q8ref-")
    failures = 0
    for seed, kind in enumerate(("u8", "i8", "dynamic", "float")):
        model = os.path.join(tmp, f"demo_{kind}.h5")
        inp = os.path.join(tmp, f"input_{kind}.h5")
        run_q8(q8_run, "--make-demo", model, kind)
        make_input(inp, 7 + seed, 3, kind)
        py_out = os.path.join(tmp, f"numpy_{kind}.h5")
        subprocess.run([sys.executable, REFERENCE, model, inp, py_out], check=True)
        py_vals = read_values(py_out)
        tolerant = kind == "float"
        for kernel in ("reference", "avx2"):
            c_out = os.path.join(tmp, f"c_{kind}_{kernel}.h5")
            env = dict(os.environ, CQAT_Q8_GEMM=kernel)
            run_q8(q8_run, model, inp, c_out, env=env)
            bad = compare(read_values(c_out), py_vals, f"{kind}/{kernel}", tolerant)
            agree = "within 1e-5" if tolerant else "identical"
            print(f"{kind} demo, {kernel} GEMM: {len(py_vals)} values, "
                  f"{f'all {agree}' if bad == 0 else f'{bad} differ'}")
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
