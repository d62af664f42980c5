"""One side of `tito bench`, run in its own process so that neither library's threads disturb the
other: `python benchmarks/run.py {layers,conv,simplecnn,digits} {ours,torch} [openblas=own]` prints one
JSON object.

layers: forward+backward milliseconds (fastest of repeats) of Conv2d, MaxPool2d, AvgPool2d,
BatchNorm2d and SimpleCNN(3, 10, 32) at batch 64, float32; for `ours` also the loop
implementation and the fast path on small inputs (the loops are too slow for batch 64).
digits: train SimpleCNN(1, 10, 16) on the scikit-learn digits (upsampled to 16×16) with the same initial weights,
batches, shifts, optimiser and schedule on both sides; test accuracy and training seconds."""
import json
import os
import sys
import time

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")   # one thread: on 2 shared cores, two run many times slower

# Some machines set these to force old OpenBLAS builds onto safe kernels (Haswell's AVX2 on an AVX-512
# CPU, for one); a current NumPy detects the CPU itself, and PyTorch's own kernels ignore them. With
# `openblas=own` this process unsets them before NumPy loads OpenBLAS; every result says which were set.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
OPENBLAS_ENV = {"set": {variable: os.environ[variable] for variable in OPENBLAS_OVERRIDES if variable in os.environ},
                "kept": "openblas=own" not in sys.argv[1:]}
if not OPENBLAS_ENV["kept"]:
    for variable in OPENBLAS_OVERRIDES:
        os.environ.pop(variable, None)

import numpy as np

BATCH = 64
# name, layer arguments, input shape at batch 64, input shape for the loops
LAYERS = [
    ("conv 16→32 k3 p1", ("conv", 16, 32, 3, 1), (BATCH, 16, 16, 16), (2, 16, 8, 8)),
    ("maxpool 2×2", ("maxpool", 2), (BATCH, 16, 32, 32), (2, 16, 8, 8)),
    ("avgpool 2×2", ("avgpool", 2), (BATCH, 16, 32, 32), (2, 16, 8, 8)),
    ("batchnorm 16", ("batchnorm", 16), (BATCH, 16, 32, 32), (2, 16, 8, 8)),
]
DIGITS_UPSAMPLE = 2   # tito train's default: 16×16 digits
SIMPLECNN = ("SimpleCNN(3,10,32)", (BATCH, 3, 32, 32), (2, 3, 16, 16))
FUSED = "  fused (extra)"   # Module 17's conv→ReLU→pool in one op; compared with torch's SimpleCNN


class FusedSimpleCNN:
    "SimpleCNN's forward with each conv→ReLU→max-pool block as one fused op (same parameters)."
    def __init__(self, model):
        self.model = model

    def parameters(self):
        return self.model.parameters()

    def __call__(self, x):
        from tinytorch.core.im2col import conv2d_relu_maxpool2_fast
        for conv in (self.model.conv1, self.model.conv2):
            x = conv2d_relu_maxpool2_fast(x, conv.weight, conv.bias, conv.padding)
        return self.model.fc(x.flatten(1))


def blas_kernels(side: str) -> str:
    "Which BLAS this side's matrix multiplies run on, and which kernels it picked for this CPU."
    if side == "torch":
        import torch
        return f"torch {torch.__version__} (oneDNN {torch.backends.mkldnn.is_available() and 'on' or 'off'}, CPU capability {torch.backends.cpu.get_cpu_capability()})"
    from threadpoolctl import threadpool_info
    blas = [entry for entry in threadpool_info() if entry.get("user_api") == "blas"]
    return ", ".join(f"{entry['internal_api']} {entry.get('version')} {entry.get('architecture', '')}".strip()
                     for entry in blas) or "no BLAS found"


# CPU time of this (single-threaded) process: on a shared machine, waiting for a core is not our cost
clock = time.process_time


def best_ms(step, repeats: int, warmup: int = 2, budget_s: float = 20.0) -> float:
    """Fastest of `repeats` runs: on a shared machine other processes only ever add time, so the
    minimum is the closest to the cost of the code itself (as `timeit` recommends)."""
    for _ in range(warmup):
        step()
    times, started = [], time.perf_counter()
    for _ in range(repeats):
        begin = clock()
        step()
        times.append(clock() - begin)
        if time.perf_counter() - started > budget_s:
            break
    return 1000 * float(np.min(times))


# -- ours ------------------------------------------------------------------------------------------
def ours_layer(spec, impl):
    from tinytorch.core.spatial import AvgPool2d, BatchNorm2d, Conv2d, MaxPool2d
    kind, *arguments = spec
    if kind == "conv":
        c_in, c_out, k, p = arguments
        return Conv2d(c_in, c_out, k, padding=p, impl=impl)
    return {"maxpool": MaxPool2d, "avgpool": AvgPool2d, "batchnorm": BatchNorm2d}[kind](*arguments, impl=impl)


