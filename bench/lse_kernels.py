"""Check and time the CUDA attention kernels ring attention can use (they must return the log-sum-exp).

    python3 bench/lse_kernels.py        # on a GPU: max error of out and LSE against the math path, and ms per call

Shape: one Wan2.1-14B 720p ring-4 block (B=2, 40 heads, 18,900 queries and keys, head dim 128, bf16).
"""

from __future__ import annotations

import torch

from sgld.parallel.sequence import _CUDA_LSE_KERNELS


def main() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 40, 18900, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    small = [x[:1, :4, :1024] for x in (q, k, v)]
    scores = (small[0].float() @ small[1].float().transpose(-1, -2)) / 128 ** 0.5
    ref_lse = torch.logsumexp(scores, dim=-1)
    ref_out = torch.softmax(scores, dim=-1) @ small[2].float()
    for kernel in _CUDA_LSE_KERNELS:
        try:
            out, lse = kernel(*small, 0.0, False, None)
        except RuntimeError as exc:
            print(f"{kernel.__name__}: not available ({str(exc)[:80]})")
            continue
        err_out = (out.float() - ref_out).abs().max().item()
        err_lse = (lse.float() - ref_lse).abs().max().item()
        for _ in range(3):
            kernel(q, k, v, 0.0, False, None)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            kernel(q, k, v, 0.0, False, None)
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / 10
        tflops = 4 * 2 * 40 * 18900 * 18900 * 128 / ms / 1e9
        print(f"{kernel.__name__}: max |out - math| {err_out:.4f}, max |lse - math| {err_lse:.4f}, "
              f"{ms:.2f} ms ({tflops:.0f} TFLOP/s)")


if __name__ == "__main__":
    main()
