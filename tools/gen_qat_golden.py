#!/usr/bin/python3
"""Writes tests/data/qat_golden.h5: PyTorch 1.13's observers, fake-quant ops and
FakeQuantize modules on small inputs, for tests/test_qat_observer.c to compare cqat's
qat/ against bit for bit (scales and fake-quant outputs) without PyTorch.

Run with Debian's Python (python3-torch 1.13, python3-h5py, python3-numpy):

    /usr/bin/python3 tools/gen_qat_golden.py              # writes tests/data/qat_golden.h5
    /usr/bin/python3 tools/gen_qat_golden.py OUT.h5

Layout. Each case is a group whose configuration is one string attribute "config"
("key=value ..."; one attribute rather than a dozen keeps the file under 300 KB), with
few datasets, stacked:
    /observers/<case>     config: the observer configuration (kind, dtype, qscheme,
                          reduce_range, has_custom_range, quant_min, quant_max, eps,
                          averaging_constant, ch_axis, bins), fresh (a new observer per
                          input), scale_init / zp_init (calculate_qparams before any input);
                          x: the inputs, flattened and concatenated; shapes (steps, 6):
                          ndim and dims of each; stats (steps, 2, C): min_val, max_val after
                          each step; hists (steps, bins); qparams (steps, 2, C) float64:
                          calculate_qparams' scale and zero point after each step
    /fq_ops/<case>        config: per_channel, qmin, qmax, scale / zero_point (per tensor)
                          or axis (per channel, with datasets scales, zps);
                          data (4, ...): x, dy, y, dx
    /fq_modules/<case>    config: fq_kind, obs_* (the observer), n_steps;
                          data (4, steps, ...): x, dy, y, dx; flags (steps, 2): observer and
                          fake quant enabled during each step; qparams (steps, 2, C): the
                          scale and zero_point buffers after it; stats (steps, 2, C);
                          calc (2, C): the module's calculate_qparams() at the end
    /learnable/<case>     config: obs_*, use_grad_scaling, channel_len, mode (learn /
                          static); data (4, ...): x, dy, y, dx; params (6, L): scale and
                          zero_point set before the forward, their gradients, their values
                          after it
    /state_keys           one string attribute per module: its state_dict keys, "\n"-joined
    /state_load/<case>    a state_dict (datasets named by key) to load with nn_state_load_h5;
                          /state_expect/<case>/{scale,zp}: calculate_qparams after loading

The enums are cqat's (qat/observer.h): dtype 0 quint8, 1 qint8, 2 qint32; qscheme
0 per_tensor_affine, 1 per_tensor_symmetric, 2 per_channel_affine, 3 per_channel_symmetric;
observer kind 0 MinMax, 1 MovingAverageMinMax, 2 PerChannelMinMax, 3 MovingAverage-
PerChannelMinMax, 4 Histogram, 5 Placeholder, 6 FixedQParams; fq kind 0 FakeQuantize,
1 FusedMovingAvgObsFakeQuantize, 2 _LearnableFakeQuantize.
"""
import os
import sys
import warnings
import zlib

import h5py
import numpy as np
import torch
from torch.ao.quantization import observer as O
from torch.ao.quantization import fake_quantize as FQ
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize

warnings.filterwarnings("ignore")
assert torch.__version__.startswith("1.13"), "needs PyTorch 1.13, got " + torch.__version__
torch.set_num_threads(1)  # the reductions' order must not depend on the thread count

DTYPES = [torch.quint8, torch.qint8, torch.qint32]
QSCHEMES = [torch.per_tensor_affine, torch.per_tensor_symmetric,
            torch.per_channel_affine, torch.per_channel_symmetric]
KINDS = [O.MinMaxObserver, O.MovingAverageMinMaxObserver, O.PerChannelMinMaxObserver,
         O.MovingAveragePerChannelMinMaxObserver, O.HistogramObserver, O.PlaceholderObserver,
         O.FixedQParamsObserver]
EPS = float(torch.finfo(torch.float32).eps)