def ours_step(model, shape, with_loss: bool):
    from tinytorch.core.layers import cross_entropy
    from tinytorch.core.tensor import Tensor
    rng = np.random.default_rng(0)
    images = rng.standard_normal(shape).astype(np.float32)
    labels = rng.integers(0, 10, shape[0])
    upstream = None

    def step():
        nonlocal upstream
        for p in model.parameters():
            p.grad = None
        # a layer's input needs its gradient (a layer is inside a network); the images fed to a network do not
        x = Tensor(images, requires_grad=not with_loss)
        out = model(x)
        if with_loss:
            cross_entropy(out, labels).backward()
        else:
            if upstream is None:
                upstream = rng.standard_normal(out.shape).astype(np.float32)
            out.backward(upstream)
    return step


def ours_layers() -> dict:
    from tinytorch.core.spatial import SimpleCNN
    from tinytorch.core.tensor import manual_seed
    manual_seed(0)
    rows = {}
    for name, spec, shape, small in LAYERS:
        rows[name] = {
            "fast_ms": best_ms(ours_step(ours_layer(spec, "fast"), shape, False), 30),
            "loops_small_ms": best_ms(ours_step(ours_layer(spec, "loops"), small, False), 3, warmup=1),
            "fast_small_ms": best_ms(ours_step(ours_layer(spec, "fast"), small, False), 50),
        }
    name, shape, small = SIMPLECNN
    rows[FUSED] = {"fast_ms": best_ms(ours_step(FusedSimpleCNN(SimpleCNN(3, 10, 32, impl="fast")), shape, True), 30)}
    rows[name] = {
        "fast_ms": ours_simplecnn_ms(),
        "loops_small_ms": best_ms(ours_step(SimpleCNN(3, 10, 16, impl="loops"), small, True), 3, warmup=1),
        "fast_small_ms": best_ms(ours_step(SimpleCNN(3, 10, 16, impl="fast"), small, True), 50),
    }
    return rows


def ours_conv_ms() -> float:
    "The first row alone: one Conv2d layer, forward+backward, its input needing a gradient."
    from tinytorch.core.tensor import manual_seed
    manual_seed(0)
    _, spec, shape, _ = LAYERS[0]
    return best_ms(ours_step(ours_layer(spec, "fast"), shape, False), 40)


def ours_simplecnn_ms() -> float:
    from tinytorch.core.spatial import SimpleCNN
    from tinytorch.core.tensor import manual_seed
    manual_seed(0)
    return best_ms(ours_step(SimpleCNN(3, 10, 32, impl="fast"), SIMPLECNN[1], True), 30)


