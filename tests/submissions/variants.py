"""Module 09's sample answers, as edits of the reference solution (used by make_samples.py).

Correct variants replace the student-written part of a function (between the allocation of
`out` and `return out`) with another correct body; bugs are one small text edit each."""
import copy

LOOP_FUNCTIONS = ["conv2d_loops", "max_pool2d_loops", "avg_pool2d_loops", "batch_norm2d_loops"]


def replace_body(nb: dict, name: str, body: str) -> dict:
    "Replace the lines after `out = np....` up to the final `return out` of function `name`."
    from make_samples import SampleError, find_cell, text
    nb = copy.deepcopy(nb)
    cell = find_cell(nb, f"def {name}(")
    lines = text(cell).splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith("    out = np.")), default=None)
    end = max((i for i, line in enumerate(lines) if line == "    return out"), default=None)
    if start is None or end is None or end < start:
        raise SampleError(f"{name}: cannot find `out = np....` ... `return out` in the answer cell")
    indented = ["    " + line if line.strip() else "" for line in body.strip("\n").splitlines()]
    cell["source"] = "\n".join(lines[:start + 1] + indented + lines[end:])
    return nb


# ---------------------------------------------------------------- correct, written differently

VECTORISED_CONV = """
for out_h in range(out_height):
    for out_w in range(out_width):
        top, left = out_h * stride_h, out_w * stride_w
        window = x_padded[:, :, top:top + kernel_h, left:left + kernel_w]          # (N, C_in, kh, kw)
        out[:, :, out_h, out_w] = np.tensordot(window, weight, axes=([1, 2, 3], [1, 2, 3]))  # (N, C_out)
if bias is not None:
    out += bias.reshape(1, -1, 1, 1)
"""
VECTORISED_MAX = """
for out_h in range(out_height):
    for out_w in range(out_width):
        top, left = out_h * stride_h, out_w * stride_w
        out[:, :, out_h, out_w] = x_padded[:, :, top:top + kernel_h, left:left + kernel_w].max(axis=(2, 3))
"""
VECTORISED_AVG = """
for out_h in range(out_height):
    for out_w in range(out_width):
        top, left = out_h * stride_h, out_w * stride_w
        out[:, :, out_h, out_w] = x_padded[:, :, top:top + kernel_h, left:left + kernel_w].mean(axis=(2, 3))
"""
OTHER_ORDER_CONV = """
# kernel position outermost: add each weight times the strided slice of the input it meets
last_h, last_w = stride_h * (out_height - 1) + 1, stride_w * (out_width - 1) + 1
for out_ch in range(out_channels):
    for in_ch in range(in_channels):
        for k_h in range(kernel_h):
            for k_w in range(kernel_w):
                seen = x_padded[:, in_ch, k_h:k_h + last_h:stride_h, k_w:k_w + last_w:stride_w]  # (N, H_out, W_out)
                out[:, out_ch] += weight[out_ch, in_ch, k_h, k_w] * seen
    if bias is not None:
        out[:, out_ch] += bias[out_ch]
"""
OTHER_ORDER_MAX = """
out[...] = -np.inf
for k_h in range(kernel_h):
    for k_w in range(kernel_w):
        for out_h in range(out_height):
            for out_w in range(out_width):
                candidate = x_padded[:, :, out_h * stride_h + k_h, out_w * stride_w + k_w]   # (N, C)
                out[:, :, out_h, out_w] = np.maximum(out[:, :, out_h, out_w], candidate)
"""
OTHER_ORDER_AVG = """
for k_h in range(kernel_h):
    for k_w in range(kernel_w):
        out += x_padded[:, :, k_h:k_h + stride_h * (out_height - 1) + 1:stride_h,
                        k_w:k_w + stride_w * (out_width - 1) + 1:stride_w]                      # (N, C, H_out, W_out)
out /= kernel_h * kernel_w
"""
OTHER_ORDER_BN = """
for ch in range(channels):
    values = x[:, ch]                                                         # (N, H, W)
    if training:
        mean = values.sum() / count
        var = ((values - mean) ** 2).sum() / count
        running_mean[ch] = running_mean[ch] + momentum * (mean - running_mean[ch])
        running_var[ch] = running_var[ch] + momentum * (var * count / (count - 1) - running_var[ch])
    else:
        mean, var = running_mean[ch], running_var[ch]
    out[:, ch] = gamma[ch] * (values - mean) / np.sqrt(var + eps) + beta[ch]
"""
FLOAT64_CONV = """
# accumulate in float64 whatever the input dtype, then store in out's dtype
wide_x, wide_w = x_padded.astype(np.float64), weight.astype(np.float64)
for b in range(batch):
    for out_ch in range(out_channels):
        for out_h in range(out_height):
            for out_w in range(out_width):
                window = wide_x[b, :, out_h * stride_h:out_h * stride_h + kernel_h,
                                out_w * stride_w:out_w * stride_w + kernel_w]             # (C_in, kh, kw)
                value = float(np.sum(window * wide_w[out_ch]))
                if bias is not None:
                    value += float(bias[out_ch])
                out[b, out_ch, out_h, out_w] = value
"""
FLOAT64_AVG = """
wide = x_padded.astype(np.float64)
for b in range(batch):
    for ch in range(channels):
        for out_h in range(out_height):
            for out_w in range(out_width):
                top, left = out_h * stride_h, out_w * stride_w
                out[b, ch, out_h, out_w] = wide[b, ch, top:top + kernel_h, left:left + kernel_w].sum() / (kernel_h * kernel_w)
"""
FLOAT64_BN = """
wide = x.astype(np.float64)
if training:
    mean = wide.mean(axis=(0, 2, 3))                                          # (C,)
    var = ((wide - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))      # (C,)
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * var * count / (count - 1)
else:
    mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
scale = gamma.astype(np.float64) / np.sqrt(var + eps)                           # (C,)
out[...] = (wide - mean[None, :, None, None]) * scale[None, :, None, None] + beta[None, :, None, None]
"""


