"""Importing the seed paper's published networks (radiogen model import --from lofar-diffusion).

The shared folder holds the authors' file formats at small width with random
weights, made with their code, plus their denoiser and 6-step sampler outputs
on fixed inputs: the imported models must reproduce those numbers.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from scipy import stats

from radiogen.cli import main
from radiogen.model import build_network, load_model
from radiogen.model.lofar_import import authors_model_config, import_lofar_diffusion, rename_authors_keys
from radiogen.sampler.heun import sample

#: Guidance strength of the reference outputs.
W = 0.75


def _files(root, name):
    return root / f"tiny_{name}" / f"parameters_tiny_{name}.pt", root / f"tiny_{name}" / f"config_tiny_{name}.json"


def _context(ref, name):
    cond = torch.tensor(ref[f"{name}_cond"])
    if name == "FIRST":  # radiogen's FIRST context is the one-hot class
        return torch.nn.functional.one_hot(cond.long().reshape(-1), 4).float()
    return cond


def _import(root, tmp_path, name, weights="ema"):
    parameters, config = _files(root, name)
    out = tmp_path / f"{name}_{weights}.pt"
    args = ["model", "import", "--from", "lofar-diffusion", "--parameters", str(parameters),
            "--config", str(config), "--out", str(out), "--weights", weights]
    if name == "LOFAR":  # the tiny model's transform is arbitrary: the reference context is already z
        args += ["--boxcox", "0.1", "0.0", "1.0"]
    assert main(args) == 0
    return load_model(out)


@pytest.fixture(scope="module")
def reference(lofar_diffusion_dir):
    return dict(np.load(lofar_diffusion_dir / "reference_tiny.npz"))


@pytest.mark.parametrize("name", ["LOFAR", "FIRST"])
def test_imported_ema_model_reproduces_the_authors_denoiser(lofar_diffusion_dir, reference, tmp_path, name):
    """Conditional, unconditional (context left out) and guided D(x; sigma) to <= 1e-5."""
    net, meta = _import(lofar_diffusion_dir, tmp_path, name)
    x, sigma = torch.tensor(reference["x"]), torch.tensor(reference["sigma"])
    with torch.no_grad():
        cond = net(x, sigma, _context(reference, name)).numpy()
        uncond = net(x, sigma, None).numpy()
    assert np.abs(cond - reference[f"{name}_D_ema_cond"]).max() <= 1e-5
    assert np.abs(uncond - reference[f"{name}_D_ema_uncond"]).max() <= 1e-5
    assert np.abs((1 + W) * cond - W * uncond - reference[f"{name}_D_guided_{W}"]).max() <= 1e-5
    # the context matters at this size, so the comparison above can tell cond from uncond
    assert np.abs(reference[f"{name}_D_ema_cond"] - reference[f"{name}_D_ema_uncond"]).max() > 1e-3
    assert meta["model_config"]["architecture"] == "lofar-diffusion"
    assert meta["dataset"] == ("first" if name == "FIRST" else "lotss")


@pytest.mark.parametrize("name", ["LOFAR", "FIRST"])
def test_raw_weights_are_the_model_entry(lofar_diffusion_dir, reference, tmp_path, name):
    """--weights raw loads the file's ``model`` entry and reproduces its D.

    The shared raw weights are the authors' initial ones, whose output
    convolution is zero (D = c_skip x), so the weights are also compared one by one.
    """
    net, _ = _import(lofar_diffusion_dir, tmp_path, name, weights="raw")
    x, sigma = torch.tensor(reference["x"]), torch.tensor(reference["sigma"])
    with torch.no_grad():
        raw = net(x, sigma, _context(reference, name)).numpy()
    assert np.abs(raw - reference[f"{name}_D_raw_cond"]).max() <= 1e-5
    assert np.abs(raw - reference[f"{name}_D_ema_cond"]).max() > 1e-2
    payload = torch.load(_files(lofar_diffusion_dir, name)[0], weights_only=True)
    theirs = rename_authors_keys({k.removeprefix("model."): v for k, v in payload["model"].items()})
    ours = net.state_dict()
    assert set(theirs) == set(ours)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("name", ["LOFAR", "FIRST"])
def test_radiogen_heun_reproduces_the_authors_guided_sampling(lofar_diffusion_dir, reference, tmp_path, name,
                                                             one_torch_thread):
    """6 Heun steps sigma 80 -> 0.002, rho 7, w = 0.75, no churn, from the same latents: <= 1e-4."""
    net, _ = _import(lofar_diffusion_dir, tmp_path, name)
    with torch.no_grad():
        images = sample(net, torch.tensor(reference["latents"]), context=_context(reference, name), guidance=W,
                        num_steps=6, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    assert np.abs(images.numpy() - reference[f"{name}_heun6_guided_{W}"]).max() <= 1e-4


def test_lotss_import_without_context_transform_stops_before_writing(lofar_diffusion_dir, tmp_path, capsys):
    parameters, config = _files(lofar_diffusion_dir, "LOFAR")
    out = tmp_path / "model.pt"
    code = main(["model", "import", "--from", "lofar-diffusion", "--parameters", str(parameters),
                 "--config", str(config), "--out", str(out)])
    assert code == 1
    assert not out.exists()


def test_lotss_transform_is_fitted_on_the_dataset_maxima(lofar_diffusion_dir, tmp_path):
    """--dataset: Box-Cox MLE lambda + population mean/std of the maxima, and their 100-bin histogram."""
    rng = np.random.default_rng(5)
    peaks = rng.lognormal(mean=-4.0, sigma=1.0, size=300)
    images = rng.uniform(0.0, 1.0, size=(300, 8, 8)) * peaks[:, None, None]
    images[np.arange(300), 3, 4] = peaks  # the maximum of each image is its peak
    dataset = tmp_path / "LOFAR_Dataset.h5"
    with h5py.File(dataset, "w") as h5:
        h5["images"] = images.astype(np.float32)
    parameters, config = _files(lofar_diffusion_dir, "LOFAR")
    out = tmp_path / "model.pt"
    import_lofar_diffusion(parameters=parameters, config=config, out=out, dataset=dataset)
    _, meta = load_model(out)
    maxima = images.astype(np.float32).max(axis=(1, 2)).astype(np.float64)
    transformed, lam = stats.boxcox(maxima)
    norm = meta["normalisation"]
    assert norm["boxcox_lambda"] == pytest.approx(lam, rel=1e-9)
    assert norm["boxcox_mean"] == pytest.approx(transformed.mean(), rel=1e-9)
    assert norm["boxcox_std"] == pytest.approx(transformed.std(), rel=1e-9)
    z = (transformed - transformed.mean()) / transformed.std()
    assert meta["context_histogram"]["counts"].sum() == 300
    assert meta["context_histogram"]["edges"][[0, -1]] == pytest.approx([z.min(), z.max()])
    assert meta["context_names"] == ["peak_flux"]


def test_full_width_random_model_imports(lofar_diffusion_dir, tmp_path, one_torch_thread):
    """The published width (128 / 32 / 32) with random weights in the authors' layout imports and runs.

    The parameter count of the rebuilt network equals the authors' stated
    30.85 M (30,850,369), which checks the shapes independently of radiogen.
    """
    _, tiny_config = _files(lofar_diffusion_dir, "LOFAR")
    config = json.loads(tiny_config.read_text())
    config.update(init_channels=128, norm_groups=32, attention_head_channels=32)
    config_path = tmp_path / "config_LOFAR_model.json"
    config_path.write_text(json.dumps(config))
    shapes = build_network(authors_model_config(config_path)[0]).state_dict()
    payload = torch.load(_files(lofar_diffusion_dir, "LOFAR")[0], weights_only=True)
    their_keys = [k.removeprefix("model.") for k in payload["model"]]
    generator = torch.Generator().manual_seed(3)
    ours = rename_authors_keys(dict.fromkeys(their_keys, None))
    weights = {k: torch.randn(shapes[ours_key].shape, generator=generator) * 0.02
               for k, ours_key in zip(their_keys, ours)}
    parameters = tmp_path / "parameters_LOFAR_model.pt"
    torch.save({"model": {"model." + k: v for k, v in weights.items()},
                "ema_model": {**{"module.model." + k: v for k, v in weights.items()}, "n_averaged": torch.tensor(7)},
                "optimizer": {}}, parameters)
    out = tmp_path / "model.pt"
    import_lofar_diffusion(parameters=parameters, config=config_path, out=out, boxcox=(0.1, -2.0, 0.5))
    net, meta = load_model(out)
    assert sum(p.numel() for p in net.parameters()) == 30_850_369
    assert torch.equal(net.state_dict()["unet.conv_in.weight"], weights["init_conv.weight"])
    with torch.no_grad():
        d = net(torch.randn(1, 1, 80, 80), torch.tensor([1.0]), torch.tensor([[0.5]]))
    assert d.shape == (1, 1, 80, 80) and torch.isfinite(d).all()
    assert meta["model_config"]["base_channels"] == 128


def test_imported_models_go_through_radiogen_sampling(lofar_diffusion_dir, tmp_path, one_torch_thread):
    """The sampling code (model check, conditioning draws, solver, post-processing) takes imported files."""
    from radiogen.sampler.generate import check_model_kind, generate_images, load_sampling_model

    rng = np.random.default_rng(1)
    dataset = tmp_path / "LOFAR_Dataset.h5"
    with h5py.File(dataset, "w") as h5:
        h5["images"] = rng.lognormal(-4.0, 1.0, size=(50, 8, 8)).astype(np.float32)
    for name, extra in (("LOFAR", {"dataset": dataset}), ("FIRST", {})):
        parameters, config = _files(lofar_diffusion_dir, name)
        out = tmp_path / f"{name}.pt"
        import_lofar_diffusion(parameters=parameters, config=config, out=out, **extra)
        net, meta = load_sampling_model(out)
        kind = "first" if name == "FIRST" else "lotss"
        check_model_kind(meta, str(out), dataset=kind, image_size=80)
        result = generate_images(net, meta, [0, 1], seed=4, guidance=0.75, sampler={"num_steps": 2},
                                 settings={"n_per_class": 1} if kind == "first" else {})
        assert result["images"].shape == (2, 80, 80)
        assert np.isfinite(result["images"]).all()
        assert result["images"].min() >= 0 and result["images"].max() <= 1


@pytest.mark.parametrize("dataset", ["first", "lotss"])
def test_lofar_diffusion_architecture_trains_from_scratch(tmp_path, dataset, one_torch_thread):
    """model.architecture: lofar-diffusion is a training choice too; the trainer draws its context drops."""
    from radiogen.model.data import write_synthetic_training_set
    from radiogen.model.train import _take_over_context_dropout, train

    data = write_synthetic_training_set(tmp_path / f"{dataset}.h5", n=24, size=16, dataset=dataset)
    model = {"architecture": "lofar-diffusion", "base_channels": 32, "channel_mults": [1, 1],
             "attention_levels": 1, "norm_groups": 8, "attention_head_channels": 8, "enc_blocks": 1,
             "dec_blocks": 2}
    settings = {"lr": 1e-3, "ema_decay": 0.9, "channels_last": False, "log_every": 2, "val_sigmas": [0.5],
                "val_max_images": 4, dataset: {"batch_size": 4, "steps": 3, "val_every": 3,
                                               "checkpoint_every": 100}}
    out = tmp_path / "model.pt"
    train(data_path=data, out_path=out, seed=2, device="cpu", train_settings=settings, model_settings=model)
    net, meta = load_model(out)
    assert meta["model_config"]["architecture"] == "lofar-diffusion"
    assert meta["model_config"]["context_kind"] == ("labels" if dataset == "first" else "values")
    assert _take_over_context_dropout(build_network(meta["model_config"])) == pytest.approx(0.1)
    assert meta["history"]["val_step"] == [0, 3] and np.isfinite(meta["history"]["val_ema"]).all()
    x = torch.randn(2, 1, 16, 16)
    context = torch.eye(4)[:2] if dataset == "first" else torch.zeros(2, 1)
    with torch.no_grad():
        assert net(x, 1.0, context).shape == x.shape
