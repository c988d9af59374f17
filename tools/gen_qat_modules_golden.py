#!/usr/bin/python3
"""gen_qat_modules_golden.py — PyTorch 1.13's QAT modules, fusion and prepare_qat on
small problems, for tests/test_qat_modules.c to compare cqat's qat/ against.

    /usr/bin/python3 tools/gen_qat_modules_golden.py [OUT.h5]
    (default tests/data/qat_modules_golden.h5; needs python3-torch, python3-h5py)

Layout (every tensor a float32 dataset unless PyTorch keeps it in another dtype; a
`state` group holds a state_dict, one dataset per key, as nn/state_h5.h reads it):

  /<case>            for case in convbnrelu, convbn, linearrelu, linearbn: one QAT module
                     made by from_float of the nni container with
                     get_default_qat_qconfig('fbgemm') (fused fake quants, per-channel
                     symmetric weights), no output fake quant. attrs: the layer's sizes.
      float/         the float layer's and BatchNorm's state before from_float
                     (conv.weight, conv.bias, bn.weight, ..., or linear.*)
      train/         step 1 in training mode: x, r (loss = sum(y * r)), y, dx, grads
                     (weight.grad, bias.grad, bn.weight.grad, bn.bias.grad) and state/
                     (the module's state_dict after the step)
      frozen/        step 2, after freeze_bn_stats(), fresh gradients, same fields
  /fold/             eval fusion: conv (with and without bias) + BatchNorm2d and
                     linear + BatchNorm1d, inputs and fuse_*_bn_eval's weight and bias
  /refcnn/           tools/py/cqat_torch.py's RefCNN for 1x8x4 inputs (fc1 takes 64),
                     fuse_modules_qat + prepare_qat(get_default_qat_qconfig('fbgemm')),
                     then one SGD step (lr 0.01, momentum 0.9) on a fixed batch:
      float/         the float model's state_dict (cqat's refcnn keys)
      x, labels      the batch (8 images, int64 labels)
      logits, loss   the forward of the step (before the update)
      after/         the prepared model's state_dict after the step
      attrs          prepared_keys: the prepared state_dict keys, one per line
"""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.intrinsic as nni
import torch.nn.intrinsic.qat as nniqat
from torch.ao.quantization import fuse_modules_qat, get_default_qat_qconfig, prepare_qat
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "py"))
from cqat_torch import RefCNN  # noqa: E402

QCONFIG = get_default_qat_qconfig("fbgemm")


def put(group, name, t):
    data = t.detach().cpu().numpy()
    # Large tensors compressed (the file is committed); HDF5 decompresses on read.
    opts = dict(compression="gzip", shuffle=True) if data.size >= 1024 else {}
    group.create_dataset(name, data=data, track_times=False, **opts)


def new_group(parent, name):
    """A subgroup without modification times, so that the file is reproducible."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def reproducible_file(path):
    """A new HDF5 file (latest format: small object headers) without timestamps."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    return h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))


def put_state(group, module):
    for k, v in module.state_dict().items():
        put(group, k, v)


def randomize_bn(bn, gen):
    """BatchNorm with non-trivial affine parameters and running statistics."""
    c = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.bias.copy_(torch.rand(c, generator=gen) - 0.5)
        bn.running_mean.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)
        bn.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)


def qat_step(grp, q, x, r, params):
    """One forward/backward of loss = sum(q(x) * r); records outputs and gradients."""
    x = x.clone().requires_grad_(True)
    for p in q.parameters():
        p.grad = None
    y = q(x)
    (y * r).sum().backward()
    put(grp, "x", x)
    put(grp, "r", r)
    put(grp, "y", y)
    put(grp, "dx", x.grad)
    for name, p in params.items():
        if p is not None:
            put(grp, name + ".grad", p.grad)
    put_state(new_group(grp, "state"), q)


