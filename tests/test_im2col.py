"""The fast path (Module 17) against PyTorch in float64, forward and backward, on random
configurations; ties in max-pooling route like PyTorch; the fast ops keep the graph."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from tinytorch.core import im2col as fast_module
from tinytorch.core.im2col import (avg_pool2d_fast, batch_norm2d_fast, col2im, conv2d_fast,
                                   conv2d_relu_maxpool2_fast, im2col, max_pool2d_fast, same_layout)
from tinytorch.core.spatial import output_size
from tinytorch.core.tensor import Tensor
from torch_compare import assert_close, batch_norm_case, compare_function_with_torch, geometry

FAST = settings(max_examples=30, deadline=None)





@FAST
@given(geometry(pool=False, max_size=7, max_batch=3), st.integers(1, 4), st.booleans())
def test_conv2d_fast_matches_torch(case, out_channels, with_bias):
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((out_channels, shape[1], *kernel))
    inputs = [x, weight] + ([rng.standard_normal(out_channels)] if with_bias else [])
    compare_function_with_torch(
        lambda x, w, *b: conv2d_fast(x, w, b[0] if b else None, stride, padding),
        lambda x, w, *b: F.conv2d(x, w, b[0] if b else None, stride=stride, padding=padding),
        inputs, f"conv2d {shape} k{kernel} s{stride} p{padding}")


@pytest.mark.parametrize("rows", [1, 7, 12, 97])
@pytest.mark.parametrize("small_product", [1, 5, 40, 10**6])
def test_products_in_small_pieces_cover_every_row(rows, small_product, monkeypatch):
    "Stacked pieces when a divisor of the row count fits, else a loop over uneven pieces: the same products."
    monkeypatch.setattr(fast_module, "SMALL_PRODUCT", small_product)
    rng = np.random.default_rng(rows)
    a, b, grad = rng.standard_normal((rows, 3)), rng.standard_normal((3, 2)), rng.standard_normal((rows, 2))
    out = fast_module.matmul_in_rows(a, b, np.empty((rows, 2)))
    assert np.allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    total = fast_module.add_matmul_over_rows(a, grad, np.ones((3, 2)))
    assert np.allclose(total, 1 + a.T @ grad, rtol=1e-12, atol=1e-12)


MEMORY_ORDERS = ("nchw", "nhwc", "hwnc", "chwn")


def relayout(array: np.ndarray, order: str) -> np.ndarray:
    "The same (N, C, H, W) values as a view of memory laid out in `order` (say 'hwnc')."
    memory = np.ascontiguousarray(array.transpose(["nchw".index(axis) for axis in order]))
    return memory.transpose([order.index(axis) for axis in "nchw"])


def in_memory_order(x: Tensor, order: str) -> Tensor:
    "x in `order` memory; its gradient passes back unchanged, in that memory order too."
    return Tensor.from_op(relayout(x.data, order), (x,), lambda grad: (relayout(grad, order),), "in_memory_order")


@FAST
@given(geometry(pool=False, max_size=7, max_batch=3), st.integers(1, 4), st.booleans(),
       st.sampled_from(MEMORY_ORDERS), st.booleans(), st.booleans(), st.sampled_from([None, 1, 97]))
def test_conv2d_fast_every_path_matches_torch(case, out_channels, with_bias, order, rows, one_line_blocks,
                                              small_product):
    """Both ways of building the im2col matrix (rows copied from channels-last memory, or columns from
    batch-last memory), blocks of one output line or one block, products in one piece, in pieces of one
    row, or in uneven pieces (a cap of 97 multiply-adds rarely divides a block), on inputs of any memory order."""
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(shape), rng.standard_normal((out_channels, shape[1], *kernel))]
    inputs += [rng.standard_normal(out_channels)] if with_bias else []
    saved = fast_module.ROWS_MIN_CHANNELS, fast_module.BLOCK_BYTES, fast_module.SMALL_PRODUCT
    fast_module.ROWS_MIN_CHANNELS = 1 if rows else 10**9
    fast_module.BLOCK_BYTES = 1 if one_line_blocks else saved[1]
    fast_module.SMALL_PRODUCT = small_product or saved[2]
    try:
        compare_function_with_torch(
            lambda x, w, *b: conv2d_fast(in_memory_order(x, order), w, b[0] if b else None, stride, padding),
            lambda x, w, *b: F.conv2d(x, w, b[0] if b else None, stride=stride, padding=padding),
            inputs, f"conv2d {shape} k{kernel} s{stride} p{padding} {order} rows={rows} one-line={one_line_blocks} "
                    f"small-product={small_product}")
    finally:
        fast_module.ROWS_MIN_CHANNELS, fast_module.BLOCK_BYTES, fast_module.SMALL_PRODUCT = saved


@FAST
@given(geometry(pool=True, max_size=7, max_batch=3), st.sampled_from(MEMORY_ORDERS), st.sampled_from(MEMORY_ORDERS),
       st.booleans())
def test_pools_fast_match_torch_in_any_memory_order(case, order, grad_order, maximum):
    "The input and the upstream gradient in different memory orders (the backward pass aligns them)."
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).integers(-1, 2, shape).astype(np.float64)   # ties too
    ours, theirs = (max_pool2d_fast, F.max_pool2d) if maximum else (avg_pool2d_fast, F.avg_pool2d)
    compare_function_with_torch(
        lambda x: in_memory_order(ours(in_memory_order(x, order), kernel, stride, padding), grad_order),
        lambda x: theirs(x, kernel, stride, padding),
        [x], f"{ours.__name__} {shape} k{kernel} s{stride} p{padding} {order}/{grad_order}")


def test_same_layout_copies_only_when_the_memory_order_differs():
    layout = np.zeros((6, 3, 4, 5)).transpose(1, 2, 3, 0)                   # (3, 4, 5, 6), last axis outermost
    matching = np.ones((6, 3, 4, 5)).transpose(1, 2, 3, 0)[:, 1:]            # a strided view in the same order
    assert same_layout(matching, layout[:, 1:]) is matching
    other = np.arange(3 * 4 * 5 * 6.0).reshape(3, 4, 5, 6)
    aligned = same_layout(other, layout, 3)
    assert np.array_equal(aligned, other) and aligned.strides == layout.strides


POOLS = {"max_pool2d": (max_pool2d_fast, F.max_pool2d), "avg_pool2d": (avg_pool2d_fast, F.avg_pool2d)}


@pytest.mark.parametrize("pool, ties", [("max_pool2d", False), ("max_pool2d", True), ("avg_pool2d", False)])
@FAST
@given(geometry(pool=True, max_size=7, max_batch=3))
def test_pools_fast_match_torch(pool, ties, case):
    """With ties, integers from {-1, 0, 1} make ties in almost every window, overlapping windows included:
    max-pooling's gradient must go to the same single element PyTorch picks (the first in row-major order)."""
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, 2, shape).astype(np.float64) if ties else rng.standard_normal(shape)
    fast, reference = POOLS[pool]
    compare_function_with_torch(lambda x: fast(x, kernel, stride, padding),
                                lambda x: reference(x, kernel, stride, padding),
                                [x], f"{pool}{' ties' if ties else ''} {shape} k{kernel} s{stride} p{padding}")


