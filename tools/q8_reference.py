#!/usr/bin/python3
"""q8_reference.py — an independent reader and interpreter of cqat-q8 model files.

It follows docs/FORMAT.md with numpy and h5py only (no cqat code), to prove the format
can be read by a third party and to give the C runtime (quantized/) integers to be
compared against:

    q8_reference.py MODEL.h5 INPUT.h5 OUT.h5     run, same files as tests/q8_run
    q8_reference.py --describe MODEL.h5          print the graph

INPUT.h5 holds "input_<i>" for each graph input (shape (N, ...), the input's dtype);
OUT.h5 receives "values/<id>" for every value. Integer arithmetic is done in int64 with
numpy; float steps are done in float32 exactly as the format specifies (the fused
multiply-add of linear_dynamic's input quantization is computed exactly in long double).
The float pools sum in float32 in the order the format fixes (row by row, PyTorch's);
the sums of conv2d_f32 and linear_f32, whose order the format leaves to the
implementation, are computed in float64 and rounded once to float32: the exact sum
whenever float32 can hold it, else within rounding of it.

As a library:  model = load(path); values = run(model, [x]); values[id] -> ndarray.
"""
import sys

import h5py
import numpy as np

FORMAT = "cqat-q8"
VERSION = 1
ROUNDING = "half_even"
DTYPES = {"u8": np.uint8, "i8": np.int8, "i32": np.int32, "f32": np.float32}
QRANGE = {"u8": (0, 255), "i8": (-128, 127)}
F32 = np.float32


class FormatError(Exception):
    pass


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------

def _text(obj, name):
    v = obj.attrs[name]
    if isinstance(v, bytes):
        v = v.decode("utf-8")
    if isinstance(v, np.ndarray):  # a 1-element array of strings
        v = v.reshape(-1)[0]
        v = v.decode("utf-8") if isinstance(v, bytes) else str(v)
    return str(v)


def _ints(obj, name):
    return [int(v) for v in np.asarray(obj.attrs[name]).reshape(-1)]


class Value:
    def __init__(self, vid, g):
        self.id = vid
        self.name = _text(g, "name")
        self.dtype = _text(g, "dtype")
        if self.dtype not in ("u8", "i8", "f32"):
            raise FormatError(f"value {vid}: dtype {self.dtype!r}")
        self.shape = _ints(g, "shape")
        if self.shape[0] != -1:
            raise FormatError(f"value {vid}: shape[0] must be -1")
        if self.dtype in QRANGE:
            scale = np.asarray(g.attrs["scale"])
            if scale.dtype != np.float32:
                raise FormatError(f"value {vid}: scale must be float32")
            self.scale = F32(scale.reshape(-1)[0])
            self.zero_point = _ints(g, "zero_point")[0]
            if not (np.isfinite(self.scale) and self.scale > 0):
                raise FormatError(f"value {vid}: scale {self.scale}")
            lo, hi = QRANGE[self.dtype]
            if not lo <= self.zero_point <= hi:
                raise FormatError(f"value {vid}: zero_point {self.zero_point}")
        else:
            self.scale, self.zero_point = None, None


# Optional clamp ranges of version 1 (absent from files written before they existed):
# absent means the output dtype's full range.
CLAMP_DEFAULT_OPS = ("quantize", "cat", "avg_pool2d", "adaptive_avg_pool2d")
# Ops whose clamp_min/clamp_max bound a quantized output.
CLAMP_OPS = CLAMP_DEFAULT_OPS + ("conv2d", "linear", "add", "mul", "clamp", "requantize")
ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 2
ACT_DEFAULT_OPS = ("conv2d_f32", "linear_f32", "add_f32", "mul_f32")


class Node:
    def __init__(self, index, g):
        self.index = index
        self.op = _text(g, "op")
        self.name = _text(g, "name")
        self.inputs = _ints(g, "inputs")
        self.outputs = _ints(g, "outputs")
        self.attrs = {k: _ints(g, k)[0] for k in g.attrs
                      if k not in ("op", "name", "inputs", "outputs")}
        self.consts = {k: np.array(g[k]) for k in g.keys()}
        if self.op in ACT_DEFAULT_OPS:
            self.attrs.setdefault("act", ACT_NONE)

    def a(self, key):
        return self.attrs[key]


class Model:
    pass


