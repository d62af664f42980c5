"""Module 09's layers (impl="loops") against torch.nn in float64, forward and backward, on random
shapes, strides and paddings; finite-difference gradient checks; hand-worked cases; the error
contracts; SimpleCNN's size and gradient flow; BatchNorm's train/eval behaviour and buffers."""
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tinytorch.core.layers import Linear
from tinytorch.core.spatial import (AvgPool2d, BatchNorm2d, Conv2d, MaxPool2d, SimpleCNN, avg_pool2d_loops,
                                    batch_norm2d_loops, conv2d_loops, max_pool2d_loops, output_size, pad_input,
                                    pair)
from tinytorch.core.tensor import Tensor, check_gradient, manual_seed
from torch_compare import assert_close, batch_norm_case, compare_with_torch, geometry

# the loops are slow: few, small examples
LOOPS = settings(max_examples=20, deadline=None)



# -- against PyTorch ------------------------------------------------------------------------------
@LOOPS
@given(geometry(pool=False), st.integers(1, 3), st.booleans())
def test_conv2d_matches_torch(case, out_channels, bias):
    shape, kernel, stride, padding, seed = case
    ours = Conv2d(shape[1], out_channels, kernel, stride, padding, bias=bias)
    theirs = torch.nn.Conv2d(shape[1], out_channels, kernel, stride, padding, bias=bias)
    rng = np.random.default_rng(seed)
    ours.weight.data = rng.standard_normal(ours.weight.shape)
    if bias:
        ours.bias.data = rng.standard_normal(out_channels)
    pairs = {"weight": "weight", "bias": "bias"} if bias else {"weight": "weight"}
    compare_with_torch(ours, theirs, rng.standard_normal(shape), pairs, seed=seed)


@LOOPS
@given(geometry(pool=True))
def test_max_pool2d_matches_torch(case):
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    compare_with_torch(MaxPool2d(kernel, stride, padding), torch.nn.MaxPool2d(kernel, stride, padding), x, {})


@LOOPS
@given(geometry(pool=True))
def test_max_pool2d_ties_route_like_torch(case):
    "Values from {-1, 0, 1} tie in most windows: the gradient goes to the element PyTorch picks."
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).integers(-1, 2, shape).astype(np.float64)
    compare_with_torch(MaxPool2d(kernel, stride, padding), torch.nn.MaxPool2d(kernel, stride, padding), x, {})


@LOOPS
@given(geometry(pool=True))
def test_avg_pool2d_matches_torch(case):
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    compare_with_torch(AvgPool2d(kernel, stride, padding), torch.nn.AvgPool2d(kernel, stride, padding), x, {})


def test_pool_stride_defaults_to_kernel_like_torch():
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 6))
    compare_with_torch(MaxPool2d((3, 2)), torch.nn.MaxPool2d((3, 2)), x, {})
    compare_with_torch(AvgPool2d((3, 2)), torch.nn.AvgPool2d((3, 2)), x, {})


BN_PAIRS = {"gamma": "weight", "beta": "bias"}
BN_BUFFERS = {"running_mean": "running_mean", "running_var": "running_var"}


@LOOPS
@given(batch_norm_case(max_batch=3))
def test_batch_norm2d_matches_torch(case):
    (n, c, h, w), training, seed = case
    rng = np.random.default_rng(seed)
    ours, theirs = BatchNorm2d(c, momentum=0.3), torch.nn.BatchNorm2d(c, momentum=0.3)
    ours.double()
    ours.gamma.data, ours.beta.data = rng.standard_normal(c), rng.standard_normal(c)
    ours.running_mean[...], ours.running_var[...] = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    ours.train(training)
    theirs.train(training)
    compare_with_torch(ours, theirs, rng.normal(1.5, 2.0, (n, c, h, w)), BN_PAIRS, BN_BUFFERS, seed=seed)


