"""One place compares tinytorch with PyTorch in float64: a layer with its torch.nn twin
(`compare_with_torch`: output, input gradient, every parameter gradient, buffers) or a function
of Tensors with its torch twin (`compare_function_with_torch`), each for a random upstream
gradient (a plain .sum() would hide sign and routing errors). Tolerances live here only."""
import numpy as np
import torch
from hypothesis import strategies as st

from tinytorch.core.layers import Module
from tinytorch.core.tensor import Tensor

# float64 on both sides: the two implementations differ only in summation order
RTOL, ATOL = 1e-10, 1e-10


def assert_close(ours, theirs, what: str) -> None:
    "Compare an ndarray with an ndarray or torch tensor, naming `what` and the largest difference."
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours is not None, f"{what}: tinytorch computed nothing (no gradient reached it?)"
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: tinytorch shape {ours.shape}, PyTorch {theirs.shape}"
    difference = np.abs(ours - theirs).max(initial=0.0)
    assert np.allclose(ours, theirs, rtol=RTOL, atol=ATOL), f"{what}: max abs difference {difference:.3g} from PyTorch"


def compare_with_torch(ours: Module, theirs: torch.nn.Module, x: np.ndarray, pairs: dict,
                       buffers: dict | None = None, seed: int = 0) -> tuple:
    """Copy our parameters (`pairs`: our name -> torch name) and buffers into `theirs`, run both on
    float64 `x`, push the same random upstream gradient back, and compare output, input gradient
    and every listed parameter gradient (and the buffers afterwards). Returns (our output, torch output)."""
    ours.double()
    theirs = theirs.double()
    ours_params = dict(ours.named_parameters())
    theirs_params = dict(theirs.named_parameters())
    assert set(pairs) == set(ours_params), f"pairs {sorted(pairs)} must name every parameter {sorted(ours_params)}"
    with torch.no_grad():
        for mine, their in pairs.items():
            theirs_params[their].copy_(torch.from_numpy(ours_params[mine].data))
        for mine, their in (buffers or {}).items():
            theirs.get_buffer(their).copy_(torch.from_numpy(_attribute(ours, mine)))
    ours.zero_grad()
    theirs.zero_grad()

    x = np.asarray(x, dtype=np.float64)
    x_ours = Tensor(x.copy(), requires_grad=True)
    x_theirs = torch.tensor(x, requires_grad=True)
    out, expected = ours(x_ours), theirs(x_theirs)
    assert out.dtype == np.float64, f"float64 input must give float64 output, got {out.dtype}"
    assert_close(out.data, expected, "forward")

    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.from_numpy(upstream))
    assert_close(x_ours.grad, x_theirs.grad, "gradient of the input")
    for mine, their in pairs.items():
        assert_close(ours_params[mine].grad, theirs_params[their].grad, f"gradient of {mine}")
    for mine, their in (buffers or {}).items():
        assert_close(_attribute(ours, mine), theirs.get_buffer(their), f"buffer {mine}")
    return out, expected


def compare_function_with_torch(ours_fn, torch_fn, inputs, what: str = "function", seed: int = 7):
    """Run `ours_fn` on Tensors and `torch_fn` on torch tensors made from the same float64 arrays;
    compare the outputs and the gradient of every input. Returns (our output, torch output)."""
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    ours_inputs = [Tensor(a.copy(), requires_grad=True) for a in inputs]
    torch_inputs = [torch.tensor(a, requires_grad=True) for a in inputs]
    ours_out, torch_out = ours_fn(*ours_inputs), torch_fn(*torch_inputs)
    assert_close(ours_out.data, torch_out, f"{what} forward")
    upstream = np.random.default_rng(seed).standard_normal(ours_out.shape)
    ours_out.backward(upstream)
    torch_out.backward(torch.tensor(upstream))
    for index, (mine, theirs) in enumerate(zip(ours_inputs, torch_inputs)):
        assert_close(mine.grad, theirs.grad, f"{what} gradient of input {index}")
    return ours_out, torch_out


def _attribute(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


@st.composite
def geometry(draw, pool: bool, max_size: int = 6, max_batch: int = 2):
    "(N, C, H, W), kernel, stride, padding, seed: every window fits; pools pad at most half the kernel."
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if pool:
        ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    else:
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), max_size))
    w = draw(st.integers(max(1, kw - 2 * pw), max_size))
    n, c = draw(st.integers(1, max_batch)), draw(st.integers(1, 3))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), draw(st.integers(0, 2**16))


@st.composite
def batch_norm_case(draw, max_batch: int):
    "(N, C, H, W), training, seed: in training every channel has at least 2 values (else batch norm refuses)."
    n, c, h, w = draw(st.integers(1, max_batch)), draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    training = draw(st.booleans())
    if training and n * h * w < 2:
        n = 2
    return (n, c, h, w), training, draw(st.integers(0, 2**16))
