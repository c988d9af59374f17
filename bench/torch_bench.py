#!/usr/bin/python3
"""torch_bench.py — PyTorch's side of the side-by-side benchmark (bench/compare.py).

    /usr/bin/python3 bench/torch_bench.py --what float-train --batch 64 --threads 2

Measures one figure on BENCHMARK.md's refcnn with PyTorch (Debian's python3-torch)
and prints one JSON line: {"what", "batch", "threads", "samples_per_s", "peak_rss_mb"}.
  float-train   full SGD steps (forward, backward, optimizer), train mode
  qat-train     the same after fuse_modules_qat + prepare_qat (fbgemm QAT qconfig)
  float-infer   eval-mode forward under no_grad
  int8-infer    the converted model; the faster of the onednn and qnnpack engines
The inputs are Fashion-MNIST test images, normalized as cqat does.
"""
import argparse
import json
import os
import resource
import sys
import time
import warnings

import torch
import torch.ao.quantization as tq
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "py"))
from cqat_torch import RefCNN, load_fashion_mnist, normalize  # noqa: E402

warnings.filterwarnings("ignore")


def batches(batch, count):
    images, labels = load_fashion_mnist(False)
    out = []
    for i in range(count):
        lo = (i * batch) % (len(images) - batch)
        out.append((normalize(images[lo:lo + batch]), torch.from_numpy(labels[lo:lo + batch])))
    return out


def time_steps(fn, data, seconds):
    """Runs fn over data (warm-up first) for about `seconds`; samples/s."""
    for x, y in data[:3]:
        fn(x, y)
    n, t0 = 0, time.perf_counter()
    while True:
        for x, y in data:
            fn(x, y)
            n += len(x)
        el = time.perf_counter() - t0
        if el >= seconds:
            return n / el


def train_fn(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def qat_model(engine="fbgemm"):
    m = RefCNN()
    m.train()
    m.qconfig = tq.get_default_qat_qconfig(engine)
    m = tq.fuse_modules_qat(m, RefCNN.fusion_groups)
    return tq.prepare_qat(m)


def infer_fn(model):
    model.eval()

    def run(x, y):
        with torch.no_grad():
            model(x)
    return run


def int8_speed(batch, data, seconds):
    best = 0.0
    for engine in ("onednn", "qnnpack"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        torch.backends.quantized.engine = engine
        m = qat_model("qnnpack" if engine == "qnnpack" else "fbgemm")
        # A few training steps so observers have ranges, then freeze and convert.
        step = train_fn(m)
        for x, y in data[:5]:
            step(x, y)
        m.eval()
        q = tq.convert(m)
        best = max(best, time_steps(infer_fn(q), data, seconds))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", required=True,
                    choices=["float-train", "qat-train", "float-infer", "int8-infer"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = batches(a.batch, max(8, 2048 // a.batch))
    if a.what == "float-train":
        sps = time_steps(train_fn(RefCNN()), data, a.seconds)
    elif a.what == "qat-train":
        sps = time_steps(train_fn(qat_model()), data, a.seconds)
    elif a.what == "float-infer":
        sps = time_steps(infer_fn(RefCNN()), data, a.seconds)
    else:
        sps = int8_speed(a.batch, data, a.seconds)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"what": a.what, "batch": a.batch, "threads": a.threads,
                      "samples_per_s": sps, "peak_rss_mb": rss, "engine": "pytorch " +
                      str(torch.__version__)}))


if __name__ == "__main__":
    main()