def load(path):
    with h5py.File(path, "r") as f:
        if _text(f, "format") != FORMAT:
            raise FormatError("not a cqat-q8 model")
        if _ints(f, "format_version")[0] != VERSION:
            raise FormatError("unsupported format_version")
        if _text(f, "rounding") != ROUNDING:
            raise FormatError("unsupported rounding rule")
        m = Model()
        m.source_model = _text(f, "source_model")
        m.qconfig = _text(f, "qconfig")
        n_values, n_nodes = _ints(f, "n_values")[0], _ints(f, "n_nodes")[0]
        m.values = [Value(i, f["values"][str(i)]) for i in range(n_values)]
        m.nodes = [Node(k, f["nodes"][str(k)]) for k in range(n_nodes)]
        m.inputs, m.outputs = _ints(f, "inputs"), _ints(f, "outputs")
    defined = set(m.inputs)
    for n in m.nodes:  # the runtime validates everything; a reader checks the order
        if any(v not in defined for v in n.inputs):
            raise FormatError(f"node {n.index}: input used before its definition")
        defined.update(n.outputs)
        if n.op in CLAMP_OPS:
            _clamp_range(m, n)
    return m


def _clamp_range(m, n):
    """Fills in the default clamp range and checks it: inside the output dtype's range,
    holding the output zero point (docs/FORMAT.md, 4.3)."""
    y = m.values[n.outputs[0]]
    if y.dtype not in QRANGE:
        raise FormatError(f"node {n.index}: {n.op} gives u8 or i8")
    lo, hi = QRANGE[y.dtype]
    if n.op in CLAMP_DEFAULT_OPS:
        n.attrs.setdefault("clamp_min", lo)
        n.attrs.setdefault("clamp_max", hi)
    cmin, cmax = n.a("clamp_min"), n.a("clamp_max")
    if not lo <= cmin <= y.zero_point <= cmax <= hi:
        raise FormatError(f"node {n.index}: clamp [{cmin}, {cmax}] is not inside {y.dtype} "
                          f"[{lo}, {hi}] around the zero point {y.zero_point}")


# ---------------------------------------------------------------------------------------
# integer arithmetic (docs/FORMAT.md, "Requantization")
# ---------------------------------------------------------------------------------------

def rq(x, m0, shift):
    """round_half_even(x * m0 / 2^shift) of int64 arrays, from the exact product."""
    x = np.asarray(x, np.int64)
    m0 = np.asarray(m0, np.int64)
    shift = np.asarray(shift, np.int64)
    p = x * m0
    s = np.broadcast_to(shift, p.shape)
    q = p >> s
    mask = (np.uint64(1) << s.astype(np.uint64)) - np.uint64(1)
    rem = p.view(np.uint64) & mask
    half = np.where(s > 0, np.uint64(1) << np.maximum(s - 1, 0).astype(np.uint64), np.uint64(0))
    up = (s > 0) & ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    return q + up.astype(np.int64)


def rq_div(x, m0, shift, d):
    """round_half_even(x * m0 / (d * 2^shift)) exactly (the average pools)."""
    x = np.asarray(x, np.int64)
    d = np.asarray(d, np.int64)
    p = x * np.int64(m0)
    q1 = p >> np.int64(shift)
    r1 = p.view(np.uint64) & np.uint64((1 << shift) - 1)
    q2 = np.floor_divide(q1, d)
    k = 2 * (q1 - q2 * d) - d
    if shift == 0:
        cmp = np.sign(k)
    else:
        half = np.uint64(1 << (shift - 1))
        cmp_km1 = np.where(r1 > half, 1, np.where(r1 == half, 0, -1))
        cmp = np.where(k >= 1, 1, np.where(k <= -2, -1,
                       np.where(k == 0, np.where(r1 > 0, 1, 0), cmp_km1)))
    up = (cmp > 0) | ((cmp == 0) & ((q2 & 1) == 1))
    return q2 + up.astype(np.int64)


def multiplier_from_real(real):
    """The builder's rule (M0 in [2^30, 2^31), shift in [0, 63]); for third-party writers."""
    f, e = np.frexp(real)
    q = int(np.rint(np.ldexp(f, 31)))
    if q >= 1 << 31:
        q, e = 1 << 30, e + 1
    s = 31 - int(e)
    if s < 0:
        raise ValueError("multiplier too large")
    return (0, 0) if s > 63 else (q, s)


def ints(value, data):
    """The integers of a quantized value's array, as int64."""
    return data.astype(np.int64)