def test_batch_norm2d_buffers_follow_torch_over_two_batches_then_eval():
    "Training updates the buffers like PyTorch, batch after batch; eval then uses them."
    rng = np.random.default_rng(5)
    ours, theirs = BatchNorm2d(3).double(), torch.nn.BatchNorm2d(3).double()
    ours.gamma.data, ours.beta.data = rng.standard_normal(3), rng.standard_normal(3)
    for batch in (rng.normal(2.0, 3.0, (4, 3, 3, 2)), rng.normal(-1.0, 0.5, (2, 3, 2, 3))):
        compare_with_torch(ours, theirs, batch, BN_PAIRS, seed=1)      # buffers carried over, not re-copied
        assert_close(ours.running_mean, theirs.running_mean, "running_mean after a batch")
        assert_close(ours.running_var, theirs.running_var, "running_var after a batch")
    ours.eval()
    theirs.eval()
    image = rng.normal(4.0, 1.0, (1, 3, 3, 3))
    compare_with_torch(ours, theirs, image, BN_PAIRS, BN_BUFFERS)
    expected = ((image - ours.running_mean.reshape(1, 3, 1, 1)) / np.sqrt(ours.running_var.reshape(1, 3, 1, 1) + 1e-5)
                * ours.gamma.data.reshape(1, 3, 1, 1) + ours.beta.data.reshape(1, 3, 1, 1))
    assert_close(ours(image).data, expected, "eval on one image is the running-statistics normalisation")


def test_simple_cnn_matches_torch():
    manual_seed(0)
    ours = SimpleCNN(in_channels=2, num_classes=5, image_size=8)
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(2, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 2 * 2, 5))
    pairs = {"conv1.weight": "0.weight", "conv1.bias": "0.bias", "conv2.weight": "3.weight",
             "conv2.bias": "3.bias", "fc.weight": "7.weight", "fc.bias": "7.bias"}
    rng = np.random.default_rng(1)
    for name, parameter in ours.named_parameters():         # nonzero biases, so a dropped bias shows
        parameter.data = rng.standard_normal(parameter.shape) * 0.3
    compare_with_torch(ours, theirs, rng.standard_normal((2, 2, 8, 8)), pairs)


# -- the module-level loop functions -----------------------------------------------------------------
@LOOPS
@given(geometry(pool=False), st.integers(1, 3))
def test_conv2d_loops_matches_torch_functional(case, out_channels):
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x, weight, bias = rng.standard_normal(shape), rng.standard_normal((out_channels, shape[1]) + kernel), rng.standard_normal(out_channels)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias),
                                          stride, padding)
    assert_close(conv2d_loops(x, weight, bias, stride, padding), expected, "conv2d_loops")


@LOOPS
@given(geometry(pool=True))
def test_pool_loops_match_torch_functional(case):
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape) - 3.0        # mostly negative: -inf start matters
    assert_close(max_pool2d_loops(x, kernel, stride, padding),
                 torch.nn.functional.max_pool2d(torch.from_numpy(x), kernel, stride, padding), "max_pool2d_loops")
    assert_close(avg_pool2d_loops(x, kernel, stride, padding),
                 torch.nn.functional.avg_pool2d(torch.from_numpy(x), kernel, stride, padding), "avg_pool2d_loops")


def test_batch_norm2d_loops_matches_torch_functional_and_leaves_input_alone():
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, (3, 4, 2, 3))
    saved = x.copy()
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    ours_mean, ours_var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    torch_mean, torch_var = torch.from_numpy(ours_mean.copy()), torch.from_numpy(ours_var.copy())
    for training in (True, False):
        out = batch_norm2d_loops(x, gamma, beta, ours_mean, ours_var, training, 0.2, 1e-3)
        expected = torch.nn.functional.batch_norm(torch.from_numpy(x), torch_mean, torch_var, torch.from_numpy(gamma),
                                                  torch.from_numpy(beta), training, 0.2, 1e-3)
        assert_close(out, expected, f"batch_norm2d_loops training={training}")
        assert_close(ours_mean, torch_mean, "running_mean")
        assert_close(ours_var, torch_var, "running_var")
    np.testing.assert_array_equal(x, saved, err_msg="batch_norm2d_loops changed its input")


# -- finite differences --------------------------------------------------------------------------
@pytest.mark.parametrize("make_layer, shape", [
    (lambda: Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 0)), (2, 2, 4, 3)),
    (lambda: MaxPool2d(3, 2, 1), (1, 2, 5, 4)),
    (lambda: AvgPool2d((2, 3), 1, (1, 1)), (2, 1, 3, 4)),
    (lambda: BatchNorm2d(2), (3, 2, 2, 2)),
    (lambda: BatchNorm2d(2).eval(), (1, 2, 2, 2)),
])
def test_input_gradient_matches_finite_differences(make_layer, shape):
    manual_seed(4)
    layer = make_layer().double()
    if isinstance(layer, BatchNorm2d):
        layer.gamma.data = np.array([1.5, -0.7])
        layer.running_mean[...], layer.running_var[...] = [0.3, -0.2], [2.0, 0.5]
    weights = np.random.default_rng(1).standard_normal(layer(np.zeros(shape)).shape)   # not a plain sum
    if isinstance(layer, BatchNorm2d):
        layer.running_mean[...], layer.running_var[...] = [0.3, -0.2], [2.0, 0.5]
    x = np.random.default_rng(0).standard_normal(shape) * 2       # distinct values: no max-pool ties
    momentum = getattr(layer, "momentum", None)
    if momentum is not None:
        layer.momentum = 0.0                                       # finite differences call forward many times
    check_gradient(lambda t: layer(t) * weights, x)