def test_max_pool2d_tie_goes_to_one_element():
    x = Tensor(np.full((1, 1, 2, 2), 3.0), requires_grad=True)
    max_pool2d_fast(x, (2, 2), (2, 2), (0, 0)).sum().backward()
    assert x.grad.sum() == 1.0, f"a tied window must send its gradient to one element, got {x.grad[0, 0]}"
    assert x.grad[0, 0, 0, 0] == 1.0, "PyTorch sends a tie's gradient to the first element of the window"


@FAST
@given(batch_norm_case(max_batch=4))
def test_batch_norm2d_fast_matches_torch(case):
    (n, c, h, w), training, seed = case
    rng = np.random.default_rng(seed)
    x = rng.normal(1.5, 2.0, (n, c, h, w))
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    start_mean, start_var = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    ours_mean, ours_var = start_mean.copy(), start_var.copy()
    torch_mean, torch_var = torch.tensor(start_mean), torch.tensor(start_var)
    compare_function_with_torch(
        lambda x, g, b: batch_norm2d_fast(x, g, b, ours_mean, ours_var, training, 0.1, 1e-5),
        lambda x, g, b: F.batch_norm(x, torch_mean, torch_var, g, b, training, 0.1, 1e-5),
        [x, gamma, beta], f"batch_norm2d {(n, c, h, w)} training={training}")
    assert_close(ours_mean, torch_mean, "running_mean")
    assert_close(ours_var, torch_var, "running_var")


