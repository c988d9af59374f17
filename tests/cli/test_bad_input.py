#!/usr/bin/python3
"""Bad input to the `cqat` command line: malformed data sets, checkpoints, state_dicts,
frozen int8 models and command lines. Each case must

  - exit with a non-zero status (and not die from a signal),
  - print exactly one line on stderr, naming the file / dataset / shape at fault,
  - report no sanitizer error (run it with a sanitizer build's cqat too),
  - leave the output directory and the input files exactly as they were (no new,
    removed or changed file: listings and bytes are compared before and after).

    /usr/bin/python3 tests/cli/test_bad_input.py build/tools/cqat

Data sets are crafted IDX folders with the four Fashion-MNIST file names (cqat train
--data DIR), so no data set needs to be installed. CIFAR-10 and HDF5 data sets have no
command-line path: tests/fuzz covers them through the C API. The int8-model cases run
only once `cqat eval MODEL.h5` accepts a frozen model (skipped before). The last line is
"N passed, N failed, N skipped". Needs Debian's python3-h5py and python3-numpy.
"""
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import h5py
import numpy as np

import cqat_cmd  # how cqat is started (directly, or under valgrind)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz"))
import make_corpus as mc  # noqa: E402  (IDX and q8 writers shared with the fuzz corpus)

CQAT = os.path.abspath(sys.argv[1])
ROOT = tempfile.mkdtemp(prefix="cqat-bad-input-")
IN = os.path.join(ROOT, "in")    # inputs (must not change either)
OUT = os.path.join(ROOT, "out")  # the working directory: outputs go here
GOOD = os.path.join(IN, "good")  # a valid data folder, 28x28
SMALL = ["--limit", "48", "--epochs", "1", "--batch-size", "16", "--no-progress",
         "--threads", "1"]
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehavior")


class Skip(Exception):
    pass


def run(*args, timeout=300):
    p = subprocess.run(cqat_cmd.command(CQAT, *args), capture_output=True, text=True,
                       cwd=OUT, timeout=cqat_cmd.timeout(timeout))
    cqat_cmd.check(args)
    return p


def snapshot():
    """Every file under ROOT with its size and hash: what a failed run must not touch."""
    snap = {}
    for d, dirs, files in os.walk(ROOT):
        for name in dirs + files:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    snap[p] = hashlib.sha256(f.read()).hexdigest()
            else:
                snap[p] = "dir"
    return snap


def expect_error(args, *needles):
    before = snapshot()
    p = run(*args)
    after = snapshot()
    cmd = "cqat " + " ".join(args)
    assert p.returncode > 0, "%s: exit status %d (expected an error, not %s)\n%s" % (
        cmd, p.returncode, "a signal" if p.returncode < 0 else "success", p.stderr[-2000:])
    for mark in SANITIZER_MARKS:
        assert mark not in p.stderr, "%s: sanitizer report:\n%s" % (cmd, p.stderr[-4000:])
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, "%s: expected one error line, got %d:\n%s" % (cmd, len(lines), p.stderr)
    for n in needles:
        assert n in lines[0], "%s: %r not in the message %r" % (cmd, n, lines[0])
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert not (added or removed or changed), "%s: files added %s, removed %s, changed %s" % (
        cmd, added, removed, changed)
    return lines[0]


# ---- fixtures ------------------------------------------------------------------------


def data_dir(name, **files):
    """A copy of the valid data folder with some files replaced: name=bytes or None
    (None removes it). Keys: train_images, train_labels, test_images, test_labels."""
    d = os.path.join(IN, name)
    shutil.copytree(GOOD, d)
    names = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    for key, data in files.items():
        path = os.path.join(d, names[key])
        os.remove(path)
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)
    return d


def train_on(d, *needles):
    return expect_error(["train", "--data", d, "--out", "model.h5", *SMALL], *needles)


def images(n=48, side=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side), dtype=np.uint8)


def labels(n=48):
    return (np.arange(n) % 10).astype(np.uint8)


def idx_header(magic, dims):
    return bytes(magic) + b"".join(int(d).to_bytes(4, "big") for d in dims)


