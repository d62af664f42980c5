"""`tito train`: Milestone 3 — train SimpleCNN on the scikit-learn digits (default) or CIFAR-10,
write the plots and optionally the weights."""
import sys
from pathlib import Path


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="milestone 3: train SimpleCNN (digits by default, or CIFAR-10 python batches)",
        description="Train SimpleCNN with tinytorch's own autograd. Writes history.png (loss and accuracy), "
                    "confusion.png and misclassified.png into --out.")
    train.add_argument("--data", choices=("digits", "cifar10"), default="digits",
                       help="digits: 8×8 handwritten digits bundled with scikit-learn (default); "
                            "cifar10: the CIFAR-10 python batches in --data-dir")
    train.add_argument("--data-dir", type=Path, default=None,
                       help="folder holding data_batch_1..5 and test_batch (for --data cifar10)")
    train.add_argument("--upsample", type=int, default=None,
                       help="digits only: repeat each pixel N×N times (default 2: 16×16 images; 1 keeps 8×8)")
    train.add_argument("--epochs", type=int, default=None, help="default: 60 for digits, 10 for cifar10")
    train.add_argument("--batch-size", type=int, default=None, help="default: 16 for digits, 64 for cifar10")
    train.add_argument("--lr", type=float, default=None, help="default: 3e-3 for adam, 0.05 for sgd")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    train.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    train.add_argument("--no-augment", action="store_true", help="do not shift training images by ±1 pixel")
    train.add_argument("--seed", type=int, default=0, help="fixes initial weights, batch order and shifts")
    train.add_argument("--impl", choices=("fast", "loops"), default="fast",
                       help="fast: Module 17's im2col path; loops: your Module 09 loops (slow)")
    train.add_argument("--train-limit", type=int, default=None, help="train on the first N training images only")
    train.add_argument("--test-limit", type=int, default=None, help="test on the first N test images only")
    train.add_argument("--load", type=Path, default=None, help="start from weights saved with --save (.npz)")
    train.add_argument("--save", type=Path, default=None, help="write the trained weights to this .npz")
    train.add_argument("--out", type=Path, default=Path("train_output"), help="folder for the PNG plots")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=run_train)


DEFAULTS = {"digits": {"epochs": 60, "batch_size": 16}, "cifar10": {"epochs": 10, "batch_size": 64}}


def run_train(args) -> int:
    import matplotlib
    matplotlib.use("Agg")   # files only: works without a display
    import matplotlib.pyplot as plt
    import numpy as np

    from tinytorch.core.training import (TrainConfig, build_model, confusion_matrix, fit, load_weights,
                                         plot_confusion, plot_history, plot_misclassified, predict, save_weights)
    from tinytorch.data import load_dataset

    if args.upsample is not None and args.data != "digits":
        print(f"tito train: --upsample applies to --data digits only, got --data {args.data}", file=sys.stderr)
        return 2
    try:
        data = load_dataset(args.data, args.data_dir, args.train_limit, args.test_limit,
                            upsample=2 if args.upsample is None else args.upsample)
    except (FileNotFoundError, ValueError) as error:
        print(f"tito train: {error}", file=sys.stderr)
        return 2
    defaults = DEFAULTS[args.data]
    try:
        config = TrainConfig(
            epochs=args.epochs or defaults["epochs"], batch_size=args.batch_size or defaults["batch_size"],
            lr=args.lr or (3e-3 if args.optimizer == "adam" else 0.05), optimizer=args.optimizer,
            schedule=args.schedule, augment=not args.no_augment, seed=args.seed)
    except ValueError as error:
        print(f"tito train: {error}", file=sys.stderr)
        return 2
    model = build_model(data.image_shape, len(data.class_names), impl=args.impl, seed=args.seed)
    if args.load:
        try:
            load_weights(model, args.load)
        except (OSError, KeyError, ValueError) as error:
            print(f"tito train: cannot load {args.load}: {error}", file=sys.stderr)
            return 2
        print(f"loaded weights from {args.load}")
    c, h, w = data.image_shape
    print(f"{data.name}: {len(data.x_train)} training and {len(data.x_test)} test images of {c}×{h}×{w}; "
          f"SimpleCNN({c}, {len(data.class_names)}, {h}) impl={args.impl}, {model.num_parameters():,} parameters; "
          f"{config.optimizer} lr {config.lr:g} {config.schedule}, batch {config.batch_size}, "
          f"{config.epochs} epochs, shifts {'on' if config.augment else 'off'}, seed {config.seed}")
    history = fit(model, data, config, progress=not args.quiet)
    predictions = predict(model, data.x_test).argmax(axis=1)
    accuracy = float((predictions == data.y_test).mean())
    print(f"test accuracy {accuracy:.2%} ({int((predictions == data.y_test).sum())}/{len(data.y_test)}), "
          f"training time {sum(history.seconds):.1f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    title = f"SimpleCNN on {data.name} ({args.impl}, {config.optimizer}, seed {config.seed})"
    figures = {
        "history.png": plot_history(history, title),
        "confusion.png": plot_confusion(confusion_matrix(data.y_test, predictions, len(data.class_names)),
                                        data.class_names, f"confusion matrix, test accuracy {accuracy:.2%}"),
        "misclassified.png": plot_misclassified(np.clip(data.unstandardise(data.x_test), 0, 1), data.y_test,
                                                predictions, data.class_names),
    }
    for name, figure in figures.items():
        figure.savefig(args.out / name, dpi=110)
        plt.close(figure)
    print(f"plots written to {args.out}/: {', '.join(figures)}")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model, args.save)
        print(f"weights written to {args.save}")
    return 0
