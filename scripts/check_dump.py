#!/usr/bin/env python3
"""Independent float64 check of `arelax gradcheck --dump FILE` (needs only numpy).

Re-derives, from the dumped batch and parameters alone, exact backprop's gradients and AR's after
exactly `relax_steps` Jacobi steps, and compares them with the dumped ones. Written from the
paper's equations, not from arelax's code. Exit code 1 if either check fails.
    python3 scripts/check_dump.py g.safetensors [--bp-tol 1e-4] [--ar-tol 1e-3]
"""
import json
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        a, b = info["data_offsets"]
        tensors[name] = np.frombuffer(raw[base + a : base + b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return tensors, meta


ACT = {
    "relu": (lambda a: np.maximum(a, 0), lambda a: (a > 0).astype(np.float64)),
    "leaky-relu": (lambda a: np.where(a > 0, a, 0.01 * a), lambda a: np.where(a > 0, 1.0, 0.01)),
    "tanh": (np.tanh, lambda a: 1 - np.tanh(a) ** 2),
    "sigmoid": (lambda a: 1 / (1 + np.exp(-a)), lambda a: (1 / (1 + np.exp(-a))) * (1 - 1 / (1 + np.exp(-a)))),
    "linear": (lambda a: a, lambda a: np.ones_like(a)),
}


def main():
    args = sys.argv[1:]
    path = args[0]
    bp_tol = float(args[args.index("--bp-tol") + 1]) if "--bp-tol" in args else 1e-4
    ar_tol = float(args[args.index("--ar-tol") + 1]) if "--ar-tol" in args else 1e-3
    t, meta = read_safetensors(path)
    depth = len([k for k in t if k.startswith("layers.") and k.endswith(".weight")])
    W = [t[f"layers.{l}.weight"] for l in range(depth)]
    b = [t[f"layers.{l}.bias"] for l in range(depth)]
    x0, y = t["input"], t["target"]
    B = x0.shape[0]
    f, df = ACT[meta["activation"]]
    steps, eta = int(meta["relax_steps"]), float(meta["relax_rate"])
    scale = 1.0 if meta["reduction"] == "sum" else 1.0 / B

    # Forward: keep x_l and f'(a_l).
    xs, fps = [x0], []
    for l in range(depth):
        a = xs[-1] @ W[l].T + b[l]
        last = l == depth - 1
        xs.append(a if last else f(a))
        fps.append(np.ones_like(a) if last else df(a))
    out = xs[-1]
    if meta["loss"] == "mse":
        g = 2 * (out - y) * scale
    else:
        p = np.exp(out - out.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - y) * scale

    def grads(r):
        gw = [(r[l + 1] * fps[l]).T @ xs[l] for l in range(depth)]
        gb = [(r[l + 1] * fps[l]).sum(0) for l in range(depth)]
        return gw, gb

    # Exact backprop.
    r_bp = [None] * (depth + 1)
    r_bp[depth] = g
    for l in range(depth - 1, 0, -1):
        r_bp[l] = (r_bp[l + 1] * fps[l]) @ W[l]
    # AR: exactly `steps` Jacobi steps from the forward values, output clamped.
    start = meta.get("relax_start", "forward")
    r = [None] + [xs[l].copy() if start == "forward" else np.zeros_like(xs[l]) for l in range(1, depth)] + [g]
    for _ in range(steps):
        r = [None] + [r[l] + eta * (-r[l] + (r[l + 1] * fps[l]) @ W[l]) for l in range(1, depth)] + [g]

    def rel(a, e):
        d = np.linalg.norm(e)
        return np.linalg.norm(a - e) / d if d > 0 else np.linalg.norm(a)

    ok = True
    for name, (gw, gb), tol in [("bp", grads(r_bp), bp_tol), ("ar", grads(r), ar_tol)]:
        for l in range(depth):
            ew = rel(t[f"{name}.layers.{l}.weight_grad"], gw[l])
            eb = rel(t[f"{name}.layers.{l}.bias_grad"], gb[l])
            good = ew <= tol and eb <= tol
            ok &= good
            label = "backprop" if name == "bp" else f"AR ({steps} Jacobi steps)"
            print(f"{label:>22} layer {l}: weight rel. error {ew:.2e}, bias {eb:.2e} (tolerance {tol:g}) {'ok' if good else 'FAIL'}")
    ar_vs_bp = [rel(grads(r)[0][l], grads(r_bp)[0][l]) for l in range(depth)]
    print("float64 AR vs float64 backprop after", steps, "steps:", " ".join(f"{e:.2e}" for e in ar_vs_bp))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