def cfg(kind, dtype=0, qscheme=None, reduce_range=False, qrange=None, eps=EPS,
        averaging_constant=0.01, ch_axis=0, bins=2048):
    """An observer configuration in cqat's terms (qat_observer_cfg)."""
    if qscheme is None:
        qscheme = 2 if kind in (2, 3) else 0
    return dict(kind=kind, dtype=dtype, qscheme=qscheme, reduce_range=reduce_range,
                has_custom_range=qrange is not None,
                quant_min=qrange[0] if qrange else 0, quant_max=qrange[1] if qrange else 0,
                eps=float(np.float32(eps)), averaging_constant=averaging_constant,
                ch_axis=ch_axis, bins=bins)


def observer_kwargs(c):
    kw = dict(dtype=DTYPES[c["dtype"]], qscheme=QSCHEMES[c["qscheme"]],
              reduce_range=c["reduce_range"], eps=c["eps"])
    if c["has_custom_range"]:
        kw.update(quant_min=c["quant_min"], quant_max=c["quant_max"])
    if c["kind"] in (1, 3):
        kw["averaging_constant"] = c["averaging_constant"]
    if c["kind"] in (2, 3):
        kw["ch_axis"] = c["ch_axis"]
    if c["kind"] == 4:
        kw["bins"] = c["bins"]
    return kw


def make_observer(c):
    return KINDS[c["kind"]](**observer_kwargs(c))


def put(g, name, value, dtype=np.float32):
    """A dataset; small ones are stored compact (inside their object header), which keeps
    the file small with its ~1300 datasets."""
    a = np.ascontiguousarray(np.asarray(value, dtype=dtype))
    if a.nbytes > 2048:
        g.create_dataset(name, data=a, compression="gzip", compression_opts=9, shuffle=True)
        return
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple(a.shape) if a.ndim else h5py.h5s.create(h5py.h5s.SCALAR)
    tid = h5py.h5t.py_create(a.dtype)
    ds = h5py.h5d.create(g.id, name.encode(), tid, space, dcpl=dcpl)
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, a)


def setcfg(g, **kv):
    """Adds key=value pairs to the group's one string attribute "config" (one attribute
    instead of a dozen keeps the file small); floats are written with repr, exactly."""
    text = g.attrs["config"].decode() if "config" in g.attrs else ""
    for k, v in kv.items():
        v = int(v) if isinstance(v, (bool, np.bool_)) else v
        text += "%s%s=%s" % (" " if text else "", k, repr(float(v)) if isinstance(v, float)
                              else v)
    g.attrs["config"] = np.bytes_(text)  # fixed-length ASCII: any HDF5 reader takes it


def put_cfg(g, c, prefix=""):
    setcfg(g, **{prefix + k: v for k, v in c.items()})


def gen(seed, shape, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale + shift).float()


# ---- observers -------------------------------------------------------------------------

