"""``radiogen classifier ...``: train the morphology classifier and score images."""

from __future__ import annotations

import json
import logging
import time

log = logging.getLogger("radiogen.classifier")


def cmd_train(args) -> int:
    import torch

    from radiogen.classifier import save_classifier
    from radiogen.classifier.metrics import plot_confusion_matrix, plot_training_curves
    from radiogen.classifier.train import train_classifier
    from radiogen.cli.options import json_object
    from radiogen.first.dataset import CLASS_NAMES, read_dataset_h5
    from radiogen.io import write_json_atomic

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = json_object(args.settings)
    dataset = read_dataset_h5(args.dataset)
    started = time.monotonic()
    result = train_classifier(dataset, settings=settings, seed=args.seed, checkpoint_dir=args.checkpoint_dir,
                              device=args.device or None)
    metrics = {
        "test_accuracy": result["metrics"]["test"]["accuracy"],
        "valid_accuracy": result["metrics"]["valid"]["accuracy"],
        "test": result["metrics"]["test"],
        "valid": result["metrics"]["valid"],
        "best_epoch": result["best_epoch"],
        "epochs": len(result["history"]),
        "epochs_run_this_job": result["epochs_run"],
        "history": result["history"],
        "class_names": list(CLASS_NAMES),
        "class_weights": result["class_weights"],
        "device": result["device"],
        "seed": args.seed,
        "settings": result["settings"],
        "wall_time_s": time.monotonic() - started,
    }
    if args.confusion:
        plot_confusion_matrix(
            result["metrics"]["test"]["confusion_matrix"], CLASS_NAMES, args.confusion,
            title=f"test split: accuracy {metrics['test_accuracy']:.1%} (epoch {result['best_epoch']})")
    if args.curve:
        plot_training_curves(result["history"], args.curve, best_epoch=result["best_epoch"])
    write_json_atomic(metrics, args.metrics)
    save_classifier(args.output, result["model"], class_names=CLASS_NAMES, image_size=dataset.images.shape[-1],
                    train_config=result["settings"], seed=args.seed, best_epoch=result["best_epoch"],
                    metrics={"test_accuracy": metrics["test_accuracy"], "valid_accuracy": metrics["valid_accuracy"]})
    log.info("wrote %s (test accuracy %.3f)", args.output, metrics["test_accuracy"])
    return 0


def cmd_score(args) -> int:
    import h5py
    import numpy as np

    from radiogen.classifier import classify, load_classifier
    from radiogen.io import atomic_path, open_hdf5, require_datasets

    model = load_classifier(args.model, device=args.device or "cpu")
    with open_hdf5(args.images) as h5:
        require_datasets(h5, ["images"])
        images = h5["images"][()]
        labels = h5["label"][()] if "label" in h5 else None
    probabilities, embeddings = classify(images, model=model, batch_size=args.batch_size)
    with atomic_path(args.output) as tmp, h5py.File(tmp, "w") as out:
        out.create_dataset("probabilities", data=probabilities)
        out.create_dataset("predicted", data=probabilities.argmax(1).astype(np.int64))
        out.create_dataset("embeddings", data=embeddings)
        out.attrs["class_names"] = json.dumps(model.class_names)
        out.attrs["images"] = str(args.images)
        out.attrs["model"] = str(args.model)
    if labels is not None:
        log.info("%s: accuracy %.3f over %d images", args.images,
                 float((probabilities.argmax(1) == labels).mean()), len(labels))
    return 0


def register(topics) -> None:
    sub = topics.topic("classifier")

    train = sub.add_parser("train", help="train on train, select on valid, report on test")
    train.add_argument("--dataset", required=True, help="dataset HDF5 from `radiogen first prepare`")
    train.add_argument("--output", required=True, help="classifier.pt")
    train.add_argument("--metrics", required=True, help="metrics JSON")
    train.add_argument("--confusion", default="", help="PNG confusion matrix of the test split")
    train.add_argument("--curve", default="", help="PNG training curves")
    train.add_argument("--checkpoint-dir", required=True, help="per-epoch checkpoint directory (resume)")
    train.add_argument("--settings", default="{}", help="JSON of the `classifier` config section")
    train.add_argument("--seed", type=int, required=True, help="global seed")
    train.add_argument("--device", default="", help="cpu, cuda, cuda:N or auto (default: settings.device)")
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    train.set_defaults(func=cmd_train)

    score = sub.add_parser("score", help="class probabilities and embeddings of an image HDF5 file")
    score.add_argument("--model", required=True, help="classifier.pt")
    score.add_argument("--images", required=True, help="HDF5 with /images (N, 80, 80) in [0, 1]")
    score.add_argument("--output", required=True, help="HDF5 with /probabilities, /predicted, /embeddings")
    score.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    score.add_argument("--device", default="", help="cpu or cuda (default cpu)")
    score.set_defaults(func=cmd_score)
