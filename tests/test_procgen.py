"""ppo_snd_procgen.py without training: the Procgen adapter `ProcgenVectorEnv` on a real procgen game (frame stack zeroed
at an episode start, procgen's auto-reset, episode returns and lengths, nothing truncated, the 1% random actions), the
networks of snd_reference.md §2.2-2.6 on 6 x 64 x 64 stacks and 3 x 64 x 64 frames, the game name and eta lookups
(§7), the distillation errors (§3), the motivation inputs and losses of the four methods (§4), and the message for a
missing procgen."""

import inspect
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import ROOT, load_script
from test_snd_networks import assert_layer_inits, describe, leaves, weighted

snd_procgen = load_script("ppo_snd_procgen.py")

SQRT2 = math.sqrt(2)
EXPLORATION_GAMES = ("coinrun", "caveflyer", "leaper", "jumper", "maze", "heist", "climber", "ninja")
NUM_ACTIONS = 15


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On the 2 shared cores, two OpenMP threads make the orthogonal inits of these networks ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------- the adapter (§1.2)

NUM_ENVS, NUM_STEPS = 8, 300


@pytest.fixture(scope="module")
def jumper_rollout():
    """8 jumper envs, a fixed seed, uniformly random agent actions for 300 steps (random-action episodes of jumper end
    within tens of steps). Returns the reset (obs, info) and each step's (actions, obs, reward, terminated, truncated,
    info)."""
    envs = snd_procgen.ProcgenVectorEnv("jumper", NUM_ENVS)
    reset = envs.reset(seed=snd_procgen.procgen_seed(1, 1))
    rng = np.random.default_rng(0)
    steps = []
    for _ in range(NUM_STEPS):
        actions = rng.integers(NUM_ACTIONS, size=NUM_ENVS)
        steps.append((actions, *envs.step(actions)))
    envs.close()
    return reset, steps


def test_enough_jumper_episodes_end_for_the_checks_to_mean_something(jumper_rollout):
    _, steps = jumper_rollout
    terminated = np.array([step[3] for step in steps])
    assert terminated.sum() >= 20
    assert terminated.any(0).all()  # every env ends at least one episode
    assert (terminated.sum(1) < NUM_ENVS).all()  # and the envs do not end them in lockstep


def test_reset_stacks_a_zero_frame_under_the_first_one(jumper_rollout):
    (obs, info), _ = jumper_rollout
    assert obs.dtype == np.uint8 and obs.shape == (NUM_ENVS, 6, 64, 64)
    assert snd_procgen.ProcgenVectorEnv.single_observation_space.shape == (6, 64, 64)
    assert snd_procgen.ProcgenVectorEnv.single_action_space.n == NUM_ACTIONS
    assert info == {}
    assert (obs[:, :3] == 0).all()
    assert all(obs[i, 3:].any() for i in range(NUM_ENVS))


def test_step_returns_uint8_stacks_float_rewards_and_never_truncates(jumper_rollout):
    _, steps = jumper_rollout
    for _, obs, reward, terminated, truncated, _ in steps:
        assert obs.dtype == np.uint8 and obs.shape == (NUM_ENVS, 6, 64, 64)
        assert reward.dtype == np.float32 and reward.shape == (NUM_ENVS,)
        assert terminated.dtype == bool and terminated.shape == (NUM_ENVS,)
        assert truncated.dtype == bool and truncated.shape == (NUM_ENVS,)
        assert not truncated.any()


def test_older_frame_is_the_previous_newest_one_or_zero_at_an_episode_start(jumper_rollout):
    (previous, _), steps = jumper_rollout
    frames_changed = 0
    for _, obs, _, terminated, _, _ in steps:
        for i in range(NUM_ENVS):
            assert obs[i, 3:].any()  # the newest frame is a real frame (the new episode's first one at an end)
            if terminated[i]:
                assert (obs[i, :3] == 0).all()
            else:
                assert np.array_equal(obs[i, :3], previous[i, 3:])
                frames_changed += not np.array_equal(obs[i, 3:], previous[i, 3:])
        previous = obs
    assert frames_changed > 100  # the frames move, so "older == previous newest" is not "older == newest"


