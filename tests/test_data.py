"""Data loaders of Milestone 3: the scikit-learn digits, and CIFAR-10 read from files the test
writes itself in exactly the CIFAR-10 python batch format."""
import pickle

import numpy as np
import pytest

from tinytorch.data import (CIFAR10_TRAIN_FILES, find_cifar10_dir, load_cifar10, load_dataset, load_digits,
                            read_cifar10_batch)


def write_cifar10(folder, per_batch=4, test=5, str_keys=False, seed=0):
    """Fake CIFAR-10 python batches: pickled dicts, b'data' (N, 3072) uint8 with the red plane,
    then green, then blue (each 32×32 row-major), b'labels' a list of ints; batches.meta with
    b'label_names'. Returns the images (N, 3, 32, 32) and labels written, train then test."""
    rng = np.random.default_rng(seed)
    key = (lambda name: name) if str_keys else (lambda name: name.encode())
    written = {}
    for name, count in [(n, per_batch) for n in CIFAR10_TRAIN_FILES] + [("test_batch", test)]:
        images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, count)
        batch = {key("batch_label"): key(f"fake {name}"), key("labels"): [int(v) for v in labels],
                 key("data"): images.reshape(count, 3072), key("filenames"): [key(f"{i}.png") for i in range(count)]}
        with open(folder / name, "wb") as file:
            pickle.dump(batch, file, protocol=2)
        written[name] = (images, labels)
    meta = {key("label_names"): [key(n) for n in ("plane", "car", "bird", "cat", "deer", "dog", "frog",
                                                  "horse", "ship", "truck")], key("num_vis"): 3072}
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump(meta, file, protocol=2)
    train = [written[n] for n in CIFAR10_TRAIN_FILES]
    return (np.concatenate([i for i, _ in train]), np.concatenate([l for _, l in train]), *written["test_batch"])


def test_digits_split_is_stratified_standardised_and_repeatable():
    data = load_digits()
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert np.allclose(data.x_train.mean(), 0, atol=1e-5) and np.allclose(data.x_train.std(), 1, atol=1e-4)
    per_class_total = np.bincount(np.concatenate([data.y_train, data.y_test]))
    held_out = np.bincount(data.y_test, minlength=10)
    assert (np.abs(held_out - 0.2 * per_class_total) <= 1).all(), \
        f"each digit should be held out in proportion (stratified split): {held_out} of {per_class_total}"
    again = load_digits()
    assert np.array_equal(again.x_test, data.x_test) and np.array_equal(again.y_train, data.y_train)
    assert np.allclose(data.unstandardise(data.x_train).max(), 1.0, atol=1e-5), "pixels 0..16 scaled to 0..1"


def test_cifar10_batches_are_read_channel_planar_with_bytes_keys(tmp_path):
    train_images, train_labels, test_images, test_labels = write_cifar10(tmp_path)
    data = load_cifar10(tmp_path)
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (5, 3, 32, 32)
    assert np.array_equal(data.y_train, train_labels) and np.array_equal(data.y_test, test_labels)
    assert data.class_names[1] == "car", "class names come from batches.meta"
    # standardised with the training set's statistics; undoing that must give back the pixels
    assert np.allclose(data.unstandardise(data.x_train) * 255, train_images, atol=1e-3)
    assert np.allclose(data.unstandardise(data.x_test) * 255, test_images, atol=1e-3)
    assert np.allclose(data.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_cifar10_red_plane_comes_first(tmp_path):
    write_cifar10(tmp_path)
    row = np.zeros(3072, dtype=np.uint8)
    row[:1024] = 255                                  # a pure red image: the first 1024 bytes are the red plane
    with open(tmp_path / "test_batch", "wb") as file:
        pickle.dump({b"data": row[None], b"labels": [3]}, file)
    images, labels = read_cifar10_batch(tmp_path / "test_batch")
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [3]
    assert (images[0, 0] == 255).all() and (images[0, 1:] == 0).all()


def test_cifar10_accepts_str_keys_and_the_parent_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_cifar10(folder, str_keys=True)
    assert find_cifar10_dir(tmp_path) == folder
    data = load_dataset("cifar10", tmp_path, train_limit=7, test_limit=2)
    assert len(data.x_train) == 7 and len(data.x_test) == 2


def test_cifar10_missing_files_are_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    (tmp_path / "test_batch").rename(tmp_path / "test_batch.bak")
    with pytest.raises(FileNotFoundError) as error:
        load_cifar10(tmp_path)
    message = str(error.value)
    assert "missing data_batch_3, test_batch" in message and "data_batch_1" in message and str(tmp_path) in message


@pytest.mark.parametrize("batch, expected", [
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, r"\(N, 3072\) uint8.*got shape \(2, 1024\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"expected 2 labels"),
    ({b"labels": [0]}, r"expected a key 'data'"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, r"labels must lie in 0..9"),
])
def test_malformed_cifar10_batch_is_explained(tmp_path, batch, expected):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as file:
        pickle.dump(batch, file)
    with pytest.raises(ValueError, match=expected):
        read_cifar10_batch(path)


def test_unknown_dataset_and_missing_data_dir():
    with pytest.raises(ValueError, match="expected 'digits' or 'cifar10'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="needs --data-dir"):
        load_dataset("cifar10")


def test_digits_upsampled_repeat_each_pixel():
    plain, upsampled = load_digits(), load_digits(upsample=2)
    assert upsampled.x_train.shape == (1437, 1, 16, 16)
    assert np.array_equal(upsampled.y_test, plain.y_test), "upsampling must not change the split"
    blocks = upsampled.unstandardise(upsampled.x_train).reshape(1437, 1, 8, 2, 8, 2)
    assert np.allclose(blocks, blocks[:, :, :, :1, :, :1], atol=1e-6), "each 2×2 block should be one pixel"
    assert np.allclose(blocks[:, :, :, 0, :, 0], plain.unstandardise(plain.x_train), atol=1e-5)
    with pytest.raises(ValueError, match="upsample must be a positive integer, got 0"):
        load_digits(upsample=0)
