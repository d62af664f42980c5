"""`tito train`: Milestone 3 — train SimpleCNN (or the MLP it is compared with) on the scikit-learn
digits (default) or CIFAR-10, write the plots and optionally the weights; `--compare` measures
both models on 10 %, 25 % and 100 % of the training set."""
import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="milestone 3: train SimpleCNN or the MLP (digits by default, or CIFAR-10 python batches)",
        description="Train SimpleCNN (or the MLP of Module 09's comparison) with tinytorch's own autograd. "
                    "Writes history.png (loss and accuracy), confusion.png and misclassified.png into --out, and for "
                    "the CNN filters.png (the first layer's filters) and feature_maps.png (one test image at each "
                    "stage). --compare trains both models on 10 %, 25 % and 100 % of the training set, prints "
                    "the table and writes compare.png. With --impl loops on the digits, the settings you do not "
                    "give default to a recipe that finishes in minutes: --upsample 1 --epochs 3 --batch-size 8 "
                    "--lr 0.005 --no-augment.")
    train.add_argument("--data", choices=("digits", "cifar10"), default="digits",
                       help="digits: 8×8 handwritten digits bundled with scikit-learn (default); "
                            "cifar10: the CIFAR-10 python batches in --data-dir")
    train.add_argument("--data-dir", type=Path, default=None,
                       help="folder holding data_batch_1..5 and test_batch (for --data cifar10)")
    train.add_argument("--model", choices=("cnn", "mlp"), default=None,
                       help="cnn: SimpleCNN (default); mlp: Flatten -> Linear(C·H·W, 1000) -> ReLU -> Linear(classes), "
                            "the seed's MLP scaled to the data")
    train.add_argument("--compare", action="store_true",
                       help="train the MLP and the CNN with the same settings on 10%%, 25%% and 100%% of the training "
                            "set; print parameters, training time and test accuracies, and write compare.png")
    train.add_argument("--upsample", type=int, default=None,
                       help="digits only: repeat each pixel N×N times (default 2: 16×16 images; 1 keeps 8×8; "
                            "1 with --impl loops)")
    train.add_argument("--epochs", type=int, default=None,
                       help="default: 60 for digits (3 with --impl loops), 10 for cifar10")
    train.add_argument("--batch-size", type=int, default=None,
                       help="default: 16 for digits (8 with --impl loops), 64 for cifar10")
    train.add_argument("--lr", type=float, default=None,
                       help="default: 3e-3 for adam (0.005 with --impl loops on digits), 0.05 for sgd")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    train.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="shift training images by ±1 pixel (default: on; off with --impl loops on digits)")
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
# --impl loops on the digits: the recipe that finishes in minutes (README; `tito bench --loops-training`)
LOOPS_DEFAULTS = {"upsample": 1, "epochs": 3, "batch_size": 8, "lr": 0.005, "augment": False}
LOOPS_FLAGS = {"upsample": "--upsample 1", "epochs": "--epochs 3", "batch_size": "--batch-size 8",
               "lr": "--lr 0.005", "augment": "--no-augment"}


def choose_settings(args) -> tuple:
    """(settings, taken): the run's upsample, epochs, batch_size, lr and augment — what the user gave,
    else the loop recipe (LOOPS_DEFAULTS) for --impl loops on the digits, else the usual defaults;
    `taken` names the settings that came from the loop recipe."""
    given = {name: getattr(args, name) for name in LOOPS_DEFAULTS}
    recipe = LOOPS_DEFAULTS if args.impl == "loops" and args.data == "digits" else {}
    taken = [name for name in recipe if given[name] is None]
    usual = {"upsample": 2 if args.data == "digits" else None, **DEFAULTS[args.data],
             "lr": 3e-3 if args.optimizer == "adam" else 0.05, "augment": True}
    settings = {name: given[name] if given[name] is not None else recipe.get(name, usual[name]) for name in given}
    return settings, taken


def _refuse(message: str) -> int:
    print(f"tito train: {message}", file=sys.stderr)
    return 2


