"""Sampling speed of the paper network: images/s at N Heun steps with guidance.

Prints, for each batch size, the time of one guided denoiser evaluation (one
forward of 2B images), the resulting images/s for a full N-step sample
(2N - 1 evaluations per image; on CPU extrapolated from a few timed
evaluations, on GPU measured with the real sampler), and peak memory.  Also
compares batched (one 2B forward) with two-pass (B + B) guidance and fp32 with
bf16 autocast, and prints the reference points of the paper and the issue.

    python benchmarks/bench_sampler.py                    # CPU: batch 8 and 32
    python benchmarks/bench_sampler.py --batch-sizes 8 32 128 --device cuda
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from radiogen.model import build_network, model_config_from
from radiogen.sampler.heun import guided_denoiser, sample

REFERENCES = """\
Reference points
  authors' sampler : 2 network passes per evaluation (unconditional pass always run),
                     ~98 passes per image at 25 steps (2 x 49 evaluations)
  this sampler     : 2N-1 = 49 evaluations per image at 25 steps; 1 pass each at w = 0,
                     one batched 2B pass at w != 0 (98 image-forwards per image)
  this CPU (issue) : one forward of the paper network ~0.6 s/image
  paper (A100)     : 1,000 images in 3 min 17 s = 5.1 images/s
  target (H100)    : >= 40 images/s; compute limit ~100 images/s
                     (83 GFLOP per forward, ~800 TFLOP/s bf16)"""


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux: the process peak so far (monotone)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TwoPass(torch.nn.Module):
    """Runs the 2B guidance batch as two separate forwards of B (for comparison)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def context_dim(self) -> int:
        return self.net.context_dim

    def forward(self, x, sigma, context=None, context_mask=None):
        b = x.shape[0] // 2
        return torch.cat(
            [self.net(x[i * b:(i + 1) * b], sigma[i * b:(i + 1) * b], context[i * b:(i + 1) * b],
                      context_mask[i * b:(i + 1) * b]) for i in range(2)]
        )


def time_evaluation(net, batch: int, *, device, guidance: float, autocast_dtype, repeats: int,
                    size: int) -> float:
    """Seconds per guided denoiser evaluation of ``batch`` images (median of repeats)."""
    x = torch.randn(batch, 1, size, size, device=device)
    context = torch.randn(batch, net.context_dim, device=device)
    times = []
    with torch.no_grad():
        # warm-up: one image on CPU (allocator, kernels), the full batch on GPU (cudnn autotune)
        warm = batch if device.type == "cuda" else 1
        guided_denoiser(net, x[:warm], 2.0, context=context[:warm], guidance=guidance,
                        autocast_dtype=autocast_dtype)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            guided_denoiser(net, x, 0.5, context=context, guidance=guidance, autocast_dtype=autocast_dtype)
            _sync(device)
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def time_full(net, batch: int, *, device, guidance: float, autocast_dtype, steps: int, size: int) -> float:
    """Seconds for a complete ``steps``-step sample of ``batch`` images."""
    noise = torch.randn(batch, 1, size, size, device=device)
    context = torch.randn(batch, net.context_dim, device=device)
    with torch.no_grad():
        sample(net, noise[:1], context=context[:1], guidance=guidance, num_steps=2,
               autocast_dtype=autocast_dtype)
        _sync(device)
        t0 = time.perf_counter()
        sample(net, noise, context=context, guidance=guidance, num_steps=steps, autocast_dtype=autocast_dtype)
        _sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=25, help="Heun steps N (paper 25)")
    parser.add_argument("--guidance", type=float, default=0.75)
    parser.add_argument("--image-size", type=int, default=80, help="pixels per side (paper 80)")
    parser.add_argument("--repeats", type=int, default=1, help="timed evaluations per point")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mode", choices=["auto", "extrapolate", "full"], default="auto",
                        help="full: run the real N-step sampler (default on GPU)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-bf16", action="store_true", help="skip the bf16 autocast timing")
    parser.add_argument("--compare-batch", type=int, default=8,
                        help="batch for the two-pass and bf16 comparisons")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    mode = args.mode if args.mode != "auto" else ("full" if device.type == "cuda" else "extrapolate")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    config = model_config_from(None, image_channels=1, image_size=[args.image_size] * 2, context_dim=1)
    net = build_network(config).to(device).eval()
    n_params = sum(p.numel() for p in net.parameters())
    evals = 2 * args.steps - 1
    amp = torch.bfloat16 if device.type == "cuda" else None
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"paper network: {n_params / 1e6:.2f} M parameters, {args.image_size}x{args.image_size} px; "
          f"{args.steps} steps = {evals} evaluations/image, w = {args.guidance}; mode {mode}; "
          f"default precision {'bf16' if amp else 'fp32'}")
    print()
    print(f"{'batch':>6} {'s/eval':>9} {'ms/img-fwd':>11} {'images/s':>9} {'s/image':>8} {'peak MB':>8}")
    for batch in args.batch_sizes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_eval = time_evaluation(net, batch, device=device, guidance=args.guidance, autocast_dtype=amp,
                                 repeats=args.repeats, size=args.image_size)
        if mode == "full":
            t_total = time_full(net, batch, device=device, guidance=args.guidance, autocast_dtype=amp,
                                steps=args.steps, size=args.image_size)
        else:
            t_total = evals * t_eval
        forwards = batch * (2 if args.guidance else 1)
        print(f"{batch:>6} {t_eval:>9.3f} {1000 * t_eval / forwards:>11.1f} {batch / t_total:>9.4f} "
              f"{t_total / batch:>8.1f} {_peak_mb(device):>8.0f}", flush=True)
    print()
    b = args.compare_batch
    t_batched = time_evaluation(net, b, device=device, guidance=args.guidance, autocast_dtype=amp,
                                repeats=args.repeats, size=args.image_size)
    t_two = time_evaluation(TwoPass(net), b, device=device, guidance=args.guidance, autocast_dtype=amp,
                            repeats=args.repeats, size=args.image_size)
    t_cond = time_evaluation(net, b, device=device, guidance=0.0, autocast_dtype=amp,
                             repeats=args.repeats, size=args.image_size)
    print(f"guidance at batch {b}: batched 2B pass {t_batched:.3f} s/eval, two passes {t_two:.3f} s/eval "
          f"(x{t_two / t_batched:.2f}); w = 0 single pass {t_cond:.3f} s/eval", flush=True)
    t32 = time_evaluation(net, b, device=device, guidance=args.guidance, autocast_dtype=None,
                          repeats=args.repeats, size=args.image_size)
    print(f"precision at batch {b}: fp32 {t32:.3f} s/eval ({b / (evals * t32):.4f} images/s)", flush=True)
    if args.skip_bf16:
        print("  bf16 skipped (--skip-bf16)")
    else:
        # CPUs without native bf16 emulate it: expect it slower than fp32 there
        t16 = time_evaluation(net, b, device=device, guidance=args.guidance, autocast_dtype=torch.bfloat16,
                              repeats=args.repeats, size=args.image_size)
        print(f"  bf16 autocast {t16:.3f} s/eval ({b / (evals * t16):.4f} images/s, "
              f"speed-up x{t32 / t16:.2f})", flush=True)
    print(f"peak memory (process): {_peak_mb(device):.0f} MB")
    print()
    print(REFERENCES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
