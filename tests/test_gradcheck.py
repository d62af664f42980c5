"""gradcheck (nbs/09_spatial.ipynb -> tinytorch.core.spatial): it passes on the correct layers and
leaves them unchanged, its gradients agree with PyTorch's in float64, and on a deliberately wrong
backward (a flipped kernel, a stride ignored) it fails naming the right parameter and index, with
a heatmap of the right shape that shows the pattern."""
import numpy as np
import pytest
import torch

from tinytorch.core.layers import Module
from tinytorch.core.spatial import (AvgPool2d, BatchNorm2d, Conv2d, GradcheckError, MaxPool2d, conv2d_backward,
                                    conv2d_loops, gradcheck)
from tinytorch.core.tensor import Tensor

from torch_compare import assert_close

RTOL, ATOL = 1e-5, 1e-7     # gradcheck's defaults


def conv_layer(seed=0, kernel=(2, 3), stride=(1, 2), padding=1, channels=(2, 2)):
    layer = Conv2d(*channels, kernel, stride=stride, padding=padding)
    rng = np.random.default_rng(seed)
    layer.weight.data = rng.normal(size=layer.weight.shape).astype(np.float32)
    layer.bias.data = rng.normal(size=layer.bias.shape).astype(np.float32)
    return layer


class BuggyConv2d(Conv2d):
    "A Conv2d whose backward has one deliberate bug: `bug(grad_out, x, weight)` gives (grad_x, grad_weight, grad_bias)."
    def __init__(self, bug, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bug = bug

    def forward(self, x):
        x = x if isinstance(x, Tensor) else Tensor(x)
        out = conv2d_loops(x.data, self.weight.data, self.bias.data, self.stride, self.padding)
        return Tensor.from_op(out, (x, self.weight, self.bias),
                              lambda g: self.bug(g, x.data, self.weight.data), "buggy_conv2d")


def torch_gradients(layer: Conv2d, x: np.ndarray, upstream: np.ndarray) -> dict:
    "The true gradients of sum(conv(x) * upstream), by PyTorch in float64."
    x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    w_t = torch.tensor(layer.weight.data, dtype=torch.float64, requires_grad=True)
    b_t = torch.tensor(layer.bias.data, dtype=torch.float64, requires_grad=True)
    out = torch.nn.functional.conv2d(x_t, w_t, b_t, stride=layer.stride, padding=layer.padding)
    (out * torch.from_numpy(upstream)).sum().backward()
    return {"input": x_t.grad.numpy(), "weight": w_t.grad.numpy(), "bias": b_t.grad.numpy()}


def expected_worst(analytic: dict, true: dict) -> tuple:
    "(name, index) of the entry furthest outside the tolerance, found here from PyTorch's gradients."
    scores = {name: np.abs(analytic[name] - true[name]) / (ATOL + RTOL * np.abs(true[name])) for name in true}
    name = max(scores, key=lambda n: scores[n].max())
    return name, tuple(int(i) for i in np.unravel_index(scores[name].argmax(), scores[name].shape))


@pytest.mark.parametrize("make, shape", [
    (lambda: conv_layer(), (1, 2, 2, 3)),
    (lambda: MaxPool2d((2, 3), stride=(2, 1), padding=(1, 1)), (1, 2, 4, 5)),
    (lambda: AvgPool2d((2, 3), stride=(2, 1), padding=(1, 1)), (1, 2, 4, 5)),
    (lambda: BatchNorm2d(2), (2, 2, 2, 2)),
    (lambda: BatchNorm2d(2).eval(), (2, 2, 2, 2)),
])
def test_correct_layers_pass_and_are_left_unchanged(make, shape):
    layer = make()
    if isinstance(layer, BatchNorm2d):
        layer.gamma.data[...], layer.running_mean[...], layer.running_var[...] = [1.5, -0.5], [0.5, -1.0], [2.0, 0.5]
    before = {name: (p.data.copy(), p.data.dtype) for name, p in layer.named_parameters()}
    buffers = {name: getattr(layer, name).copy() for name in layer._buffers}
    result = gradcheck(layer, np.random.default_rng(3).normal(size=shape))
    assert result.passed and all(entry.passed for entry in result.worst)
    assert set(result.analytic) == {"input"} | set(before)
    assert result.failed == {name: 0 for name in result.analytic}
    for name, parameter in layer.named_parameters():
        assert parameter.data.dtype == before[name][1] and np.array_equal(parameter.data, before[name][0])
        assert parameter.grad is None
    for name, value in buffers.items():
        assert np.array_equal(getattr(layer, name), value), f"gradcheck changed the buffer {name}"
    assert "gradcheck passed" in str(result)


def test_conv_gradients_agree_with_pytorch_in_float64():
    layer, x = conv_layer(seed=5), np.random.default_rng(6).normal(size=(2, 2, 3, 4))
    upstream = np.random.default_rng(7).normal(size=(2, 2, 4, 2))
    result = gradcheck(layer, x, upstream=upstream)
    true = torch_gradients(layer, x, upstream)
    for name in true:
        assert_close(result.analytic[name], true[name], f"gradcheck's backward gradient of {name}")
        np.testing.assert_allclose(result.numeric[name], true[name], rtol=1e-6, atol=1e-8,
                                   err_msg=f"central differences of {name}")


@pytest.mark.parametrize("ours, theirs, pairs", [
    (lambda: MaxPool2d((2, 3), stride=(2, 1), padding=(1, 1)), lambda: torch.nn.MaxPool2d((2, 3), (2, 1), (1, 1)), {}),
    (lambda: AvgPool2d((2, 3), stride=(2, 1), padding=(1, 1)), lambda: torch.nn.AvgPool2d((2, 3), (2, 1), (1, 1)), {}),
    (lambda: BatchNorm2d(2), lambda: torch.nn.BatchNorm2d(2), {"gamma": "weight", "beta": "bias"}),
])
def test_pool_and_batchnorm_gradients_agree_with_pytorch_in_float64(ours, theirs, pairs):
    layer, twin = ours(), theirs().double()
    if pairs:
        layer.gamma.data[...], layer.beta.data[...] = [1.5, -0.5], [0.25, 1.0]
        with torch.no_grad():
            twin.weight.copy_(torch.tensor([1.5, -0.5])), twin.bias.copy_(torch.tensor([0.25, 1.0]))
    x = np.random.default_rng(12).normal(size=(2, 2, 4, 5))
    result = gradcheck(layer, x)
    x_t = torch.tensor(x, requires_grad=True)
    (twin(x_t) * torch.from_numpy(result.upstream)).sum().backward()
    true = {"input": x_t.grad} | {mine: getattr(twin, their).grad for mine, their in pairs.items()}
    assert set(result.analytic) == set(true)
    for name, gradient in true.items():
        assert_close(result.analytic[name], gradient, f"gradcheck's backward gradient of {name}")
        np.testing.assert_allclose(result.numeric[name], gradient.numpy(), rtol=1e-6, atol=1e-8,
                                   err_msg=f"central differences of {name}")


def test_function_form_names_its_inputs():
    w = np.random.default_rng(1).normal(size=(1, 2, 2, 2))
    conv = lambda x, weight: Tensor.from_op(conv2d_loops(x.data, weight.data), (x, weight),
                                            lambda g: conv2d_backward(g, x.data, weight.data)[:2])
    result = gradcheck(conv, np.random.default_rng(2).normal(size=(1, 2, 3, 3)), w, names=("x", "w"))
    assert result.passed and set(result.analytic) == {"x", "w"}
    with pytest.raises(ValueError, match="names must name each of the 2 inputs"):
        gradcheck(conv, np.zeros((1, 2, 3, 3)), w, names=("x",))
    with pytest.raises(TypeError, match="a Module or a function of Tensors"):
        gradcheck(42, np.zeros(3))


def test_flipped_kernel_backward_names_the_weight_and_shows_the_mirror_pattern():
    def flipped(g, x, weight):
        grad_x, grad_weight, grad_bias = conv2d_backward(g, x, weight, 1, 1)
        return grad_x, grad_weight[:, :, ::-1, ::-1], grad_bias
    layer = BuggyConv2d(flipped, 2, 3, 3, padding=1)
    reference = conv_layer(seed=8, kernel=3, stride=1, padding=1, channels=(2, 3))
    layer.weight.data, layer.bias.data = reference.weight.data, reference.bias.data
    x = np.random.default_rng(9).normal(size=(1, 2, 4, 4))
    with pytest.raises(GradcheckError) as caught:
        gradcheck(layer, x)
    result = caught.value.result
    true = torch_gradients(layer, x, result.upstream)
    name, index = expected_worst(result.analytic, true)
    assert (result.worst[0].parameter, result.worst[0].index) == (name, index) and name == "weight"
    assert f"weight[{', '.join(map(str, index))}]" in str(caught.value)
    assert result.failed["input"] == 0 and result.failed["bias"] == 0 and result.failed["weight"] > 0
    errors = result.error_map("weight")                                   # (C_out * C_in, kh, kw)
    assert errors.shape == (6, 3, 3)
    np.testing.assert_allclose(errors, errors[:, ::-1, ::-1], atol=1e-6)  # wrong in mirror-image pairs
    assert errors[:, 1, 1].max() < 1e-6 < errors.max()                    # the centre is right
    figure = result.heatmap()
    images = [ax.get_images()[0].get_array() for ax in figure.axes if ax.get_images()]
    assert [image.shape for image in images] == [(4, 4)] * 2 + [(3, 3)] * 6 + [(1, 3)]   # input maps, kernels, bias
    weight_images = [image for image in images if image.shape == (3, 3)]
    np.testing.assert_allclose(np.stack(weight_images), errors)


def test_stride_ignored_in_backward_names_the_entry_and_the_rows_never_read():
    def stride_one(g, x, weight):
        return conv2d_backward(g, x, weight, 1, 0)                       # the layer's stride is 3
    layer = BuggyConv2d(stride_one, 1, 2, 2, stride=3)
    reference = conv_layer(seed=10, kernel=2, stride=3, padding=0, channels=(1, 2))
    layer.weight.data, layer.bias.data = reference.weight.data, reference.bias.data
    x = np.random.default_rng(11).normal(size=(1, 1, 5, 5))
    result = gradcheck(layer, x, raise_on_failure=False)
    assert not result.passed
    true = torch_gradients(layer, x, result.upstream)
    assert (result.worst[0].parameter, result.worst[0].index) == expected_worst(result.analytic, true)
    assert result.failed["input"] > 0 and result.failed["weight"] > 0 and result.failed["bias"] == 0
    # windows at rows and columns 0-1 and 3-4: row 2 is never read, yet backward sends it gradient
    np.testing.assert_allclose(result.numeric["input"][0, 0, 2], 0.0, atol=1e-8)
    assert np.abs(result.analytic["input"][0, 0, 2]).max() > 0.1
    assert result.error_map("input").shape == (1, 5, 5)
    assert result.error_map("bias").shape == (1, 1, 2)
    assert "WRONG" in result.table() and result.worst[0].where() in result.message()
    shapes = sorted(ax.get_images()[0].get_array().shape for ax in result.heatmap().axes if ax.get_images())
    assert shapes == [(1, 2), (2, 2), (2, 2), (5, 5)]


def test_a_wrong_forward_fails_against_the_given_backward():
    "The student's side: the sample bug that ignores the stride in conv2d_loops, caught by the layer's check."
    class StrideIgnoredConv2d(Conv2d):
        def forward(self, x):
            out = super().forward(x)
            data = np.asarray(getattr(x, "data", x), dtype=np.float64)
            wrong = conv2d_loops(data, self.weight.data, self.bias.data, 1, self.padding)[:, :, :out.shape[2], :out.shape[3]]
            out.data = wrong.astype(out.dtype)
            return out
    layer = StrideIgnoredConv2d(2, 2, (2, 3), stride=(1, 2), padding=1)
    result = gradcheck(layer, np.random.default_rng(2).normal(size=(1, 2, 2, 3)), raise_on_failure=False)
    assert not result.passed and result.failed["weight"] > 0


def test_a_forward_that_is_not_float64_is_refused_by_name():
    class Float32(Module):
        def forward(self, x):
            return Tensor(np.asarray(x.data, dtype=np.float32))
    with pytest.raises(TypeError, match="float64 Tensor for float64 input, got Tensor of float32"):
        gradcheck(Float32(), np.zeros((1, 1, 2, 2)))


def test_inside_a_check_the_failure_opens_with_the_concept_and_records_nothing(capsys):
    from tinytorch.checks import _failures, check, checks_passed, record_result
    def flipped(g, x, weight):
        grad_x, grad_weight, grad_bias = conv2d_backward(g, x, weight, 1, 0)
        return grad_x, grad_weight[:, :, ::-1, ::-1], grad_bias
    layer = BuggyConv2d(flipped, 1, 1, 2)
    layer.weight.data = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    concept = "the gradients of a Conv2d match finite differences"
    with check("cell:gradient_check", concept):
        record_result(gradcheck(layer, np.random.default_rng(1).normal(size=(1, 1, 3, 3))).passed)
    assert len(_failures) == 1 and "cell:gradient_check" not in capsys.readouterr().out
    with pytest.raises(GradcheckError) as caught:
        checks_passed()
    first, second = str(caught.value).splitlines()[:2]
    assert first == concept and second.startswith("gradcheck failed: the gradient of weight[0, 0, ")


def test_a_nan_gradient_is_never_close():
    square = lambda t: Tensor.from_op(t.data ** 2, (t,), lambda g: (np.where(t.data > 0, np.nan, 2 * t.data * g),))
    result = gradcheck(square, np.array([[-1.0, 2.0]]), raise_on_failure=False)
    assert not result.passed and result.failed == {"input0": 1}
    assert (result.worst[0].where(), result.worst[0].passed) == ("input0[0, 1]", False)


def flipped_kernel_result():
    def flipped(g, x, weight):
        grad_x, grad_weight, grad_bias = conv2d_backward(g, x, weight, 1, 1)
        return grad_x, grad_weight[:, :, ::-1, ::-1], grad_bias
    layer = BuggyConv2d(flipped, 2, 3, 3, padding=1)
    reference = conv_layer(seed=8, kernel=3, stride=1, padding=1, channels=(2, 3))
    layer.weight.data, layer.bias.data = reference.weight.data, reference.bias.data
    return gradcheck(layer, np.random.default_rng(9).normal(size=(1, 2, 4, 4)), raise_on_failure=False)


def test_heatmap_png_draws_every_entry_in_the_magma_scale_and_boxes_the_worst():
    "The PNG a failing gradcheck shows: each entry a block of pixels coloured by its error, on one scale."
    import io
    from PIL import Image
    from matplotlib import colormaps
    import tinytorch.core.spatial as spatial
    levels = np.linspace(0, 1, 256)
    np.testing.assert_allclose(spatial._MAGMA[:256], colormaps["magma"](levels)[:, :3] * 255, atol=4)   # magma's colours
    result = flipped_kernel_result()
    cell = 10
    image = np.asarray(Image.open(io.BytesIO(result.heatmap_png(cell=cell))).convert("RGB"))
    top = max(float(result.error_map(name).max()) for name in result.analytic)
    errors = result.error_map("weight")                                   # (6, 3, 3): wrong in mirror pairs
    for colour in {tuple(int(v) for v in spatial._MAGMA[spatial._colour_index(value, top)]) for value in errors.ravel()}:
        blocks = np.all(image == colour, axis=2).sum()
        assert blocks >= (cell - 4) ** 2, f"no block coloured {colour} (an entry's error): {blocks} pixels"
    assert len({int(spatial._colour_index(value, top)) for value in errors.ravel()}) > 2
    ys, xs = np.nonzero(np.all(image == (0, 255, 255), axis=2))           # the box: one entry's outline
    assert ys.size and ys.max() - ys.min() + 1 == cell and xs.max() - xs.min() + 1 == cell
    assert spatial._colour_index(np.array([np.nan, np.inf, 0.0, top]), top).tolist() == [256, 256, 0, 255]


def test_a_failing_gradcheck_in_a_notebook_shows_the_png_without_importing_matplotlib(tmp_path):
    "In a kernel (the grader's too) the picture costs milliseconds: matplotlib is never imported."
    import subprocess
    import sys
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, types\n"
        "sys.modules['matplotlib'] = None                     # an import would raise\n"
        "import numpy as np\n"
        "import tinytorch.core.spatial as spatial\n"
        "shown = []\n"
        "spatial._in_notebook = lambda: True\n"
        "import IPython.display\n"
        "IPython.display.display = lambda obj: shown.append(obj)\n"
        "from tinytorch.core.tensor import Tensor\n"
        "double = lambda x: Tensor.from_op(x.data * 2, (x,), lambda g: (g * 3,))\n"
        "try:\n"
        "    spatial.gradcheck(double, np.ones((1, 1, 2, 2)))\n"
        "except spatial.GradcheckError:\n"
        "    pass\n"
        "assert len(shown) == 1 and shown[0].data[:8] == b'\\x89PNG\\r\\n\\x1a\\n', shown\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