def test_batch_norm2d_fast_refuses_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm2d_fast(Tensor(np.ones((1, 2, 1, 1))), Tensor(np.ones(2)), Tensor(np.zeros(2)),
                          np.zeros(2), np.ones(2), True, 0.1, 1e-5)


def test_im2col_col2im_are_adjoint():
    """<im2col(x), y> == <x, col2im(y)>: the backward pass of the copy is exactly the scatter-add."""
    rng = np.random.default_rng(3)
    xp = rng.standard_normal((2, 7, 6, 3))                                  # (C, Hp, Wp, N)
    out_h, out_w = output_size(7, 3, 2, 0), output_size(6, 2, 1, 0)
    cols = im2col(xp, 3, 2, out_h, out_w, (2, 1))
    y = rng.standard_normal(cols.shape)
    assert np.isclose((cols * y).sum(), (xp * col2im(y, xp.shape, 3, 2, out_h, out_w, (2, 1))).sum(), rtol=1e-12)


def test_conv2d_fast_skips_the_input_gradient_when_not_needed():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 5, 5)))                           # an image batch: no gradient
    weight = Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    out = conv2d_fast(x, weight, None, (1, 1), (1, 1))
    grads = out._backward(np.ones(out.shape))
    assert grads[0] is None, "conv2d_fast computed an input gradient nobody asked for"
    expected = F.conv2d(torch.tensor(x.data), torch.tensor(weight.data, requires_grad=True), padding=1)
    expected.sum().backward()
    out.sum().backward()
    assert x.grad is None
    assert weight.grad is not None and weight.grad.shape == (4, 3, 3, 3)


def test_float32_stays_float32_and_layout_is_invisible():
    """The fast ops return (N, C, H, W) views of other memory orders; values and shapes must be
    exactly what an ordinary array would give, and float32 must stay float32."""
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32), requires_grad=True)
    weight = Tensor(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), requires_grad=True)
    out = max_pool2d_fast(conv2d_fast(x, weight, None, (1, 1), (1, 1)).relu(), (2, 2), (2, 2), (0, 0))
    assert out.dtype == np.float32 and out.shape == (4, 5, 4, 4)
    flat = out.flatten(1)
    expected = F.max_pool2d(F.relu(F.conv2d(torch.tensor(x.data), torch.tensor(weight.data), padding=1)), 2)
    assert np.allclose(flat.data, expected.reshape(4, -1).numpy(), rtol=1e-5, atol=1e-5)
    flat.sum().backward()
    assert x.grad.dtype == np.float32 and weight.grad.dtype == np.float32


