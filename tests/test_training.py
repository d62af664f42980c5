"""Milestone 3: the training loop learns, a seed repeats a run, weights round-trip through .npz,
and `tito train` writes its plots for the digits and for CIFAR-10 batches. Only tiny runs here:
the accuracy targets are measured by `tito bench`, not asserted."""
import numpy as np
import pytest

from tinytorch.cli import main as tito
from tinytorch.core.training import (TrainConfig, build_model, confusion_matrix, cosine_lr, fit, load_weights,
                                     predict, random_shifts, save_weights)
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
    for name in ("history.png", "confusion.png", "misclassified.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"
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
