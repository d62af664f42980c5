"""Milestone 3: the training loop learns, a seed repeats a run, weights round-trip through .npz,
and `tito train` writes its plots for the digits and for CIFAR-10 batches; the MLP trains, the
CNN-against-MLP comparison prints both rows, --impl loops picks its quick recipe, every run
estimates its time, and the filters and feature maps are drawn from the model's own arrays.
Only tiny runs here: the accuracy targets are measured by `tito bench` and `tito train --compare`,
not asserted."""
import re

import numpy as np
import pytest
from matplotlib.image import imread

from tito.cli import build_parser, main as tito
from tito.commands.training import LOOPS_DEFAULTS, choose_settings
from tinytorch.core.training import (FRACTIONS, STAGES, TrainConfig, balanced_subset, build_model, compare_models,
                                     comparison_table, confusion_matrix, cosine_lr, feature_maps, fit, format_duration,
                                     load_weights, plot_feature_maps, plot_filters, predict, random_shifts, save_weights)
from tinytorch.core.tensor import Tensor
from tinytorch.data import load_digits

from test_data import write_cifar10


@pytest.fixture(scope="module")
def small_digits():
    return load_digits().subset(train=128, test=64)


def test_training_lowers_the_loss(small_digits):
    model = build_model(small_digits.image_shape, 10, impl="fast", seed=0)
    history = fit(model, small_digits, TrainConfig(epochs=6, batch_size=16, augment=False, seed=0), progress=False)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0], f"loss per epoch {history.train_loss}"
    assert history.train_accuracy[-1] > history.train_accuracy[0]
    assert len(history.test_accuracy) == 6 and all(0 <= a <= 1 for a in history.test_accuracy)


def test_a_seed_repeats_a_run_exactly(small_digits):
    def run(seed):
        model = build_model(small_digits.image_shape, 10, seed=seed)
        history = fit(model, small_digits, TrainConfig(epochs=2, batch_size=32, seed=seed), progress=False)
        return history.train_loss, model.state_dict()
    (loss_a, state_a), (loss_b, state_b), (loss_c, _) = run(3), run(3), run(4)
    assert loss_a == loss_b
    assert all(np.array_equal(state_a[name], state_b[name]) for name in state_a)
    assert loss_a != loss_c, "a different seed should give a different run"


def test_loops_and_fast_take_the_same_training_step(small_digits):
    """One Adam step of the same model on the same batch: your loops and the fast path agree."""
    data = small_digits.subset(train=8, test=8)
    states = []
    for impl in ("loops", "fast"):
        model = build_model(data.image_shape, 10, impl=impl, seed=1)
        fit(model, data, TrainConfig(epochs=1, batch_size=8, augment=False, seed=1), progress=False)
        states.append(model.state_dict())
    for name in states[0]:
        assert np.allclose(states[0][name], states[1][name], rtol=1e-4, atol=1e-5), f"{name} differs after one step"


def test_weights_round_trip_through_npz(small_digits, tmp_path):
    model = build_model(small_digits.image_shape, 10, seed=0)
    fit(model, small_digits, TrainConfig(epochs=1, batch_size=32, seed=0), progress=False)
    path = tmp_path / "weights"                          # no suffix: saved exactly there
    save_weights(model, path)
    assert path.exists()
    restored = load_weights(build_model(small_digits.image_shape, 10, seed=99), path)
    assert np.array_equal(predict(restored, small_digits.x_test), predict(model, small_digits.x_test))
    with pytest.raises(ValueError, match="expected shape"):
        load_weights(build_model((1, 16, 16), 10), path)   # fc layer has a different size


def test_random_shifts_move_each_image_by_at_most_one_pixel():
    rng = np.random.default_rng(0)
    image = np.arange(1.0, 26.0).reshape(1, 1, 5, 5)
    shifted = random_shifts(np.repeat(image, 200, axis=0), rng)
    seen = set()
    for picture in shifted[:, 0]:
        row, column = np.argwhere(picture == 13.0)[0]    # where the centre pixel went
        seen.add((row - 2, column - 2))
        dy, dx = row - 2, column - 2
        inside = image[0, 0, max(-dy, 0):5 - max(dy, 0), max(-dx, 0):5 - max(dx, 0)]
        assert np.array_equal(picture[max(dy, 0):5 - max(-dy, 0), max(dx, 0):5 - max(-dx, 0)], inside)
    assert seen == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}, f"shifts used: {sorted(seen)}"


def test_cosine_schedule_and_confusion_matrix():
    assert cosine_lr(0.1, 0, 100) == pytest.approx(0.1)
    assert cosine_lr(0.1, 50, 100) == pytest.approx(0.05)
    assert cosine_lr(0.1, 100, 100) == pytest.approx(0.0)
    from sklearn.metrics import confusion_matrix as sklearn_confusion
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert np.array_equal(confusion_matrix(labels, predictions, 4), sklearn_confusion(labels, predictions, labels=range(4)))


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd', got 'rmsprop'"):
        TrainConfig(optimizer="rmsprop")


