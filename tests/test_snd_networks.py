"""SND target and predictor networks layer by layer against snd_reference.md §2.4-2.6: shapes, activations, orthogonal
gains, zero biases, the SND-STD local feature map and classifiers, and a target that is trained (unlike RND's)."""

import math

import pytest
import torch
import torch.nn as nn
from conftest import load_script
from test_networks import describe as describe_layers

SQRT2 = math.sqrt(2)

SND_V_ENCODER = [
    ("conv", 1, 16, 3, 2, 1),
    "ELU",
    ("conv", 16, 32, 3, 2, 1),
    "ELU",
    ("conv", 32, 64, 3, 2, 1),
    "ELU",
    ("conv", 64, 64, 3, 1, 1),
    "ELU",
    "Flatten",
    ("linear", 9216, 512),  # 64 x 12 x 12, no output activation
]
ST_DIM_CNN = [
    ("conv", 1, 32, 3, 2, 1),
    "ReLU",
    ("conv", 32, 64, 3, 2, 1),
    "ReLU",
    ("conv", 64, 64, 3, 2, 1),
    "ReLU",  # the local feature map "f5": 64 x 12 x 12
    ("conv", 64, 128, 3, 1, 1),
    "ReLU",
    "Flatten",
    ("linear", 18432, 512),  # 128 x 12 x 12, no output activation
]
PREDICTOR_HEAD = ["ELU", ("linear", 512, 512), "ELU", ("linear", 512, 512)]


def leaves(module: nn.Module) -> list:
    """The module's layers in registration order, containers flattened."""
    return [m for m in module.modules() if not list(m.children())]


def describe(module: nn.Module) -> list:
    """Each layer, containers flattened, as test_networks describes them."""
    return describe_layers(leaves(module))


def weighted(module: nn.Module) -> list:
    return [m for m in leaves(module) if isinstance(m, (nn.Conv2d, nn.Linear))]


