"""The EDM denoiser: U-Net shapes, parameter count, preconditioning, null token, EMA, model file."""

from __future__ import annotations

import math

import pytest
import torch

from radiogen.errors import ConfigError, InputFileError
from radiogen.model import MODEL_DEFAULTS, build_network, load_model, model_config_from, save_model
from radiogen.model.ema import EMA
from radiogen.model.loss import loss_weight
from radiogen.model.networks import EfficientAttention
from radiogen.model.precond import c_in, c_noise, c_out, c_skip

TINY = {"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8}


# torch on one thread (conftest.py): tiny networks, and two test workers share 2 cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(size=(16, 16), channels=1, context_dim=0, **over):
    cfg = model_config_from({**TINY, **over}, image_channels=channels, image_size=size, context_dim=context_dim)
    torch.manual_seed(0)
    return build_network(cfg), cfg


def _randomise_zero_init(net):
    # Last convs start at zero (blocks = identity); give them weights so the
    # conditioning becomes visible in the output.
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d) and not module.weight.abs().sum():
            torch.nn.init.normal_(module.weight, std=0.05)


@pytest.mark.parametrize(
    "size, channels, context_dim",
    [((16, 16), 1, 0), ((20, 12), 3, 1), ((8, 24), 2, 4), ((80, 80), 1, 4)],
)
def test_output_shape_for_sizes_and_channels(size, channels, context_dim):
    net, _ = _net(size, channels, context_dim)
    x = torch.randn(2, channels, *size)
    ctx = torch.randn(2, context_dim) if context_dim else None
    out = net(x, torch.tensor([0.1, 3.0]), ctx)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def _n_parameters(net) -> int:
    return sum(p.numel() for p in net.parameters())


def _emb_additions(net) -> int:
    """What radiogen's embedding has beyond the authors' network: the learned null token and
    the linear layer after the sinusoidal noise encoding (emb + emb^2 + emb parameters)."""
    embed = net.unet.embed
    return embed.null_token.numel() + sum(p.numel() for p in embed.noise.linear.parameters())


def test_paper_configuration_parameter_count():
    cfg = model_config_from({}, image_channels=1, image_size=[80, 80], context_dim=1)
    assert cfg["base_channels"] == 128 and cfg["channel_mults"] == [1, 2, 2]
    net = build_network(cfg)
    n = _n_parameters(net)
    # the authors' released network has 30.85 M parameters
    assert round((n - _emb_additions(net)) / 1e4) == 3085
    assert _emb_additions(net) == 512 + 512 * 512 + 512
    # The 3x3 attention convolutions of the paper text: 8 more weights per input and output
    # channel pair of each attention block's QKV and output convolutions (+5.8 M).
    cfg3 = model_config_from({"attention_kernel_size": 3}, image_channels=1, image_size=[80, 80], context_dim=1)
    attention = [m for m in net.modules() if isinstance(m, EfficientAttention)]
    extra = sum(8 * (m.qkv.weight.numel() + m.proj.weight.numel()) for m in attention)
    assert _n_parameters(build_network(cfg3)) - n == extra
    assert 5.7e6 < extra < 5.9e6


def test_parameter_count_against_the_authors_network_file(shared_data):
    """The authors' code saved a small-width network (random weights, ../shared); radiogen's
    network at that width has exactly their parameters plus the two embedding additions."""
    import json

    folder = shared_data / "lofar_diffusion" / "tiny_LOFAR"
    theirs = torch.load(folder / "parameters_tiny_LOFAR.pt", map_location="cpu", weights_only=False)["model"]
    config = json.loads((folder / "config_tiny_LOFAR.json").read_text())
    cfg = model_config_from(
        {"base_channels": config["init_channels"], "channel_mults": config["channel_mults"],
         "norm_groups": config["norm_groups"], "attention_levels": config["attention_levels"],
         "attention_heads": config["attention_heads"],
         "attention_head_channels": config["attention_head_channels"]},
        image_channels=config["image_channels"], image_size=[config["image_size"]] * 2,
        context_dim=config["context_dim"])
    net = build_network(cfg)
    n_theirs = sum(v.numel() for v in theirs.values() if v.is_floating_point())
    assert _n_parameters(net) - _emb_additions(net) == n_theirs


