#!/usr/bin/python3
"""gen_torch_refcnn_golden.py — PyTorch-made refcnn weights and outputs for cqat's tests.

    /usr/bin/python3 tools/gen_torch_refcnn_golden.py [OUT_DIR]   (default tests/data)

Trains BENCHMARK.md's refcnn in PyTorch for a few hundred steps (seeded), then writes
  torch_refcnn_float.h5          its state_dict, one dataset per key (as torch2h5.py)
  torch_refcnn_float_ref.h5      PyTorch's eval-mode results on the Fashion-MNIST test
                                 set: accuracy and mean loss over all 10000 images, the
                                 logits of the first 256, and the predictions of all
cqat's test loads the weights, evaluates them and must agree. Needs Debian's
python3-torch, python3-h5py, python3-numpy and dataset-fashion-mnist.
"""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "py"))
from cqat_torch import RefCNN, load_fashion_mnist, normalize  # noqa: E402
from torch2h5 import write_state_dict  # noqa: E402

STEPS = 300
BATCH = 64


def train(model, images, labels):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(images), generator=g)
    model.train()
    for step in range(STEPS):
        idx = perm[step * BATCH:(step + 1) * BATCH].numpy()
        x = normalize(images[idx])
        y = torch.from_numpy(labels[idx])
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def evaluate(model, images, labels):
    model.eval()
    logits = []
    with torch.no_grad():
        for i in range(0, len(images), 500):
            logits.append(model(normalize(images[i:i + 500])))
    logits = torch.cat(logits)
    y = torch.from_numpy(labels)
    loss = F.cross_entropy(logits, y).item()
    pred = logits.argmax(1)
    return logits.numpy(), pred.numpy(), (pred == y).double().mean().item(), loss


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = RefCNN()
    train_x, train_y = load_fashion_mnist(True)
    test_x, test_y = load_fashion_mnist(False)
    train(model, train_x, train_y)
    logits, pred, acc, loss = evaluate(model, test_x, test_y)
    write_state_dict(model.state_dict(), os.path.join(out_dir, "torch_refcnn_float.h5"))
    with h5py.File(os.path.join(out_dir, "torch_refcnn_float_ref.h5"), "w") as f:
        f["logits_first256"] = logits[:256].astype(np.float32)
        f["predictions"] = pred.astype(np.int32)
        f.attrs["accuracy"] = acc
        f.attrs["loss"] = loss
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["steps"] = STEPS
    print("refcnn after %d PyTorch steps: test accuracy %.4f, loss %.4f" % (STEPS, acc, loss))


if __name__ == "__main__":
    main()