def test_finished_episodes_report_their_return_and_length_once(jumper_rollout):
    """info["episode"] and info["_episode"] appear exactly on the steps that end an episode, `_episode` is `terminated`,
    and r / l are the reward sum and step count since that env's previous end (or the reset)."""
    _, steps = jumper_rollout
    returns, lengths = np.zeros(NUM_ENVS), np.zeros(NUM_ENVS, dtype=np.int64)
    reported = 0
    for _, _, reward, terminated, _, info in steps:
        returns += reward
        lengths += 1
        if not terminated.any():
            assert "episode" not in info and "_episode" not in info
            continue
        assert np.array_equal(info["_episode"], terminated) and info["_episode"].dtype == bool
        for i in np.flatnonzero(info["_episode"]):
            assert info["episode"]["l"][i] == lengths[i]
            assert info["episode"]["r"][i] == pytest.approx(returns[i])
            reported += 1
        returns[terminated], lengths[terminated] = 0.0, 0
    assert reported == sum(step[3].sum() for step in steps)
    assert reported >= 20


class ScriptedGym3Env:
    """A stand-in for ProcgenGym3Env (same constructor keywords, act / observe as gym3): env i's episodes last
    lengths[i] steps; the reward of the k-th step of an episode (k = 1, 2, ...) is k + 10 i; every frame is filled with
    a counter that grows each step, so each newest frame differs from the one before."""

    lengths = (3, 5)

    def __init__(self, num, env_name, distribution_mode, rand_seed):
        assert (num, env_name, distribution_mode) == (2, "jumper", "exploration")
        self.num, self.step_in_episode, self.counter = num, np.zeros(num, dtype=np.int64), 1
        self.reward, self.first = np.zeros(num, dtype=np.float32), np.ones(num, dtype=bool)

    def act(self, actions):
        self.step_in_episode += 1
        self.counter += 1
        self.reward = (self.step_in_episode + 10 * np.arange(self.num)).astype(np.float32)
        self.first = self.step_in_episode == np.array(self.lengths)
        self.step_in_episode[self.first] = 0

    def observe(self):
        frames = np.empty((self.num, 64, 64, 3), dtype=np.uint8)
        for i in range(self.num):
            frames[i] = (self.counter * 2 + i) % 251 + 1
        return self.reward.copy(), {"rgb": frames}, self.first.copy()


def test_episode_returns_and_lengths_with_non_zero_rewards(monkeypatch):
    """Random jumper play earns no reward; a scripted env checks the returns with rewards that differ per step."""
    monkeypatch.setattr(snd_procgen, "ProcgenGym3Env", ScriptedGym3Env)
    envs = snd_procgen.ProcgenVectorEnv("jumper", 2, random_action_probability=0.0)
    previous, _ = envs.reset(seed=3)
    ended = []
    for t in range(1, 16):
        obs, reward, terminated, truncated, info = envs.step(np.zeros(2, dtype=np.int64))
        assert not truncated.any()
        for i, length in enumerate(ScriptedGym3Env.lengths):
            k = (t - 1) % length + 1  # the step's index in its episode
            assert reward[i] == k + 10 * i
            assert terminated[i] == (k == length)
            expected_older = np.zeros((3, 64, 64), dtype=np.uint8) if terminated[i] else previous[i, 3:]
            assert np.array_equal(obs[i, :3], expected_older)
        if terminated.any():
            assert np.array_equal(info["_episode"], terminated)
            for i in np.flatnonzero(terminated):
                ended.append((i, info["episode"]["r"][i], info["episode"]["l"][i]))
        else:
            assert info == {}
        previous = obs
    # env 0: 5 episodes of 1 + 2 + 3 = 6; env 1: 3 episodes of 11 + ... + 15 = 65
    assert sorted(ended) == [(0, 6.0, 3)] * 5 + [(1, 65.0, 5)] * 3


