"""The U-Net's dtypes: bf16 activations under autocast, float32 norms and attention, fp32 unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from radiogen.model import build_network, model_config_from
from radiogen.model.networks import Block, EfficientAttention, GroupNorm

TINY = {"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(context_dim: int = 4):
    cfg = model_config_from(TINY, image_channels=1, image_size=(16, 16), context_dim=context_dim)
    torch.manual_seed(0)
    net = build_network(cfg)
    # The zero-initialised last convs would hide every block's contribution.
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d) and not module.weight.abs().sum():
            torch.nn.init.normal_(module.weight, std=0.05)
    return net


def _inputs(batch: int = 3):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 1, 16, 16, generator=gen)
    sigma = torch.exp(torch.randn(batch, generator=gen))
    context = torch.eye(4)[:batch]
    return x, sigma, context


class _PreviousAttention(EfficientAttention):
    """The attention as it was computed before autocast was switched off inside it."""

    def forward(self, x):
        b, _, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, self.head_channels, -1).unbind(1)
        q = q.float().softmax(dim=-2)
        k = k.float().softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v.float())
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        out = out.reshape(b, self.heads * self.head_channels, height, width).to(x.dtype)
        return x + self.out_norm(self.proj(out))


def _with_previous_layers(net):
    """A copy of ``net`` with torch's own GroupNorm and the previous attention forward."""
    ref = copy.deepcopy(net)
    for module in ref.modules():
        if type(module) is GroupNorm:
            module.__class__ = torch.nn.GroupNorm
        elif type(module) is EfficientAttention:
            module.__class__ = _PreviousAttention
    assert not any(type(m) in (GroupNorm, EfficientAttention) for m in ref.modules())
    return ref


@pytest.mark.parametrize("channels_last", [False, True])
def test_fp32_forward_and_gradients_are_bit_identical_to_the_previous_layers(channels_last):
    net = _net()
    ref = _with_previous_layers(net)
    x, sigma, context = _inputs()
    if channels_last:
        for m in (net, ref):
            m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(5)  # the same dropout draws in both (training mode)
    out = net(x, sigma, context)
    torch.manual_seed(5)
    expected = ref(x, sigma, context)
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    out.square().mean().backward()
    expected.square().mean().backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_group_norm_matches_torch_bit_for_bit_in_fp32():
    torch.manual_seed(0)
    ours = GroupNorm(4, 16)
    torch.nn.init.normal_(ours.weight)
    torch.nn.init.normal_(ours.bias)
    theirs = torch.nn.GroupNorm(4, 16)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 5, 7) * 3 + 1
    assert torch.equal(ours(x), theirs(x))


class _OpDtypes(TorchDispatchMode):
    """Records (op, dtypes of its tensor arguments, inside attention?) as autocast dispatched them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple, bool]] = []
        self.in_attention = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = tuple(a.dtype for a in args if isinstance(a, torch.Tensor))
        self.calls.append((func.overloadpacket.__name__, dtypes, self.in_attention))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible")),
])
def test_bf16_autocast_keeps_the_stream_in_bf16_and_norms_and_attention_in_fp32(device):
    """On CUDA autocast runs group_norm in float32 and returns float32; on the CPU it keeps bf16:
    the layers give the same dtypes on both."""
    net = _net().eval().to(device)
    x, sigma, context = (t.to(device) for t in _inputs())
    seen: dict[str, list] = {"norm": [], "block": [], "attention": []}
    recorder = _OpDtypes()

    def enter(_module, _args):
        recorder.in_attention = True

    def leave(module, args, out):
        recorder.in_attention = False
        seen["attention"].append((args[0].dtype, out.dtype))

    hooks = []
    for module in net.modules():
        if isinstance(module, GroupNorm):
            hooks.append(module.register_forward_hook(
                lambda m, args, out: seen["norm"].append((args[0].dtype, out.dtype))))
        elif isinstance(module, Block):
            hooks.append(module.register_forward_hook(lambda m, args, out: seen["block"].append(out.dtype)))
        elif isinstance(module, EfficientAttention):
            hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16), recorder:
        out = net(x, sigma, context)
    for hook in hooks:
        hook.remove()

    assert out.dtype == torch.float32  # the preconditioning returns x's dtype
    # every norm: bf16 in, bf16 out; every block and attention output bf16 (the residual stream)
    assert len(seen["norm"]) == sum(isinstance(m, GroupNorm) for m in net.modules())
    assert set(seen["norm"]) == {(torch.bfloat16, torch.bfloat16)}
    assert seen["block"] and set(seen["block"]) == {torch.bfloat16}
    assert seen["attention"] and set(seen["attention"]) == {(torch.bfloat16, torch.bfloat16)}
    # the normalisation itself ran in float32 ...
    norms = [dtypes for op, dtypes, _ in recorder.calls if op == "native_group_norm"]
    assert len(norms) == len(seen["norm"]) and all(set(d) == {torch.float32} for d in norms)
    # ... and so did the attention's products, while the convolutions ran in bf16
    products = [dtypes for op, dtypes, inside in recorder.calls if inside and op in ("bmm", "mm", "matmul")]
    assert products and all(set(d) == {torch.float32} for d in products), products
    convs = [dtypes for op, dtypes, _ in recorder.calls if op == "convolution"]
    assert convs and all(d[0] == torch.bfloat16 for d in convs)