def qat_case(f, name, layer, bn, relu, x_shape, gen):
    """A QAT module from an nni container of (layer, bn[, relu]) or (layer, relu)."""
    grp = new_group(f, name)
    flt = new_group(grp, "float")
    prefix = "conv" if isinstance(layer, nn.Conv2d) else "linear"
    for k, v in layer.state_dict().items():
        put(flt, prefix + "." + k, v)
    if bn is not None:
        randomize_bn(bn, gen)
        for k, v in bn.state_dict().items():
            put(flt, "bn." + k, v)
    if isinstance(layer, nn.Conv2d):
        grp.attrs["in"], grp.attrs["out"] = layer.in_channels, layer.out_channels
        grp.attrs["kernel"], grp.attrs["stride"] = layer.kernel_size[0], layer.stride[0]
        grp.attrs["padding"] = layer.padding[0]
        fused = nni.ConvBnReLU2d(layer, bn, nn.ReLU()) if relu else nni.ConvBn2d(layer, bn)
        cls = nniqat.ConvBnReLU2d if relu else nniqat.ConvBn2d
    else:
        grp.attrs["in"], grp.attrs["out"] = layer.in_features, layer.out_features
        if bn is None:
            fused, cls = nni.LinearReLU(layer, nn.ReLU()), nniqat.LinearReLU
        else:
            fused, cls = nni.LinearBn1d(layer, bn), nniqat.LinearBn1d
    grp.attrs["bias"] = int(layer.bias is not None)
    fused.qconfig = layer.qconfig = QCONFIG  # as propagate_qconfig_ leaves them
    q = cls.from_float(fused)
    q.train()
    params = {"weight": q.weight, "bias": q.bias}
    if hasattr(q, "bn"):
        params.update({"bn.weight": q.bn.weight, "bn.bias": q.bn.bias})

    # Batches and loss weights are drawn before any forward.
    x1 = torch.randn(x_shape, generator=gen)
    x2 = torch.randn(x_shape, generator=gen)
    y_shape = _output_shape(layer, x_shape)
    r1 = torch.randn(y_shape, generator=gen)
    r2 = torch.randn(y_shape, generator=gen)
    qat_step(new_group(grp, "train"), q, x1, r1, params)
    if hasattr(q, "freeze_bn_stats"):
        q.freeze_bn_stats()
    qat_step(new_group(grp, "frozen"), q, x2, r2, params)


def _output_shape(layer, x_shape):
    with torch.no_grad():
        return layer(torch.zeros(x_shape)).shape


def fold_cases(f, gen):
    grp = new_group(f, "fold")
    for name, bias in (("conv", True), ("conv_nobias", False)):
        conv = nn.Conv2d(3, 5, 3, bias=bias)
        bn = nn.BatchNorm2d(5)
        randomize_bn(bn, gen)
        conv.eval()
        bn.eval()
        fused = fuse_conv_bn_eval(conv, bn)
        g = new_group(grp, name)
        for k, v in conv.state_dict().items():
            put(g, "conv." + k, v)
        for k, v in bn.state_dict().items():
            put(g, "bn." + k, v)
        put(g, "fused.weight", fused.weight)
        put(g, "fused.bias", fused.bias)
    lin = nn.Linear(6, 4)
    bn = nn.BatchNorm1d(4)
    randomize_bn(bn, gen)
    lin.eval()
    bn.eval()
    fused = fuse_linear_bn_eval(lin, bn)
    g = new_group(grp, "linear")
    for k, v in lin.state_dict().items():
        put(g, "linear." + k, v)
    for k, v in bn.state_dict().items():
        put(g, "bn." + k, v)
    put(g, "fused.weight", fused.weight)
    put(g, "fused.bias", fused.bias)


def refcnn_case(f, gen):
    grp = new_group(f, "refcnn")
    torch.manual_seed(1)
    m = RefCNN()
    m.fc1 = nn.Linear(32 * 2 * 1, 128)  # 1x8x4 inputs: 8x4 -> 4x2 -> 2x1 after the pools
    for bn in (m.bn1, m.bn2, m.bn3):
        randomize_bn(bn, gen)
    put_state(new_group(grp, "float"), m)
    m.train()
    m = fuse_modules_qat(m, RefCNN.fusion_groups)
    m.qconfig = QCONFIG
    m = prepare_qat(m)
    # A fixed-length ASCII string: h5py's default (variable-length UTF-8) does not
    # convert to the C string type nn_h5_read_attr_str asks HDF5 for.
    grp.attrs["prepared_keys"] = np.bytes_("\n".join(m.state_dict().keys()))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn((8, 1, 8, 4), generator=gen)
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6], dtype=torch.int64)
    logits = m(x)
    loss = F.cross_entropy(logits, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    put(grp, "x", x)
    put(grp, "labels", labels)
    put(grp, "logits", logits)
    put(grp, "loss", loss.reshape(1))
    put_state(new_group(grp, "after"), m)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
        "qat_modules_golden.h5")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2024)
    with reproducible_file(out) as f:
        qat_case(f, "convbnrelu", nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), True,
                 (3, 3, 6, 5), gen)
        qat_case(f, "convbn", nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
                 nn.BatchNorm2d(6), False, (1, 4, 7, 9), gen)
        qat_case(f, "linearrelu", nn.Linear(7, 5), None, True, (3, 7), gen)
        qat_case(f, "linearbn", nn.Linear(6, 4), nn.BatchNorm1d(4), False, (5, 6), gen)
        fold_cases(f, gen)
        refcnn_case(f, gen)
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