def recorded_actions(num_envs: int, num_steps: int, agent_actions, **kwargs) -> np.ndarray:
    """The actions procgen executed when the agent chose `agent_actions(step)`: the instance's env.act is wrapped
    after reset to record its argument."""
    envs = snd_procgen.ProcgenVectorEnv("jumper", num_envs, **kwargs)
    envs.reset(seed=snd_procgen.procgen_seed(2, 1))
    executed, act = [], envs.env.act

    def recording_act(actions):
        executed.append(np.array(actions, copy=True))
        act(actions)

    envs.env.act = recording_act
    for step in range(num_steps):
        envs.step(agent_actions(step))
    envs.close()
    return np.array(executed)


def test_one_percent_of_the_actions_are_replaced_by_random_ones():
    """The default rate 0.01, a uniformly random action among 15: 14/15 of the replacements differ from the agent's."""
    assert inspect.signature(snd_procgen.ProcgenVectorEnv).parameters["random_action_probability"].default == 0.01
    num_envs, num_steps, agent_action = 64, 400, 7
    executed = recorded_actions(num_envs, num_steps, lambda step: np.full(num_envs, agent_action))
    assert executed.shape == (num_steps, num_envs)
    different = executed != agent_action
    # expected 0.00933, binomial std 0.0006 over 25 600 draws; rates 0 and 0.02 (0.0187) fall outside
    assert different.mean() == pytest.approx(0.01 * 14 / 15, abs=0.0025)
    assert len(set(executed[different].tolist())) >= 10  # uniform over the other actions, not one fixed one
    assert ((0 <= executed) & (executed < NUM_ACTIONS)).all()
    assert different.any(0).sum() > num_envs // 2  # replacements land in many envs, not in one


def test_no_action_is_replaced_with_probability_zero():
    rng = np.random.default_rng(5)
    agent_actions = rng.integers(NUM_ACTIONS, size=(100, 16))
    executed = recorded_actions(16, 100, lambda step: agent_actions[step], random_action_probability=0.0)
    assert np.array_equal(executed, agent_actions)


# ---------------------------------------------------------------------------------------------------- networks (§2.2-2.6)


def flatten_width(sequential: nn.Sequential, x: torch.Tensor) -> int:
    flatten_at = [type(m) for m in sequential].index(nn.Flatten)
    with torch.no_grad():
        return sequential[: flatten_at + 1](x).shape[1]


def test_agent_layers_inits_and_outputs_on_6x64x64_stacks():
    torch.manual_seed(0)
    agent = snd_procgen.Agent(NUM_ACTIONS)
    assert describe(agent.network) == [
        ("conv", 6, 32, 3, 2, 1),
        "ReLU",
        ("conv", 32, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 64, 3, 1, 1),
        "ReLU",
        "Flatten",
        ("linear", 4096, 512),  # no activation after the trunk
    ]
    assert describe(agent.actor) == ["ReLU", ("linear", 512, 512), "ReLU", ("linear", 512, NUM_ACTIONS)]
    assert describe(agent.critic) == [("linear", 512, 512), "ReLU"]
    assert describe(nn.Sequential(agent.critic_ext, agent.critic_int)) == [("linear", 512, 1), ("linear", 512, 1)]
    assert_layer_inits(weighted(agent.network), [SQRT2] * 5)
    assert_layer_inits(weighted(agent.actor) + weighted(agent.critic), [0.01, 0.01, 0.1])
    assert_layer_inits([agent.critic_ext, agent.critic_int], [0.01, 0.01])

    obs = torch.randint(0, 256, (5, 6, 64, 64), dtype=torch.uint8)
    assert flatten_width(agent.network, obs.float()) == 4096
    with torch.no_grad():
        assert agent.actor(agent.network(obs.float() / 255.0)).shape == (5, NUM_ACTIONS)
        action, logprob, entropy, ext_value, int_value = agent.get_action_and_value(obs)
        assert action.shape == logprob.shape == entropy.shape == ext_value.shape == int_value.shape == (5,)
        assert action.dtype == torch.long and ((0 <= action) & (action < NUM_ACTIONS)).all()
        # a near-uniform initial policy over 15 actions
        torch.testing.assert_close(entropy, torch.full((5,), math.log(NUM_ACTIONS)), atol=1e-3, rtol=0)
        ext_again, int_again = agent.get_value(obs)
        torch.testing.assert_close(ext_again, ext_value)
        torch.testing.assert_close(int_again, int_value)