def store(value, v):
    lo, hi = QRANGE[value.dtype]
    return np.clip(v, lo, hi).astype(DTYPES[value.dtype])


# ---------------------------------------------------------------------------------------
# ops
# ---------------------------------------------------------------------------------------

def op_quantize(m, n, x):
    y = m.values[n.outputs[0]]
    inv = F32(1.0) / y.scale
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.rint(x.astype(F32) * inv)
    lo, hi = n.a("clamp_min"), n.a("clamp_max")
    zp = y.zero_point
    out = np.where(np.isnan(r), F32(zp), r)
    out = np.where(out <= F32(lo - zp), F32(lo - zp), np.where(out >= F32(hi - zp), F32(hi - zp), out))
    return (out.astype(np.int64) + zp).astype(DTYPES[y.dtype])


def op_dequantize(m, n, x):
    v = m.values[n.inputs[0]]
    return v.scale * (ints(v, x) - v.zero_point).astype(F32)


def _geometry(h, k, s, p, d, ceil_mode):
    num = h + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and out > 0 and (out - 1) * s >= h + p:
        out -= 1
    return out


def _windows(xs, kh, kw, sh, sw, dh, dw, oh, ow):
    """Yield (i, j, slice of xs (N, C, oh, ow)) for each kernel offset of a padded array."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, xs[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                                 j * dw: j * dw + sw * (ow - 1) + 1: sw]


def _pad(x, ph, pw, oh, ow, kh, kw, sh, sw, dh, dw, fill):
    """Pads (N, C, H, W) by ph/pw on the left and enough on the right for every window."""
    h, w = x.shape[2], x.shape[3]
    right_h = max(ph, (oh - 1) * sh + dh * (kh - 1) + 1 - h - ph)
    right_w = max(pw, (ow - 1) * sw + dw * (kw - 1) + 1 - w - pw)
    return np.pad(x, ((0, 0), (0, 0), (ph, right_h), (pw, right_w)), constant_values=fill)


def _requant_out(n, acc, y, per_channel_axis):
    mult, shift = n.consts["multiplier"].astype(np.int64), n.consts["shift"].astype(np.int64)
    shape = [1] * acc.ndim
    if mult.size > 1:
        shape[per_channel_axis] = mult.size
    v = y.zero_point + rq(acc, mult.reshape(shape), shift.reshape(shape))
    return store(y, np.clip(v, n.a("clamp_min"), n.a("clamp_max")))


def op_conv2d(m, n, x):
    xv, y = m.values[n.inputs[0]], m.values[n.outputs[0]]
    w = n.consts["weight"].astype(np.int64)
    o, cg, kh, kw = w.shape
    sh, sw, ph, pw = n.a("stride_h"), n.a("stride_w"), n.a("pad_h"), n.a("pad_w")
    dh, dw, groups = n.a("dilation_h"), n.a("dilation_w"), n.a("groups")
    nb, c, h, wd = x.shape
    oh, ow = _geometry(h, kh, sh, ph, dh, False), _geometry(wd, kw, sw, pw, dw, False)
    xs = _pad(ints(xv, x) - xv.zero_point, ph, pw, oh, ow, kh, kw, sh, sw, dh, dw, 0)
    og = o // groups
    acc = np.zeros((nb, o, oh, ow), np.int64)
    for i, j, patch in _windows(xs, kh, kw, sh, sw, dh, dw, oh, ow):
        for g in range(groups):
            acc[:, g * og:(g + 1) * og] += np.einsum(
                "nchw,oc->nohw", patch[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og, :, i, j])
    if "bias" in n.consts:
        acc += n.consts["bias"].astype(np.int64).reshape(1, o, 1, 1)
    return _requant_out(n, acc, y, 1)


def op_linear(m, n, x):
    xv, y = m.values[n.inputs[0]], m.values[n.outputs[0]]
    w = n.consts["weight"].astype(np.int64)
    acc = (ints(xv, x) - xv.zero_point) @ w.T
    if "bias" in n.consts:
        acc += n.consts["bias"].astype(np.int64)
    return _requant_out(n, acc, y, 1)


def choose_qparams_dynamic(mn, mx, reduce_range):
    """PyTorch quant_utils::ChooseQuantizationParams(min, max, 0, 255, reduce_range)."""
    small = F32(6.1e-5)
    qmin, qmax = (0, 127) if reduce_range else (0, 255)
    mn, mx = F32(mn), F32(mx)
    mn = F32(0) if F32(0) < mn else mn
    mx = F32(0) if mx < F32(0) else mx
    scale = (float(mx) - float(mn)) / (qmax - qmin)
    with np.errstate(over="ignore", divide="ignore"):
        if F32(scale) == 0 or np.isinf(F32(1) / F32(scale)):
            scale = 0.1
    if scale < float(small):
        org = F32(scale)
        scale = float(small)
        if mn == 0:
            mx = small * F32(qmax - qmin)
        elif mx == 0:
            mn = -small * F32(qmax - qmin)
        else:
            amp = small / org
            mn, mx = F32(mn * amp), F32(mx * amp)
    zp_min = qmin - float(mn) / scale
    zp_max = qmax - float(mx) / scale
    err_min = abs(qmin) - abs(float(mn) / scale)
    err_max = abs(qmax) - abs(float(mx) / scale)
    initial = zp_min if err_min < err_max else zp_max
    if initial < qmin:
        zp = qmin
    elif initial > qmax:
        zp = qmax
    else:
        zp = int(np.rint(initial))
    return F32(scale), zp


def fma_f32(a, b, c):
    """float32(a * b + c) with one rounding (C fmaf): exact in long double when it has a
    64-bit significand (x86), which holds every a*b+c that can round to a different
    integer; else (rare platforms) per element with Python fractions."""
    if np.finfo(np.longdouble).nmant >= 63:
        r = a.astype(np.longdouble) * np.longdouble(b) + np.longdouble(c)
        return r.astype(F32)
    from fractions import Fraction
    flat = [F32(float(Fraction(float(v)) * Fraction(float(b)) + Fraction(float(c))))
            for v in a.reshape(-1)]
    return np.array(flat, F32).reshape(a.shape)  # not correctly rounded in all cases


def op_linear_dynamic(m, n, x):
    x = x.astype(F32)
    if not np.all(np.isfinite(x)):
        raise FormatError(f"node {n.index}: non-finite input")
    sx, zx = choose_qparams_dynamic(x.min(), x.max(), n.a("reduce_range") != 0)
    inv = F32(1) / sx
    q = np.clip(np.rint(fma_f32(x, inv, F32(zx))), 0, 255).astype(np.int64)
    w = n.consts["weight"].astype(np.int64)
    raw = (q - zx) @ w.T
    sw = n.consts["weight_scale"].astype(F32)
    y = raw.astype(F32) * (sx * sw)
    if "bias" in n.consts:
        y = y + n.consts["bias"].astype(F32)
    if n.a("relu"):
        y = np.where(y < F32(0), F32(0), y)
    return y.astype(F32)


def op_add(m, n, a, b):
    av, bv, y = m.values[n.inputs[0]], m.values[n.inputs[1]], m.values[n.outputs[0]]
    lift = np.int64(1) << np.int64(n.a("left_shift"))
    ra = rq((ints(av, a) - av.zero_point) * lift, n.a("a_multiplier"), n.a("a_shift"))
    rb = rq((ints(bv, b) - bv.zero_point) * lift, n.a("b_multiplier"), n.a("b_shift"))
    v = y.zero_point + rq(ra + rb, n.a("out_multiplier"), n.a("out_shift"))
    return store(y, np.clip(v, n.a("clamp_min"), n.a("clamp_max")))


def op_mul(m, n, a, b):
    av, bv, y = m.values[n.inputs[0]], m.values[n.inputs[1]], m.values[n.outputs[0]]
    prod = (ints(av, a) - av.zero_point) * (ints(bv, b) - bv.zero_point)
    v = y.zero_point + rq(prod, n.a("multiplier"), n.a("shift"))
    return store(y, np.clip(v, n.a("clamp_min"), n.a("clamp_max")))


def op_cat(m, n, *xs):
    y = m.values[n.outputs[0]]
    mult, shift = n.consts["multiplier"], n.consts["shift"]
    parts = []
    for i, x in enumerate(xs):
        v = m.values[n.inputs[i]]
        parts.append(y.zero_point + rq(ints(v, x) - v.zero_point, int(mult[i]), int(shift[i])))
    return store(y, np.clip(np.concatenate(parts, axis=1), n.a("clamp_min"), n.a("clamp_max")))


def op_max_pool2d(m, n, x):
    xv = m.values[n.inputs[0]]
    kh, kw, sh, sw = n.a("kernel_h"), n.a("kernel_w"), n.a("stride_h"), n.a("stride_w")
    ph, pw, dh, dw = n.a("pad_h"), n.a("pad_w"), n.a("dilation_h"), n.a("dilation_w")
    cm = n.a("ceil_mode") != 0
    oh, ow = _geometry(x.shape[2], kh, sh, ph, dh, cm), _geometry(x.shape[3], kw, sw, pw, dw, cm)
    lo = QRANGE[xv.dtype][0]
    xs = _pad(ints(xv, x), ph, pw, oh, ow, kh, kw, sh, sw, dh, dw, lo - 1)
    best = np.full((x.shape[0], x.shape[1], oh, ow), lo - 1, np.int64)
    for _, _, patch in _windows(xs, kh, kw, sh, sw, dh, dw, oh, ow):
        best = np.maximum(best, patch)
    return store(xv, np.maximum(best, lo))  # a window without input positions gives qmin


def _axis_windows(size, out, k, s, p, ceil_mode):
    """avg_pool2d's per-axis window: start, end clipped to the padded input, valid range."""
    o = np.arange(out)
    start = o * s - p
    end = np.minimum(start + k, size + p)
    return end - start, np.minimum(end, size) - np.maximum(start, 0)