def test_architecture_layout_matches_paper():
    net, _ = _net((16, 16))
    unet = net.unet
    attn_enc = [len(stage) == 2 for stage in unet.encoder]
    # level 0: 2 blocks + down (no attention); level 1: 2 blocks+attn, down; level 2: 2 blocks+attn
    assert attn_enc == [False, False, False, True, True, False, True, True]
    assert isinstance(unet.middle[1], EfficientAttention)
    ups = [s.is_upsample for s in unet.decoder]
    assert sum(ups) == 2 and len(unet.decoder) == 3 * 3 + 2


def test_image_size_the_network_cannot_take():
    with pytest.raises(ConfigError, match="multiples of 4"):
        _net((18, 16))
    net, _ = _net((16, 16))
    with pytest.raises(ConfigError, match="multiples of 4"):
        net(torch.randn(1, 1, 14, 16), 1.0)


def test_norm_groups_must_divide_channels():
    with pytest.raises(ConfigError, match="norm_groups"):
        _net((16, 16), norm_groups=3)


def test_preconditioning_formulas():
    sd = 0.5
    for s in (0.002, 0.1, 0.5, 2.0, 80.0):
        sigma = torch.tensor(s, dtype=torch.float64)
        assert float(c_skip(sigma, sd)) == pytest.approx(sd**2 / (s**2 + sd**2))
        assert float(c_out(sigma, sd)) == pytest.approx(s * sd / math.sqrt(s**2 + sd**2))
        assert float(c_in(sigma, sd)) == pytest.approx(1 / math.sqrt(s**2 + sd**2))
        assert float(c_noise(sigma)) == pytest.approx(math.log(s) / 4)
        # lambda = 1 / c_out^2 (paper Sect. 4.2)
        assert float(loss_weight(sigma, sd)) == pytest.approx(1 / float(c_out(sigma, sd)) ** 2)
        # unit variance of the effective training target (Karras et al. 2022, Eq. 8 with the Table 1 c's)
        var_target = (1 / float(c_out(sigma, sd)) ** 2) * (
            (1 - float(c_skip(sigma, sd))) ** 2 * sd**2 + float(c_skip(sigma, sd)) ** 2 * s**2
        )
        assert var_target == pytest.approx(1.0)


def test_denoiser_combines_skip_and_network_output():
    net, _ = _net((16, 16))
    net.eval()
    x = torch.randn(3, 1, 16, 16)
    sigma = torch.tensor([0.05, 0.5, 5.0])
    s = sigma[:, None, None, None]
    _randomise_zero_init(net)
    f = net.unet(c_in(s) * x, c_noise(sigma))
    expected = c_skip(s) * x + c_out(s) * f
    torch.testing.assert_close(net(x, sigma), expected)
    # scalar sigma broadcasts to the batch
    torch.testing.assert_close(net(x, 0.5), net(x, torch.full((3,), 0.5)))


def test_context_changes_output_and_null_token_is_used():
    net, _ = _net((16, 16), context_dim=4)
    _randomise_zero_init(net)
    torch.nn.init.normal_(net.unet.embed.null_token)
    net.eval()
    x = torch.randn(2, 1, 16, 16)
    ctx = torch.eye(4)[:2]
    cond = net(x, 1.0, ctx)
    dropped_all = net(x, 1.0, None)
    masked = net(x, 1.0, ctx, torch.tensor([True, False]))
    assert not torch.allclose(cond, dropped_all)
    torch.testing.assert_close(masked[0], dropped_all[0])
    torch.testing.assert_close(masked[1], cond[1])
    # the null token is the only thing the dropped path sees: changing it changes D
    with torch.no_grad():
        net.unet.embed.null_token.add_(1.0)
    assert not torch.allclose(net(x, 1.0, None), dropped_all)
    torch.testing.assert_close(net(x, 1.0, ctx), cond)


def test_context_dropout_reaches_null_token_in_training():
    net, _ = _net((16, 16), context_dim=4, context_dropout=0.5, dropout=0.0)
    emb = net.unet.embed
    torch.nn.init.normal_(emb.null_token)
    c_noise_ = torch.zeros(4000)
    ctx = torch.eye(4)[torch.arange(4000) % 4]
    null = emb(c_noise_, None)
    emb.train()
    torch.manual_seed(1)
    out = emb(c_noise_, ctx)
    is_null = torch.isclose(out, null, atol=1e-6).all(dim=1)
    assert 0.45 < is_null.float().mean() < 0.55
    emb.eval()
    assert not torch.isclose(emb(c_noise_, ctx), null, atol=1e-6).all(dim=1).any()
    # the null token receives gradient through dropped samples
    emb.train()
    emb.zero_grad()
    emb(c_noise_[:64], ctx[:64]).sum().backward()
    assert emb.null_token.grad is not None and emb.null_token.grad.abs().sum() > 0