def test_tito_train_digits_writes_plots_and_weights(tmp_path, capsys):
    out, weights = tmp_path / "plots", tmp_path / "w.npz"
    assert tito(["train", "--epochs", "2", "--train-limit", "96", "--test-limit", "40", "--optimizer", "sgd",
                 "--seed", "5", "--out", str(out), "--save", str(weights), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "sgd" in printed
    assert re.search(r"estimated training time [\d.]+ s: 12 steps \(2 epochs of 6\)", printed), printed
    for name in ("history.png", "confusion.png", "misclassified.png", "filters.png", "feature_maps.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"
    for name in ("filters.png", "feature_maps.png"):   # decodes to a picture with something drawn in it
        pixels = imread(out / name)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 200 and pixels[..., :3].std() > 0.05, (name, pixels.shape)
    # --load continues from the saved weights; 1 epoch at a tiny learning rate keeps them close
    assert tito(["train", "--epochs", "1", "--lr", "1e-9", "--train-limit", "32", "--test-limit", "40",
                 "--load", str(weights), "--out", str(out), "--quiet"]) == 0
    assert "loaded weights" in capsys.readouterr().out


def test_tito_train_cifar10_from_python_batches(tmp_path, capsys):
    write_cifar10(tmp_path, per_batch=4, test=6)
    assert tito(["train", "--data", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "cifar10: 20 training and 6 test images of 3×32×32" in printed
    assert (tmp_path / "out" / "confusion.png").exists()


def test_tito_train_names_the_missing_cifar10_files(tmp_path, capsys):
    assert tito(["train", "--data", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "missing data_batch_1" in error and "test_batch" in error


def test_tito_train_upsample_is_for_digits_only(tmp_path, capsys):
    assert tito(["train", "--data", "cifar10", "--data-dir", str(tmp_path), "--upsample", "2"]) == 2
    assert "--upsample applies to --data digits only" in capsys.readouterr().err


def printed_accuracy(printed: str) -> float:
    return float(re.search(r"test accuracy ([\d.]+)%", printed).group(1)) / 100


def test_tito_train_mlp_beats_chance_and_draws_no_filters(tmp_path, capsys):
    out = tmp_path / "mlp"
    assert tito(["train", "--model", "mlp", "--epochs", "3", "--train-limit", "200", "--test-limit", "100",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "MLP 256 → 1000 → 10, 267,010 parameters" in printed   # 256·1000 + 1000 + 1000·10 + 10
    assert printed_accuracy(printed) > 0.3, printed                 # 10 classes: chance is 10 %
    assert "estimated training time" in printed
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "history.png", "misclassified.png"]


def test_tito_train_compare_prints_both_models_at_each_fraction(tmp_path, capsys):
    out = tmp_path / "compare"
    assert tito(["train", "--compare", "--epochs", "1", "--train-limit", "100", "--test-limit", "50",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "10% (10)" in printed and "25% (25)" in printed and "100% (100)" in printed, printed
    rows = {line.split("  ")[0]: line for line in printed.splitlines()
            if line.startswith(("MLP 256 → 1000 → 10 ", "SimpleCNN(1, 10, 16) "))}
    assert set(rows) == {"MLP 256 → 1000 → 10", "SimpleCNN(1, 10, 16)"}, printed
    assert "267,010" in rows["MLP 256 → 1000 → 10"] and "9,930" in rows["SimpleCNN(1, 10, 16)"]
    for line in rows.values():
        assert len(re.findall(r"\d+\.\d\d%", line)) == 3, line     # one test accuracy per fraction
    assert printed.count("estimated training time") == 6            # 2 models × 3 fractions
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tito_train_compare_refuses_what_belongs_to_one_model(tmp_path, capsys):
    assert tito(["train", "--compare", "--model", "cnn", "--save", str(tmp_path / "w.npz")]) == 2
    assert "--compare trains both models from scratch; drop --model, --save" in capsys.readouterr().err


def test_compare_models_uses_the_same_balanced_nested_subsets(small_digits):
    subsets = [balanced_subset(small_digits, f) for f in FRACTIONS]
    assert [len(s.x_train) for s in subsets] == [13, 32, 128]
    counts = np.bincount(subsets[1].y_train, minlength=10)
    assert counts.max() - counts.min() <= 1, counts                  # class by class in turn
    small, large = (set(map(bytes, s.x_train)) for s in subsets[:2])
    assert small <= large, "a smaller fraction's images are inside a larger one's"
    assert all(np.array_equal(s.x_test, small_digits.x_test) for s in subsets)
    with pytest.raises(ValueError, match=r"a training fraction must lie in \(0, 1\], got 0"):
        balanced_subset(small_digits, 0)
    mlp, cnn = compare_models(small_digits, TrainConfig(epochs=1, batch_size=32), fractions=(0.25, 1.0))
    assert (mlp.kind, cnn.kind) == ("mlp", "cnn") and (mlp.parameters, cnn.parameters) == (75_010, 6_090)   # 8×8 digits
    assert mlp.images == cnn.images == {0.25: 32, 1.0: 128}
    assert all(0 <= a <= 1 for r in (mlp, cnn) for a in r.accuracy.values())
    assert all(s > 0 for r in (mlp, cnn) for s in r.seconds.values())
    assert comparison_table([mlp, cnn]).splitlines()[1].split() == ["25%", "(32)", "100%", "(128)"]


def parse_train(*argv):
    return build_parser().parse_args(["train", *argv])


def test_loops_get_the_quick_recipe_unless_told_otherwise():
    settings, taken = choose_settings(parse_train("--impl", "loops"))
    assert settings == LOOPS_DEFAULTS == {"upsample": 1, "epochs": 3, "batch_size": 8, "lr": 0.005, "augment": False}
    assert taken == list(LOOPS_DEFAULTS)
    settings, taken = choose_settings(parse_train("--impl", "loops", "--upsample", "2", "--epochs", "5",
                                                  "--batch-size", "32", "--lr", "0.01", "--augment"))
    assert settings == {"upsample": 2, "epochs": 5, "batch_size": 32, "lr": 0.01, "augment": True} and taken == []
    settings, taken = choose_settings(parse_train("--impl", "loops", "--epochs", "1"))
    assert settings["epochs"] == 1 and settings["batch_size"] == 8 and "epochs" not in taken
    # the fast path, and CIFAR-10, keep the usual defaults
    assert choose_settings(parse_train()) == ({"upsample": 2, "epochs": 60, "batch_size": 16, "lr": 3e-3,
                                               "augment": True}, [])
    assert choose_settings(parse_train("--impl", "loops", "--data", "cifar10"))[1] == []


def test_tito_train_loops_says_which_settings_it_chose(tmp_path, capsys):
    assert tito(["train", "--impl", "loops", "--train-limit", "16", "--test-limit", "8",
                 "--out", str(tmp_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert ("--impl loops: using the loop recipe, which finishes in minutes instead of hours: --upsample 1 "
            "--epochs 3 --batch-size 8 --lr 0.005 --no-augment; give any of these to override it") in printed
    assert "images of 1×8×8; adam lr 0.005 cosine, batch 8, 3 epochs, shifts off" in printed
    assert "SimpleCNN(1, 10, 8) impl=loops" in printed
    assert re.search(r"estimated training time [\d.]+ s: 6 steps \(3 epochs of 2\)", printed), printed


def test_fit_estimates_its_time_after_the_first_batches(small_digits, capsys):
    model = build_model(small_digits.image_shape, 10, seed=0)
    history = fit(model, small_digits, TrainConfig(epochs=2, batch_size=8), progress=False)
    assert capsys.readouterr().out == ""                              # quiet unless asked
    assert 3 <= history.estimated_after <= 32 and history.estimated_seconds > 0
    fit(model, small_digits, TrainConfig(epochs=2, batch_size=8), progress=False, estimate=True)
    assert re.search(r"^estimated training time [\d.]+ s: 32 steps \(2 epochs of 16\) at [\d.]+ ms each, "
                     r"measured on the first \d+", capsys.readouterr().out, re.M)
    assert [format_duration(s) for s in (12.34, 270, 7560)] == ["12.3 s", "4.5 min", "2.1 h"]


def shown_arrays(figure) -> list:
    "The arrays drawn in a figure's image panels, in panel order."
    return [np.asarray(ax.images[0].get_array()) for ax in figure.axes if ax.images]


def test_filters_figure_shows_each_filter_before_after_and_the_change(small_digits):
    initial = build_model(small_digits.image_shape, 10, seed=0)
    before = initial.conv1.weight.data.copy()
    fit(initial, small_digits, TrainConfig(epochs=1, batch_size=16), progress=False)
    after = initial.conv1.weight.data
    panels = shown_arrays(plot_filters(after, before))
    assert len(panels) == 48 and all(panel.shape == (3, 3) for panel in panels)   # 3 rows of 16 filters
    for index in range(16):
        assert np.array_equal(panels[index], before[index, 0])
        assert np.array_equal(panels[16 + index], after[index, 0])
        assert np.allclose(panels[32 + index], after[index, 0] - before[index, 0])
    colour = shown_arrays(plot_filters(build_model((3, 8, 8), 10).conv1.weight.data))
    assert len(colour) == 16 and all(p.shape == (3, 3, 3) and 0 <= p.min() and p.max() <= 1 for p in colour)


def test_feature_maps_figure_shows_every_channel_of_every_stage(small_digits):
    model = build_model(small_digits.image_shape, 10, seed=0)
    image = small_digits.x_test[0]
    maps = feature_maps(model, image)
    assert [maps[name].shape for name in STAGES] == [(16, 8, 8), (16, 4, 4), (32, 4, 4), (32, 2, 2)]   # 8×8 digits
    assert np.allclose(model.fc(Tensor(maps["pool2"].reshape(1, -1))).data, predict(model, image[None]), atol=1e-5)
    panels = shown_arrays(plot_feature_maps(model, image))
    assert len(panels) == 1 + 16 + 16 + 32 + 32
    assert np.array_equal(panels[0], image[0])
    expected = [channel for name in STAGES for channel in maps[name]]
    assert all(np.array_equal(shown, channel) for shown, channel in zip(panels[1:], expected))