def test_conv2d_parameter_gradients_match_finite_differences():
    layer = Conv2d(2, 2, 2, stride=(1, 2), padding=1).double()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 3, 4))
    upstream = rng.standard_normal(layer(x).shape)
    for parameter in (layer.weight, layer.bias):
        layer.zero_grad()
        (layer(x) * upstream).sum().backward()
        analytic = parameter.grad.copy()
        numeric = np.zeros_like(parameter.data)
        for index in np.ndindex(parameter.shape):
            saved = parameter.data[index]
            parameter.data[index] = saved + 1e-6
            plus = float((layer(x).data * upstream).sum())
            parameter.data[index] = saved - 1e-6
            minus = float((layer(x).data * upstream).sum())
            parameter.data[index] = saved
            numeric[index] = (plus - minus) / 2e-6
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


# -- hand-worked cases ----------------------------------------------------------------------------
def test_conv2d_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    ones = np.ones((1, 1, 2, 2))
    np.testing.assert_allclose(conv2d_loops(x, ones)[0, 0], [[10, 14, 18], [26, 30, 34], [42, 46, 50]])
    np.testing.assert_allclose(conv2d_loops(x, ones, np.array([100.0]))[0, 0, 0, 0], 110)
    np.testing.assert_allclose(conv2d_loops(x, ones, stride=2, padding=1)[0, 0], [[0, 3, 3], [12, 30, 18], [12, 27, 15]])


def test_pools_by_hand():
    x = np.array([[1, 3, 2, 4], [5, 7, 6, 8], [-1, -3, -2, -4], [-5, -7, -6, -8]], dtype=np.float64)[None, None]
    np.testing.assert_array_equal(max_pool2d_loops(x, 2)[0, 0], [[7, 8], [-1, -2]])
    np.testing.assert_allclose(avg_pool2d_loops(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(avg_pool2d_loops(np.ones((1, 1, 2, 2)), 2, 2, 1)[0, 0], np.full((2, 2), 0.25))
    x = Tensor(np.full((1, 1, 2, 2), 3.0), requires_grad=True)
    MaxPool2d(2)(x).sum().backward()
    np.testing.assert_array_equal(x.grad[0, 0], [[1, 0], [0, 0]], err_msg="a tie sends the gradient to the first element")


def test_batch_norm2d_by_hand():
    x = np.array([[[[1.0, 2.0]], [[10.0, 10.0]]], [[[3.0, 4.0]], [[10.0, 10.0]]]])   # (2, 2, 1, 2)
    mean, var = np.zeros(2), np.ones(2)
    out = batch_norm2d_loops(x, np.ones(2), np.zeros(2), mean, var, True, 0.1, 1e-5)
    np.testing.assert_allclose(out[:, 0].ravel(), (np.arange(1, 5) - 2.5) / np.sqrt(1.25 + 1e-5))
    np.testing.assert_allclose(mean, [0.25, 1.0])
    np.testing.assert_allclose(var, [0.9 + 0.1 * 5 / 3, 0.9])


def test_helpers():
    assert output_size(32, 3, 1, 1) == 32 and output_size(7, 3, 2, 0) == 3
    assert pair(3) == (3, 3) and pair([2, 5]) == (2, 5)
    padded = pad_input(np.ones((1, 1, 2, 3)), (1, 2), value=-np.inf)
    assert padded.shape == (1, 1, 4, 7) and np.isneginf(padded[0, 0, 0]).all()


# -- dtypes, modes, parameters ----------------------------------------------------------------------
@pytest.mark.parametrize("make_layer", [lambda: Conv2d(2, 3, 3, padding=1), lambda: MaxPool2d(2),
                                        lambda: AvgPool2d(2), lambda: BatchNorm2d(2)])
def test_dtypes_and_input_untouched(make_layer):
    layer = make_layer()
    x64 = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    saved = x64.copy()
    assert layer(x64).dtype == np.float64, "float64 in, float64 out"
    np.testing.assert_array_equal(x64, saved, err_msg="the layer changed its input")
    assert layer(x64.astype(np.float32)).dtype == np.float32
    assert layer(np.arange(64).reshape(2, 2, 4, 4)).dtype == np.float32, "integers become float32"


def test_conv2d_initialisation():
    manual_seed(0)
    layer = Conv2d(32, 64, 3)
    assert layer.weight.shape == (64, 32, 3, 3) and layer.weight.dtype == np.float32
    assert abs(layer.weight.data.std() / np.sqrt(2 / (32 * 9)) - 1) < 0.03, "He initialisation: std sqrt(2 / fan_in)"
    assert abs(layer.weight.data.mean()) < 0.01
    np.testing.assert_array_equal(layer.bias.data, np.zeros(64))
    assert Conv2d(3, 4, 3, bias=False).bias is None and Conv2d(3, 4, 3, bias=False).num_parameters() == 108


def test_batch_norm2d_state():
    layer = BatchNorm2d(3)
    assert layer.training and layer.weight is layer.gamma and layer.bias is layer.beta
    np.testing.assert_array_equal(layer.running_mean, np.zeros(3))
    np.testing.assert_array_equal(layer.running_var, np.ones(3))
    assert [name for name, _ in layer.named_parameters()] == ["gamma", "beta"]
    state = layer.state_dict()
    assert set(state) == {"gamma", "beta", "running_mean", "running_var"}
    layer(np.random.default_rng(0).normal(3.0, 1.0, (4, 3, 2, 2)))
    assert layer.running_mean.min() > 0.2, "training moved the running mean towards the data"
    fresh = BatchNorm2d(3)
    fresh.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(fresh.running_mean, layer.running_mean)
    layer.eval()
    before = layer.running_mean.copy()
    layer(np.ones((1, 3, 2, 2)))
    np.testing.assert_array_equal(layer.running_mean, before, err_msg="eval must not update the buffers")


def test_simple_cnn_size_and_gradient_flow():
    model = SimpleCNN()
    assert model.num_parameters() == 25_578
    assert [p.size for p in model.parameters()] == [432, 16, 4608, 32, 20480, 10]
    assert SimpleCNN(1, 10, 28).fc.in_features == 32 * 7 * 7
    small = SimpleCNN(in_channels=1, num_classes=3, image_size=8)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)), requires_grad=True)
    logits = small(x)
    assert logits.shape == (2, 3)
    from tinytorch.core.layers import cross_entropy
    cross_entropy(logits, [0, 2]).backward()
    for name, parameter in small.named_parameters():
        assert parameter.grad is not None and np.abs(parameter.grad).sum() > 0, f"no gradient reached {name}"
    assert np.abs(x.grad).sum() > 0, "no gradient reached the input"
    assert isinstance(small.fc, Linear)