def op_avg_pool2d(m, n, x):
    xv, y = m.values[n.inputs[0]], m.values[n.outputs[0]]
    kh, kw, sh, sw = n.a("kernel_h"), n.a("kernel_w"), n.a("stride_h"), n.a("stride_w")
    ph, pw, cm = n.a("pad_h"), n.a("pad_w"), n.a("ceil_mode") != 0
    h, w = x.shape[2], x.shape[3]
    oh, ow = _geometry(h, kh, sh, ph, 1, cm), _geometry(w, kw, sw, pw, 1, cm)
    xs = _pad(ints(xv, x) - xv.zero_point, ph, pw, oh, ow, kh, kw, sh, sw, 1, 1, 0)
    acc = np.zeros((x.shape[0], x.shape[1], oh, ow), np.int64)
    for _, _, patch in _windows(xs, kh, kw, sh, sw, 1, 1, oh, ow):
        acc += patch
    full_h, valid_h = _axis_windows(h, oh, kh, sh, ph, cm)
    full_w, valid_w = _axis_windows(w, ow, kw, sw, pw, cm)
    if n.a("divisor_override"):
        divide = np.full((oh, ow), n.a("divisor_override"), np.int64)
    elif n.a("count_include_pad"):
        divide = np.outer(full_h, full_w)
    else:
        divide = np.outer(valid_h, valid_w)
    v = y.zero_point + rq_div(acc, n.a("multiplier"), n.a("shift"), divide[None, None])
    return store(y, np.clip(v, n.a("clamp_min"), n.a("clamp_max")))