def observer_cases():
    rnd = lambda s, sh=(3, 4, 5), sc=2.0, sf=0.3: gen(s, sh, sc, sf)
    const = torch.full((2, 3), 0.7)
    neg = -gen(7, (4, 6)).abs() - 0.25
    zero = torch.zeros(5, 4)
    cases = {}
    # MinMaxObserver: every dtype, qscheme and range rule.
    mm_cfgs = {
        "quint8_affine": cfg(0),
        "qint8_symmetric": cfg(0, dtype=1, qscheme=1),
        "quint8_symmetric": cfg(0, dtype=0, qscheme=1),
        "quint8_reduce_range": cfg(0, reduce_range=True),
        "qint8_affine_reduce_range": cfg(0, dtype=1, reduce_range=True),
        "custom_4bit_affine": cfg(0, qrange=(0, 15)),
        "custom_4bit_signed_symmetric": cfg(0, dtype=1, qscheme=1, qrange=(-8, 7)),
        "custom_quint8_symmetric": cfg(0, dtype=0, qscheme=1, qrange=(0, 15)),
        "custom_reduce_range": cfg(0, qrange=(0, 255), reduce_range=True),
        "neg127_127": cfg(0, dtype=1, qscheme=1, qrange=(-127, 127), eps=2 ** -12),
        "qint32_affine": cfg(0, dtype=2),
    }
    for name, c in mm_cfgs.items():
        # A fresh observer per input: random, constant, all-negative, all-zero.
        cases["minmax_" + name] = (c, [rnd(1), const, neg, zero], True)
    # Running min / max over batches.
    cases["minmax_running_quint8"] = (cfg(0), [rnd(1), rnd(2, sc=3.0, sf=-1.0), neg])
    cases["minmax_running_qint8_symmetric"] = (cfg(0, dtype=1, qscheme=1),
                                               [rnd(2), rnd(3, sc=0.5), zero])
    cases["minmax_qint32_wide_negative"] = (cfg(0, dtype=2), [gen(9, (8,), 1.0, -3.0)])
    # MovingAverageMinMaxObserver: several EMA updates.
    batches = [rnd(10 + i, sc=1.0 + 0.5 * i, sf=0.2 * i) for i in range(5)]
    cases["moving_avg_quint8"] = (cfg(1), batches)
    cases["moving_avg_qint8_symmetric"] = (cfg(1, dtype=1, qscheme=1), batches)
    cases["moving_avg_c03_4bit"] = (cfg(1, qrange=(0, 15), averaging_constant=0.3), batches)
    cases["moving_avg_const_then_random"] = (cfg(1), [const, batches[0], batches[1]])
    cases["moving_avg_negative"] = (cfg(1, dtype=1, qscheme=1), [neg, neg * 2])
    # Per-channel observers: axes, schemes, dtypes.
    pc = [gen(20 + i, (4, 3, 2, 5), 1.5, 0.1 * i) for i in range(3)]
    pc[1][:, 2] = 0.0  # an all-zero channel on axis 1
    pc[2][1] = 0.5     # a constant channel on axis 0
    cases["per_channel_axis0_affine"] = (cfg(2), pc)
    cases["per_channel_axis1_qint8_symmetric"] = (cfg(2, dtype=1, qscheme=3, ch_axis=1), pc)
    cases["per_channel_axis_neg1"] = (cfg(2, ch_axis=-1), pc)
    cases["per_channel_axis0_reduce_range"] = (cfg(2, dtype=1, reduce_range=True), pc)
    cases["per_channel_4bit_symmetric"] = (cfg(2, dtype=1, qscheme=3, qrange=(-8, 7)), pc)
    cases["moving_avg_per_channel_axis0"] = (cfg(3, dtype=1, qscheme=3), pc)
    cases["moving_avg_per_channel_axis2_c05"] = (cfg(3, ch_axis=2, averaging_constant=0.5),
                                                 pc)
    # HistogramObserver: batches of different ranges (merge with upsampling).
    h = [gen(30, (600,), 1.0, 0.0), gen(31, (400,), 3.0, 1.5), gen(32, (500,), 0.5, -0.2)]
    cases["histogram_two_ranges"] = (cfg(4), h[:2])
    cases["histogram_three_batches_reduce"] = (cfg(4, qrange=(0, 255), reduce_range=True), h)
    cases["histogram_qint8_symmetric"] = (cfg(4, dtype=1, qscheme=1), h[:2])
    cases["histogram_small_range"] = (cfg(4), [gen(33, (300,), 0.1, 0.2),
                                               gen(34, (300,), 0.05, 0.25)])
    cases["histogram_const_first"] = (cfg(4), [const.flatten(), h[0]])
    cases["histogram_256_bins"] = (cfg(4, bins=256), [h[1], h[0]])
    cases["histogram_5_bins"] = (cfg(4, bins=5), [h[0], h[1]])
    # FixedQParams.
    cases["fixed_qparams_neg1to1"] = (dict(cfg(6), has_custom_range=True, quant_min=0,
                                           quant_max=255), [h[0]])
    return {k: v if len(v) == 3 else v + (False,) for k, v in cases.items()}