RND_ENCODER = [
    ("conv", 3, 32, 8, 4, 2),
    "ELU",
    ("conv", 32, 64, 3, 2, 1),
    "ELU",
    ("conv", 64, 64, 3, 1, 1),
    "ELU",
    "Flatten",
    ("linear", 4096, 512),
]
SND_V_ENCODER = [
    ("conv", 3, 16, 3, 2, 1),
    "ELU",
    ("conv", 16, 32, 3, 2, 1),
    "ELU",
    ("conv", 32, 64, 3, 2, 1),
    "ELU",
    ("conv", 64, 64, 3, 1, 1),
    "ELU",
    "Flatten",
    ("linear", 4096, 512),
]


def st_dim_cnn(last_channels: int) -> list:
    return [
        ("conv", 3, 32, 3, 2, 1),
        "ReLU",
        ("conv", 32, 64, 3, 2, 1),
        "ReLU",
        ("conv", 64, 64, 3, 2, 1),
        "ReLU",  # the local feature map "f5": 64 x 8 x 8
        ("conv", 64, last_channels, 3, 1, 1),
        "ReLU",
        "Flatten",
        ("linear", last_channels * 64, 512),
    ]


PREDICTOR_HEAD = ["ELU", ("linear", 512, 512), "ELU", ("linear", 512, 512)]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {method: build() for method, build in snd_procgen.MOTIVATION_MODELS.items()}


def test_motivation_models_cover_the_four_methods():
    assert snd_procgen.MOTIVATION_MODELS == {
        "rnd": snd_procgen.RNDModel,
        "snd-v": snd_procgen.SNDVModel,
        "snd-std": snd_procgen.SNDSTDModel,
        "snd-vic": snd_procgen.SNDVICModel,
    }


def test_rnd_layers_inits_and_frozen_target(models):
    model = models["rnd"]
    assert describe(model.target) == RND_ENCODER
    assert describe(model.predictor) == RND_ENCODER + PREDICTOR_HEAD
    assert_layer_inits(weighted(model.target), [SQRT2] * 4)
    assert_layer_inits(weighted(model.predictor), [SQRT2] * 6)
    assert not any(p.requires_grad for p in model.target.parameters())
    assert all(p.requires_grad for p in model.predictor.parameters())
    assert flatten_width(model.target, torch.zeros(2, 3, 64, 64)) == 4096


def test_snd_v_layers_and_inits(models):
    model = models["snd-v"]
    assert describe(model.target) == SND_V_ENCODER
    assert describe(model.predictor) == SND_V_ENCODER + PREDICTOR_HEAD
    assert_layer_inits(weighted(model.target), [SQRT2] * 5)
    assert_layer_inits(weighted(model.predictor), [SQRT2] * 7)
    assert all(p.requires_grad for p in model.parameters())


def test_snd_std_layers_inits_and_classifiers(models):
    model = models["snd-std"]
    assert isinstance(model.target, snd_procgen.STDIMTarget)
    assert describe(model.target) == st_dim_cnn(64) + [("linear", 512, 64), ("linear", 64, 64)]
    assert describe(model.predictor) == st_dim_cnn(64) + PREDICTOR_HEAD
    classifiers = (model.target.classifier1, model.target.classifier2)
    encoder = [m for m in weighted(model.target) if m not in classifiers]
    assert_layer_inits(encoder, [0.5] * 5)
    assert_layer_inits(weighted(model.predictor), [0.5] * 7)
    for classifier in classifiers:  # PyTorch's default init: U(+-1/sqrt(fan_in)), bias included
        bound = 1 / math.sqrt(classifier.in_features)
        assert classifier.weight.abs().max() <= bound and torch.all(classifier.bias != 0)
    assert all(p.requires_grad for p in model.parameters())