def op_adaptive_avg_pool2d(m, n, x):
    xv, y = m.values[n.inputs[0]], m.values[n.outputs[0]]
    h, w = x.shape[2], x.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    xi = ints(xv, x) - xv.zero_point
    out = np.zeros((x.shape[0], x.shape[1], oh, ow), np.int64)
    for i in range(oh):
        hs, he = i * h // oh, -(-(i + 1) * h // oh)
        for j in range(ow):
            ws, we = j * w // ow, -(-(j + 1) * w // ow)
            acc = xi[:, :, hs:he, ws:we].sum(axis=(2, 3))
            out[:, :, i, j] = rq_div(acc, n.a("multiplier"), n.a("shift"), (he - hs) * (we - ws))
    return store(y, np.clip(y.zero_point + out, n.a("clamp_min"), n.a("clamp_max")))


def op_flatten(m, n, x):
    return x.reshape(x.shape[0], -1).copy()


def op_clamp(m, n, x):
    xv = m.values[n.inputs[0]]
    return store(xv, np.clip(ints(xv, x), n.a("clamp_min"), n.a("clamp_max")))


def op_hardswish(m, n, x):
    xv = m.values[n.inputs[0]]
    idx = x.view(np.uint8) ^ np.uint8(0x80 if xv.dtype == "i8" else 0)
    return n.consts["table"][idx]


def op_requantize(m, n, x):
    xv, y = m.values[n.inputs[0]], m.values[n.outputs[0]]
    v = y.zero_point + rq(ints(xv, x) - xv.zero_point, n.a("multiplier"), n.a("shift"))
    return store(y, np.clip(v, n.a("clamp_min"), n.a("clamp_max")))