def correct_variants(ref: dict, edit, replace_function) -> dict:
    vectorised = replace_body(replace_body(replace_body(ref, "conv2d_loops", VECTORISED_CONV),
                                           "max_pool2d_loops", VECTORISED_MAX), "avg_pool2d_loops", VECTORISED_AVG)
    other_order = ref
    for name, body in (("conv2d_loops", OTHER_ORDER_CONV), ("max_pool2d_loops", OTHER_ORDER_MAX),
                       ("avg_pool2d_loops", OTHER_ORDER_AVG), ("batch_norm2d_loops", OTHER_ORDER_BN)):
        other_order = replace_body(other_order, name, body)
    float64 = ref
    for name, body in (("conv2d_loops", FLOAT64_CONV), ("avg_pool2d_loops", FLOAT64_AVG),
                       ("batch_norm2d_loops", FLOAT64_BN)):
        float64 = replace_body(float64, name, body)
    return {"correct_vectorised": vectorised, "correct_other_loop_order": other_order,
            "correct_float64_accumulate": float64}


# ---------------------------------------------------------------- one common bug each

def bug_variants(ref: dict, edit, replace_function) -> dict:
    conv, maxp, avgp, bn = (f"def {n}(" for n in LOOP_FUNCTIONS)
    return {
        "bug_max_init_zero": edit(ref, maxp, "best = -np.inf", "best = 0.0"),
        "bug_stride_ignored": edit(ref, conv, "out_h * stride_h + k_h, out_w * stride_w + k_w", "out_h + k_h, out_w + k_w"),
        "bug_bn_axes": edit(ref, bn, "var = x.var(axis=(0, 2, 3))", "var = x.var(axis=(2, 3)).mean(axis=0)"),
        "bug_batch_stats_in_eval": edit(ref, bn, "mean, var = running_mean, running_var",
                                        "mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))"),
        "bug_running_stats_not_updated": edit(edit(ref, bn,
            "running_mean[...] = (1 - momentum) * running_mean + momentum * mean", "pass"), bn,
            "running_var[...] = (1 - momentum) * running_var + momentum * var * count / (count - 1)", "pass"),
        "bug_momentum_swapped": edit(edit(ref, bn,
            "(1 - momentum) * running_mean + momentum * mean", "momentum * running_mean + (1 - momentum) * mean"), bn,
            "(1 - momentum) * running_var + momentum * var * count / (count - 1)",
            "momentum * running_var + (1 - momentum) * var * count / (count - 1)"),
        "bug_bias_per_kernel_position": edit(edit(ref, conv,
            "* weight[out_ch, in_ch, k_h, k_w])",
            "* weight[out_ch, in_ch, k_h, k_w] + (bias[out_ch] if bias is not None else 0.0))"), conv,
            "                    if bias is not None:\n                        total += bias[out_ch]\n", ""),
        "bug_avg_divisor": edit(ref, avgp, "total / (kernel_h * kernel_w)", "total / kernel_h * kernel_w"),
    }