def test_snd_std_target_returns_global_and_local_features(models):
    model = models["snd-std"]
    torch.manual_seed(1)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        global_features, local_features = model.target(x)
        assert global_features.shape == (3, 512)
        assert local_features.shape == (3, 64, 64)
        feature_map = x
        layers = leaves(model.target)
        for layer in layers[:6]:  # conv, ReLU, conv, ReLU, conv, ReLU
            feature_map = layer(feature_map)
        assert feature_map.shape == (3, 64, 8, 8)
        torch.testing.assert_close(local_features[2, 8 * 3 + 5], feature_map[2, :, 3, 5])  # position 8 * row + column
        torch.testing.assert_close(local_features, feature_map.flatten(2).transpose(1, 2))
        hidden = feature_map
        for layer in layers[6:10]:  # conv, ReLU, Flatten, Linear
            hidden = layer(hidden)
        torch.testing.assert_close(global_features, hidden)
        assert model.target.classifier1(global_features).shape == (3, 64)
        assert model.target.classifier2(local_features).shape == (3, 64, 64)


def test_snd_vic_layers_inits_and_wide_predictor(models):
    model = models["snd-vic"]
    assert describe(model.target) == st_dim_cnn(64)
    assert describe(model.predictor) == st_dim_cnn(128) + PREDICTOR_HEAD
    assert_layer_inits(weighted(model.target), [0.5] * 5)
    assert_layer_inits(weighted(model.predictor), [SQRT2] * 7)
    assert flatten_width(model.target, torch.zeros(2, 3, 64, 64)) == 4096
    assert flatten_width(model.predictor, torch.zeros(2, 3, 64, 64)) == 8192
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("method", ["rnd", "snd-v", "snd-std", "snd-vic"])
def test_motivation_forward_gives_target_and_predicted_features(models, method):
    model = models[method]
    torch.manual_seed(2)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        target_features, predicted_features = model(x)
        assert target_features.shape == predicted_features.shape == (4, 512)
        target_out = model.target(x)
        torch.testing.assert_close(target_features, target_out[0] if isinstance(target_out, tuple) else target_out)
        torch.testing.assert_close(predicted_features, model.predictor(x))
        assert not torch.equal(target_features, predicted_features)


# ---------------------------------------------------------------------------------------------------- names, eta, seeds


@pytest.mark.parametrize("env_id", ["jumper", "procgen-jumper-v0", "Jumper"])
def test_procgen_game_accepts_the_name_and_gyms_id(env_id):
    assert snd_procgen.procgen_game(env_id) == "jumper"


def test_procgen_game_accepts_every_exploration_game():
    for game in EXPLORATION_GAMES:
        assert snd_procgen.procgen_game(game) == game


def test_procgen_game_refuses_a_game_without_exploration_level():
    with pytest.raises(ValueError, match="bigfish has no exploration level") as error:
        snd_procgen.procgen_game("bigfish")
    for game in EXPLORATION_GAMES:
        assert game in str(error.value)


def test_procgen_game_suggests_the_closest_name_for_a_typo():
    with pytest.raises(ValueError, match="did you mean jumper") as error:
        snd_procgen.procgen_game("jumpr")
    assert "unknown procgen game 'jumpr'" in str(error.value)
    with pytest.raises(ValueError, match="unknown procgen game") as error:
        snd_procgen.procgen_game("pong")
    assert "did you mean" not in str(error.value)


@pytest.mark.parametrize("game", EXPLORATION_GAMES)
def test_paper_eta_of_rnd_snd_v_and_snd_vic_does_not_depend_on_the_game(game):
    assert snd_procgen.paper_eta("rnd", game) == 1.0
    assert snd_procgen.paper_eta("snd-v", game) == 0.5
    assert snd_procgen.paper_eta("snd-vic", game) == 0.5


