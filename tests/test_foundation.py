"""The foundation (tensor, layers, optimisers) against PyTorch in float64, forward and backward."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from tinytorch.core.layers import Flatten, Linear, ReLU, Sequential, cross_entropy
from tinytorch.core.optim import SGD, Adam
from tinytorch.core.tensor import Tensor, check_gradient, manual_seed, no_grad
from torch_compare import assert_close, compare_function_with_torch

matrices = arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 5)),
                  elements=st.floats(-3, 3, allow_nan=False, width=64))


@settings(max_examples=30, deadline=None)
@given(matrices)
def test_elementwise_chain_matches_torch(a):
    b = np.linspace(-1, 2, a.shape[1])
    compare_function_with_torch(
        lambda x: ((x * 2.0 + Tensor(b)) * x - x / 3.0).relu() + (x * 0.1).exp() - x ** 2,
        lambda x: ((x * 2.0 + torch.tensor(b)) * x - x / 3.0).relu() + (x * 0.1).exp() - x ** 2, [a])


@settings(max_examples=30, deadline=None)
@given(matrices, st.integers(1, 4))
def test_matmul_broadcast_add_and_reductions_match_torch(a, k):
    w = np.random.default_rng(k).normal(size=(a.shape[1], k))
    b = np.random.default_rng(k + 1).normal(size=(k,))
    compare_function_with_torch(lambda x, w_, b_: (x @ w_ + b_).sum(axis=0) * (x @ w_).mean(),
                                 lambda x, w_, b_: (x @ w_ + b_).sum(dim=0) * (x @ w_).mean(), [a, w, b])


@settings(max_examples=20, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
              elements=st.floats(-3, 3, allow_nan=False, width=64)))
def test_reshape_transpose_flatten_and_log_softmax_match_torch(x):
    compare_function_with_torch(lambda t: t.transpose(0, 2, 1, 3).flatten(1).log_softmax(axis=1),
                                 lambda t: torch.log_softmax(t.permute(0, 2, 1, 3).flatten(1), dim=1), [x])


def test_getitem_and_division_by_tensor_match_torch():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 3)), rng.uniform(1, 2, size=(4, 3))
    rows, cols = np.array([0, 2, 2, 3]), np.array([1, 0, 0, 2])
    compare_function_with_torch(lambda x, y: (x / y)[rows, cols] + (1.0 / y).sum(),
                                 lambda x, y: (x / y)[rows, cols] + (1.0 / y).sum(), [a, b])


def test_cross_entropy_matches_torch():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(6, 5)) * 3, np.array([0, 4, 2, 2, 1, 3])
    compare_function_with_torch(lambda z: cross_entropy(z, labels),
                                 lambda z: torch.nn.functional.cross_entropy(z, torch.tensor(labels)), [logits])


def test_linear_matches_torch_and_flatten_keeps_graph():
    rng = np.random.default_rng(2)
    layer = Linear(12, 4)
    layer.weight.data = rng.normal(size=(4, 12))
    layer.bias.data = rng.normal(size=4)
    twin = torch.nn.Linear(12, 4).double()
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(layer.weight.data))
        twin.bias.copy_(torch.tensor(layer.bias.data))
    x = rng.normal(size=(5, 3, 2, 2))
    ours_in, torch_in = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out = Sequential(Flatten(), layer, ReLU())(ours_in)
    expected = torch.relu(twin(torch_in.flatten(1)))
    assert_close(out.data, expected, "forward")
    out.sum().backward()
    expected.sum().backward()
    assert_close(ours_in.grad, torch_in.grad, "gradient of the input")
    assert_close(layer.weight.grad, twin.weight.grad, "gradient of the weight")
    assert_close(layer.bias.grad, twin.bias.grad, "gradient of the bias")


def test_gradients_accumulate_until_zero_grad_like_torch():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0 + 3.0, 4.0 + 3.0])
    x.zero_grad()
    assert x.grad is None


def test_shared_subexpression_gets_both_paths():
    x = Tensor(np.array([3.0]), requires_grad=True)
    y = x * x
    (y + y * x).sum().backward()  # d/dx (x^2 + x^3) = 2x + 3x^2
    np.testing.assert_allclose(x.grad, [2 * 3 + 3 * 9])


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    assert x.grad.tolist() == [1.0]


def test_dtypes_follow_the_contract():
    assert Tensor([1, 2]).dtype == np.float32
    assert Tensor(np.array([True])).dtype == np.float32
    assert Tensor(np.zeros(2, dtype=np.float64)).dtype == np.float64
    assert (Tensor(np.ones(2, dtype=np.float32)) * 2.0).dtype == np.float32, "a Python float must not upcast"
    with pytest.raises(TypeError, match="got dtype <U"):
        Tensor(["a", "b"])
    with pytest.raises(TypeError, match="complex"):
        Tensor(np.array([1j]))


def test_backward_errors_name_the_problem():
    t = Tensor(np.ones((2, 2)), requires_grad=True) * 2.0
    with pytest.raises(RuntimeError, match=r"needs a scalar, got shape \(2, 2\)"):
        t.backward()
    with pytest.raises(ValueError, match=r"gradient of shape \(3,\) does not match tensor of shape \(2, 2\)"):
        t.backward(np.ones(3))
    with pytest.raises(ValueError, match=r"Linear expected input of shape \(N, 3\), got shape \(2, 4\)"):
        Linear(3, 2)(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        cross_entropy(Tensor(np.zeros((1, 3))), [3])


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y._parents == ()


def test_check_gradient_catches_a_wrong_backward():
    def wrong_square(t):
        return Tensor.from_op(t.data ** 2, (t,), lambda g: (g * t.data,))  # should be 2 * t
    with pytest.raises(AssertionError, match=r"gradient at index \(0,\)"):
        check_gradient(wrong_square, np.array([1.5, -2.0]))
    check_gradient(lambda t: t * t, np.array([1.5, -2.0]))


@pytest.mark.parametrize("make_optimizer, torch_optimizer", [
    (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda p: SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01)),
    (lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    (lambda p: Adam(p, lr=0.01, weight_decay=0.1), lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
])
def test_optimisers_match_torch_over_several_steps(make_optimizer, torch_optimizer):
    rng = np.random.default_rng(4)
    start, x = rng.normal(size=(3, 2)), rng.normal(size=(5, 3))
    w = Tensor(start.copy(), requires_grad=True)
    tw = torch.tensor(start.copy(), requires_grad=True)
    ours, theirs = make_optimizer([w]), torch_optimizer([tw])
    for _ in range(5):
        ours.zero_grad()
        theirs.zero_grad()
        ((Tensor(x) @ w).relu() ** 2).mean().backward()
        ((torch.tensor(x) @ tw).relu() ** 2).mean().backward()
        ours.step()
        theirs.step()
    np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_state_dict_round_trips_and_rejects_mismatches():
    manual_seed(0)
    model = Sequential(Linear(3, 4), ReLU(), Linear(4, 2))
    state = model.state_dict()
    assert sorted(state) == ["layers.0.bias", "layers.0.weight", "layers.2.bias", "layers.2.weight"]
    other = Sequential(Linear(3, 4), ReLU(), Linear(4, 2))
    other.load_state_dict(state)
    x = np.ones((1, 3), dtype=np.float32)
    np.testing.assert_array_equal(other(x).data, model(x).data)
    state["layers.0.weight"] = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"layers.0.weight: expected shape \(4, 3\), got \(5, 3\)"):
        other.load_state_dict(state)
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({})


def test_manual_seed_makes_initialisation_repeatable():
    manual_seed(7)
    first = Linear(4, 3).weight.data.copy()
    manual_seed(7)
    np.testing.assert_array_equal(Linear(4, 3).weight.data, first)