# ---------------------------------------------------------------------------------------
# float ops (f32 in, f32 out)
# ---------------------------------------------------------------------------------------

def act_f32(y, act):
    """relu: x < 0 ? 0 : x; relu6: also x > 6 ? 6 : x (NaN and -0.0 kept)."""
    y = y.astype(F32)
    if act != ACT_NONE:
        y = np.where(y < F32(0), F32(0), y)
    if act == ACT_RELU6:
        y = np.where(y > F32(6), F32(6), y)
    return y.astype(F32)


def op_conv2d_f32(m, n, x):
    w = n.consts["weight"].astype(np.float64)
    o, cg, kh, kw = w.shape
    sh, sw, ph, pw = n.a("stride_h"), n.a("stride_w"), n.a("pad_h"), n.a("pad_w")
    dh, dw, groups = n.a("dilation_h"), n.a("dilation_w"), n.a("groups")
    nb, c, h, wd = x.shape
    oh, ow = _geometry(h, kh, sh, ph, dh, False), _geometry(wd, kw, sw, pw, dw, False)
    xs = _pad(x.astype(np.float64), ph, pw, oh, ow, kh, kw, sh, sw, dh, dw, 0.0)
    og = o // groups
    acc = np.zeros((nb, o, oh, ow), np.float64)
    for i, j, patch in _windows(xs, kh, kw, sh, sw, dh, dw, oh, ow):
        for g in range(groups):
            acc[:, g * og:(g + 1) * og] += np.einsum(
                "nchw,oc->nohw", patch[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og, :, i, j])
    y = acc.astype(F32)
    if "bias" in n.consts:
        y = y + n.consts["bias"].astype(F32).reshape(1, o, 1, 1)
    return act_f32(y, n.a("act"))


def op_linear_f32(m, n, x):
    y = (x.astype(np.float64) @ n.consts["weight"].astype(np.float64).T).astype(F32)
    if "bias" in n.consts:
        y = y + n.consts["bias"].astype(F32)
    return act_f32(y, n.a("act"))


def op_add_f32(m, n, a, b):
    return act_f32(a.astype(F32) + b.astype(F32), n.a("act"))


def op_mul_f32(m, n, a, b):
    return act_f32(a.astype(F32) * b.astype(F32), n.a("act"))


def op_cat_f32(m, n, *xs):
    return np.concatenate(xs, axis=1).astype(F32)


def op_max_pool2d_f32(m, n, x):
    kh, kw, sh, sw = n.a("kernel_h"), n.a("kernel_w"), n.a("stride_h"), n.a("stride_w")
    ph, pw, dh, dw = n.a("pad_h"), n.a("pad_w"), n.a("dilation_h"), n.a("dilation_w")
    cm = n.a("ceil_mode") != 0
    oh, ow = _geometry(x.shape[2], kh, sh, ph, dh, cm), _geometry(x.shape[3], kw, sw, pw, dw, cm)
    xs = _pad(x.astype(F32), ph, pw, oh, ow, kh, kw, sh, sw, dh, dw, -np.inf)
    best = np.full((x.shape[0], x.shape[1], oh, ow), -np.inf, F32)
    for _, _, patch in _windows(xs, kh, kw, sh, sw, dh, dw, oh, ow):
        best = np.maximum(best, patch)  # NaN wins, as in PyTorch
    return best


def op_avg_pool2d_f32(m, n, x):
    kh, kw, sh, sw = n.a("kernel_h"), n.a("kernel_w"), n.a("stride_h"), n.a("stride_w")
    ph, pw, cm = n.a("pad_h"), n.a("pad_w"), n.a("ceil_mode") != 0
    h, w = x.shape[2], x.shape[3]
    oh, ow = _geometry(h, kh, sh, ph, 1, cm), _geometry(w, kw, sw, pw, 1, cm)
    xs = _pad(x.astype(F32), ph, pw, oh, ow, kh, kw, sh, sw, 1, 1, 0.0)
    acc = np.zeros((x.shape[0], x.shape[1], oh, ow), F32)
    for _, _, patch in _windows(xs, kh, kw, sh, sw, 1, 1, oh, ow):
        acc = acc + patch  # row-major, one float32 rounding per step (padding adds +0)
    full_h, valid_h = _axis_windows(h, oh, kh, sh, ph, cm)
    full_w, valid_w = _axis_windows(w, ow, kw, sw, pw, cm)
    if n.a("divisor_override"):
        divide = np.full((oh, ow), n.a("divisor_override"), np.int64)
    elif n.a("count_include_pad"):
        divide = np.outer(full_h, full_w)
    else:
        divide = np.outer(valid_h, valid_w)
    return (acc / divide.astype(F32)[None, None]).astype(F32)