def run_train(args) -> int:
    import matplotlib
    matplotlib.use("Agg")   # files only: works without a display

    from tinytorch.core.training import TrainConfig
    from tinytorch.data import load_dataset

    if args.upsample is not None and args.data != "digits":
        return _refuse(f"--upsample applies to --data digits only, got --data {args.data}")
    if args.compare and (args.model or args.load or args.save):
        return _refuse("--compare trains both models from scratch; drop "
                       + ", ".join(flag for flag, value in (("--model", args.model), ("--load", args.load),
                                                            ("--save", args.save)) if value))
    settings, taken = choose_settings(args)
    try:
        data = load_dataset(args.data, args.data_dir, args.train_limit, args.test_limit,
                            upsample=settings["upsample"] or 1)
        config = TrainConfig(epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
                             optimizer=args.optimizer, schedule=args.schedule, augment=settings["augment"],
                             seed=args.seed)
    except (FileNotFoundError, ValueError) as error:
        return _refuse(str(error))
    if taken:
        given = [LOOPS_FLAGS[name].split()[0] for name in LOOPS_DEFAULTS if name not in taken]
        print(f"--impl loops: using the loop recipe, which finishes in minutes instead of hours: "
              f"{' '.join(LOOPS_FLAGS[name] for name in taken)}"
              + (f" (your {', '.join(given)} kept)" if given else "") + "; give any of these to override it")
    c, h, w = data.image_shape
    print(f"{data.name}: {len(data.x_train)} training and {len(data.x_test)} test images of {c}×{h}×{w}; "
          f"{config.optimizer} lr {config.lr:g} {config.schedule}, batch {config.batch_size}, "
          f"{config.epochs} epochs, shifts {'on' if config.augment else 'off'}, seed {config.seed}")
    args.out.mkdir(parents=True, exist_ok=True)
    return (run_compare if args.compare else run_one)(args, data, config)


def _save_figures(folder: Path, figures: dict) -> None:
    import matplotlib.pyplot as plt
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
    print(f"plots written to {folder}/: {', '.join(figures)}")


def run_compare(args, data, config) -> int:
    from tinytorch.core.training import FRACTIONS, compare_models, comparison_table, plot_comparison
    print(f"comparing the MLP and SimpleCNN (impl={args.impl}) on {', '.join(f'{f:.0%}' for f in FRACTIONS)} "
          "of the training set, the same settings for both")
    results = compare_models(data, config, impl=args.impl, progress=not args.quiet, estimate=True,
                             announce=lambda text: print(f"training {text}"))
    print()
    print(comparison_table(results))
    _save_figures(args.out, {"compare.png": plot_comparison(
        results, f"MLP against CNN on {data.name}: {config.epochs} epochs, {config.optimizer}, seed {config.seed}")})
    return 0


def run_one(args, data, config) -> int:
    import numpy as np

    from tinytorch.core.training import (build_model, confusion_matrix, fit, load_weights, model_name,
                                         plot_confusion, plot_feature_maps, plot_filters, plot_history,
                                         plot_misclassified, predict, save_weights)
    kind = args.model or "cnn"
    try:
        model = build_model(data.image_shape, len(data.class_names), impl=args.impl, seed=args.seed, kind=kind)
    except ValueError as error:
        return _refuse(str(error))
    if args.load:
        try:
            load_weights(model, args.load)
        except (OSError, KeyError, ValueError) as error:
            return _refuse(f"cannot load {args.load}: {error}")
        print(f"loaded weights from {args.load}")
    name = model_name(data.image_shape, len(data.class_names), kind)
    print(f"{name}{f' impl={args.impl}' if kind == 'cnn' else ''}, {model.num_parameters():,} parameters")
    initial = model.conv1.weight.data.copy() if kind == "cnn" else None
    history = fit(model, data, config, progress=not args.quiet, estimate=True)
    predictions = predict(model, data.x_test).argmax(axis=1)
    accuracy = float((predictions == data.y_test).mean())
    print(f"test accuracy {accuracy:.2%} ({int((predictions == data.y_test).sum())}/{len(data.y_test)}), "
          f"training time {sum(history.seconds):.1f} s")

    title = f"{name} on {data.name} ({args.impl + ', ' if kind == 'cnn' else ''}{config.optimizer}, seed {config.seed})"
    shown = np.clip(data.unstandardise(data.x_test), 0, 1)
    figures = {
        "history.png": plot_history(history, title),
        "confusion.png": plot_confusion(confusion_matrix(data.y_test, predictions, len(data.class_names)),
                                        data.class_names, f"confusion matrix, test accuracy {accuracy:.2%}"),
        "misclassified.png": plot_misclassified(shown, data.y_test, predictions, data.class_names),
    }
    if kind == "cnn":
        label = data.class_names
        figures["filters.png"] = plot_filters(model.conv1.weight.data, initial, title=f"{name}: conv1 filters")
        figures["feature_maps.png"] = plot_feature_maps(
            model, data.x_test[0], shown[0],
            title=f"test image 0 ({label[data.y_test[0]]}, predicted {label[predictions[0]]}) at each stage of {name}")
    _save_figures(args.out, figures)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model, args.save)
        print(f"weights written to {args.save}")
    return 0