def write_observers(f):
    root = f.create_group("observers")
    for name, (c, batches, fresh) in observer_cases().items():
        g = root.create_group(name)
        make = lambda: (O.FixedQParamsObserver(scale=2.0 / 256.0, zero_point=128)
                        if c["kind"] == 6 else make_observer(c))
        obs = make()
        if c["kind"] == 6:
            setcfg(g, fixed_scale=2.0 / 256.0, fixed_zero_point=128)
        put_cfg(g, c)
        setcfg(g, n_steps=len(batches), fresh=int(fresh))
        s, z = obs.calculate_qparams()
        setcfg(g, scale_init=float(s[0]), zp_init=int(z[0]))
        shapes = np.zeros((len(batches), 1 + 5), np.int64)
        stats, scales, zps, hists = [], [], [], []
        for k, x in enumerate(batches):
            if fresh:
                obs = make()
            obs(x)
            shapes[k, 0] = x.dim()
            shapes[k, 1:1 + x.dim()] = x.shape
            if hasattr(obs, "min_val"):
                stats.append(torch.stack([obs.min_val, obs.max_val]).reshape(2, -1))
            if hasattr(obs, "histogram"):
                hists.append(obs.histogram.clone())
            s, z = obs.calculate_qparams()
            scales.append(s.reshape(-1))
            zps.append(z.reshape(-1))
        put(g, "x", torch.cat([x.reshape(-1) for x in batches]))
        put(g, "shapes", shapes, np.int64)
        if stats:
            put(g, "stats", torch.stack(stats))  # (steps, 2, C): min, max
        if hists:
            put(g, "hists", torch.stack(hists))  # (steps, bins)
        # (steps, 2, C) float64: scale (a float32 value) and zero point, both exact.
        put(g, "qparams", torch.stack([torch.stack(scales).double(),
                                       torch.stack(zps).double()], 1), np.float64)


# ---- fake-quant ops --------------------------------------------------------------------

def write_fq_ops(f):
    root = f.create_group("fq_ops")
    # k/8 for k near 0 and near 8 * 127.5: every other value is a .5 tie for scale 0.25.
    ties = torch.cat([torch.arange(-12, 52), torch.arange(1000, 1040)]).float() * 0.125
    specials = torch.tensor([float("inf"), float("-inf"), float("nan"), 1e30, -1e30, 0.0,
                             -0.0, 3e9, -3e9])
    cases = {
        # scale 0.25 is exact: k * 0.125 / 0.25 = k / 2 puts every other value on a tie;
        # 255 * 0.25 rounds onto qmax (kept), 255.5 * 0.25 rounds to 256 (dropped).
        "ties_quint8": (ties, 0.25, 0, 0, 255),
        "ties_zp7_4bit": (ties * 0.1, 0.025, 7, 0, 15),
        "ties_signed": (ties - 64.0, 0.25, -3, -128, 127),
        "random_scale01": (gen(40, (7, 9), 10.0, 2.0), 0.1, 128, 0, 255),
        "random_odd_scale": (gen(41, (3, 5, 7), 1.0), 0.0123456, 5, -8, 7),
        "specials": (specials, 0.1, 3, 0, 255),
        "qint32_wide": (torch.cat([gen(42, (20,), 1e9), torch.tensor([2.0 ** 31, -2.0 ** 31,
                         2.0 ** 31 - 128, 2.5e9])]), 1.0, 0, -2 ** 31, 2 ** 31 - 1),
        "qint32_scaled": (gen(43, (30,), 10.0), 1e-8, 12345, -2 ** 31, 2 ** 31 - 1),
    }
    for name, (x, scale, zp, qmin, qmax) in cases.items():
        g = root.create_group(name)
        x = x.clone().requires_grad_(True)
        y = torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
        dy = gen(zlib.crc32(name.encode()) % 1000, x.shape, 1.0) + 2.0
        y.backward(dy)
        setcfg(g, per_channel=0, scale=float(np.float32(scale)), zero_point=zp,
                       qmin=qmin, qmax=qmax)
        put(g, "data", torch.stack([x.detach(), dy, y.detach(), x.grad]))  # x, dy, y, dx
    pcases = {
        "channel_axis1": (gen(44, (2, 3, 4, 5), 2.0), 1, [0.01, 0.25, 0.0371], [0, 128, 255],
                          0, 255),
        "channel_axis0_ties": (torch.stack([ties[:32], ties[32:64] - 3, ties[64:96] * 2]), 0,
                               [0.25, 0.5, 0.125], [-3, 0, 2], -8, 7),
        "channel_axis_last": (gen(45, (3, 6), 3.0), 1, [0.1] * 3 + [0.02] * 3,
                              [0, 1, -1, 2, -2, 0], -128, 127),
    }
    for name, (x, axis, scales, zps, qmin, qmax) in pcases.items():
        g = root.create_group(name)
        x = x.clone().requires_grad_(True)
        s = torch.tensor(scales, dtype=torch.float32)
        z = torch.tensor(zps, dtype=torch.int32)
        y = torch.fake_quantize_per_channel_affine(x, s, z, axis, qmin, qmax)
        dy = gen(zlib.crc32(name.encode()) % 1000, x.shape, 1.0) - 1.0
        y.backward(dy)
        setcfg(g, per_channel=1, axis=axis, qmin=qmin, qmax=qmax)
        put(g, "data", torch.stack([x.detach(), dy, y.detach(), x.grad]))  # x, dy, y, dx
        put(g, "scales", s)
        put(g, "zps", z, np.int32)