# -- PyTorch -------------------------------------------------------------------------------------
def torch_simplecnn(in_channels: int, num_classes: int, image_size: int):
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (image_size // 4) ** 2, num_classes))


def copy_weights_to_torch(ours, theirs) -> None:
    "Our parameters, in order, into the torch model's (same architecture, same order)."
    import torch
    pairs = list(zip(ours.parameters(), theirs.parameters()))
    assert len(pairs) == len(ours.parameters()) == len(list(theirs.parameters()))
    with torch.no_grad():
        for mine, target in pairs:
            assert tuple(mine.shape) == tuple(target.shape), (mine.shape, target.shape)
            target.copy_(torch.from_numpy(np.array(mine.data, dtype=np.float32)))


def same_allocator_settings() -> None:
    "The malloc settings our side gets from importing the fast path, so both sides run alike."
    from tinytorch.core.im2col import keep_freed_memory
    keep_freed_memory()


def torch_setup() -> None:
    import torch
    torch.set_num_threads(1)
    same_allocator_settings()
    torch.manual_seed(0)


def torch_step(model, shape, with_loss: bool):
    import torch
    import torch.nn as nn
    x = torch.randn(shape)
    labels = torch.randint(0, 10, (shape[0],))
    upstream = None

    def step():
        nonlocal upstream
        model.zero_grad(set_to_none=True)
        inputs = x.detach().requires_grad_(not with_loss)
        out = model(inputs)
        if with_loss:
            nn.functional.cross_entropy(out, labels).backward()
        else:
            if upstream is None:
                upstream = torch.randn(out.shape)
            out.backward(upstream)
    return step


def torch_simplecnn_ms() -> float:
    torch_setup()
    return best_ms(torch_step(torch_simplecnn(3, 10, 32), SIMPLECNN[1], True), 30)


def torch_layer(spec):
    import torch.nn as nn
    kind, *arguments = spec
    if kind == "conv":
        c_in, c_out, k, p = arguments
        return nn.Conv2d(c_in, c_out, k, padding=p)
    return {"maxpool": nn.MaxPool2d, "avgpool": nn.AvgPool2d, "batchnorm": nn.BatchNorm2d}[kind](*arguments)


def torch_conv_ms() -> float:
    torch_setup()
    _, spec, shape, _ = LAYERS[0]
    return best_ms(torch_step(torch_layer(spec), shape, False), 40)


def torch_layers() -> dict:
    torch_setup()
    rows = {}
    for name, spec, shape, _ in LAYERS:
        rows[name] = {"torch_ms": best_ms(torch_step(torch_layer(spec), shape, False), 30)}
    rows[SIMPLECNN[0]] = {"torch_ms": torch_simplecnn_ms()}
    return rows


# -- digits training -----------------------------------------------------------------------------
def digits_run(side: str, epochs: int, seed: int) -> dict:
    from tito.commands.training import DEFAULTS
    from tinytorch.core.training import TrainConfig, build_model, cosine_lr, epoch_batches, fit, predict
    from tinytorch.data import load_digits
    data = load_digits(upsample=DIGITS_UPSAMPLE)
    config = TrainConfig(epochs=epochs, batch_size=DEFAULTS["digits"]["batch_size"], seed=seed)
    ours = build_model(data.image_shape, 10, impl="fast", seed=seed)
    if side == "ours":
        started, wall = clock(), time.perf_counter()
        fit(ours, data, config, progress=False, evaluate_every_epoch=False)
        accuracy = float((predict(ours, data.x_test).argmax(axis=1) == data.y_test).mean())
        return {"accuracy": accuracy, "seconds": clock() - started, "wall_seconds": time.perf_counter() - wall}

    import torch
    torch.set_num_threads(1)
    same_allocator_settings()
    model = torch_simplecnn(1, 10, data.image_shape[1])
    copy_weights_to_torch(ours, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)    # the same batches and shifts as `fit`
    steps_per_epoch = -(-len(data.x_train) // config.batch_size)
    total, step = config.epochs * steps_per_epoch, 0
    started, wall = clock(), time.perf_counter()
    for _ in range(config.epochs):
        for images, labels in epoch_batches(data.x_train, data.y_train, config, rng):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(config.lr, step, total)
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(images)), torch.from_numpy(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    with torch.no_grad():
        predictions = model(torch.from_numpy(data.x_test)).argmax(dim=1).numpy()
    return {"accuracy": float((predictions == data.y_test).mean()), "seconds": clock() - started,
            "wall_seconds": time.perf_counter() - wall}


def digits_loops(epochs: int, train_limit: int, seed: int) -> dict:
    "The loop implementation on the digits: a fair schedule that fits in a few minutes."
    from tito.commands.training import LOOPS_DEFAULTS as recipe   # what `tito train --impl loops` uses
    from tinytorch.core.training import TrainConfig, build_model, fit, predict
    from tinytorch.data import load_digits
    data = load_digits(upsample=recipe["upsample"]).subset(train=train_limit)   # 8×8: a quarter of the loops' work
    # chosen with the fast path (same numbers): 3 epochs of batches of 8 at lr 5e-3 without shifts;
    # shifts pay off only over more epochs than the loops can afford
    config = TrainConfig(epochs=epochs, batch_size=recipe["batch_size"], lr=recipe["lr"], augment=recipe["augment"],
                         seed=seed)
    model = build_model(data.image_shape, 10, impl="loops", seed=seed)
    started, cpu = time.perf_counter(), clock()
    fit(model, data, config, progress=False, evaluate_every_epoch=False)
    accuracy = float((predict(model, data.x_test).argmax(axis=1) == data.y_test).mean())
    return {"accuracy": accuracy, "seconds": time.perf_counter() - started, "cpu_seconds": clock() - cpu, "epochs": epochs, "train_images": len(data.x_train),
            "batch_size": config.batch_size, "lr": config.lr}


def layout() -> dict:
    "What `tito bench` needs to print the rows: each row's input shapes, and which rows are SimpleCNN's."
    shapes = {name: [list(shape), list(small)] for name, _, shape, small in LAYERS}
    shapes[SIMPLECNN[0]] = shapes[FUSED] = [list(SIMPLECNN[1]), list(SIMPLECNN[2])]
    return {"shapes": shapes, "simplecnn": SIMPLECNN[0], "fused": FUSED}


def main(argv) -> int:
    what = argv[0]
    side = next((item for item in argv[1:] if "=" not in item), "ours")
    options = dict(item.split("=", 1) for item in argv[1:] if "=" in item)
    if what == "layers":
        result = ours_layers() if side == "ours" else torch_layers()
        result["blas"] = blas_kernels(side)
        result["layout"] = layout()
    elif what == "simplecnn":   # the SimpleCNN row alone (Module 17's notebook compares it)
        result = {"ms": (ours_simplecnn_ms() if side == "ours" else torch_simplecnn_ms()), "blas": blas_kernels(side)}
    elif what == "conv":        # the first row alone, the lone Conv2d (Module 17's notebook compares it)
        result = {"ms": (ours_conv_ms() if side == "ours" else torch_conv_ms()), "blas": blas_kernels(side)}
    elif what == "digits":
        result = digits_run(side, int(options.get("epochs", 60)), int(options.get("seed", 0)))
    elif what == "digits-loops":
        result = digits_loops(int(options.get("epochs", 3)), int(options.get("train_limit", 1437)),
                              int(options.get("seed", 0)))
    else:
        raise SystemExit(f"unknown benchmark {what!r}: expected layers, conv, simplecnn, digits or digits-loops")
    result["openblas_env"] = OPENBLAS_ENV
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
