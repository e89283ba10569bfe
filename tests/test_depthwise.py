"""The depthwise conv of small maps: the kernel cut to what meets pixels, and the weight gradient
taken tap by tap on CPUs, give the plain conv's output and gradients."""

import pytest
import torch
import torch.nn.functional as F

from elastic_nas.spaces import depthwise
from elastic_nas.spaces.layers import conv_bn, sliced_conv


def plain_and_ours(x, weight, stride):
    """Output, input gradient and weight gradient of the plain conv and of ``depthwise.conv2d``."""
    out = []
    for conv in (lambda a, w: F.conv2d(a, w, None, stride, w.shape[-1] // 2, 1, a.shape[1]),
                 lambda a, w: depthwise.conv2d(a, w, stride)):
        a, w = x.clone().requires_grad_(), weight.clone().requires_grad_()
        y = conv(a, w)
        y.backward(torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape).sin())  # a gradient with every tap's own value
        out.append((y.detach(), a.grad, w.grad))
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_same_output_and_gradients_as_the_plain_conv(size, kernel, stride, channels_last):
    gen = torch.Generator().manual_seed(size * 100 + kernel * 10 + stride)
    x = torch.randn(3, 5, size, size, dtype=torch.float64, generator=gen)
    weight = torch.randn(5, 1, kernel, kernel, dtype=torch.float64, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    (y0, gx0, gw0), (y1, gx1, gw1) = plain_and_ours(x, weight, stride)
    assert y1.shape == y0.shape and gw1.shape == gw0.shape
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx1, gx0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw1, gw0, rtol=1e-12, atol=1e-12)


def test_the_kernel_is_cut_to_the_taps_that_meet_pixels():
    weight = torch.arange(49.0).reshape(1, 1, 7, 7)
    assert depthwise.reach_kernel(weight, 1, 1).shape[-1] == 1
    assert depthwise.reach_kernel(weight, 2, 2).shape[-1] == 3
    assert depthwise.reach_kernel(weight, 3, 3).shape[-1] == 5
    assert depthwise.reach_kernel(weight, 4, 4) is weight
    assert depthwise.reach_kernel(weight, 2, 2)[0, 0, 1, 1] == weight[0, 0, 3, 3]  # the centre stays the centre


def test_a_sliced_supernet_kernel_gets_the_plain_gradient_and_standalone_blocks_use_it():
    conv, _ = conv_bn(16, 16, 7, 1, 16)
    assert isinstance(conv, depthwise.DepthwiseConv2d) and isinstance(conv, torch.nn.Conv2d)
    assert set(conv.state_dict()) == {"weight"}  # checkpoints and inherited weights as before
    x = torch.randn(4, 12, 2, 2).contiguous(memory_format=torch.channels_last)
    grads = []
    for run in (lambda: sliced_conv(conv, x, kernel_size=5),
                lambda: F.conv2d(x, conv.weight[:12, :, 1:6, 1:6], None, 1, 2, 1, 12)):
        conv.weight.grad = None
        run().square().sum().backward()
        grads.append(conv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    assert grads[0][12:].abs().sum() == 0 and grads[0][:12].abs().sum() > 0  # the channels it did not run
    assert grads[0][:, :, :2].abs().sum() == 0  # taps that meet only padding on a 2 x 2 map


def test_a_kernel_wider_than_its_map_takes_the_weight_gradient_by_taps_on_cpus():
    weight = torch.randn(8, 1, 7, 7, requires_grad=True)
    wide = depthwise.conv2d(torch.randn(2, 8, 4, 4), weight)
    assert "TapsWeightGrad" in type(wide.grad_fn).__name__
    assert "TapsWeightGrad" not in type(depthwise.conv2d(torch.randn(2, 8, 8, 8), weight).grad_fn).__name__
    with torch.no_grad():  # scoring: the plain op
        assert depthwise.conv2d(torch.randn(2, 8, 4, 4), weight).grad_fn is None


@pytest.mark.parametrize("height,width,stride", [(2, 5, 1), (1, 4, 2), (5, 3, 2)])
def test_non_square_maps(height, width, stride):
    gen = torch.Generator().manual_seed(height * 10 + width)
    x = torch.randn(2, 4, height, width, dtype=torch.float64, generator=gen)
    weight = torch.randn(4, 1, 7, 7, dtype=torch.float64, generator=gen)
    for ours, plain in zip(*reversed(plain_and_ours(x, weight, stride))):
        torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)


def test_under_bf16_autocast_the_gradients_are_the_plain_convs():
    """Autocast casts fp32 inputs to bf16 for the conv; the taps sum the bf16 products in fp32."""
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(8, 16, 2, 2, generator=gen), torch.randn(16, 1, 7, 7, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (y0, gx0, gw0), (y1, gx1, gw1) = plain_and_ours(x, weight, 1)
    assert y1.dtype == y0.dtype == torch.bfloat16 and gw1.dtype == gw0.dtype == torch.float32
    assert gx1.dtype == gx0.dtype == torch.float32
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(gx1, gx0, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw1, gw0, rtol=2e-2, atol=2e-2)


def test_only_the_spaces_kind_of_depthwise_conv_is_built():
    with pytest.raises(ValueError, match="odd kernel"):
        depthwise.DepthwiseConv2d(8, 8, 4, 1, 2, groups=8)
    with pytest.raises(ValueError, match="padding"):
        depthwise.DepthwiseConv2d(8, 8, 3, 1, 0, groups=8)


def test_exports_and_whole_kernels_compute_the_conv_as_designed():
    """An export (and ``whole_kernels``, what the cost model counts) runs the whole 7 x 7 kernel."""
    conv = depthwise.DepthwiseConv2d(8, 8, 7, 1, 3, groups=8)
    x = torch.randn(2, 8, 2, 2)
    program = torch.export.export(conv, (x,))
    convs = [n for n in program.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    assert len(convs) == 1 and tuple(convs[0].args[1].meta["val"].shape) == (8, 1, 7, 7)
    torch.testing.assert_close(program.module()(x), conv(x))
    seen = []
    plain = F.conv2d
    with depthwise.whole_kernels(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "conv2d", lambda *a: seen.append(a[1].shape[-1]) or plain(*a))
        conv(x)
    assert seen == [7]