# ---- FakeQuantize modules ---------------------------------------------------------------

def make_fq(kind, c):
    kw = observer_kwargs(c)
    obs = KINDS[c["kind"]]
    if kind == 0 and c["kind"] == 6:
        return FQ.FixedQParamsFakeQuantize(observer=O.default_fixed_qparams_range_0to1_observer)
    if kind == 0:
        qmin = kw.pop("quant_min", None)
        qmax = kw.pop("quant_max", None)
        return FQ.FakeQuantize(observer=obs, quant_min=qmin, quant_max=qmax, **kw)
    return FQ.FusedMovingAvgObsFakeQuantize(observer=obs, **kw)


def fq_module_cases():
    act = [gen(50 + i, (2, 3, 4), 1.0 + 0.3 * i, 0.5 - 0.2 * i) for i in range(6)]
    wt = [gen(60 + i, (4, 3, 2, 2), 0.2, 0.0) for i in range(6)]
    for w in wt[:3]:
        w[1] = w[1].abs() + 0.01  # an all-positive channel: affine while training
    wt[2][3] = 0.0               # an all-zero channel: scale 0.1 in ChooseQuantizationParams
    on = [(1, 1)] * 4 + [(0, 1), (0, 0)]  # (observer, fake quant) before each step
    return {
        "fq_default_act": (0, cfg(1, qrange=(0, 255), reduce_range=True), act, on),
        "fq_default_weight": (0, cfg(1, dtype=1, qscheme=1, qrange=(-128, 127)), wt, on),
        "fq_per_channel_weight": (0, cfg(3, dtype=1, qscheme=3, qrange=(-128, 127)), wt, on),
        "fq_histogram": (0, cfg(4, qrange=(0, 255), reduce_range=True), act[:3],
                         [(1, 1), (1, 1), (0, 1)]),
        "fq_minmax_4bit": (0, cfg(0, qrange=(0, 15)), act[:3], on[:3]),
        "fq_fixed_0to1": (0, dict(cfg(6), has_custom_range=True, quant_min=0, quant_max=255),
                          [a.sigmoid() for a in act[:2]], on[:2]),
        "fused_act": (1, cfg(1, qrange=(0, 255)), act, on),
        "fused_act_reduce_range": (1, cfg(1, qrange=(0, 255), reduce_range=True), act, on),
        "fused_weight": (1, cfg(1, dtype=1, qscheme=1, qrange=(-128, 127)), wt, on),
        "fused_per_channel_weight": (1, cfg(3, dtype=1, qscheme=3, qrange=(-128, 127)), wt,
                                     on),
        "fused_neg127_127": (1, cfg(1, dtype=1, qscheme=1, qrange=(-127, 127), eps=2 ** -12),
                             wt[:3], on[:3]),
        "fused_tiny_range": (1, cfg(1, qrange=(0, 255)), [a * 1e-4 for a in act[:3]], on[:3]),
    }