def test_train_eval_propagates():
    model = SimpleCNN(1, 2, 8)
    model.eval()
    assert not model.conv1.training and not model.pool2.training
    model.train()
    assert model.conv2.training


# -- error contracts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [Conv2d(3, 4, 3), MaxPool2d(2), AvgPool2d(2), BatchNorm2d(3), SimpleCNN()])
def test_wrong_rank_names_the_shape(layer):
    with pytest.raises(ValueError, match=r"expected 4-D input \(N, C, H, W\), got shape \(3, 8, 8\)"):
        layer(np.zeros((3, 8, 8)))


@pytest.mark.parametrize("layer", [Conv2d(3, 4, 3), BatchNorm2d(3), SimpleCNN()])
def test_wrong_channels_names_expected_and_received(layer):
    with pytest.raises(ValueError, match="expected 3 input channels, got 2"):
        layer(np.zeros((1, 2, 32, 32)))


def test_non_numeric_input_is_a_type_error():
    with pytest.raises(TypeError, match="real numbers"):
        Conv2d(1, 1, 1)(np.array([[[["a"]]]]))
    with pytest.raises(TypeError, match="real numbers"):
        max_pool2d_loops(np.array([[[[None]]]], dtype=object), 1)


@pytest.mark.parametrize("call", [
    lambda: Conv2d(1, 1, 5)(np.zeros((1, 1, 3, 3))),
    lambda: Conv2d(1, 1, (2, 5), padding=1)(np.zeros((1, 1, 3, 2))),
    lambda: conv2d_loops(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 4, 4))),
    lambda: MaxPool2d(4)(np.zeros((1, 1, 3, 3))),
    lambda: AvgPool2d(3, padding=1)(np.zeros((1, 1, 1, 0))),
])
def test_kernel_bigger_than_padded_input_names_the_sizes(call):
    with pytest.raises(ValueError, match=r"kernel size \d+ does not fit input size \d+ with padding \d+"):
        call()