def setup():
    os.makedirs(IN)
    os.makedirs(OUT)
    mc.write_fashion_dir(GOOD, 48, 48, compress=False)
    p = run("train", "--data", GOOD, "--out", os.path.join(IN, "ckpt.h5"), *SMALL)
    assert p.returncode == 0, p.stderr
    with h5py.File(os.path.join(IN, "ckpt.h5"), "r") as src, \
            h5py.File(os.path.join(IN, "sd.h5"), "w") as dst:
        for k in src:
            if isinstance(src[k], h5py.Dataset):
                dst[k] = src[k][()]
    # An output that exists before each case: a failed run must leave it as it is.
    shutil.copy(os.path.join(IN, "ckpt.h5"), os.path.join(OUT, "model.h5"))


def variant(src, name, edit):
    """A copy of in/src named in/name, changed by edit(h5py.File)."""
    dst = os.path.join(IN, name)
    shutil.copy(os.path.join(IN, src), dst)
    with h5py.File(dst, "a") as f:
        edit(f)
    return dst


def replace(f, key, value, **kw):
    del f[key]
    f.create_dataset(key, data=value, **kw)


def eval_ckpt(path, *needles):
    return expect_error(["eval", path, "--data", GOOD, "--limit", "16"], *needles)


def eval_weights(path, *needles):
    return expect_error(["eval", "--model", "refcnn", "--weights", path, "--data", GOOD,
                         "--limit", "16"], *needles)


def init_from(path, *needles):
    return expect_error(["train", "--init", path, "--data", GOOD, "--out", "model.h5", *SMALL],
                        *needles)


def resume_from(path, *needles):
    return expect_error(["train", "--resume", path, "--no-progress"], *needles)


# ---- IDX data sets (cqat train --data DIR) ----------------------------------------------


def test_idx_wrong_magic():
    d = data_dir("magic", train_images=b"\x12\x34\x08\x03" + mc.idx_bytes(images())[4:])
    train_on(d, "train-images-idx3-ubyte", "not an IDX file", "magic 0x12340803")


def test_idx_wrong_element_type():
    d = data_dir("eltype", train_images=b"\x00\x00\x0d\x03" + mc.idx_bytes(images())[4:])
    train_on(d, "train-images-idx3-ubyte", "element type 0x0d")


def test_idx_wrong_dimension_count():
    d = data_dir("dims", train_images=mc.idx_bytes(images().reshape(48, 784)))
    train_on(d, "train-images-idx3-ubyte", "2 dimensions")


def test_idx_labels_given_as_images():
    d = data_dir("swapped", train_images=mc.idx_bytes(labels()))
    train_on(d, "train-images-idx3-ubyte", "is this a labels file?")


def test_idx_sizes_that_overflow():
    d = data_dir("overflow", train_images=idx_header([0, 0, 8, 3], [2**32 - 1] * 3) + b"\0" * 64)
    train_on(d, "train-images-idx3-ubyte", "4294967295 images of 4294967295x4294967295",
             "overflows")


def test_idx_image_too_large():
    d = data_dir("toolarge", train_images=idx_header([0, 0, 8, 3], [1, 65536, 65536]))
    train_on(d, "train-images-idx3-ubyte", "1 images of 65536x65536", "too large")


def test_idx_sizes_exceed_the_file():
    d = data_dir("exceed", train_images=idx_header([0, 0, 8, 3], [100000, 28, 28]) + b"\0" * 784)
    train_on(d, "train-images-idx3-ubyte", "truncated", "100000 images of 28x28")


def test_idx_empty_dataset():
    d = data_dir("empty", train_images=idx_header([0, 0, 8, 3], [0, 28, 28]))
    train_on(d, "train-images-idx3-ubyte", "an empty dataset")


def test_idx_truncated_payload():
    d = data_dir("trunc", train_images=mc.idx_bytes(images())[:-100])
    train_on(d, "train-images-idx3-ubyte", "truncated", "48 images of 28x28")


def test_idx_trailing_bytes():
    d = data_dir("trailing", test_images=mc.idx_bytes(images()) + b"extra")
    train_on(d, "t10k-images-idx3-ubyte", "but the file holds")


def test_idx_header_cut_short():
    d = data_dir("short", train_labels=b"\x00\x00\x08")
    train_on(d, "train-labels-idx1-ubyte", "at least 4 bytes")


