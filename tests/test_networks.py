"""Every network of the scripts layer by layer, as the authors' code builds them (github.com/Iskandor/SND: the agent
PPOAtariMotivationNetwork / PPOProcgenMotivationNetwork, the motivation models RNDModelAtari, SNDVModelAtari,
STDModelAtari, VICRegModelAtari and their Procgen twins): shapes, activations, orthogonal gains, zero biases, RND's
frozen target, the SND targets that are trained, SND-STD's local feature map and classifiers with PyTorch's default
init, and the output shapes from uint8 input."""

import math

import gymnasium as gym
import pytest
import torch
import torch.nn as nn
from conftest import (
    ATARI,
    BASELINE,
    PROCGEN_BASELINE,
    PROCGEN_METHODS,
    RND,
    SND_ATARI,
    SND_STD,
    SND_V,
    SND_VIC,
    SQRT2,
    assert_layer_inits,
    describe,
    load_script,
    short,
)

MOTIVATION_ATARI = (RND, *SND_ATARI)  # the Atari scripts with a motivation model
PREDICTOR_HEAD = ["ELU", ("linear", 512, 512), "ELU", ("linear", 512, 512)]


def atari_trunk() -> list:
    return [
        ("conv", 4, 32, 3, 2, 1),
        "ReLU",
        ("conv", 32, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 128, 3, 1, 1),
        "ReLU",
        "Flatten",
        ("linear", 128 * 12 * 12, 512),  # no activation after the trunk
    ]


def procgen_trunk() -> list:
    return [
        ("conv", 6, 32, 3, 2, 1),
        "ReLU",
        ("conv", 32, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 64, 3, 1, 1),
        "ReLU",
        "Flatten",
        ("linear", 64 * 8 * 8, 512),
    ]