@pytest.mark.parametrize("call, message", [
    (lambda: conv2d_fast(Tensor(np.ones((3, 8, 8))), Tensor(np.ones((2, 3, 3, 3))), None, (1, 1), (0, 0)),
     r"expected 4-D input \(N, C, H, W\), got shape \(3, 8, 8\)"),
    (lambda: conv2d_fast(Tensor(np.ones((1, 2, 8, 8))), Tensor(np.ones((2, 3, 3, 3))), None, (1, 1), (0, 0)),
     r"expected input with 3 channels, got shape \(1, 2, 8, 8\)"),
    (lambda: max_pool2d_fast(Tensor(np.ones((1, 1, 2, 2))), (3, 3), (1, 1), (0, 0)),
     r"max_pool2d on input \(1, 1, 2, 2\): kernel size 3 does not fit input size 2 with padding 0"),
])
def test_bad_input_names_expected_and_received(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- fast == loops: the layers of Module 09 with impl="loops" and impl="fast" ----------------------

def run_layer(layer, x: np.ndarray, upstream_seed: int = 11):
    "Output, input gradient and parameter gradients of `layer` on float64 `x` for a random upstream."
    inputs = Tensor(x.copy(), requires_grad=True)
    out = layer(inputs)
    out.backward(np.random.default_rng(upstream_seed).standard_normal(out.shape))
    return out.data, inputs.grad, [p.grad for p in layer.parameters()]


def assert_loops_equal_fast(make_layer, x, what):
    loops_out, loops_dx, loops_grads = run_layer(make_layer("loops"), x)
    fast_out, fast_dx, fast_grads = run_layer(make_layer("fast"), x)
    assert_close(fast_out, loops_out, f"{what}: fast vs loops forward")
    assert_close(fast_dx, loops_dx, f"{what}: fast vs loops input gradient")
    for index, (fast, loops) in enumerate(zip(fast_grads, loops_grads)):
        assert_close(fast, loops, f"{what}: fast vs loops gradient of parameter {index}")


def float64_parameters(layer, seed):
    "Weights set explicitly in float64, so both implementations see the same numbers."
    rng = np.random.default_rng(seed)
    for p in layer.parameters():
        p.data = rng.standard_normal(p.shape)
    return layer


LOOPS = settings(max_examples=12, deadline=None)   # the loops are slow: fewer, small cases


@LOOPS
@given(geometry(pool=False, max_size=7, max_batch=3), st.integers(1, 3), st.booleans())
def test_conv2d_fast_equals_loops(case, out_channels, with_bias):
    from tinytorch.core.spatial import Conv2d
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    assert_loops_equal_fast(
        lambda impl: float64_parameters(Conv2d(shape[1], out_channels, kernel, stride, padding, bias=with_bias, impl=impl), seed),
        x, f"Conv2d {shape} k{kernel} s{stride} p{padding}")


@LOOPS
@given(geometry(pool=True, max_size=7, max_batch=3), st.booleans(), st.booleans())
def test_pools_fast_equal_loops(case, maximum, with_ties):
    from tinytorch.core.spatial import AvgPool2d, MaxPool2d
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, 2, shape).astype(np.float64) if with_ties else rng.standard_normal(shape)
    pool = MaxPool2d if maximum else AvgPool2d
    assert_loops_equal_fast(lambda impl: pool(kernel, stride, padding, impl=impl), x,
                            f"{pool.__name__} {shape} k{kernel} s{stride} p{padding} ties={with_ties}")


@LOOPS
@given(st.integers(2, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.booleans(), st.integers(0, 2**16))
def test_batch_norm2d_fast_equals_loops(n, c, h, w, training, seed):
    from tinytorch.core.spatial import BatchNorm2d
    x = np.random.default_rng(seed).normal(-1.0, 3.0, (n, c, h, w))
    layers = {}

    def make(impl):
        layer = float64_parameters(BatchNorm2d(c, impl=impl), seed)
        # float64 buffers too (like torch's model.double()): the comparison is all-float64
        layer.running_mean = np.linspace(-1, 1, c)
        layer.running_var = np.linspace(0.5, 2, c)
        layers[impl] = layer.train(training)
        return layer
    assert_loops_equal_fast(make, x, f"BatchNorm2d {(n, c, h, w)} training={training}")
    assert_close(layers["fast"].running_mean, layers["loops"].running_mean, "running_mean fast vs loops")
    assert_close(layers["fast"].running_var, layers["loops"].running_var, "running_var fast vs loops")


def test_simplecnn_fast_equals_loops():
    from tinytorch.core.spatial import SimpleCNN
    from tinytorch.core.tensor import manual_seed
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8))

    def make(impl):
        manual_seed(0)
        return float64_parameters(SimpleCNN(3, 10, 8, impl=impl), 1)
    assert_loops_equal_fast(make, x, "SimpleCNN(3, 10, 8)")


@FAST
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(2, 7), st.integers(2, 7),
       st.sampled_from([1, 3]), st.booleans(), st.integers(0, 2**16))
def test_fused_conv_relu_pool_matches_torch(n, c, o, h, w, k, with_bias, seed):
    """The measured extra of Module 17 computes exactly maxpool2(relu(conv)), ReLU's zeros included."""
    padding = (k // 2, k // 2)
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c, k, k))]
    inputs += [rng.standard_normal(o)] if with_bias else []
    compare_function_with_torch(
        lambda x, wt, *b: conv2d_relu_maxpool2_fast(x, wt, b[0] if b else None, padding),
        lambda x, wt, *b: F.max_pool2d(F.relu(F.conv2d(x, wt, b[0] if b else None, padding=padding)), 2),
        inputs, f"conv→relu→pool {(n, c, h, w)} k{k}")
