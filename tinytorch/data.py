"""Image datasets for Milestone 3: the handwritten digits bundled with scikit-learn (no download)
and CIFAR-10 read from its standard python batches. Both return (N, C, H, W) float32 images,
standardised with the training set's per-channel mean and standard deviation."""
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ImageData:
    "A train/test split of images (N, C, H, W) float32 with integer labels (N,)."
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    mean: np.ndarray = field(default=None)   # per-channel statistics used to standardise (C,)
    std: np.ndarray = field(default=None)

    @property
    def image_shape(self) -> tuple:
        return self.x_train.shape[1:]

    def subset(self, train: int | None = None, test: int | None = None) -> "ImageData":
        "The first `train` training and `test` test images (the order is already shuffled)."
        return ImageData(self.name, self.x_train[:train], self.y_train[:train], self.x_test[:test],
                         self.y_test[:test], self.class_names, self.mean, self.std)

    def unstandardise(self, images: np.ndarray) -> np.ndarray:
        "Undo the standardisation, for showing images."
        return images * self.std[:, None, None] + self.mean[:, None, None]


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple:
    """Both sets (float32) scaled in place with the training set's per-channel mean and std: the
    test set stays unseen. In place because CIFAR-10's training set alone is 600 MB as float32."""
    # one channel at a time keeps the float64 temporaries to a third of the set
    mean = np.array([x_train[:, c].mean(dtype=np.float64) for c in range(x_train.shape[1])])   # (C,)
    std = np.array([x_train[:, c].std(dtype=np.float64) for c in range(x_train.shape[1])]) + 1e-8
    for x in (x_train, x_test):
        x -= mean[:, None, None].astype(np.float32)
        x /= std[:, None, None].astype(np.float32)
    return x_train, x_test, mean.astype(np.float32), std.astype(np.float32)


def load_digits(test_fraction: float = 0.2, seed: int = 0, upsample: int = 1) -> ImageData:
    """scikit-learn's 1,797 handwritten digits, 8×8 grey levels 0–16, as (N, 1, 8·upsample, 8·upsample):
    each pixel repeated upsample×upsample times (no new information); a stratified split
    (`test_fraction` of each class held out) fixed by `seed`."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split
    if not isinstance(upsample, int) or upsample < 1:
        raise ValueError(f"upsample must be a positive integer, got {upsample!r}")
    digits = sklearn_digits()
    images = (digits.images[:, None] / 16.0).astype(np.float32)            # (1797, 1, 8, 8)
    images = images.repeat(upsample, axis=2).repeat(upsample, axis=3)      # (1797, 1, 8u, 8u)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels)
    x_train, x_test, mean, std = standardise(x_train, x_test)
    return ImageData("digits", x_train, y_train, x_test, y_test, tuple(str(d) for d in range(10)), mean, std)


def _key(batch: dict, name: str):
    "CIFAR-10's pickles were written by Python 2: keys are bytes (b'data'); accept str too."
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise KeyError(f"expected a key {name!r} (or b'{name}'), found keys {sorted(map(str, batch))}")


def read_cifar10_batch(path: Path) -> tuple:
    "One CIFAR-10 python batch -> images (N, 3, 32, 32) uint8 and labels (N,) int64."
    with open(path, "rb") as file:
        batch = pickle.load(file, encoding="bytes")
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict with 'data' and 'labels', got {type(batch).__name__}")
    try:
        data, labels = np.asarray(_key(batch, "data")), np.asarray(_key(batch, "labels"), dtype=np.int64)
    except KeyError as error:
        raise ValueError(f"{path}: {error.args[0]}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise ValueError(f"{path}: expected 'data' of shape (N, 3072) uint8 (3 planes of 32×32), "
                         f"got shape {data.shape} {data.dtype}")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: expected {len(data)} labels, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0..9, got range {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels                             # channel-planar rows


def find_cifar10_dir(data_dir) -> Path:
    "`data_dir` itself or its `cifar-10-batches-py` sub-folder, whichever holds the batches."
    data_dir = Path(data_dir)
    for candidate in (data_dir, data_dir / "cifar-10-batches-py"):
        if (candidate / CIFAR10_TEST_FILE).exists():
            return candidate
    return data_dir


def load_cifar10(data_dir, train_limit: int | None = None, test_limit: int | None = None) -> ImageData:
    """The CIFAR-10 python batches in `data_dir` (data_batch_1..5, test_batch, batches.meta),
    as (N, 3, 32, 32) float32; `*_limit` keeps only the first images (quick runs)."""
    folder = find_cifar10_dir(data_dir)
    expected = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 python batches not found in {folder}: missing {', '.join(missing)}. Expected the files "
            f"{', '.join(expected)} (and optionally {CIFAR10_META_FILE}) from cifar-10-python.tar.gz, "
            f"https://www.cs.toronto.edu/~kriz/cifar.html")
    parts = [read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    x_train = np.concatenate([images for images, _ in parts])[:train_limit]   # (50000, 3, 32, 32)
    y_train = np.concatenate([labels for _, labels in parts])[:train_limit]
    x_test, y_test = read_cifar10_batch(folder / CIFAR10_TEST_FILE)
    x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    class_names = CIFAR10_CLASSES
    if (folder / CIFAR10_META_FILE).is_file():
        with open(folder / CIFAR10_META_FILE, "rb") as file:
            meta = pickle.load(file, encoding="bytes")
        names = _key(meta, "label_names")
        class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    to_unit = lambda images: images.astype(np.float32) / np.float32(255)   # float32: half the memory
    x_train, x_test, mean, std = standardise(to_unit(x_train), to_unit(x_test))
    return ImageData("cifar10", x_train, y_train, x_test, y_test, class_names, mean, std)


def load_dataset(name: str, data_dir=None, train_limit: int | None = None, test_limit: int | None = None,
                 upsample: int = 1) -> ImageData:
    "`digits` (bundled with scikit-learn, `upsample`d) or `cifar10` (needs `data_dir`); optionally only the first images."
    if name == "digits":
        return load_digits(upsample=upsample).subset(train_limit, test_limit)
    if name == "cifar10":
        if data_dir is None:
            raise ValueError("--data cifar10 needs --data-dir, the folder holding the CIFAR-10 python batches "
                             f"({', '.join((*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE))})")
        return load_cifar10(data_dir, train_limit, test_limit)
    raise ValueError(f"unknown dataset {name!r}: expected 'digits' or 'cifar10'")
