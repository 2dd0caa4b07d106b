"""Judge accuracy and image-statistic distances of a FIRST model at several guidance w,
with classifier-free guidance or autoguidance by weaker models (``--guides``).

Samples ``--per-class`` images per class from a model file or a training checkpoint
(EMA weights) with a chosen solver (``--solver``, ``--steps``, ``--rho``), scores them with a trained morphology
classifier (the judge), and compares their per-image mean and std with the real
training split through the project's size-matched floor
(:func:`radiogen.evaluation.distances.size_matched`).  Prints one line per w:
accuracy with its 1-sigma Wilson interval, W1 / floor of the image mean and std
with their z-scores and sizes, the confusion matrix (rows: requested class) and
the sampling time.  The latents do not depend on w, so the rows compare the
same starting noise, and a last block compares every w with the first one image
by image (McNemar's exact test on the images right at only one of the two).
With ``--kid-real`` (the judge's scores of held-out real images, as the workflow
writes them: ``results/evaluation/classes/scores/first_heldout.h5``) each line also
gives the KID of the judge's embeddings against that set, as a z-score over its
size-matched real-vs-real floor (the summary tables' measure and settings).

    python benchmarks/bench_guidance.py results/models/first/model.pt \
        --data results/first/training_set.h5 --judge results/classifier/classifier.pt \
        --guidance 0.75 3 6 10

Autoguidance by an early EMA snapshot (a checkpoint of the same run) against
classifier-free guidance, at equal cost (two network evaluations per step each)::

    python benchmarks/bench_guidance.py results/models/first/model.pt ... \
        --guides unconditional results/models/first/checkpoints/ckpt-000000600.pt --guidance 1 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench_class_usage import load_network  # this folder's script: model.pt or checkpoint

from radiogen.classifier import classify
from radiogen.classifier.metrics import accuracy as judge_accuracy
from radiogen.classifier.metrics import confusion_matrix
from radiogen.config import section_defaults
from radiogen.evaluation.classes import read_scores
from radiogen.evaluation.distances import one_d_distances, size_matched
from radiogen.evaluation.proportions import mcnemar_test, wilson_interval
from radiogen.evaluation.stats import per_image_statistics
from radiogen.evaluation.summary import feature_distance_options, feature_distance_table, summary_table
from radiogen.model.data import read_training_set
from radiogen.sampler.solvers import SOLVERS, network_evaluations, solve


def _image_stats(images: np.ndarray) -> dict:
    table = per_image_statistics(images)
    return {name: table[name].to_numpy() for name in ("mean", "std")}


def _w1(a: dict, b: dict) -> dict:
    return {name: one_d_distances(a[name], b[name], name=name)["w1"] for name in a}


def _kid_text(real_embeddings: np.ndarray, embeddings: np.ndarray, *, seed: int) -> str:
    options = feature_distance_options(section_defaults("evaluation.summary"))
    features = feature_distance_table(real_embeddings, embeddings, seed=seed, **options)
    row = summary_table(None, features).set_index("metric").loc["KID"]
    return (f"; KID z {row['generated_floor_z']:.1f} ({row['n_reference']} real vs {row['n_compared']} "
            "generated)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model.pt or a training checkpoint ckpt-<step>.pt")
    parser.add_argument("--data", required=True, help="FIRST training_set.h5")
    parser.add_argument("--judge", required=True, help="classifier.pt")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 0.75, 3.0, 10.0])
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--solver", default="dpmpp_2m", choices=SOLVERS, help="sample.sampler.solver")
    parser.add_argument("--steps", type=int, default=15, help="solver steps (network evaluations: see --solver)")
    parser.add_argument("--rho", type=float, default=7.0, help="schedule exponent rho")
    parser.add_argument("--schedule", help="schedule JSON (radiogen sample schedule, GITS) replacing --steps/--rho")
    parser.add_argument("--save", help="write labels, predictions and images of every (guide, w) to this .npz")
    parser.add_argument("--compare", help="an earlier --save .npz of the same latents: McNemar per (guide, w)")
    parser.add_argument("--guides", nargs="+", default=["unconditional"],
                        help="unconditional (classifier-free) and/or guide model.pt / checkpoint files")
    parser.add_argument("--kid-real", help="judge scores of held-out real images (first_heldout.h5): adds KID z")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    net = load_network(args.model).eval()
    sigmas = None
    if args.schedule:  # a model file's digest must match the schedule's
        from radiogen.sampler.generate import model_id
        from radiogen.sampler.schedules import read_schedule

        sigmas = read_schedule(args.schedule, model_digest=model_id(args.model))
        args.steps = len(sigmas) - 1
    data = read_training_set(args.data)
    kid_real = read_scores(args.kid_real)["embeddings"] if args.kid_real else None
    real = _image_stats(data.images[data.split == 0][:, 0])
    n_classes = data.context_dim
    labels = np.repeat(np.arange(n_classes), args.per_class)
    context = torch.nn.functional.one_hot(torch.from_numpy(labels), n_classes).float()
    noise = torch.randn((labels.size, 1, *data.images.shape[-2:]),
                        generator=torch.Generator().manual_seed(args.seed))
    levels = f"schedule {args.schedule}" if sigmas else f"rho {args.rho}"
    print(f"{args.model}: {labels.size} images per w ({args.per_class} per class), {args.solver} {args.steps} steps "
          f"({levels}, {network_evaluations(args.solver, args.steps)} network evaluations per image and w)")
    saved = {"labels": labels}
    correct = {}
    for guide_name in args.guides:
        guide = None if guide_name == "unconditional" else load_network(guide_name).eval()
        for w in args.guidance:
            start = time.perf_counter()
            with torch.no_grad():
                x = torch.cat([solve(net, noise[i:i + 50], solver=args.solver, context=context[i:i + 50],
                                     guidance=w, guide=guide, num_steps=args.steps, rho=args.rho, sigmas=sigmas)
                               for i in range(0, labels.size, 50)])
            seconds = time.perf_counter() - start
            images = ((x.clamp(-1, 1) + 1) / 2).numpy()[:, 0]
            probabilities, embeddings = classify(images, model=args.judge)
            predicted = probabilities.argmax(1)
            accuracy = judge_accuracy(labels, predicted)
            correct[guide_name, w] = predicted == labels
            saved[f"predicted|{guide_name}|{w}"] = predicted
            saved[f"images|{guide_name}|{w}"] = images.astype(np.float32)
            low, high = wilson_interval(int(correct[guide_name, w].sum()), labels.size)
            confusion = confusion_matrix(labels, predicted, num_classes=n_classes)
            recall = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
            matched = size_matched(_w1, real, [_image_stats(images)], repeats=7, seed=args.seed)
            floor = {name: np.median(matched["floor"][name]) for name in real}
            spread = {name: np.std(matched["floor"][name], ddof=1) for name in real}
            generated = {name: np.median(matched["others"][0][name]) for name in real}
            text = ", ".join(f"image {name} {generated[name] / floor[name]:.1f} "
                             f"(z {(generated[name] - floor[name]) / spread[name]:.1f})" for name in real)
            print(f"guide {guide_name}, w = {w:5.2f}: judge accuracy {accuracy:.3f} [{float(low):.3f}, "
                  f"{float(high):.3f}] (1-sigma Wilson); recall per class {np.round(recall, 2).tolist()}; "
                  f"W1 / floor at {matched['n_reference']} real vs {matched['n_compared']} generated: {text}; "
                  f"confusion {confusion.tolist()}; {seconds:.0f} s"
                  + ("" if kid_real is None else _kid_text(kid_real, embeddings, seed=args.seed)), flush=True)
    if args.save:
        np.savez_compressed(args.save, **saved)
    if args.compare:
        earlier = np.load(args.compare)
        if not np.array_equal(earlier["labels"], labels):
            raise SystemExit(f"{args.compare}: other labels (per-class count) than this run")
        for guide_name, w in correct:
            key = f"{guide_name}|{w}"
            if f"predicted|{key}" not in earlier:
                continue
            test = mcnemar_test(correct[guide_name, w], earlier[f"predicted|{key}"] == labels)
            rms = float(np.sqrt(np.mean((saved[f"images|{key}"] - earlier[f"images|{key}"]) ** 2)))
            print(f"{key} vs {args.compare}, same latents: image RMS difference {rms:.4f}; "
                  f"{test['first_only']} images right only here, {test['second_only']} only there; "
                  f"McNemar exact p = {test['p_exact']:.3g}")
    first = next(iter(correct))
    for key in list(correct)[1:]:
        test = mcnemar_test(correct[key], correct[first])
        print(f"{key} vs {first}, same latents: {test['first_only']} images right only at {key}, "
              f"{test['second_only']} only at {first}; McNemar exact p = {test['p_exact']:.3g}, "
              f"mid-p = {test['p_mid']:.3g}")


if __name__ == "__main__":
    main()