def test_paper_eta_of_snd_std_per_game():
    expected = {"caveflyer": 0.5, "coinrun": 0.25, "jumper": 1.0, "climber": 1.0}
    for game, eta in expected.items():
        assert snd_procgen.paper_eta("snd-std", game) == eta
    for game in set(EXPLORATION_GAMES) - set(expected):  # games the paper did not run: 1
        assert snd_procgen.paper_eta("snd-std", game) == 1.0


def test_procgen_seed_is_deterministic_distinct_and_below_2_31():
    seeds = [snd_procgen.procgen_seed(seed, stream) for seed in range(4) for stream in range(20)]
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)
    assert len(set(seeds)) == len(seeds)
    assert snd_procgen.procgen_seed(3, 7) == snd_procgen.procgen_seed(3, 7)


# ---------------------------------------------------------------------------------------------------- errors and inputs (§3)


def test_distillation_error_per_method_by_hand():
    target = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, -1.0, 2.0]], dtype=torch.float64)
    predicted = torch.tensor([[0.0, 0.0, 0.0], [0.0, -1.0, 0.0], [3.0, -1.0, 2.0]], dtype=torch.float64)
    error = snd_procgen.distillation_error
    # RND: half the sum of squares
    torch.testing.assert_close(error(target, predicted, "rnd"), torch.tensor([2.5, 0.5, 0.0], dtype=torch.float64))
    # SND-V: the mean of squares, exactly 0 for equal features
    torch.testing.assert_close(error(target, predicted, "snd-v"), torch.tensor([5 / 3, 1 / 3, 0.0], dtype=torch.float64))
    assert error(target, predicted, "snd-v")[2].item() == 0.0  # no 1e-8 (that would give 1e-16)
    eps = 1e-8
    expected = torch.tensor(
        [((1 + eps) ** 2 + (2 + eps) ** 2 + eps**2) / 3, (eps**2 + (1 + eps) ** 2 + eps**2) / 3, eps**2],
        dtype=torch.float64,
    )
    for method in ("snd-std", "snd-vic"):
        torch.testing.assert_close(error(target, predicted, method), expected, rtol=1e-13, atol=0)


def test_motivation_input_scales_raw_pixels_or_subtracts_the_running_mean():
    frames = torch.tensor([[[[0, 255], [51, 102]]] * 3, [[[255, 0], [153, 204]]] * 3], dtype=torch.uint8)  # (2, 3, 2, 2)
    raw = snd_procgen.motivation_input(frames, None)
    assert raw.dtype == torch.float32
    torch.testing.assert_close(raw, frames.float() / 255.0)
    frame_mean = snd_procgen.RunningMean((3, 2, 2), torch.device("cpu"))
    frame_mean.update(frames[None])  # one vector step; the initial 0 counts as one sample: mean = batch mean / 2
    torch.testing.assert_close(frame_mean.mean, frames.double().mean(0) / 2)
    centred = snd_procgen.motivation_input(frames, frame_mean.mean)
    assert centred.dtype == torch.float32
    torch.testing.assert_close(centred, (frames.float() - frames.float().mean(0) / 2) / 255.0)
    # pixel (0, 0): values 0 and 255, mean 127.5 / 2 = 63.75
    torch.testing.assert_close(centred[:, 0, 0, 0], torch.tensor([-63.75, 191.25]) / 255.0)


