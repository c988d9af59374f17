#!/usr/bin/python3
"""Writes tests/data/optim_golden.h5: PyTorch's optimizers and LR schedules on a toy
problem, for tests/test_optim.c to compare cqat's optim/ against step by step.

Run with Debian's Python (python3-torch, python3-h5py, python3-numpy), not whatever
python3 comes first on PATH:

    /usr/bin/python3 tools/gen_optim_golden.py            # writes tests/data/optim_golden.h5
    /usr/bin/python3 tools/gen_optim_golden.py OUT.h5

The toy model has two parameters, W [3, 4] and b [3]. At every step the gradient is set
by a formula the C test computes identically in float32:

    g = (2 * c) * (p - t)        (c, t fixed float32 tensors of p's shape)

except that b gets no gradient (grad = None) on steps s with s % 7 == 3, so the runs
also pin down what an optimizer does with a parameter that has no gradient. Each run
records both parameters after each of 100 steps.

Layout of the file:
    /init/{W,b}, /coef/{W,b}, /target/{W,b}     float32, the toy problem
    /runs/<name>/{W,b}                           float32 [100, 3, 4] and [100, 3]
    /schedules/<name>                            float64 [100], lr at steps 0..99
Every run and schedule carries its hyper-parameters as attributes (for people; the C
test has its own copy of the table).
"""
import math
import os
import sys

import h5py
import numpy as np
import torch

STEPS = 100
NO_GRAD_EVERY, NO_GRAD_AT = 7, 3  # b.grad = None when step % 7 == 3

# name -> (torch class, keyword arguments); the C test's table must match.
RUNS = {
    "sgd": (torch.optim.SGD, dict(lr=0.05)),
    "sgd_momentum_wd": (torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=5e-4)),
    "sgd_nesterov": (torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd_dampening": (torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1)),
    "adam": (torch.optim.Adam, dict(lr=0.05)),
    "adam_amsgrad_wd": (torch.optim.Adam, dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6,
                                                weight_decay=1e-2, amsgrad=True)),
    "adamw": (torch.optim.AdamW, dict(lr=0.05)),
}

# Schedules: cqat's optim_schedule_lr formulas, written out in the same operation order.
SCHEDULES = {
    "cosine": dict(kind="cosine", base_lr=0.1, total_steps=100, eta_min=0.001),
    "step": dict(kind="step", base_lr=0.1, total_steps=100, step_size=30, gamma=0.1),
    "cosine_warmup": dict(kind="cosine", base_lr=0.1, total_steps=100, warmup_steps=10,
                          eta_min=0.0),
    "step_warmup": dict(kind="step", base_lr=0.1, total_steps=100, warmup_steps=5,
                        step_size=20, gamma=0.5),
}


def toy_problem():
    gen = torch.Generator().manual_seed(1234)

    def uniform(shape, lo, hi):
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).float()

    def away_from_zero(shape):
        # |x| in [0.5, 1.5] with a random sign, so relative errors stay meaningful.
        sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
        return (sign * uniform(shape, 0.5, 1.5)).float()

    prob = {}
    for name, shape in (("W", (3, 4)), ("b", (3,))):
        prob["init/" + name] = away_from_zero(shape)
        prob["target/" + name] = away_from_zero(shape)
        prob["coef/" + name] = uniform(shape, 0.25, 2.0)
    return prob


def run(cls, kwargs, prob):
    params = {n: prob["init/" + n].clone().requires_grad_(True) for n in ("W", "b")}
    opt = cls([params["W"], params["b"]], foreach=False, **kwargs)
    hist = {n: [] for n in params}
    for step in range(STEPS):
        with torch.no_grad():
            for n, p in params.items():
                if n == "b" and step % NO_GRAD_EVERY == NO_GRAD_AT:
                    p.grad = None
                else:
                    p.grad = (2 * prob["coef/" + n]) * (p - prob["target/" + n])
        opt.step()
        for n, p in params.items():
            hist[n].append(p.detach().clone().numpy())
    return {n: np.stack(h).astype(np.float32) for n, h in hist.items()}


def schedule_lr(s, step):
    """cqat's optim_schedule_lr: linear warm-up base*(step+1)/warmup, then the
    schedule over the remaining steps (PyTorch's closed forms)."""
    base, warm = s["base_lr"], s.get("warmup_steps", 0)
    if step < warm:
        return base * (step + 1) / warm
    t = step - warm
    if s["kind"] == "step":
        return base * s["gamma"] ** (t // s["step_size"])
    T = s["total_steps"] - warm
    eta_min = s["eta_min"]
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T)) / 2


def torch_schedule(s):
    """The same schedule built from torch.optim.lr_scheduler, as a cross-check."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=s["base_lr"])
    warm = s.get("warmup_steps", 0)
    if s["kind"] == "step":
        main = torch.optim.lr_scheduler.StepLR(opt, s["step_size"], s["gamma"])
    else:
        main = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s["total_steps"] - warm,
                                                          s["eta_min"])
    lrs = []
    for step in range(STEPS):
        if step < warm:
            lrs.append(s["base_lr"] * (step + 1) / warm)
            continue
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        main.step()
    return np.array(lrs)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "data",
                                                             "optim_golden.h5")
    prob = toy_problem()
    with h5py.File(out, "w") as f:
        f.attrs["generator"] = "tools/gen_optim_golden.py"
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["steps"] = STEPS
        f.attrs["b_no_grad_every"] = NO_GRAD_EVERY
        f.attrs["b_no_grad_at"] = NO_GRAD_AT
        for key, val in prob.items():
            f.create_dataset(key, data=val.numpy())
        for name, (cls, kwargs) in RUNS.items():
            g = f.create_group("runs/" + name)
            g.attrs["optimizer"] = cls.__name__
            for k, v in kwargs.items():
                g.attrs[k] = v
            for pname, hist in run(cls, kwargs, prob).items():
                g.create_dataset(pname, data=hist)
        for name, s in SCHEDULES.items():
            lrs = np.array([schedule_lr(s, i) for i in range(STEPS)], dtype=np.float64)
            ref = torch_schedule(s)
            diff = np.max(np.abs(lrs - ref) / ref)
            assert diff < 1e-12, f"{name}: formula and torch scheduler differ by {diff}"
            d = f.create_dataset("schedules/" + name, data=lrs)
            for k, v in s.items():
                d.attrs[k] = v
            print(f"schedule {name}: matches torch.optim.lr_scheduler to {diff:.1e}")
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
