"""How to broadcast GC ViT's per-image global query to its windows: measured, not guessed.

Three ways to compute softmax(q_img k_w^T + bias) v_w for every window w of every image:
  expand  - copy q into the (B*nW) window batch, one 4-D SDPA call (what lgvit does);
  bcast5d - q as (B, 1, heads, N, d) against (B, nW, heads, N, d) keys, 5-D SDPA (broadcast);
  einsum  - one matmul of q against all windows' keys per image, softmax per window, einsum with v.
Shapes are gcvit_tiny's stages 0 and 1 at 224 (the only ones with more than one window).

    python benchmarks/global_query.py [--device cuda] [--batch 8]
"""

import argparse
import time

import torch
import torch.nn.functional as F

STAGES = {"stage0 (64 windows, 2 heads)": (64, 2), "stage1 (16 windows, 4 heads)": (16, 4)}


def expand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    B, nW = k.shape[:2]
    qe = q.unsqueeze(1).expand_as(k).reshape(B * nW, *q.shape[1:])  # (B*nW, heads, N, d)
    kv = (k.reshape(B * nW, *k.shape[2:]), v.reshape(B * nW, *v.shape[2:]))  # (B*nW, heads, N, d)
    return F.scaled_dot_product_attention(qe, *kv, attn_mask=bias)


def bcast5d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q.unsqueeze(1), k, v, attn_mask=bias.unsqueeze(0))  # (B, nW, heads, N, d)


def einsum(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    attn = torch.einsum("bhqd,bwhkd->bwhqk", q * q.shape[-1] ** -0.5, k) + bias  # (B, nW, heads, N, N)
    return torch.einsum("bwhqk,bwhkd->bwhqd", attn.softmax(-1), v)  # (B, nW, heads, N, d)


def timeit(fn, *args, device: str, iters: int = 20) -> float:
    for _ in range(3):
        fn(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"| {args.device} {args.dtype}, batch {args.batch} | expand ms | bcast5d ms | einsum ms |")
    print("|---|---|---|---|")
    with torch.inference_mode():
        for label, (nW, heads) in STAGES.items():
            N, d = 49, 32
            kw = dict(device=args.device, dtype=dtype)
            q = torch.randn(args.batch, heads, N, d, **kw)
            k, v = torch.randn(args.batch, nW, heads, N, d, **kw), torch.randn(args.batch, nW, heads, N, d, **kw)
            bias = torch.randn(1, heads, N, N, **kw)
            ref = expand(q, k, v, bias).view(args.batch, nW, heads, N, d)  # (B, nW, heads, N, d)
            for fn in (bcast5d, einsum):
                assert (fn(q, k, v, bias).float() - ref.float()).abs().max() < 1e-2, fn.__name__
            times = [timeit(fn, q, k, v, bias, device=args.device) for fn in (expand, bcast5d, einsum)]
            print(f"| {label} | " + " | ".join(f"{t:.2f}" for t in times) + " |")


if __name__ == "__main__":
    main()