def test_pool_padding_above_half_the_kernel():
    with pytest.raises(ValueError, match="at most half the kernel size"):
        MaxPool2d(3, padding=2)
    with pytest.raises(ValueError, match="at most half the kernel size"):
        AvgPool2d((2, 4), padding=(1, 3))
    with pytest.raises(ValueError, match="at most half the kernel size"):
        max_pool2d_loops(np.zeros((1, 1, 4, 4)), 2, 1, 2)
    MaxPool2d(3, padding=1)                                         # exactly half (rounded down) is fine


def test_batch_norm_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        BatchNorm2d(3)(np.zeros((1, 3, 1, 1)))
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        batch_norm2d_loops(np.zeros((1, 3, 1, 1)), np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), True)
    BatchNorm2d(3).eval()(np.zeros((1, 3, 1, 1)))                   # fine in eval


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: Conv2d(2, 2, 0), ValueError, "kernel_size must be at least 1"),
    (lambda: Conv2d(2, 2, 3, stride=(1, 0)), ValueError, "stride must be at least 1"),
    (lambda: Conv2d(2, 2, 3, padding=-1), ValueError, "padding must be at least 0"),
    (lambda: Conv2d(2, 2, 2.5), TypeError, "kernel_size must be an int or a pair of ints"),
    (lambda: MaxPool2d(2, impl="gpu"), ValueError, "impl must be one of"),
    (lambda: SimpleCNN(image_size=3), ValueError, "at least 4"),
    (lambda: BatchNorm2d((2, 3)), ValueError, "num_features must be a positive int"),
    (lambda: SimpleCNN(3, 10, 16)(np.zeros((1, 3, 32, 32))), ValueError, "expected 16x16 images, got 32x32"),
    (lambda: conv2d_loops(np.zeros((1, 2, 3, 3)), np.zeros((1, 3, 2, 2))), ValueError, "expected weight"),
])
def test_bad_arguments(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


def test_fast_without_im2col_says_so(monkeypatch):
    "Until module 17 is built, impl='fast' raises a clear error (and only when used)."
    import tinytorch.core
    monkeypatch.setitem(sys.modules, "tinytorch.core.im2col", None)
    monkeypatch.delattr(tinytorch.core, "im2col", raising=False)   # an earlier test may have imported it
    layer = Conv2d(1, 1, 1, impl="fast")
    with pytest.raises(NotImplementedError, match="impl='fast' needs tinytorch.core.im2col"):
        layer(np.zeros((1, 1, 2, 2)))


def test_fast_matches_loops():
    "impl='fast' (module 17) agrees with the loops through a whole SimpleCNN, forward and backward."
    loops, fast = SimpleCNN(2, 3, 8), SimpleCNN(2, 3, 8, impl="fast")
    loops.double()
    fast.load_state_dict(loops.state_dict())
    fast.double()
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    inputs = [Tensor(x, requires_grad=True) for _ in range(2)]
    outputs = [model(t) for model, t in zip((loops, fast), inputs)]
    assert_close(outputs[1].data, outputs[0].data, "fast forward")
    for out in outputs:
        out.backward(np.ones(out.shape))
    assert_close(inputs[1].grad, inputs[0].grad, "fast input gradient")
    for (name, mine), (_, theirs) in zip(loops.named_parameters(), fast.named_parameters()):
        assert_close(theirs.grad, mine.grad, f"fast gradient of {name}")


def test_double_and_float_convert_parameters_gradients_and_buffers_in_place():
    "A float32 BatchNorm given float64 data normalises with float32 statistics; .double() makes it exact, as in torch."
    rng = np.random.default_rng(3)
    layer = BatchNorm2d(2)
    layer(rng.normal(size=(4, 2, 3, 3)))                                  # float32 running statistics
    assert layer.double() is layer
    assert {layer.running_mean.dtype, layer.running_var.dtype, layer.gamma.data.dtype} == {np.dtype(np.float64)}
    x = rng.normal(size=(1, 2, 3, 3))
    expected = ((x - layer.running_mean[None, :, None, None])
                / np.sqrt(layer.running_var[None, :, None, None] + 1e-5))
    np.testing.assert_allclose(layer.eval()(x).data, expected, rtol=1e-13, atol=1e-13)
    model = SimpleCNN(1, 2, 4)
    model(rng.normal(size=(2, 1, 4, 4))).sum().backward()
    model.double()
    assert {p.data.dtype for p in model.parameters()} | {p.grad.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    model.float()
    assert {p.data.dtype for p in model.parameters()} | {p.grad.dtype for p in model.parameters()} == {np.dtype(np.float32)}
