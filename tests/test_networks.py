"""Networks layer by layer against snd_reference.md §2.1 and §2.3: shapes, activations, orthogonal gains, zero biases."""

import math

import pytest
import torch
import torch.nn as nn

SQRT2 = math.sqrt(2)


def describe(sequential: nn.Sequential) -> list:
    """Each layer as a tuple: ("conv", in, out, kernel, stride, padding), ("linear", in, out) or the activation name."""
    layers = []
    for layer in sequential:
        if isinstance(layer, nn.Conv2d):
            layers.append(
                ("conv", layer.in_channels, layer.out_channels, layer.kernel_size[0], layer.stride[0], layer.padding[0])
            )
        elif isinstance(layer, nn.Linear):
            layers.append(("linear", layer.in_features, layer.out_features))
        else:
            layers.append(type(layer).__name__)
    return layers


def assert_orthogonal(weight: torch.Tensor, gain: float):
    """W (flattened to rows x fan-in) has orthogonal rows (or columns) of norm `gain`."""
    w = weight.detach().reshape(weight.shape[0], -1).double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    torch.testing.assert_close(
        gram, gain**2 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5 + 1e-4 * gain**2, rtol=0
    )


def assert_layer_inits(sequential: nn.Sequential, gains: list):
    layers = [m for m in sequential if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == len(gains)
    for layer, gain in zip(layers, gains):
        assert_orthogonal(layer.weight, gain)
        assert torch.all(layer.bias == 0)


def test_agent_layers_match_reference(rnd):
    agent = rnd.Agent(num_actions=18)
    assert describe(agent.network) == [
        ("conv", 4, 32, 3, 2, 1),
        "ReLU",
        ("conv", 32, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 128, 3, 1, 1),
        "ReLU",
        "Flatten",
        ("linear", 18432, 512),  # no activation after the trunk
    ]
    assert describe(agent.actor) == ["ReLU", ("linear", 512, 512), "ReLU", ("linear", 512, 18)]
    assert describe(agent.critic) == [("linear", 512, 512), "ReLU"]  # no leading ReLU (§9 item 14)
    assert describe(nn.Sequential(agent.critic_ext, agent.critic_int)) == [("linear", 512, 1), ("linear", 512, 1)]


def test_agent_init_gains_and_zero_biases(rnd):
    torch.manual_seed(0)
    agent = rnd.Agent(num_actions=18)
    assert_layer_inits(agent.network, [SQRT2] * 5)
    assert_layer_inits(agent.actor, [0.01, 0.01])
    assert_layer_inits(agent.critic, [0.1])
    assert_layer_inits(nn.Sequential(agent.critic_ext, agent.critic_int), [0.01, 0.01])


def test_agent_output_shapes_from_uint8(rnd):
    agent = rnd.Agent(num_actions=18)
    obs = torch.randint(0, 256, (5, 4, 96, 96), dtype=torch.uint8)
    action, logprob, entropy, ext_value, int_value = agent.get_action_and_value(obs)
    assert action.shape == logprob.shape == entropy.shape == ext_value.shape == int_value.shape == (5,)
    assert action.dtype == torch.long and ((0 <= action) & (action < 18)).all()
    ext_again, int_again = agent.get_value(obs)
    torch.testing.assert_close(ext_again, ext_value)
    torch.testing.assert_close(int_again, int_value)
    _, given_logprob, _, _, _ = agent.get_action_and_value(obs, action)
    torch.testing.assert_close(given_logprob, logprob)


def test_agent_scales_pixels_inside(rnd):
    """uint8 frames and the same frames as float pixel values give the same outputs: the /255 is in the network."""
    agent = rnd.Agent(num_actions=18)
    obs = torch.randint(0, 256, (3, 4, 96, 96), dtype=torch.uint8)
    torch.testing.assert_close(agent.get_value(obs), agent.get_value(obs.float()))
    hidden = agent.network(obs.float() / 255.0)
    torch.testing.assert_close(agent.get_value(obs)[0], agent.critic_ext(agent.critic(hidden)).squeeze(1))


def test_rnd_layers_match_reference(rnd):
    model = rnd.RNDModel()
    encoder = [
        ("conv", 1, 32, 8, 4, 2),
        "ELU",
        ("conv", 32, 64, 3, 2, 1),
        "ELU",
        ("conv", 64, 64, 3, 1, 1),
        "ELU",
        "Flatten",
        ("linear", 9216, 512),
    ]
    assert describe(model.target) == encoder
    assert describe(model.predictor) == encoder + ["ELU", ("linear", 512, 512), "ELU", ("linear", 512, 512)]


def test_rnd_init_gains_shapes_and_frozen_target(rnd):
    torch.manual_seed(0)
    model = rnd.RNDModel()
    assert_layer_inits(model.target, [SQRT2] * 4)
    assert_layer_inits(model.predictor, [SQRT2] * 6)
    assert not any(p.requires_grad for p in model.target.parameters())
    assert all(p.requires_grad for p in model.predictor.parameters())
    x = rnd.rnd_input(torch.randint(0, 256, (7, 96, 96), dtype=torch.uint8), torch.zeros(96, 96, dtype=torch.float64))
    assert x.shape == (7, 1, 96, 96)
    target_features, predicted_features = model(x)
    assert target_features.shape == predicted_features.shape == (7, 512)


def test_predictor_step_leaves_target_unchanged(rnd):
    torch.manual_seed(0)
    model = rnd.RNDModel()
    optimizer = torch.optim.Adam(model.predictor.parameters(), lr=1e-3)
    target_before = [p.clone() for p in model.target.parameters()]
    predictor_before = [p.clone() for p in model.predictor.parameters()]
    x = torch.rand(8, 1, 96, 96)
    target_features, predicted_features = model(x)
    loss = rnd.masked_mse(predicted_features, target_features, keep_proportion=0.25)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(target_before, model.target.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(predictor_before, model.predictor.parameters()))


@pytest.mark.parametrize("num_actions", [4, 18])
def test_action_count_follows_the_game(rnd, num_actions):
    agent = rnd.Agent(num_actions)
    logits = agent.actor(agent.network(torch.zeros(2, 4, 96, 96)))
    assert logits.shape == (2, num_actions)
