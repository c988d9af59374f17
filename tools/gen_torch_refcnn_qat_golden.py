#!/usr/bin/python3
"""gen_torch_refcnn_qat_golden.py — a PyTorch QAT-prepared refcnn and PyTorch's own results.

    /usr/bin/python3 tools/gen_torch_refcnn_qat_golden.py [OUT_DIR]   (default tests/data)

Starts from tests/data/torch_refcnn_float.h5 (tools/gen_torch_refcnn_golden.py), fuses
and prepares it for QAT with get_default_qat_qconfig('fbgemm') (PyTorch 1.13's default,
FusedMovingAvgObsFakeQuantize), fine-tunes it for a few hundred steps, freezes observers
and BN statistics, and writes
  torch_refcnn_qat.h5       the prepared model's state_dict (one dataset per key)
  torch_refcnn_qat_ref.h5   on the 10000 Fashion-MNIST test images: the fake-quant
                            model's accuracy and predictions (eval mode), and the
                            converted int8 model's accuracy and predictions for each
                            engine available here (onednn, qnnpack)
cqat's tests load the state_dict, evaluate it with fake quant, convert it, and compare.
Needs Debian's python3-torch, python3-h5py, python3-numpy and dataset-fashion-mnist.
"""
import os
import sys
import warnings

import h5py
import numpy as np
import torch
import torch.ao.quantization as tq
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "py"))
from cqat_torch import RefCNN, load_fashion_mnist, normalize  # noqa: E402
from torch2h5 import write_state_dict  # noqa: E402

warnings.filterwarnings("ignore")
STEPS = 200
BATCH = 64


def load_float(path):
    m = RefCNN()
    with h5py.File(path, "r") as f:
        sd = {k: torch.from_numpy(np.array(f[k])) for k in f}
    m.load_state_dict(sd)
    return m


def predictions(model, images):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 500):
            out.append(model(normalize(images[i:i + 500])).argmax(1))
    return torch.cat(out).numpy().astype(np.int32)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "tests", "data")
    torch.manual_seed(1)
    torch.set_num_threads(2)
    train_x, train_y = load_fashion_mnist(True)
    test_x, test_y = load_fashion_mnist(False)
    model = load_float(os.path.join(out_dir, "torch_refcnn_float.h5"))
    model.train()
    model.qconfig = tq.get_default_qat_qconfig("fbgemm")
    model = tq.fuse_modules_qat(model, RefCNN.fusion_groups)
    model = tq.prepare_qat(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(1))
    for step in range(STEPS):
        if step == STEPS // 2:
            model.apply(torch.nn.intrinsic.qat.freeze_bn_stats)
        idx = perm[step * BATCH:(step + 1) * BATCH].numpy()
        loss = F.cross_entropy(model(normalize(train_x[idx])), torch.from_numpy(train_y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.apply(tq.disable_observer)
    model.apply(torch.nn.intrinsic.qat.freeze_bn_stats)
    fq_pred = predictions(model, test_x)
    write_state_dict(model.state_dict(), os.path.join(out_dir, "torch_refcnn_qat.h5"))
    with h5py.File(os.path.join(out_dir, "torch_refcnn_qat_ref.h5"), "w") as f:
        f["fake_quant_predictions"] = fq_pred
        f.attrs["fake_quant_accuracy"] = float((fq_pred == test_y).mean())
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["qconfig"] = "get_default_qat_qconfig('fbgemm')"
        for engine in ("onednn", "qnnpack"):
            if engine not in torch.backends.quantized.supported_engines:
                continue
            torch.backends.quantized.engine = engine
            q = tq.convert(model.eval(), inplace=False)
            pred = predictions(q, test_x)
            f["int8_predictions_" + engine] = pred
            f.attrs["int8_accuracy_" + engine] = float((pred == test_y).mean())
            print("%s int8: accuracy %.4f, agrees with fake quant on %.4f" %
                  (engine, (pred == test_y).mean(), (pred == fq_pred).mean()))
    print("fake quant accuracy %.4f" % (fq_pred == test_y).mean())


if __name__ == "__main__":
    main()
