#!/usr/bin/python3
"""Seed corpus of the fuzz targets, made from valid small files.

    /usr/bin/python3 tests/fuzz/make_corpus.py [--cqat build/tools/cqat] [--out tests/fuzz/corpus]
                                               [--raw DIR]

Writes tests/fuzz/corpus/<target>/<name> for every target of tests/fuzz/meson.build.
The HDF5 targets get each file as an h5spec program (fuzz_util.h: the form whose
mutations keep a valid container and reach cqat's own checks); --raw DIR also writes
the files' raw bytes ('R' and the file) for CQAT_FUZZ_RAW=1 runs of libhdf5. Checkpoints and state_dicts come from short `cqat train` / `cqat
qat` runs on tiny made-up IDX data (no data set needed). Needs Debian's python3-h5py
and python3-numpy.

The helpers (write_idx, write_q8_model, h5spec) are also used by
tests/cli/test_bad_input.py.
"""
import argparse
import gzip
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import h5py
import numpy as np

# ---- IDX ---------------------------------------------------------------------------


def idx_bytes(array):
    """An IDX file (unsigned bytes) holding `array`, as in the MNIST distribution."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return head + a.tobytes()


def write_idx(path, array, compress=False):
    data = idx_bytes(array)
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if compress else data)


def write_fashion_dir(d, n_train, n_test, side=28, seed=0, compress=True):
    """A folder with the four Fashion-MNIST file names holding random images and labels
    0..9 (every class present, so the class count is 10)."""
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(os.path.join(d, "%s-images-idx3-ubyte%s" % (split, suffix)), images, compress)
        write_idx(os.path.join(d, "%s-labels-idx1-ubyte%s" % (split, suffix)), labels, compress)


# ---- q8 models (docs/FORMAT.md, as quantized/h5io.c reads them) ------------------------


def multiplier(real):
    """q8_multiplier_from_real: M0 in [2^30, 2^31) and shift with real ~= M0 * 2^-shift."""
    f, e = math.frexp(real)
    q = round(f * 2.0**31)  # round half to even, as nearbyint
    if q >= 2**31:
        q, e = 2**30, e + 1
    return q, 31 - e


def q8_spec():
    """A small valid model as plain data: quantize -> conv2d(relu) -> max_pool2d ->
    flatten -> linear -> dequantize on 1x4x4 inputs. Tests edit it, then write it."""
    rng = np.random.default_rng(1)
    s_in, s_conv, s_fc = 1.0 / 64, 0.05, 0.1
    w_conv = rng.integers(-100, 100, size=(2, 1, 3, 3), dtype=np.int8)
    ws_conv = np.array([0.01, 0.02], dtype=np.float32)
    w_fc = rng.integers(-100, 100, size=(3, 8), dtype=np.int8)
    ws_fc = np.array([0.03], dtype=np.float32)

    def wconsts(w, ws, s_x, s_y):
        pairs = [multiplier(float(s_x) * float(s) / float(s_y)) for s in ws]
        return {"weight": w, "weight_scale": ws,
                "bias": np.arange(w.shape[0], dtype=np.int32) * 7,
                "multiplier": np.array([p[0] for p in pairs], dtype=np.int32),
                "shift": np.array([p[1] for p in pairs], dtype=np.int32)}

    s_in32, s_conv32, s_fc32 = (np.float32(s) for s in (s_in, s_conv, s_fc))
    return {
        "attrs": {"format": "cqat-q8", "format_version": 1, "rounding": "half_even",
                  "source_model": "fuzz-seed", "qconfig": "fbgemm-qat"},
        "inputs": [0], "outputs": [6],
        "values": [
            {"name": "x", "dtype": "f32", "shape": [-1, 1, 4, 4]},
            {"name": "quant", "dtype": "u8", "shape": [-1, 1, 4, 4], "scale": s_in32, "zero_point": 128},
            {"name": "conv", "dtype": "u8", "shape": [-1, 2, 4, 4], "scale": s_conv32, "zero_point": 0},
            {"name": "pool", "dtype": "u8", "shape": [-1, 2, 2, 2], "scale": s_conv32, "zero_point": 0},
            {"name": "flat", "dtype": "u8", "shape": [-1, 8], "scale": s_conv32, "zero_point": 0},
            {"name": "fc", "dtype": "u8", "shape": [-1, 3], "scale": s_fc32, "zero_point": 128},
            {"name": "out", "dtype": "f32", "shape": [-1, 3]},
        ],
        "nodes": [
            {"op": "quantize", "name": "quant", "inputs": [0], "outputs": [1]},
            {"op": "conv2d", "name": "conv", "inputs": [1], "outputs": [2],
             "attrs": {"pad_h": 1, "pad_w": 1, "clamp_min": 0, "clamp_max": 255},
             "consts": wconsts(w_conv, ws_conv, s_in32, s_conv32)},
            {"op": "max_pool2d", "name": "pool", "inputs": [2], "outputs": [3],
             "attrs": {"kernel_h": 2, "kernel_w": 2, "stride_h": 2, "stride_w": 2}},
            {"op": "flatten", "name": "flat", "inputs": [3], "outputs": [4]},
            {"op": "linear", "name": "fc", "inputs": [4], "outputs": [5],
             "attrs": {"clamp_min": 0, "clamp_max": 255},
             "consts": wconsts(w_fc, ws_fc, s_conv32, s_fc32)},
            {"op": "dequantize", "name": "dequant", "inputs": [5], "outputs": [6]},
        ],
    }


def write_q8_model(path, spec=None):
    """Writes a q8 model file from a spec like q8_spec() returns (types as
    q8_model_save writes them: i64 shapes and attributes, f32 scales, i32 ids)."""
    spec = spec or q8_spec()
    with h5py.File(path, "w") as f:
        for k, v in spec["attrs"].items():
            f.attrs[k] = v
        f.attrs["n_values"] = np.int32(spec.get("n_values", len(spec["values"])))
        f.attrs["n_nodes"] = np.int32(spec.get("n_nodes", len(spec["nodes"])))
        f.attrs["inputs"] = np.array(spec["inputs"], dtype=np.int32)
        f.attrs["outputs"] = np.array(spec["outputs"], dtype=np.int32)
        values, nodes = f.create_group("values"), f.create_group("nodes")
        for i, v in enumerate(spec["values"]):
            g = values.create_group(str(i))
            g.attrs["name"] = v["name"]
            g.attrs["dtype"] = v["dtype"]
            g.attrs["shape"] = np.array(v["shape"], dtype=np.int64)
            if "scale" in v:
                g.attrs["scale"] = np.float32(v["scale"])
            if "zero_point" in v:
                g.attrs["zero_point"] = np.int32(v["zero_point"])
        for k, n in enumerate(spec["nodes"]):
            g = nodes.create_group(str(k))
            g.attrs["op"] = n["op"]
            g.attrs["name"] = n["name"]
            g.attrs["inputs"] = np.array(n["inputs"], dtype=np.int32)
            g.attrs["outputs"] = np.array(n["outputs"], dtype=np.int32)
            for a, x in n.get("attrs", {}).items():
                g.attrs[a] = np.int64(x)
            for c, x in n.get("consts", {}).items():
                g[c] = x


# ---- h5spec (tests/fuzz/fuzz_util.h) ---------------------------------------------------

TYPE_CODES = {np.dtype(t).str: i for i, t in enumerate(
    ["<u1", "<i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8"])}
FIXED_STR, VLEN_STR = 10, 11
WRITE_LIMIT = 512  # datasets with more elements are left unwritten (they read as zeros)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    assert len(b) < 256, s
    return bytes([len(b)]) + b


def type_code(dtype):
    dt = np.dtype(dtype)
    if dt.kind == "S":
        return FIXED_STR
    if dt.kind in "OU":
        return VLEN_STR
    return TYPE_CODES[dt.newbyteorder("<").str if dt.byteorder == ">" else dt.str]


def enc_attr(path, name, value):
    if isinstance(value, str):
        value = np.array(value, dtype=h5py.string_dtype())
    value = np.asarray(value)
    code = type_code(value.dtype)
    if value.ndim > 1 or value.size > 254:
        return b""
    out = bytes([2]) + string(path) + string(name) + bytes([code, 0 if value.ndim == 0 else value.size])
    flat = value.reshape(-1)
    if code == VLEN_STR:
        return out + b"".join(string(x if isinstance(x, (str, bytes)) else str(x)) for x in flat)
    if code == FIXED_STR:
        return out + bytes([value.dtype.itemsize]) + flat.tobytes()
    return out + flat.astype(value.dtype.newbyteorder("<")).tobytes()


def enc_dataset(path, ds, write_limit):
    dt = ds.dtype
    code = type_code(dt)
    out = bytes([1]) + string(path) + bytes([code, ds.ndim]) + b"".join(varint(d) for d in ds.shape)
    write = ds.size <= write_limit and code < FIXED_STR
    out += bytes([1 if write else 0])
    if write:
        out += np.asarray(ds[()]).astype(dt.newbyteorder("<")).tobytes()
    return out


def h5spec(path, write_limit=WRITE_LIMIT):
    """The h5spec program that rebuilds the HDF5 file at `path` (groups, datasets,
    attributes; datasets of more than write_limit elements left unwritten)."""
    out = bytearray()
    with h5py.File(path, "r") as f:
        for k, v in f.attrs.items():
            out += enc_attr(".", k, v)

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                out.extend(bytes([0]) + string(name))
            else:
                out.extend(enc_dataset(name, obj, write_limit))
            for k, v in obj.attrs.items():
                out.extend(enc_attr(name, k, v))

        f.visititems(visit)
    return bytes(out)


# ---- the corpus --------------------------------------------------------------------------


def save(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


RAW_DIR = None  # --raw DIR


def h5_seeds(out, target, name, path, selector):
    """The spec form of one HDF5 file behind the target's selector byte; with --raw,
    also the raw form (for CQAT_FUZZ_RAW=1 runs) under DIR/<target>. q8 models are
    written whole: their loader compares each constant with the bytes stored."""
    limit = 1 << 20 if target == "q8_model" else WRITE_LIMIT
    save(out, target, name, bytes([selector, 0]) + h5spec(path, limit))
    if RAW_DIR:
        with open(path, "rb") as f:
            save(RAW_DIR, target, name, bytes([selector]) + b"R" + f.read())


def corpus_idx(out):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    for name, labels, gz in (("plain", [0, 9, 3], False), ("gzip", [1, 2, 3], True),
                             ("emnist", [10, 11, 0], False)):
        a, b = idx_bytes(images), idx_bytes(np.array(labels, dtype=np.uint8))
        if gz:
            a, b = gzip.compress(a, mtime=0), gzip.compress(b, mtime=0)
        save(out, "idx", name, struct.pack("<I", len(a)) + a + b)


def corpus_cifar(out):
    rng = np.random.default_rng(3)
    rec = lambda label: bytes([label]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes()
    save(out, "cifar", "one_file", bytes([0]) + rec(3) + rec(9))
    a, b = rec(0), rec(1) + rec(2)
    save(out, "cifar", "two_files", bytes([1]) + struct.pack("<I", len(a)) + a + b)


def corpus_h5_data(out, tmp):
    rng = np.random.default_rng(4)
    p = os.path.join(tmp, "data.h5")
    with h5py.File(p, "w") as f:
        f["images"] = rng.integers(0, 256, size=(4, 5, 6), dtype=np.uint8)
        f["labels"] = np.array([0, 1, 2, 9], dtype=np.int64)
    h5_seeds(out, "h5_data", "nhw", p, 0)
    with h5py.File(p, "w") as f:
        f["train/images"] = rng.integers(0, 256, size=(3, 3, 4, 4), dtype=np.uint8)
        f["train/labels"] = np.array([0, 4, 2], dtype=np.uint8)
        f["train/labels"].attrs["n_classes"] = np.int64(5)
    h5_seeds(out, "h5_data", "nchw_n_classes", p, 1)


def state_only(src, dst):
    """The datasets at the root of a checkpoint: its state_dict."""
    with h5py.File(src, "r") as s, h5py.File(dst, "w") as d:
        for k in s:
            if isinstance(s[k], h5py.Dataset):
                d[k] = s[k][()]


def corpus_states(out, tmp, cqat):
    def run(*args):
        subprocess.run([cqat, *args, "--threads", "1", "--no-progress"], check=True,
                       capture_output=True, cwd=tmp)

    d28, d8 = os.path.join(tmp, "d28"), os.path.join(tmp, "d8")
    write_fashion_dir(d28, 32, 16)
    write_fashion_dir(d8, 32, 16, side=8)
    small = ["--epochs", "1", "--batch-size", "16", "--limit", "32"]
    # fuzz_state_dict's models: refcnn and mobilenet-tiny at 8x8, lenet5 at 28x28.
    for i, model in enumerate(("refcnn", "lenet5", "mobilenet-tiny")):
        run("train", "--model", model, "--data", d28 if model == "lenet5" else d8,
            "--out", model + ".h5", *small)
        state_only(os.path.join(tmp, model + ".h5"), os.path.join(tmp, model + "-sd.h5"))
        h5_seeds(out, "state_dict", model, os.path.join(tmp, model + "-sd.h5"), i)
    h5_seeds(out, "state_dict", "refcnn_opts", os.path.join(tmp, "refcnn-sd.h5"), 8 | 16)
    run("qat", "--init", "refcnn.h5", "--data", d8, "--out", "refcnn-qat.h5", *small)
    state_only(os.path.join(tmp, "refcnn-qat.h5"), os.path.join(tmp, "refcnn-qat-sd.h5"))
    h5_seeds(out, "state_dict", "refcnn_qat", os.path.join(tmp, "refcnn-qat-sd.h5"), 4)

    # Checkpoints of 8x8 inputs: small enough to write in full.
    # (fuzz_checkpoint's selector: bit 2 the resume path, bits 0-1 its optimizer)
    run("train", "--model", "refcnn", "--data", d8, "--out", "ck-sgd.h5", *small)
    h5_seeds(out, "checkpoint", "refcnn_sgd_eval", os.path.join(tmp, "ck-sgd.h5"), 0)
    h5_seeds(out, "checkpoint", "refcnn_sgd_resume", os.path.join(tmp, "ck-sgd.h5"), 4)
    run("train", "--model", "mobilenet-tiny", "--optimizer", "adam", "--data", d8,
        "--out", "ck-adam.h5", *small)
    h5_seeds(out, "checkpoint", "mobilenet_adam_resume", os.path.join(tmp, "ck-adam.h5"), 4 | 1)
    run("qat", "--init", "ck-sgd.h5", "--data", d8, "--out", "ck-qat.h5", *small)
    h5_seeds(out, "checkpoint", "refcnn_qat_eval", os.path.join(tmp, "ck-qat.h5"), 0)
    h5_seeds(out, "checkpoint", "refcnn_qat_resume", os.path.join(tmp, "ck-qat.h5"), 4)

    # Int8 models as cqat makes them (8x8 inputs): convert (refcnn's skip add, relu
    # clamps), calibrate (mobilenet-tiny: depthwise, relu6, adaptive pool) and dynamic
    # quantization (linear_dynamic, float ops).
    made = [("convert", ["ck-qat.h5"], "refcnn_converted"),
            ("calibrate", ["--init", "ck-adam.h5", "--data", d8, "--batches", "1",
                           "--batch-size", "8"], "mobilenet_calibrated"),
            ("quantize-dynamic", ["ck-sgd.h5"], "refcnn_dynamic")]
    for cmd, args, name in made:
        p = subprocess.run([cqat, cmd, *args, "--out", name + ".h5"], capture_output=True,
                           cwd=tmp)
        if p.returncode == 0:  # commands this cqat may not have yet
            h5_seeds(out, "q8_model", name, os.path.join(tmp, name + ".h5"), 0)


def corpus_q8(out, tmp):
    p = os.path.join(tmp, "model.h5")
    write_q8_model(p)
    h5_seeds(out, "q8_model", "conv_pool_linear", p, 0)
    spec = q8_spec()
    spec["nodes"][1]["consts"]["weight_scale"] = np.array([0.01], dtype=np.float32)
    spec["nodes"][1]["consts"]["multiplier"] = spec["nodes"][1]["consts"]["multiplier"][:1]
    spec["nodes"][1]["consts"]["shift"] = spec["nodes"][1]["consts"]["shift"][:1]
    write_q8_model(p, spec)
    h5_seeds(out, "q8_model", "per_tensor", p, 1)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cqat", default=os.path.join(here, "..", "..", "build", "tools", "cqat"))
    ap.add_argument("--out", default=os.path.join(here, "corpus"))
    ap.add_argument("--raw", metavar="DIR",
                    help="also write raw HDF5 seeds (CQAT_FUZZ_RAW=1) under DIR/<target>")
    args = ap.parse_args()
    global RAW_DIR
    RAW_DIR = args.raw
    cqat = os.path.abspath(args.cqat)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    tmp = tempfile.mkdtemp(prefix="cqat-corpus-")
    try:
        corpus_idx(args.out)
        corpus_cifar(args.out)
        corpus_h5_data(args.out, tmp)
        corpus_q8(args.out, tmp)
        corpus_states(args.out, tmp, cqat)
    finally:
        shutil.rmtree(tmp)
    for t in sorted(os.listdir(args.out)):
        files = os.listdir(os.path.join(args.out, t))
        size = sum(os.path.getsize(os.path.join(args.out, t, f)) for f in files)
        print("%-12s %2d seeds, %7d bytes" % (t, len(files), size))


if __name__ == "__main__":
    sys.exit(main())
