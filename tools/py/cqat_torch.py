"""cqat_torch.py — the zoo models and data pipeline of cqat, in PyTorch.

Used by the golden-vector scripts and the benchmark: the same module names as cqat
(so state_dicts move between the two by key), the same input normalization, and a
reader for the IDX files of Debian's dataset-fashion-mnist package.
Debian's python3 with python3-torch, python3-numpy (run as /usr/bin/python3).
"""
import gzip
import os
import struct

import numpy as np
import torch
import torch.nn as nn
from torch.ao.quantization import DeQuantStub, QuantStub
from torch.ao.nn.quantized import FloatFunctional

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


class RefCNN(nn.Module):
    """BENCHMARK.md's reference model, with the same names as cqat's `refcnn`."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.quant = QuantStub()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.skip = FloatFunctional()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        y = self.relu2(self.bn2(self.conv2(x)))
        x = self.skip.add_relu(self.bn3(self.conv3(y)), y)
        x = self.pool2(x)
        x = torch.flatten(x, 1)
        x = self.relu3(self.fc1(x))
        return self.dequant(self.fc2(x))

    fusion_groups = [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"],
                     ["conv3", "bn3"], ["fc1", "relu3"]]


def _read_idx(path):
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(train, data_dir=DATA_DIR):
    """(images uint8 [N, 28, 28], labels int64 [N])."""
    prefix = "train" if train else "t10k"
    images = _read_idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    return images, labels.astype(np.int64)


def normalize(images_u8):
    """uint8 [N, H, W] -> float32 [N, 1, H, W], as cqat's loader: (x/255 - mean)/std."""
    x = images_u8.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(x[:, None, :, :].copy())