def test_efficient_attention_matches_definition():
    torch.manual_seed(0)
    att = EfficientAttention(8, heads=2, head_channels=4, norm_groups=4)
    x = torch.randn(2, 8, 6, 6)
    qkv = att.qkv(att.norm(x)).reshape(2, 3, 2, 4, 36)
    out_heads = []
    for h in range(2):
        q, k, v = qkv[:, 0, h], qkv[:, 1, h], qkv[:, 2, h]  # (B, c, n)
        q = torch.softmax(q, dim=1)  # over channels
        k = torch.softmax(k, dim=2)  # over positions
        a = torch.einsum("bcn,bdn->bcd", v, k) @ q  # V K^T Q -> (B, c, n), i.e. A^T of A = Q (K^T V)
        out_heads.append(a)
    a = torch.cat(out_heads, dim=1).reshape(2, 8, 6, 6)
    torch.testing.assert_close(att(x), x + att.out_norm(att.proj(a)), rtol=1e-5, atol=1e-5)


def test_ema_update():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    w0 = model.weight.detach().clone()
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
    # theta_ema_t = 0.9 theta_ema_{t-1} + 0.1 theta_t with theta_t = w0 + t
    expected = w0.clone()
    for t in (1, 2, 3):
        expected = 0.9 * expected + 0.1 * (w0 + t)
    torch.testing.assert_close(ema.module.weight, expected)
    assert not ema.module.weight.requires_grad


def test_save_and_load_roundtrip(tmp_path):
    net, cfg = _net((16, 16), context_dim=1)
    path = tmp_path / "model.pt"
    save_model(
        path, model_config=cfg, state_dict=net.state_dict(), dataset="lotss", train_config={"steps": 1}, step=1,
        normalisation={"boxcox_lambda": 0.1, "boxcox_mean": 1.0, "boxcox_std": 2.0},
        context_histogram={"edges": torch.linspace(0, 1, 101).numpy(), "counts": [1] * 100},
    )
    loaded, meta = load_model(path, device="cpu")
    assert not loaded.training
    assert meta["dataset"] == "lotss" and meta["image_size"] == [16, 16] and meta["channels"] == 1
    assert meta["normalisation"]["boxcox_lambda"] == pytest.approx(0.1)
    assert meta["context_histogram"]["counts"].shape == (100,)
    assert meta["context_histogram"]["edges"].shape == (101,)
    net.eval()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(loaded(x, 0.3, torch.zeros(2, 1)), net(x, 0.3, torch.zeros(2, 1)))
    assert set(MODEL_DEFAULTS) <= set(meta["model_config"])


def test_load_model_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InputFileError, match="bad.pt"):
        load_model(bad)
    torch.save({"state_dict": {}}, tmp_path / "partial.pt")
    with pytest.raises(InputFileError, match="lacks key"):
        load_model(tmp_path / "partial.pt")


def test_unknown_model_setting_is_rejected():
    with pytest.raises(ConfigError, match="base_chanels"):
        model_config_from({"base_chanels": 8}, image_channels=1, image_size=[16, 16], context_dim=0)


def test_ema_rampup_half_life_grows_with_training():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.999, rampup_ratio=0.05)
    # half-life r t steps: beta_t ** (r t) == 0.5 until the cap is reached
    for step in (20, 100, 400):
        assert ema.decay_at(step) ** (0.05 * step) == pytest.approx(0.5)
    assert ema.decay_at(10**6) == 0.999
    assert ema.decay_at(1) < 1e-5  # the first update copies the weights almost exactly
    with pytest.raises(ValueError, match="step count"):
        ema.update(model)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=100)
    beta = ema.decay_at(100)
    torch.testing.assert_close(ema.module.weight, beta * w0 + (1 - beta) * (w0 + 1.0))
    with pytest.raises(ValueError, match="ramp-up"):
        EMA(model, decay=0.9, rampup_ratio=0.0)
