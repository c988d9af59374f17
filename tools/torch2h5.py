#!/usr/bin/python3
"""torch2h5.py — write a PyTorch state_dict (.pt) as the HDF5 file cqat reads.

    /usr/bin/python3 tools/torch2h5.py model.pt weights.h5

One dataset per state_dict key at the root, named by the key, with the tensor's
values in its own dtype (float32 weights, int64 num_batches_tracked, ...): exactly
`for k, v in sd.items(): f[k] = v.numpy()`. Accepts a bare state_dict or a dict with
a "state_dict" / "model_state_dict" / "model" entry (common checkpoint layouts).
Needs Debian's python3 with python3-torch and python3-h5py (another python3 may come
first on PATH: run it as /usr/bin/python3).
"""
import os
import sys

import h5py
import torch


def find_state_dict(obj):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise SystemExit("torch2h5: no state_dict found in the file")


def write_state_dict(sd, path):
    """Atomically writes sd to path (temporary file, then rename)."""
    tmp = path + ".tmp-%d" % os.getpid()
    try:
        with h5py.File(tmp, "w") as f:
            for k, v in sd.items():
                if not isinstance(v, torch.Tensor):
                    continue
                if v.is_quantized:
                    raise SystemExit("torch2h5: %s is a quantized tensor; export the "
                                     "float or QAT-prepared model instead" % k)
                f[k] = v.detach().cpu().numpy()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv):
    if len(argv) != 3:
        raise SystemExit("usage: torch2h5.py STATE_DICT.pt OUT.h5")
    obj = torch.load(argv[1], map_location="cpu")
    sd = find_state_dict(obj)
    write_state_dict(sd, argv[2])
    print("torch2h5: wrote %d tensors to %s" % (len(sd), argv[2]))


if __name__ == "__main__":
    main(sys.argv)