def write_fq_modules(f):
    root = f.create_group("fq_modules")
    for name, (kind, c, xs, flags) in fq_module_cases().items():
        g = root.create_group(name)
        m = make_fq(kind, c)
        setcfg(g, fq_kind=kind, n_steps=len(xs))
        put_cfg(g, c, "obs_")
        out = {k: [] for k in ("dy", "y", "dx", "scale", "zp", "stats")}
        for k, (x, (obs_on, fq_on)) in enumerate(zip(xs, flags)):
            m.enable_observer(bool(obs_on))
            m.enable_fake_quant(bool(fq_on))
            x = x.clone().requires_grad_(True)
            y = m(x)
            dy = gen(70 + k, x.shape, 1.0)
            y.backward(dy)
            out["dy"].append(dy)
            out["y"].append(y.detach())
            out["dx"].append(x.grad)
            out["scale"].append(m.scale.clone())
            out["zp"].append(m.zero_point.clone())
            app = m.activation_post_process
            if hasattr(app, "min_val"):
                out["stats"].append(torch.stack([app.min_val, app.max_val]).reshape(2, -1))
        # Every step has the same input shape: (4, steps, ...) for x, dy, y, dx.
        put(g, "data", torch.stack([torch.stack(xs), torch.stack(out["dy"]),
                                    torch.stack(out["y"]), torch.stack(out["dx"])]))
        put(g, "flags", np.array(flags), np.int32)  # (steps, 2): observer, fake quant
        # (steps, 2, C): the scale and zero_point buffers after each step (zp exact).
        put(g, "qparams", torch.stack([torch.stack(out["scale"]),
                                       torch.stack(out["zp"]).float()], 1))
        if out["stats"]:
            put(g, "stats", torch.stack(out["stats"]))  # (steps, 2, C): min_val, max_val
        s, z = m.calculate_qparams()
        put(g, "calc", torch.stack([s.reshape(-1), z.reshape(-1).float()]))  # (2, C)


# ---- _LearnableFakeQuantize -------------------------------------------------------------

def learnable_cases():
    x3 = gen(80, (4, 3, 5), 0.4, 0.05)
    x2 = gen(81, (3, 7), 0.3)
    ew_scale = gen(82, (96,), 0.02, 0.06).abs() + 0.005
    ew_zp = gen(83, (96,), 2.5)
    ew_x = (gen(84, (96, 1), 4.0) * ew_scale.reshape(96, 1))
    # Half the values within a few ulps of a .5 tie of x / scale, where rounding
    # zp + x * inv with or without a fused multiply-add differs.
    near = 1.0 + (torch.arange(48).double() % 7 - 3) * 1e-7
    ew_x[::2, 0] = (((torch.arange(48) % 15 - 7).double() + 0.5) * ew_scale[::2].double()
                    * near).float()
    return {
        # name: (observer cfg, use_grad_scaling, channel_len, mode, scale, zero_point, x)
        "per_tensor_learn": (cfg(1, dtype=1, qrange=(-8, 7)), False, -1, "learn", [0.0371],
                             [3.2], x3),
        "per_tensor_learn_grad_scaling": (cfg(1, dtype=1, qrange=(-8, 7)), True, -1, "learn",
                                          [0.0371], [3.2], x3),
        "per_tensor_zp_tie": (cfg(1, qrange=(0, 15)), False, -1, "learn", [0.05], [2.5], x3),
        "per_tensor_symmetric": (cfg(1, dtype=1, qscheme=1, qrange=(-128, 127)), True, -1,
                                 "learn", [0.004], [1.7], x3),
        "per_tensor_static": (cfg(1, qrange=(0, 255)), False, -1, "static", [1.0], [0.0], x3),
        "per_tensor_tiny_scale_clamped": (cfg(1, qrange=(0, 255)), False, -1, "learn",
                                         [1e-12], [4.0], x3),
        "per_channel_axis0": (cfg(3, dtype=1, qscheme=2, qrange=(-8, 7)), False, 4, "learn",
                              [0.02, 0.05, 0.11, 0.031], [0.4, -1.5, 2.5, 7.6], x3),
        "per_channel_axis1_grad_scaling": (cfg(3, dtype=1, qscheme=2, qrange=(-8, 7),
                                               ch_axis=1), True, 3, "learn",
                                           [0.02, 0.05, 0.0371], [0.0, -3.0, 1.2], x3),
        # One element per channel: dscale / dzp are single terms, compared bit for bit.
        "per_channel_elementwise": (cfg(3, dtype=1, qscheme=2, qrange=(-8, 7)), True, 96,
                                    "learn", ew_scale.tolist(), ew_zp.tolist(), ew_x),
        "per_channel_symmetric_static": (cfg(3, dtype=1, qscheme=3, qrange=(-128, 127),
                                             ch_axis=1), False, 7, "static", [1.0] * 7,
                                         [0.0] * 7, x2),
    }