def test_idx_truncated_gzip():
    gz = gzip.compress(mc.idx_bytes(images()), mtime=0)
    d = data_dir("gztrunc", train_images=None)
    with open(os.path.join(d, "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(gz[: len(gz) // 2])
    train_on(d, "train-images-idx3-ubyte.gz", "truncated gzip stream")


def test_idx_corrupt_gzip():
    gz = bytearray(gzip.compress(mc.idx_bytes(images()), mtime=0))
    for i in range(40, len(gz) - 20, 7):
        gz[i] ^= 0x5A
    d = data_dir("gzbad", train_images=None)
    with open(os.path.join(d, "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(gz)
    train_on(d, "train-images-idx3-ubyte.gz", "gzip")


def test_idx_label_count_differs_from_image_count():
    d = data_dir("count", train_labels=mc.idx_bytes(labels(47)))
    train_on(d, "train-labels-idx1-ubyte", "47 labels", "48 images")


def test_idx_label_out_of_range():
    lab = labels()
    lab[7] = 200
    d = data_dir("label200", train_labels=mc.idx_bytes(lab))
    train_on(d, "train-labels-idx1-ubyte", "200")


def test_idx_test_label_outside_the_train_classes():
    lab = labels()
    lab[5] = 10  # the test set claims an 11th class the model never saw
    d = data_dir("testlabel", test_labels=mc.idx_bytes(lab))
    train_on(d, "t10k-", "test label 10 at index 5", "outside the 10 classes")


def test_idx_test_images_of_another_size():
    # refused when the data are loaded, not after an epoch of training
    d = data_dir("testsize", test_images=mc.idx_bytes(images(side=14)))
    train_on(d, "t10k-images", "test images are 1x14x14", "are 1x28x28")


def test_idx_missing_file():
    d = data_dir("missing", train_labels=None)
    train_on(d, "train-labels-idx1-ubyte", "not found")


def test_idx_file_is_a_directory():
    d = data_dir("isdir", train_images=None)
    os.mkdir(os.path.join(d, "train-images-idx3-ubyte.gz"))
    train_on(d, "train-images-idx3-ubyte.gz")


# ---- checkpoints and state_dicts ---------------------------------------------------------


def test_state_not_hdf5():
    p = os.path.join(IN, "text.h5")
    with open(p, "w") as f:
        f.write("conv1.weight = [1, 2, 3]\n")
    eval_ckpt(p, "text.h5", "not an HDF5 file")
    eval_weights(p, "text.h5", "not an HDF5 file")
    init_from(p, "text.h5", "not an HDF5 file")
    resume_from(p, "text.h5", "not an HDF5 file")


def test_state_empty_file():
    p = os.path.join(IN, "empty.h5")
    open(p, "wb").close()
    eval_ckpt(p, "empty.h5")
    resume_from(p, "empty.h5")


def test_state_truncated():
    with open(os.path.join(IN, "ckpt.h5"), "rb") as f:
        data = f.read()
    for cut in (512, len(data) // 3, len(data) - 1000):
        p = os.path.join(IN, "trunc%d.h5" % cut)
        with open(p, "wb") as f:
            f.write(data[:cut])
        eval_ckpt(p, "trunc%d.h5" % cut)
        resume_from(p, "trunc%d.h5" % cut)
        init_from(p, "trunc%d.h5" % cut)


def test_state_missing_key():
    p = variant("sd.h5", "missing.h5", lambda f: f.__delitem__("fc2.bias"))
    eval_weights(p, "missing.h5", "missing key(s)", "fc2.bias")
    init_from(p, "missing.h5", "missing key(s)", "fc2.bias")


def test_state_unexpected_key():
    p = variant("sd.h5", "unexpected.h5", lambda f: f.create_dataset("fc3.weight", data=np.zeros(3, "f4")))
    eval_weights(p, "unexpected.h5", "unexpected key(s)", "fc3.weight")


def test_state_misshaped_key():
    p = variant("sd.h5", "shape.h5", lambda f: replace(f, "conv1.weight", np.zeros((16, 3, 3, 3), "f4")))
    eval_weights(p, "shape.h5", "size mismatch", "conv1.weight", "[16, 3, 3, 3]", "[16, 1, 3, 3]")
    init_from(p, "shape.h5", "size mismatch", "conv1.weight")
    c = variant("ckpt.h5", "ckshape.h5", lambda f: replace(f, "fc1.weight", np.zeros((128, 7), "f4")))
    eval_ckpt(c, "ckshape.h5", "fc1.weight", "[128, 7]")
    resume_from(c, "ckshape.h5", "fc1.weight")


def test_state_wrong_dtypes():
    p = variant("sd.h5", "int.h5", lambda f: replace(f, "conv1.weight", np.zeros((16, 1, 3, 3), "i4")))
    eval_weights(p, "int.h5", "conv1.weight", "not floating point")
    p = variant("sd.h5", "str.h5", lambda f: replace(f, "bn1.running_mean", np.array([b"x"] * 16)))
    eval_weights(p, "str.h5", "bn1.running_mean")
    p = variant("sd.h5", "frac.h5", lambda f: replace(f, "bn1.num_batches_tracked", np.float64(1.5)))
    eval_weights(p, "frac.h5", "bn1.num_batches_tracked", "integers")


def test_state_nan_and_inf_weights():
    def nan(f):
        w = f["conv2.weight"][()]
        w[1, 2, 0, 1] = np.nan
        replace(f, "conv2.weight", w)
    eval_weights(variant("sd.h5", "nan.h5", nan), "nan.h5", "conv2.weight", "NaN")
    init_from(os.path.join(IN, "nan.h5"), "nan.h5", "conv2.weight", "NaN")

    def inf(f):
        b = f["fc2.bias"][()]
        b[3] = -np.inf
        replace(f, "fc2.bias", b)
    eval_weights(variant("sd.h5", "inf.h5", inf), "inf.h5", "fc2.bias", "Inf")
    resume_from(variant("ckpt.h5", "ckinf.h5", inf), "ckinf.h5", "fc2.bias")


def test_state_negative_running_var():
    def neg(f):
        v = f["bn2.running_var"][()]
        v[4] = -0.5
        replace(f, "bn2.running_var", v)
    eval_weights(variant("sd.h5", "negvar.h5", neg), "negvar.h5", "bn2.running_var", "negative")
    eval_ckpt(variant("ckpt.h5", "cknegvar.h5", neg), "cknegvar.h5", "bn2.running_var", "negative")


def test_state_huge_declared_dims():
    # Declared but never written (h5py allocates chunks lazily): nothing may be allocated
    # for it, and the shape alone is refused.
    def huge(f):
        del f["fc1.weight"]
        f.create_dataset("fc1.weight", shape=(2**40, 2**20), dtype="f4", chunks=(1, 16))
    eval_weights(variant("sd.h5", "huge.h5", huge), "huge.h5", "fc1.weight", "[1099511627776, 1048576]")
    eval_ckpt(variant("ckpt.h5", "ckhuge.h5", huge), "ckhuge.h5", "fc1.weight")


def test_ckpt_huge_model_configuration():
    def config(f):
        f.attrs["in_h"] = np.int64(16384)
        f.attrs["in_w"] = np.int64(16384)
    p = variant("ckpt.h5", "bigcfg.h5", config)
    eval_ckpt(p, "bigcfg.h5", "in_h", "16384")
    resume_from(p, "bigcfg.h5", "in_h")
    p = variant("ckpt.h5", "channels.h5", lambda f: f.attrs.__setitem__("in_channels", np.int64(1 << 20)))
    eval_ckpt(p, "channels.h5", "in_channels")


def test_ckpt_wrong_format_version():
    p = variant("ckpt.h5", "v2.h5", lambda f: f.attrs.__setitem__("format_version", np.int64(2)))
    eval_ckpt(p, "v2.h5", "format version 2")
    resume_from(p, "v2.h5", "format version 2")


def test_ckpt_wrong_format_name():
    p = variant("ckpt.h5", "fmt.h5", lambda f: f.attrs.__setitem__("format", "keras"))
    eval_ckpt(p, "fmt.h5", "keras", "not a cqat checkpoint")


def test_ckpt_missing_attribute():
    p = variant("ckpt.h5", "noattr.h5", lambda f: f.attrs.__delitem__("num_classes"))
    eval_ckpt(p, "noattr.h5", "num_classes")


def test_ckpt_unknown_model_name():
    p = variant("ckpt.h5", "model.h5", lambda f: f.attrs.__setitem__("model_name", "resnet50"))
    eval_ckpt(p, "resnet50")


def test_ckpt_negative_step():
    p = variant("ckpt.h5", "negstep.h5", lambda f: f.attrs.__setitem__("step", np.int64(-3)))
    resume_from(p, "negstep.h5", "negative")


def test_ckpt_bad_rng_state():
    p = variant("ckpt.h5", "rng.h5", lambda f: replace(f, "train_state/rng", np.array([5, 6], "i8")))
    resume_from(p, "rng.h5", "rng")


def test_ckpt_missing_optimizer_state():
    p = variant("ckpt.h5", "noopt.h5", lambda f: f.__delitem__("optimizer"))
    resume_from(p, "noopt.h5", "optimizer")


def test_ckpt_misshaped_optimizer_state():
    def edit(f):
        k = [k for k in f["optimizer"] if isinstance(f["optimizer"][k], h5py.Dataset)
             and f["optimizer"][k].ndim == 4][0]
        replace(f["optimizer"], k, np.zeros((2, 2), "f4"))
    resume_from(variant("ckpt.h5", "optshape.h5", edit), "optshape.h5", "optimizer")


def test_ckpt_optimizer_of_another_kind():
    p = variant("ckpt.h5", "adam.h5", lambda f: f["optimizer"].attrs.__setitem__("kind", "adam"))
    resume_from(p, "adam.h5", "adam")


# ---- frozen int8 models (cqat eval MODEL.h5, docs/FORMAT.md) --------------------------------

Q8_SUPPORTED = None


def q8_case(name, edit, *needles):
    """A q8 model made from make_corpus.q8_spec() and changed by edit, evaluated on 4x4
    images: edit(spec) changes the spec before writing, edit(f) the h5py.File after,
    edit(path) the file's bytes."""
    global Q8_SUPPORTED
    d4 = os.path.join(IN, "d4")
    if not os.path.isdir(d4):
        mc.write_fashion_dir(d4, 16, 16, side=4, compress=False)
    if Q8_SUPPORTED is None:
        p = os.path.join(IN, "q8ok.h5")
        mc.write_q8_model(p)
        Q8_SUPPORTED = run("eval", p, "--data", d4).returncode == 0
    if not Q8_SUPPORTED:
        raise Skip("cqat eval does not accept q8 models yet")
    spec = mc.q8_spec()
    path = os.path.join(IN, name + ".h5")
    arg = edit.__code__.co_varnames[0]
    if arg == "spec":
        edit(spec)
    mc.write_q8_model(path, spec)
    if arg == "f":
        with h5py.File(path, "a") as f:
            edit(f)
    elif arg == "path":
        edit(path)
    return expect_error(["eval", path, "--data", d4], name + ".h5", *needles)


def test_q8_unknown_op():
    q8_case("q8op", lambda spec: spec["nodes"][3].update(op="frobnicate"), "frobnicate")


def test_q8_value_id_out_of_range():
    q8_case("q8id", lambda spec: spec["nodes"][2].update(inputs=[99]), "99")


def test_q8_cycle():
    # pool reads the value flatten writes: a cycle (or a use before definition).
    q8_case("q8cycle", lambda spec: spec["nodes"][2].update(inputs=[4]), "node 2")


def test_q8_zero_and_negative_scales():
    q8_case("q8zero", lambda spec: spec["values"][2].update(scale=np.float32(0)), "scale")
    q8_case("q8neg", lambda spec: spec["values"][5].update(scale=np.float32(-0.1)), "scale")
    q8_case("q8wscale", lambda spec: spec["nodes"][1]["consts"].update(
        weight_scale=np.array([0.01, 0.0], np.float32)), "weight_scale")


def test_q8_zero_point_out_of_range():
    q8_case("q8zp", lambda spec: spec["values"][1].update(zero_point=300), "zero_point")


def test_q8_shift_out_of_range():
    q8_case("q8shift", lambda spec: spec["nodes"][4]["consts"].update(
        shift=np.array([70], np.int32)), "shift")


def test_q8_shapes_that_do_not_chain():
    q8_case("q8shape", lambda spec: spec["values"][4].update(shape=[-1, 9]), "shape")
    q8_case("q8wshape", lambda spec: spec["nodes"][4]["consts"].update(
        weight=np.zeros((3, 9), np.int8)), "weight")


def test_q8_wrong_format_version():
    q8_case("q8ver", lambda f: f.attrs.__setitem__("format_version", np.int32(7)), "7")


def test_q8_truncated():
    def cut(path):
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    q8_case("q8trunc", cut)


# ---- the int8 tool commands (convert, calibrate, quantize-dynamic, infer, inspect) ---------


def need_command(name):
    if "unknown command" in run(name, "--help").stderr:
        raise Skip("this cqat has no '%s' command" % name)


def test_convert_of_float_weights():
    need_command("convert")
    expect_error(["convert", os.path.join(IN, "ckpt.h5"), "--out", "int8.h5"], "ckpt.h5", "float")


def test_quantize_and_calibrate_from_a_non_checkpoint():
    need_command("quantize-dynamic")
    p = os.path.join(IN, "q8model.h5")
    mc.write_q8_model(p)
    expect_error(["quantize-dynamic", p, "--out", "dyn.h5"], "q8model.h5", "not a cqat checkpoint")
    expect_error(["calibrate", "--init", p, "--out", "cal.h5", "--data", GOOD], "q8model.h5")


def test_infer_on_float_images():
    need_command("infer")
    p = os.path.join(IN, "q8infer.h5")
    mc.write_q8_model(p)
    x = os.path.join(IN, "float_images.h5")
    with h5py.File(x, "w") as f:
        f["images"] = np.zeros((3, 4, 4), "f4")
    expect_error(["infer", p, "--input", x], "float_images.h5", "'images'", "float32")


def test_inspect_of_a_file_that_is_not_hdf5():
    need_command("inspect")
    p = os.path.join(IN, "notes.h5")
    with open(p, "w") as f:
        f.write("just text\n")
    expect_error(["inspect", p], "notes.h5", "not an HDF5 file")


# ---- command lines -----------------------------------------------------------------------


def test_cli_unknown_flag():
    expect_error(["train", "--learning-rate", "0.1"], "unknown option '--learning-rate'")
    expect_error(["eval", "--bogus"], "unknown option '--bogus'")


def test_cli_bad_numbers():
    expect_error(["train", "--lr", "fast"], "--lr", "fast")
    expect_error(["train", "--lr", "nan"], "--lr", "nan")
    expect_error(["train", "--batch-size", "1.5"], "--batch-size", "1.5")
    expect_error(["train", "--seed", "99999999999999999999999"], "--seed")
    expect_error(["train", "--threads", "5000"], "--threads", "5000")


def test_cli_batch_size_zero():
    expect_error(["train", "--batch-size", "0"], "--batch-size", "'0'")


def test_cli_negative_epochs_and_limit():
    expect_error(["train", "--epochs", "-1"], "--epochs", "'-1'")
    expect_error(["train", "--limit", "-5"], "--limit", "'-5'")


def test_cli_missing_value_and_unknown_command():
    expect_error(["train", "--out"], "--out: missing value")
    expect_error(["trian"], "unknown command 'trian'")


def test_cli_missing_files():
    expect_error(["eval", os.path.join(IN, "nope.h5")], "nope.h5")
    expect_error(["train", "--init", os.path.join(IN, "nope.h5"), "--data", GOOD, *SMALL], "nope.h5")
    expect_error(["train", "--resume", os.path.join(IN, "nope.h5")], "nope.h5")
    expect_error(["train", "--data", os.path.join(IN, "nodir"), *SMALL], "nodir")


def test_cli_unwritable_output_path():
    expect_error(["train", "--data", GOOD, "--out", "/nonexistent/dir/x.h5", *SMALL],
                 "/nonexistent/dir/x.h5")
    os.mkdir(os.path.join(OUT, "adir"))
    try:
        expect_error(["train", "--data", GOOD, "--out", "adir", *SMALL], "adir")
    finally:
        os.rmdir(os.path.join(OUT, "adir"))


def main():
    setup()
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    tests.sort(key=lambda nf: nf[1].__code__.co_firstlineno)
    passed = failed = skipped = 0
    for name, fn in tests:
        try:
            fn()
            passed += 1
            print("ok   %s" % name)
        except Skip as e:
            skipped += 1
            print("skip %s: %s" % (name, e))
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print("FAIL %s\n%s" % (name, traceback.format_exc()))
    shutil.rmtree(ROOT, ignore_errors=True)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
