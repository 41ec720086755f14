"""The speed-ups leave the numbers as they were: a rollout's intrinsic rewards scored in a few batched passes after it
equal the per-step ones (RND's running mean, updated in bulk, included), whatever the chunking; and the channels_last
layout with fused Adam trains as the contiguous layout with plain Adam does."""

import copy

import pytest
import torch
from conftest import load_script

rnd = load_script("ppo_rnd_atari.py")
snd_atari = [load_script(name) for name in ("ppo_snd_v_atari.py", "ppo_snd_std_atari.py", "ppo_snd_vic_atari.py")]
procgen = load_script("ppo_snd_procgen.py")

NUM_STEPS, NUM_ENVS = 5, 3
# Frames per batched pass: all at once (the GPU's 4096); 2 steps a pass with a shorter last one; one step a pass (the
# CPU's 128 at 128 envs); 4 frames (whole steps for RND and procgen: 1; SND Atari: passes across step boundaries)
CHUNKS = [4096, 2 * NUM_ENVS, NUM_ENVS, 4]


def rollout_frames(seed: int, frame_shape: tuple) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randint(0, 256, (NUM_STEPS, NUM_ENVS) + frame_shape, dtype=torch.uint8)


def test_bulk_running_mean_equals_one_update_per_step():
    """The per-step rule the scripts used before: count += 1; mean += (batch mean - mean) / count."""
    running = rnd.RunningMean((4, 4), torch.device("cpu"))
    running.update(rollout_frames(0, (4, 4))[:2])  # a start that is not the initial zero
    mean, count = running.mean.clone(), running.count
    frames = rollout_frames(1, (4, 4))
    expected = []
    for step_frames in frames:
        count += 1
        mean = mean + (step_frames.double().mean(0) - mean) / count
        expected.append(mean)
    step_means = running.update(frames)
    assert step_means.dtype == torch.float64 and step_means.shape == (NUM_STEPS, 4, 4)
    torch.testing.assert_close(step_means, torch.stack(expected), rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(running.mean, mean, rtol=1e-13, atol=1e-12)
    assert running.count == count


@pytest.mark.parametrize("chunk_frames", CHUNKS)
def test_rnd_batched_errors_equal_per_step_errors(chunk_frames):
    model = rnd.RNDModel()
    frames = rollout_frames(2, (96, 96))
    per_step_mean = rnd.RunningMean((96, 96), torch.device("cpu"))  # fresh: the mean moves a lot from step to step
    expected = []
    with torch.no_grad():
        for step_frames in frames:
            per_step_mean.update(step_frames[None])
            expected.append(rnd.distillation_error(*model(rnd.rnd_input(step_frames, per_step_mean.mean))))
        bulk_mean = rnd.RunningMean((96, 96), torch.device("cpu"))
        errors = rnd.rollout_distillation_errors(model, frames, bulk_mean.update(frames), chunk_frames)
    assert errors.shape == (NUM_STEPS, NUM_ENVS)
    torch.testing.assert_close(errors, torch.stack(expected), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bulk_mean.mean, per_step_mean.mean, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("chunk_frames", CHUNKS)
@pytest.mark.parametrize("script", snd_atari, ids=lambda module: module.__name__)
def test_snd_atari_batched_errors_equal_per_step_errors(script, chunk_frames):
    torch.manual_seed(3)
    model = script.SNDModel()
    frames = rollout_frames(4, (96, 96))
    with torch.no_grad():
        expected = torch.stack([script.distillation_error(*model(script.snd_input(step_frames))) for step_frames in frames])
        errors = script.rollout_distillation_errors(model, frames, chunk_frames)
    assert errors.shape == (NUM_STEPS, NUM_ENVS) and (expected > 0).all()
    torch.testing.assert_close(errors, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("chunk_frames", CHUNKS)
@pytest.mark.parametrize("method", ["rnd", "snd-v", "snd-std", "snd-vic"])
def test_procgen_batched_errors_equal_per_step_errors(method, chunk_frames):
    torch.manual_seed(5)
    model = procgen.MOTIVATION_MODELS[method]()
    frames = rollout_frames(6, (3, 64, 64))
    per_step_mean = procgen.RunningMean((3, 64, 64), torch.device("cpu")) if method == "rnd" else None
    expected = []
    with torch.no_grad():
        for step_frames in frames:
            if per_step_mean is not None:
                per_step_mean.update(step_frames[None])
            inputs = procgen.motivation_input(step_frames, None if per_step_mean is None else per_step_mean.mean)
            expected.append(procgen.distillation_error(*model(inputs), method))
        step_means = procgen.RunningMean((3, 64, 64), torch.device("cpu")).update(frames) if method == "rnd" else None
        errors = procgen.rollout_distillation_errors(model, method, frames, step_means, chunk_frames)
    assert errors.shape == (NUM_STEPS, NUM_ENVS)
    torch.testing.assert_close(errors, torch.stack(expected), rtol=1e-5, atol=1e-9)


def agent_loss(agent, obs, actions):
    _, logprob, entropy, ext_value, int_value = agent.get_action_and_value(obs, actions)
    return -logprob.mean() - 0.01 * entropy.mean() + (ext_value - 1.0).pow(2).mean() + (int_value - 0.5).pow(2).mean()


def distillation_loss(model, obs, actions):
    target_features, predicted_features = model(obs.float() / 255.0)
    return (predicted_features - target_features.detach()).pow(2).mean() + target_features.pow(2).mean()


@pytest.mark.parametrize(
    "build,obs_shape,loss",
    [
        (lambda: rnd.Agent(18), (4, 96, 96), agent_loss),
        (lambda: procgen.Agent(15), (6, 64, 64), agent_loss),
        (lambda: rnd.RNDModel(), (1, 96, 96), distillation_loss),
        (lambda: snd_atari[2].SNDModel(), (1, 96, 96), distillation_loss),
        (lambda: procgen.SNDSTDModel(), (3, 64, 64), distillation_loss),
    ],
    ids=["atari-agent", "procgen-agent", "rnd", "snd-vic", "procgen-snd-std"],
)
def test_channels_last_and_fused_adam_train_as_contiguous_and_plain_adam(build, obs_shape, loss):
    """As the scripts build them: `.to(device, memory_format=torch.channels_last)` and `Adam(..., fused=True)`."""
    torch.manual_seed(7)
    plain = build()
    fast = copy.deepcopy(plain).to(torch.device("cpu"), memory_format=torch.channels_last)
    assert any(
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in fast.parameters()
    )
    initial = [parameter.detach().clone() for parameter in plain.parameters()]
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=1e-4)
    fast_optimizer = torch.optim.Adam(fast.parameters(), lr=1e-4, fused=True)
    obs = torch.randint(0, 256, (16,) + obs_shape, dtype=torch.uint8)
    actions = torch.randint(0, 15, (16,))
    for _ in range(3):
        losses = []
        for model, optimizer in ((plain, plain_optimizer), (fast, fast_optimizer)):
            value = loss(model, obs, actions)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            losses.append(value.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-7)
    # Adam turns rounding noise in a near-zero gradient into a step of up to lr, so single weights may differ by that
    # much: the updates as a whole must agree to 1%
    plain_update = torch.cat([(p - p0).flatten() for p, p0 in zip(plain.parameters(), initial)])
    fast_update = torch.cat([(p - p0).flatten() for p, p0 in zip(fast.parameters(), initial)])
    assert (fast_update - plain_update).norm() < 0.01 * plain_update.norm()