def test_next_state_frames_reads_num_envs_rows_on_except_at_an_episode_end():
    """3 steps x 2 envs: frames of s_0..s_3 flattened step-major (frame k filled with k); env 0 ends at step 1 (flat 2),
    env 1 at step 2 (flat 5): there the frame itself stands in for the missing final one."""
    frames = torch.arange(8, dtype=torch.uint8)[:, None, None, None].expand(8, 3, 2, 2).contiguous()
    terminations = torch.tensor([False, False, True, False, False, True])
    expected = torch.stack([frames[2], frames[3], frames[2], frames[5], frames[6], frames[5]])
    whole = snd_procgen.next_state_frames(frames, terminations, 0, 6, 2)
    assert whole.dtype == torch.uint8 and whole.shape == (6, 3, 2, 2)
    assert torch.equal(whole, expected)
    assert torch.equal(snd_procgen.next_state_frames(frames, terminations, 2, 4, 2), expected[2:4])
    assert torch.equal(snd_procgen.next_state_frames(frames, terminations, 4, 6, 2), expected[4:6])
    assert torch.equal(snd_procgen.next_state_frames(frames, torch.zeros(6, dtype=torch.bool), 0, 6, 2), frames[2:8])


# ---------------------------------------------------------------------------------------------------- motivation losses (§4)

TARGET_TERMS = {
    "rnd": set(),
    "snd-v": {"similarity", "magnitude"},
    "snd-std": {"global_local_infonce", "local_local_infonce", "logit_norm", "feature_std"},
    "snd-vic": {"invariance", "variance", "covariance"},
}


@pytest.mark.parametrize("method", ["rnd", "snd-v", "snd-std", "snd-vic"])
def test_motivation_losses_on_a_tiny_rollout(method):
    """2 envs x 4 steps, the frames of s_0..s_4, one minibatch of 4 transitions: finite scalar losses, the Atari twins'
    target terms, and gradients that reach the SND targets (through their own loss only) but never RND's."""
    args = snd_procgen.Args(method=method, num_envs=2, num_steps=4, num_minibatches=2, eta=1.0)
    snd_procgen.check_args(args)
    assert (args.batch_size, args.minibatch_size) == (8, 4)
    torch.manual_seed(3)
    model = snd_procgen.MOTIVATION_MODELS[method]()
    frames = torch.randint(0, 256, ((args.num_steps + 1) * args.num_envs, 3, 64, 64), dtype=torch.uint8)
    terminations = torch.tensor([False, False, False, True, False, False, False, False])
    frame_mean = None
    if method == "rnd":
        running_mean = snd_procgen.RunningMean((3, 64, 64), torch.device("cpu"))
        running_mean.update(frames[None, :2])  # one vector step
        frame_mean = running_mean.mean
    predictor_loss, target_loss, target_terms, target_features = snd_procgen.motivation_losses(
        model, args, frames, terminations, 2, 6, frame_mean
    )
    assert predictor_loss.shape == () and torch.isfinite(predictor_loss) and predictor_loss > 0
    assert target_features.shape == (4, 512)
    assert set(target_terms) == TARGET_TERMS[method]
    for name, term in target_terms.items():
        assert term.shape == () and torch.isfinite(term), name
    if method == "rnd":
        assert target_loss is None
    else:
        assert target_loss.shape == () and torch.isfinite(target_loss)
        # the predictor's loss leaves the target alone (it imitates a detached target)
        predictor_loss.backward(retain_graph=True)
        assert all(p.grad is None or not p.grad.any() for p in model.target.parameters())
        model.zero_grad(set_to_none=True)

    (predictor_loss if target_loss is None else predictor_loss + target_loss).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.predictor.parameters())
    if method == "rnd":
        assert all(p.grad is None for p in model.target.parameters())
    else:
        for name, parameter in model.target.named_parameters():
            assert parameter.grad is not None, name
            # the last bias shifts both views alike: SND-V's distances and VICReg's terms do not see it
            if name.endswith("weight") or method == "snd-std":
                assert parameter.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------------- missing procgen


def test_missing_procgen_is_refused_with_the_install_command(tmp_path):
    fake = tmp_path / "fake_packages" / "procgen"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("procgen is not installed (test stand-in)")\n')
    python_path = os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "ppo_snd_procgen.py"), "--env-id", "jumper"],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": python_path},
    )
    assert result.returncode == 1, result.stderr
    assert "pip install procgen2" in result.stderr
    assert list(run_dir.iterdir()) == []  # refused before any run folder is written