def rnd_encoder(channels: int, side: int) -> list:
    """RNDModelAtari / RNDModelProcgen: three ELU convolutions and a linear layer to 512."""
    return [
        ("conv", channels, 32, 8, 4, 2),
        "ELU",
        ("conv", 32, 64, 3, 2, 1),
        "ELU",
        ("conv", 64, 64, 3, 1, 1),
        "ELU",
        "Flatten",
        ("linear", 64 * (side // 8) ** 2, 512),
    ]


def snd_v_encoder(channels: int, side: int) -> list:
    """SNDVModelAtari / SNDVModelProcgen: four ELU 3x3 convolutions and a linear layer to 512, no output activation."""
    return [
        ("conv", channels, 16, 3, 2, 1),
        "ELU",
        ("conv", 16, 32, 3, 2, 1),
        "ELU",
        ("conv", 32, 64, 3, 2, 1),
        "ELU",
        ("conv", 64, 64, 3, 1, 1),
        "ELU",
        "Flatten",
        ("linear", 64 * (side // 8) ** 2, 512),
    ]


def st_dim_cnn(channels: int, side: int, last_channels: int) -> list:
    """ST_DIM_CNN: four ReLU 3x3 convolutions, the third one's output is the local feature map, then a linear to 512."""
    return [
        ("conv", channels, 32, 3, 2, 1),
        "ReLU",
        ("conv", 32, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, last_channels, 3, 1, 1),
        "ReLU",
        "Flatten",
        ("linear", last_channels * (side // 8) ** 2, 512),
    ]


def flatten_width(sequential: nn.Sequential, x: torch.Tensor) -> int:
    """The width of the sequential's output at its Flatten, for input x."""
    flatten_at = [type(m) for m in sequential].index(nn.Flatten)
    with torch.no_grad():
        return sequential[: flatten_at + 1](x).shape[1]


# ---------------------------------------------------------------------------------------------------- agents


@pytest.fixture(scope="module")
def atari_agents():
    torch.manual_seed(0)
    return {script: load_script(script).Agent(num_actions=18) for script in ATARI}


@pytest.fixture(scope="module")
def procgen_agent(procgen):
    torch.manual_seed(0)
    return procgen.Agent(15)


@pytest.mark.parametrize("script", ATARI, ids=short)
def test_atari_agent_layers_and_inits(atari_agents, script):
    agent = atari_agents[script]
    assert describe(agent.network) == atari_trunk()
    assert describe(agent.actor) == ["ReLU", ("linear", 512, 512), "ReLU", ("linear", 512, 18)]
    assert describe(agent.critic) == [("linear", 512, 512), "ReLU"]  # no leading ReLU, as the authors' Critic2Heads
    assert describe(nn.Sequential(agent.critic_ext, agent.critic_int)) == [("linear", 512, 1), ("linear", 512, 1)]
    assert_layer_inits(agent.network, [SQRT2] * 5)
    assert_layer_inits(agent.actor, [0.01, 0.01])
    assert_layer_inits(agent.critic, [0.1])
    assert_layer_inits(nn.Sequential(agent.critic_ext, agent.critic_int), [0.01, 0.01])


def test_procgen_agent_layers_and_inits(procgen_agent):
    agent = procgen_agent
    assert describe(agent.network) == procgen_trunk()
    assert describe(agent.actor) == ["ReLU", ("linear", 512, 512), "ReLU", ("linear", 512, 15)]
    assert describe(agent.critic) == [("linear", 512, 512), "ReLU"]
    assert describe(nn.Sequential(agent.critic_ext, agent.critic_int)) == [("linear", 512, 1), ("linear", 512, 1)]
    assert_layer_inits(agent.network, [SQRT2] * 5)
    assert_layer_inits(agent.actor, [0.01, 0.01])
    assert_layer_inits(agent.critic, [0.1])
    assert_layer_inits(nn.Sequential(agent.critic_ext, agent.critic_int), [0.01, 0.01])


@pytest.mark.parametrize("script, trunk, actions", [(BASELINE, atari_trunk, 18), (PROCGEN_BASELINE, procgen_trunk, 15)])
def test_the_baselines_agent_has_one_value_head_read_through_a_relu(script, trunk, actions):
    """The authors' PPOAtariNetwork / PPOProcgenNetwork: the actor of the motivated agents, and a critic ReLU, 512 (gain
    0.1), ReLU, one value (gain 0.01)."""
    torch.manual_seed(0)
    agent = load_script(script).Agent(actions)
    assert describe(agent.network) == trunk()
    assert describe(agent.actor) == ["ReLU", ("linear", 512, 512), "ReLU", ("linear", 512, actions)]
    assert describe(agent.critic) == ["ReLU", ("linear", 512, 512), "ReLU", ("linear", 512, 1)]
    assert_layer_inits(agent.network, [SQRT2] * 5)
    assert_layer_inits(agent.actor, [0.01, 0.01])
    assert_layer_inits(agent.critic, [0.1, 0.01])
    obs = torch.randint(0, 256, (3, *((4, 96, 96) if script == BASELINE else (6, 64, 64))), dtype=torch.uint8)
    action, logprob, entropy, value = agent.get_action_and_value(obs)
    assert action.shape == logprob.shape == entropy.shape == value.shape == (3,)
    torch.testing.assert_close(agent.get_value(obs), value)


def agent_cases():
    return [pytest.param(script, id=short(script)) for script in ATARI] + [pytest.param("procgen", id="procgen")]


@pytest.mark.parametrize("case", agent_cases())
def test_agent_outputs_from_uint8_stacks(atari_agents, procgen_agent, case):
    """uint8 stacks in, one action, log-prob, entropy and two values per sample out; the /255 is inside the network;
    a near-uniform initial policy (the actor's gain 0.01); get_value agrees with get_action_and_value."""
    agent, shape, num_actions = (
        (procgen_agent, (6, 64, 64), 15) if case == "procgen" else (atari_agents[case], (4, 96, 96), 18)
    )
    torch.manual_seed(1)
    obs = torch.randint(0, 256, (5,) + shape, dtype=torch.uint8)
    with torch.no_grad():
        action, logprob, entropy, ext_value, int_value = agent.get_action_and_value(obs)
        assert action.shape == logprob.shape == entropy.shape == ext_value.shape == int_value.shape == (5,)
        assert action.dtype == torch.long and ((0 <= action) & (action < num_actions)).all()
        torch.testing.assert_close(entropy, torch.full((5,), math.log(num_actions)), atol=1e-3, rtol=0)
        torch.testing.assert_close(agent.get_value(obs), (ext_value, int_value))
        _, given_logprob, _, _, _ = agent.get_action_and_value(obs, action)
        torch.testing.assert_close(given_logprob, logprob)
        # the same frames as float pixel values: the network scales uint8 by 1/255 itself
        torch.testing.assert_close(agent.get_value(obs.float()), (ext_value, int_value))
        hidden = agent.network(obs.float() / 255.0)
        torch.testing.assert_close(ext_value, agent.critic_ext(agent.critic(hidden)).squeeze(1))
        torch.testing.assert_close(int_value, agent.critic_int(agent.critic(hidden)).squeeze(1))
        assert flatten_width(agent.network, obs.float()) == (18432 if case != "procgen" else 4096)


def test_atari_action_count_follows_the_game(rnd, atari_agents):
    """The scripts size the actor from one env of the game, ALE v5's minimal action set: 18 in Montezuma's Revenge and
    Venture, 6 in Pong."""
    counts = {}
    for game in ("ALE/MontezumaRevenge-v5", "ALE/Venture-v5", "ALE/Pong-v5"):
        env = gym.make(game)
        counts[game] = env.action_space.n
        env.close()
    assert counts == {"ALE/MontezumaRevenge-v5": 18, "ALE/Venture-v5": 18, "ALE/Pong-v5": 6}
    torch.manual_seed(0)
    agents = {6: rnd.Agent(6), 18: atari_agents[RND]}
    with torch.no_grad():
        for num_actions, agent in agents.items():
            assert agent.actor(agent.network(torch.zeros(2, 4, 96, 96))).shape == (2, num_actions)
            action, *_ = agent.get_action_and_value(torch.zeros(256, 4, 96, 96, dtype=torch.uint8))
            assert set(action.tolist()) == set(range(num_actions))  # a near-uniform policy samples every action


def test_procgen_action_count(procgen):
    assert procgen.ProcgenVectorEnv.single_action_space.n == 15


# ---------------------------------------------------------------------------------------------------- Atari motivation


@pytest.fixture(scope="module")
def atari_models():
    torch.manual_seed(0)
    return {script: getattr(load_script(script), "RNDModel" if script == RND else "SNDModel")() for script in MOTIVATION_ATARI}


def test_rnd_layers_inits_and_frozen_target(atari_models):
    model = atari_models[RND]
    assert describe(model.target) == rnd_encoder(1, 96)
    assert describe(model.predictor) == rnd_encoder(1, 96) + PREDICTOR_HEAD
    assert_layer_inits(model.target, [SQRT2] * 4)
    assert_layer_inits(model.predictor, [SQRT2] * 6)
    assert not any(p.requires_grad for p in model.target.parameters())
    assert all(p.requires_grad for p in model.predictor.parameters())
    assert flatten_width(model.target, torch.zeros(2, 1, 96, 96)) == 9216


def test_snd_v_layers_and_inits(atari_models):
    model = atari_models[SND_V]
    assert describe(model.target) == snd_v_encoder(1, 96)
    assert describe(model.predictor) == snd_v_encoder(1, 96) + PREDICTOR_HEAD
    assert_layer_inits(model.target, [SQRT2] * 5)
    assert_layer_inits(model.predictor, [SQRT2] * 7)
    assert flatten_width(model.target, torch.zeros(2, 1, 96, 96)) == 9216


def test_snd_std_layers_and_inits(atari_models):
    model = atari_models[SND_STD]
    target = model.target
    assert describe(target.local_encoder) + describe(target.global_encoder) == st_dim_cnn(1, 96, 128)
    assert describe(nn.Sequential(target.classifier1, target.classifier2)) == [("linear", 512, 64), ("linear", 64, 64)]
    assert describe(model.predictor) == st_dim_cnn(1, 96, 128) + PREDICTOR_HEAD
    assert_layer_inits(nn.Sequential(target.local_encoder, target.global_encoder), [0.5] * 5)
    assert_layer_inits(model.predictor, [0.5] * 7)


def test_snd_vic_layers_and_inits(atari_models):
    """The target is SND-STD's encoder (gain 0.5, no classifiers), the predictor the same stack with gain sqrt(2)."""
    model = atari_models[SND_VIC]
    assert describe(model.target) == st_dim_cnn(1, 96, 128)
    assert describe(model.predictor) == st_dim_cnn(1, 96, 128) + PREDICTOR_HEAD
    assert_layer_inits(model.target, [0.5] * 5)
    assert_layer_inits(model.predictor, [SQRT2] * 7)
    assert flatten_width(model.predictor, torch.zeros(2, 1, 96, 96)) == 18432


# ---------------------------------------------------------------------------------------------------- Procgen motivation


@pytest.fixture(scope="module")
def procgen_models(procgen):
    torch.manual_seed(0)
    return {method: procgen.MOTIVATION_MODELS[method]() for method in PROCGEN_METHODS}


def test_procgen_models_cover_the_four_methods(procgen, procgen_models):
    assert set(procgen.MOTIVATION_MODELS) == set(PROCGEN_METHODS)
    for method, model in procgen_models.items():
        assert model.method == method


def test_procgen_rnd_layers_inits_and_frozen_target(procgen_models):
    model = procgen_models["rnd"]
    assert describe(model.target) == rnd_encoder(3, 64)
    assert describe(model.predictor) == rnd_encoder(3, 64) + PREDICTOR_HEAD
    assert_layer_inits(model.target, [SQRT2] * 4)
    assert_layer_inits(model.predictor, [SQRT2] * 6)
    assert not any(p.requires_grad for p in model.target.parameters())
    assert all(p.requires_grad for p in model.predictor.parameters())
    assert flatten_width(model.target, torch.zeros(2, 3, 64, 64)) == 4096


def test_procgen_snd_v_layers_and_inits(procgen_models):
    model = procgen_models["snd-v"]
    assert describe(model.target) == snd_v_encoder(3, 64)
    assert describe(model.predictor) == snd_v_encoder(3, 64) + PREDICTOR_HEAD
    assert_layer_inits(model.target, [SQRT2] * 5)
    assert_layer_inits(model.predictor, [SQRT2] * 7)


def test_procgen_snd_std_layers_and_inits(procgen, procgen_models):
    """On Procgen ST-DIM's last convolution has 64 channels (ST_DIMEncoderProcgen), not Atari's 128."""
    model = procgen_models["snd-std"]
    target = model.target
    assert isinstance(target, procgen.STDIMTarget)
    assert describe(target.local_encoder) + describe(target.global_encoder) == st_dim_cnn(3, 64, 64)
    assert describe(nn.Sequential(target.classifier1, target.classifier2)) == [("linear", 512, 64), ("linear", 64, 64)]
    assert describe(model.predictor) == st_dim_cnn(3, 64, 64) + PREDICTOR_HEAD
    assert_layer_inits(nn.Sequential(target.local_encoder, target.global_encoder), [0.5] * 5)
    assert_layer_inits(model.predictor, [0.5] * 7)


def test_procgen_snd_vic_predictor_is_128_channels_wide_its_target_64(procgen_models):
    """VICRegModelProcgen: the target is the 64-channel ST-DIM encoder (flatten 4096), the predictor's last convolution
    has 128 channels (flatten 8192); gains 0.5 and sqrt(2)."""
    model = procgen_models["snd-vic"]
    assert describe(model.target) == st_dim_cnn(3, 64, 64)
    assert describe(model.predictor) == st_dim_cnn(3, 64, 128) + PREDICTOR_HEAD
    assert_layer_inits(model.target, [0.5] * 5)
    assert_layer_inits(model.predictor, [SQRT2] * 7)
    x = torch.zeros(2, 3, 64, 64)
    assert flatten_width(model.target, x) == 4096
    assert flatten_width(model.predictor, x) == 8192


# ---------------------------------------------------------------------------------------------------- all motivation models


def motivation_cases():
    return [pytest.param(("atari", script), id=short(script)) for script in MOTIVATION_ATARI] + [
        pytest.param(("procgen", method), id=f"procgen-{method}") for method in PROCGEN_METHODS
    ]


def model_and_input(case, atari_models, procgen_models):
    """The model of the case and its input built the script's way from uint8 frames (Atari (N, 96, 96), Procgen
    (N, 3, 64, 64)): RND subtracts a running mean, SND reads raw pixels."""
    kind, name = case
    torch.manual_seed(3)
    if kind == "atari":
        script, model = load_script(name), atari_models[name]
        frames = torch.randint(0, 256, (5, 96, 96), dtype=torch.uint8)
        mean = torch.full((96, 96), 100.0, dtype=torch.float64)
        x = script.rnd_input(frames, mean) if name == RND else script.snd_input(frames)
        expected = (frames.float() - 100.0) / 255.0 if name == RND else frames.float() / 255.0
        torch.testing.assert_close(x, expected.unsqueeze(1))
    else:
        script, model = load_script("ppo_snd_procgen.py"), procgen_models[name]
        frames = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
        mean = torch.full((3, 64, 64), 100.0, dtype=torch.float64) if name == "rnd" else None
        x = script.motivation_input(frames, mean)
        torch.testing.assert_close(x, (frames.float() - (100.0 if name == "rnd" else 0.0)) / 255.0)
    return model, x


@pytest.mark.parametrize("case", motivation_cases())
def test_motivation_models_give_512_features_of_target_and_predictor(atari_models, procgen_models, case):
    model, x = model_and_input(case, atari_models, procgen_models)
    assert x.dtype == torch.float32 and x.shape[0] == 5 and x.dim() == 4
    with torch.no_grad():
        target_features, predicted_features = model(x)
        assert target_features.shape == predicted_features.shape == (5, 512)
        target_out = model.target(x)
        torch.testing.assert_close(target_features, target_out[0] if isinstance(target_out, tuple) else target_out)
        torch.testing.assert_close(predicted_features, model.predictor(x))
        assert not torch.equal(target_features, predicted_features)  # two different networks


@pytest.mark.parametrize("case", [c for c in motivation_cases() if c.values[0][1] not in (RND, "rnd")])
def test_snd_targets_are_trained(atari_models, procgen_models, case):
    """Unlike RND's frozen target, every SND target parameter requires a gradient, and a loss on the target's output
    (and, for SND-STD, on its classifiers' scores, which its ST-DIM loss reads) reaches each of them."""
    model, x = model_and_input(case, atari_models, procgen_models)
    assert len(list(model.target.parameters())) >= 10
    assert all(p.requires_grad for p in model.parameters())
    out = model.target(x)
    if isinstance(out, tuple):  # SND-STD: global and local features
        global_features, local_features = out
        loss = global_features.pow(2).mean() + model.target.classifier1(global_features).pow(2).mean()
        loss = loss + model.target.classifier2(local_features).pow(2).mean()
    else:
        loss = out.pow(2).mean()
    try:
        loss.backward()
        for name, parameter in model.target.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    finally:
        model.zero_grad(set_to_none=True)


def std_cases():
    return [pytest.param(("atari", SND_STD), id="snd_std"), pytest.param(("procgen", "snd-std"), id="procgen-snd-std")]


@pytest.mark.parametrize("case", std_cases())
def test_snd_std_target_returns_global_and_local_features(atari_models, procgen_models, case):
    """model.target(x) gives the global features (N, 512) and, per position p = side * row + column, the 64 channels of
    the third convolution's ReLU output ("f5": (N, 144, 64) on Atari's 12 x 12 map, (N, 64, 64) on Procgen's 8 x 8);
    the model's forward gives the global ones as the target's output."""
    model, x = model_and_input(case, atari_models, procgen_models)
    side = 12 if case[0] == "atari" else 8
    with torch.no_grad():
        global_features, local_features = model.target(x)
        assert global_features.shape == (5, 512)
        assert local_features.shape == (5, side * side, 64)
        layers = [m for m in model.target.modules() if not list(m.children())]
        feature_map = x
        for layer in layers[:6]:  # conv, ReLU, conv, ReLU, conv, ReLU
            feature_map = layer(feature_map)
        assert feature_map.shape == (5, 64, side, side)
        torch.testing.assert_close(local_features[1, side * 5 + 7], feature_map[1, :, 5, 7])
        torch.testing.assert_close(local_features, feature_map.flatten(2).transpose(1, 2))
        assert torch.all(local_features >= 0) and torch.any(local_features == 0)  # after the ReLU
        hidden = feature_map
        for layer in layers[6:10]:  # conv, ReLU, Flatten, Linear
            hidden = layer(hidden)
        torch.testing.assert_close(global_features, hidden)
        torch.testing.assert_close(model(x)[0], global_features)
        assert model.target.classifier1(global_features).shape == (5, 64)
        assert model.target.classifier2(local_features).shape == (5, side * side, 64)


@pytest.mark.parametrize("case", std_cases())
def test_snd_std_classifiers_keep_pytorch_default_init(atari_models, procgen_models, case):
    """nn.Linear's default (as the authors' ST_DIMEncoderAtari): weights and bias uniform in +-1/sqrt(fan_in), so a
    non-zero bias and weights spread over that bound with the std of a uniform, bound / sqrt(3) (layer_init's
    orthogonal gain 0.5 would give a zero bias and a std of 0.5 / sqrt(64) = 0.0625 for classifier1, not 0.0255)."""
    model, _ = model_and_input(case, atari_models, procgen_models)
    for classifier in (model.target.classifier1, model.target.classifier2):
        bound = 1 / math.sqrt(classifier.in_features)
        for tensor in (classifier.weight, classifier.bias):
            assert tensor.abs().max() <= bound
            assert tensor.abs().max() > 0.9 * bound
        assert classifier.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(-b, b)
        assert torch.all(classifier.bias != 0)


@pytest.mark.parametrize("script", SND_ATARI, ids=short)
def test_snd_atari_input_is_raw_pixels(script):
    x = load_script(script).snd_input(torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8))
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.tensor([[[[0.0, 1.0], [0.2, 0.4]]]]))
