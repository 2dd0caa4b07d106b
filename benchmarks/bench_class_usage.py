"""How much a class-conditioned denoiser uses its class: loss with the true vs a wrong class.

For held-out images x0 of a FIRST training set and one fixed noise draw n, the
denoiser D(x0 + sigma n; sigma, c) is evaluated with every class c.  A model that
has learnt the classes denoises better with the true class: the printed gap is
(mean loss over wrong classes - loss with the true class) / loss with the true
class, and "argmin" is the fraction of images whose lowest loss comes with the
true class (chance: 1/K).  Guidance can only amplify this difference, so a gap
near 0 means generated images will not follow the requested class at any w.

    python benchmarks/bench_class_usage.py results/models/first/checkpoints/ckpt-000001000.pt \
        --data results/first/training_set.h5 --weights ema
    python benchmarks/bench_class_usage.py results/models/first/model.pt --data ...
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from radiogen.model import build_network, load_model
from radiogen.model.data import read_training_set, to_model_range


def load_network(path: str, weights: str = "ema"):
    """The denoiser of ``model.pt`` (its EMA weights) or of a checkpoint (``weights``: ema or model)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" in state:  # model.pt: EMA weights
        net, _ = load_model(path)
        return net
    net = build_network(state["model_config"])
    net.load_state_dict(state[weights])
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model.pt or a training checkpoint ckpt-<step>.pt")
    parser.add_argument("--data", required=True, help="FIRST training_set.h5 (validation split used)")
    parser.add_argument("--weights", choices=("ema", "model"), default="ema",
                        help="checkpoint weights: EMA or raw ('model')")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 2.0, 8.0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = read_training_set(args.data)
    index = data.val_index[: args.images]
    x0 = to_model_range(torch.from_numpy(data.images[index]))
    labels = torch.from_numpy(data.context[index].argmax(1))
    n_classes = data.context_dim
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    net = load_network(args.model, args.weights).eval()
    print(f"{args.model}: {len(index)} validation images, {n_classes} classes")
    print(f"{'sigma':>6} {'loss true':>10} {'loss wrong':>11} {'gap %':>7} {'argmin':>7}  (chance {1 / n_classes:.2f})")
    rows = torch.arange(len(index))
    for sigma in args.sigmas:
        losses = []
        with torch.no_grad():
            for c in range(n_classes):
                onehot = torch.nn.functional.one_hot(torch.full((len(index),), c), n_classes).float()
                denoised = net(x0 + sigma * noise, torch.full((len(index),), sigma), onehot)
                losses.append(((denoised - x0) ** 2).mean(dim=(1, 2, 3)))
        loss = torch.stack(losses, 1)
        true = loss[rows, labels]
        wrong = (loss.sum(1) - true) / (n_classes - 1)
        gap = 100 * float((wrong.mean() - true.mean()) / true.mean())
        argmin = float((loss.argmin(1) == labels).float().mean())
        print(f"{sigma:6.2f} {float(true.mean()):10.5f} {float(wrong.mean()):11.5f} {gap:7.2f} {argmin:7.2f}")
    print(f"(numpy {np.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