def write_learnable(f):
    root = f.create_group("learnable")
    for name, (c, gs, clen, mode, scale, zp, x) in learnable_cases().items():
        g = root.create_group(name)
        kw = observer_kwargs(c)
        qmin, qmax = kw.pop("quant_min"), kw.pop("quant_max")
        m = _LearnableFakeQuantize(KINDS[c["kind"]], quant_min=qmin, quant_max=qmax,
                                   channel_len=clen, use_grad_scaling=gs, **kw)
        if mode == "learn":
            m.enable_param_learning()
        else:
            m.enable_static_estimate()
            m.toggle_qparam_learning(True)  # gradients all the same
        m.scale.data = torch.tensor(scale, dtype=torch.float32)
        m.zero_point.data = torch.tensor(zp, dtype=torch.float32)
        put_cfg(g, c, "obs_")
        setcfg(g, use_grad_scaling=int(gs), channel_len=max(clen, 0), mode=mode)
        x = x.clone().requires_grad_(True)
        y = m(x)
        dy = gen(90, x.shape, 1.0) + 0.5
        y.backward(dy)
        put(g, "data", torch.stack([x.detach(), dy, y.detach(), x.grad]))  # x, dy, y, dx
        # (6, L): scale and zero_point before, their gradients, and their values after.
        put(g, "params", torch.stack([torch.tensor(scale), torch.tensor(zp), m.scale.grad,
                                      m.zero_point.grad, m.scale.detach(),
                                      m.zero_point.detach()]))


# ---- state_dict keys and loading ----------------------------------------------------------

def write_state(f):
    keys = f.create_group("state_keys")
    mods = {
        "MinMaxObserver": O.MinMaxObserver(),
        "MovingAverageMinMaxObserver": O.MovingAverageMinMaxObserver(),
        "PerChannelMinMaxObserver": O.PerChannelMinMaxObserver(),
        "MovingAveragePerChannelMinMaxObserver": O.MovingAveragePerChannelMinMaxObserver(),
        "HistogramObserver": O.HistogramObserver(),
        "PlaceholderObserver": O.PlaceholderObserver(),
        "FixedQParamsObserver": O.FixedQParamsObserver(1.0 / 256, 0),
        "FakeQuantize": FQ.FakeQuantize(),
        "FakeQuantize_per_channel": FQ.default_per_channel_weight_fake_quant(),
        "FixedQParamsFakeQuantize": FQ.default_fixed_qparams_range_0to1_fake_quant(),
        "FusedMovingAvgObsFakeQuantize": FQ.FusedMovingAvgObsFakeQuantize(),
        "_LearnableFakeQuantize": _LearnableFakeQuantize(O.MovingAverageMinMaxObserver),
    }
    for name, m in mods.items():
        keys.attrs[name] = np.bytes_("\n".join(m.state_dict().keys()))
    load = f.create_group("state_load")
    expect = f.create_group("state_expect")
    x = gen(95, (5, 2, 3), 1.0, 0.2)
    pc = O.PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    pc(x)
    fq = FQ.default_per_channel_weight_fake_quant()
    fq(x)
    states = {
        "per_channel_observed": (pc, pc),
        "per_channel_fresh": (O.PerChannelMinMaxObserver(dtype=torch.qint8,
                                                         qscheme=torch.per_channel_symmetric),
                              None),
        "fq_per_channel_observed": (fq, fq),
    }
    for name, (m, calc) in states.items():
        g = load.create_group(name)
        for k, v in m.state_dict().items():
            g.create_dataset(k, data=v.numpy())
        if calc is not None:
            e = expect.create_group(name)
            s, z = calc.calculate_qparams()
            put(e, "scale", s.reshape(-1))
            put(e, "zp", z.reshape(-1), np.int32)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "data",
                                                            "qat_golden.h5")
    tmp = out + ".tmp"
    with h5py.File(tmp, "w", libver="latest") as f:
        f.attrs["torch_version"] = np.bytes_(str(torch.__version__))
        write_observers(f)
        write_fq_ops(f)
        write_fq_modules(f)
        write_learnable(f)
        write_state(f)
    os.replace(tmp, out)
    print("wrote %s (%d bytes)" % (out, os.path.getsize(out)))


if __name__ == "__main__":
    main()