def assert_orthogonal(weight: torch.Tensor, gain: float):
    """W (flattened to rows x fan-in) has orthogonal rows (or columns) of norm `gain`."""
    w = weight.detach().reshape(weight.shape[0], -1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    torch.testing.assert_close(gram, gain**2 * torch.eye(gram.shape[0]), atol=1e-5 + 1e-4 * gain**2, rtol=0)


def assert_layer_inits(layers: list, gains: list):
    assert len(layers) == len(gains)
    for layer, gain in zip(layers, gains):
        assert_orthogonal(layer.weight, gain)
        assert torch.all(layer.bias == 0)


@pytest.fixture(scope="module")
def snd_v():
    torch.manual_seed(0)
    module = load_script("ppo_snd_v_atari.py")
    return module, module.SNDModel()


@pytest.fixture(scope="module")
def snd_std():
    torch.manual_seed(0)
    module = load_script("ppo_snd_std_atari.py")
    return module, module.SNDModel()


@pytest.fixture(scope="module")
def snd_vic():
    torch.manual_seed(0)
    module = load_script("ppo_snd_vic_atari.py")
    return module, module.SNDModel()


@pytest.fixture(params=["snd_v", "snd_std", "snd_vic"])
def any_snd(request):
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------------------------------------------- SND-V (§2.4)


def test_snd_v_layers_match_reference(snd_v):
    _, model = snd_v
    assert describe(model.target) == SND_V_ENCODER
    assert describe(model.predictor) == SND_V_ENCODER + PREDICTOR_HEAD


def test_snd_v_init_gains_and_zero_biases(snd_v):
    _, model = snd_v
    assert_layer_inits(weighted(model.target), [SQRT2] * 5)
    assert_layer_inits(weighted(model.predictor), [SQRT2] * 7)


# ---------------------------------------------------------------------------------------------------- SND-STD (§2.5)


def test_snd_std_layers_match_reference(snd_std):
    _, model = snd_std
    # the target module holds the ST-DIM encoder, then its two classifiers
    assert describe(model.target) == ST_DIM_CNN + [("linear", 512, 64), ("linear", 64, 64)]
    assert describe(model.predictor) == ST_DIM_CNN + PREDICTOR_HEAD
    assert (model.target.classifier1.in_features, model.target.classifier1.out_features) == (512, 64)
    assert (model.target.classifier2.in_features, model.target.classifier2.out_features) == (64, 64)


def test_snd_std_init_gains_and_zero_biases(snd_std):
    _, model = snd_std
    encoder = [m for m in weighted(model.target) if m not in (model.target.classifier1, model.target.classifier2)]
    assert_layer_inits(encoder, [0.5] * 5)
    assert_layer_inits(weighted(model.predictor), [0.5] * 7)


def test_snd_std_classifiers_keep_pytorch_default_init(snd_std):
    """nn.Linear's default: weights and bias uniform in +-1/sqrt(fan_in), so a non-zero bias and weights within that
    bound, spread over it (an orthogonal 0.5 init would have a zero bias and entries past the bound)."""
    _, model = snd_std
    for classifier in (model.target.classifier1, model.target.classifier2):
        bound = 1 / math.sqrt(classifier.in_features)
        for tensor in (classifier.weight, classifier.bias):
            assert tensor.abs().max() <= bound
            assert tensor.abs().max() > 0.9 * bound
        assert classifier.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(-b, b)
        assert torch.all(classifier.bias != 0)


def test_snd_std_target_returns_global_and_local_features(snd_std):
    """model.target(x) gives the global features (N, 512) and, per position p = 12 * row + column, the 64 channels of
    the third conv's ReLU output (N, 144, 64); SNDModel's forward uses the global ones as the target output."""
    _, model = snd_std
    torch.manual_seed(1)
    x = torch.rand(3, 1, 96, 96)
    with torch.no_grad():
        global_features, local_features = model.target(x)
        assert global_features.shape == (3, 512)
        assert local_features.shape == (3, 144, 64)
        layers = leaves(model.target)
        feature_map = x
        for layer in layers[:6]:  # conv, ReLU, conv, ReLU, conv, ReLU
            feature_map = layer(feature_map)
        assert feature_map.shape == (3, 64, 12, 12)
        torch.testing.assert_close(local_features[1, 12 * 5 + 7], feature_map[1, :, 5, 7])
        torch.testing.assert_close(local_features, feature_map.flatten(2).transpose(1, 2))
        assert torch.all(local_features >= 0) and torch.any(local_features == 0)  # after the ReLU
        hidden = feature_map
        for layer in layers[6:10]:  # conv, ReLU, Flatten, Linear
            hidden = layer(hidden)
        torch.testing.assert_close(global_features, hidden)
        target_out, predictor_out = model(x)
        torch.testing.assert_close(target_out, global_features)
        torch.testing.assert_close(predictor_out, model.predictor(x))
        assert model.target.classifier1(global_features).shape == (3, 64)
        assert model.target.classifier2(local_features).shape == (3, 144, 64)


# ---------------------------------------------------------------------------------------------------- SND-VIC (§2.6)


def test_snd_vic_layers_match_reference(snd_vic):
    _, model = snd_vic
    assert describe(model.target) == ST_DIM_CNN
    assert describe(model.predictor) == ST_DIM_CNN + PREDICTOR_HEAD


def test_snd_vic_init_gains_and_zero_biases(snd_vic):
    """Target orth 0.5 (the ST-DIM encoder), predictor orth sqrt(2)."""
    _, model = snd_vic
    assert_layer_inits(weighted(model.target), [0.5] * 5)
    assert_layer_inits(weighted(model.predictor), [SQRT2] * 7)


def test_snd_vic_predictor_last_conv_has_128_channels(snd_vic):
    _, model = snd_vic
    convs = [m for m in leaves(model.predictor) if isinstance(m, nn.Conv2d)]
    assert convs[-1].out_channels == 128
    flatten_at = [type(m) for m in model.predictor].index(nn.Flatten)
    with torch.no_grad():
        assert model.predictor[: flatten_at + 1](torch.zeros(2, 1, 96, 96)).shape == (2, 18432)


# ---------------------------------------------------------------------------------------------------- all three


def test_target_and_predictor_output_512_features(any_snd):
    module, model = any_snd
    frames = torch.randint(0, 256, (5, 96, 96), dtype=torch.uint8)
    x = module.snd_input(frames)
    assert x.shape == (5, 1, 96, 96)
    with torch.no_grad():
        target_features, predicted_features = model(x)
        assert target_features.shape == predicted_features.shape == (5, 512)
        torch.testing.assert_close(predicted_features, model.predictor(x))
        target_out = model.target(x)
        torch.testing.assert_close(target_features, target_out[0] if isinstance(target_out, tuple) else target_out)
        assert not torch.equal(target_features, predicted_features)  # two different networks


def test_every_motivation_parameter_is_trained(any_snd):
    """Unlike RND's frozen target, the SND target (and SND-STD's classifiers) require gradients, and a loss on the
    target output of the model's forward (what the SND-V and SND-VIC loops train on) reaches every target parameter;
    SND-STD's classifiers are reached through model.target(x), as its ST-DIM loss reads them."""
    _, model = any_snd
    assert len(list(model.target.parameters())) > 0
    assert all(p.requires_grad for p in model.parameters())
    torch.manual_seed(2)
    x = torch.rand(4, 1, 96, 96)
    loss = model(x)[0].pow(2).mean()
    if hasattr(model.target, "classifier1"):
        global_features, local_features = model.target(x)
        loss = loss + model.target.classifier1(global_features).pow(2).mean() + model.target.classifier2(local_features).mean()
    try:
        loss.backward()
        for name, parameter in model.target.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    finally:
        model.zero_grad(set_to_none=True)