def op_adaptive_avg_pool2d_f32(m, n, x):
    y = m.values[n.outputs[0]]
    h, w = x.shape[2], x.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    xd = x.astype(F32)
    out = np.zeros((x.shape[0], x.shape[1], oh, ow), F32)
    for i in range(oh):
        hs, he = i * h // oh, -(-(i + 1) * h // oh)
        for j in range(ow):
            ws, we = j * w // ow, -(-(j + 1) * w // ow)
            s = np.zeros((x.shape[0], x.shape[1]), F32)
            for ih in range(hs, he):  # row-major, one float32 rounding per step
                for iw in range(ws, we):
                    s = s + xd[:, :, ih, iw]
            if oh == 1 and ow == 1:  # PyTorch: mean over (H, W)
                out[:, :, i, j] = s / F32(h * w)
            else:
                out[:, :, i, j] = s / F32(he - hs) / F32(we - ws)
    return out


def op_clamp_f32(m, n, x):
    return act_f32(x, n.a("act"))


def op_hardswish_f32(m, n, x):
    x = x.astype(F32)
    r = x + F32(3)
    r = np.where(r < F32(0), F32(0), r)
    r = np.where(r > F32(6), F32(6), r)
    with np.errstate(invalid="ignore"):
        return ((x * r) / F32(6)).astype(F32)


OPS = {
    "quantize": op_quantize, "dequantize": op_dequantize, "conv2d": op_conv2d,
    "linear": op_linear, "linear_dynamic": op_linear_dynamic, "add": op_add, "mul": op_mul,
    "cat": op_cat, "max_pool2d": op_max_pool2d, "avg_pool2d": op_avg_pool2d,
    "adaptive_avg_pool2d": op_adaptive_avg_pool2d, "flatten": op_flatten, "clamp": op_clamp,
    "hardswish": op_hardswish, "requantize": op_requantize,
    "conv2d_f32": op_conv2d_f32, "linear_f32": op_linear_f32, "add_f32": op_add_f32,
    "mul_f32": op_mul_f32, "cat_f32": op_cat_f32, "max_pool2d_f32": op_max_pool2d_f32,
    "avg_pool2d_f32": op_avg_pool2d_f32, "adaptive_avg_pool2d_f32": op_adaptive_avg_pool2d_f32,
    "clamp_f32": op_clamp_f32, "hardswish_f32": op_hardswish_f32,
}


def run(model, inputs):
    """inputs: one array per graph input (N, ...). Returns {value id: array}."""
    vals = {}
    for vid, x in zip(model.inputs, inputs):
        vals[vid] = np.asarray(x, DTYPES[model.values[vid].dtype])
    for n in model.nodes:
        if n.op not in OPS:
            raise FormatError(f"node {n.index}: unknown op {n.op!r}")
        vals[n.outputs[0]] = OPS[n.op](model, n, *[vals[i] for i in n.inputs])
    return vals


def describe(model):
    print(f"{FORMAT} model: {model.source_model!r}, qconfig {model.qconfig!r}")
    for v in model.values:
        qp = f" scale {v.scale:.9g} zp {v.zero_point}" if v.scale is not None else ""
        print(f"  %{v.id} {v.dtype} {v.shape}{qp} '{v.name}'")
    for n in model.nodes:
        consts = ", ".join(f"{k} {c.dtype}{list(c.shape)}" for k, c in n.consts.items())
        print(f"  #{n.index} {n.op} '{n.name}' {n.inputs} -> {n.outputs} {n.attrs} {consts}")


def main(argv):
    if len(argv) == 3 and argv[1] == "--describe":
        describe(load(argv[2]))
        return 0
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    model = load(argv[1])
    with h5py.File(argv[2], "r") as f:
        inputs = [np.array(f[f"input_{i}"]) for i in range(len(model.inputs))]
    vals = run(model, inputs)
    with h5py.File(argv[3], "w") as f:
        g = f.create_group("values")
        for vid, arr in vals.items():
            g.create_dataset(str(vid), data=arr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
