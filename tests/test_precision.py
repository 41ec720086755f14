"""--bf16 and --compile: under bf16 autocast the agent's trunk runs in bf16 and its heads, log-probabilities and values
in fp32, and a PPO loss and its gradients stay close to fp32 on the same batch; the compiled networks compute what the
eager ones do and keep their state-dict names (checkpoints do not change); a tiny run with each flag."""

import pytest
import torch
from conftest import (
    BASELINE,
    EVERY_SCRIPT,
    PROCGEN,
    PROCGEN_BASELINE,
    RND,
    load_script,
    read_scalars,
    run_dirs,
    run_script,
    short,
    tiny_run,
)

# Tolerances of bf16 against fp32 on one batch of 64, about twice the largest error measured over the seven scripts
# (bf16 keeps 8 bits of mantissa): log-probabilities 0.034 nats, the loss 0.6%, values 0.04 (std 1), the gradient 5.6%
# on an Intel Xeon and 13.4% on an AMD EPYC (ppo_procgen.py; oneDNN's bf16 kernels differ between the two)
LOGPROB_ATOL = 0.07  # nats, per sample
LOSS_RTOL = 0.012
GRADIENT_RTOL = 0.25  # ||g_bf16 - g_fp32|| / ||g_fp32|| over all the agent's parameters
VALUE_ATOL = 0.08
# What PPO compares, a bf16 rollout's log-probabilities (batches of 8) with the bf16 update's (a batch of 64) on the same
# samples, differs far less (measured: 7e-5): the ratios of the first epoch stay 1
FIRST_RATIO_LOG_ATOL = 1e-3


def batch(script: str, size: int = 64):
    torch.manual_seed(0)
    shape = (6, 64, 64) if script in (PROCGEN, PROCGEN_BASELINE) else (4, 96, 96)
    obs = torch.randint(0, 256, (size, *shape), dtype=torch.uint8)
    return obs, torch.randint(0, 15, (size,)), torch.randn(size), torch.rand(size)


def ppo_loss(agent, obs, actions, advantages, returns, old_logprobs=None):
    """The scripts' PPO loss (clip 0.1, entropy 0.001, value 0.5 on the sum of the heads' MSE); old log-probabilities
    default to the agent's own, shifted, so some ratios leave the clip range."""
    _, logprob, entropy, *values = agent.get_action_and_value(obs, actions)
    if old_logprobs is None:
        old_logprobs = logprob.detach() + 0.2 * torch.randn(logprob.shape, generator=torch.Generator().manual_seed(1))
    ratio = (logprob - old_logprobs).exp()
    policy_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(0.9, 1.1)).mean()
    value_loss = sum(((value - returns) ** 2).mean() for value in values)
    return policy_loss - 0.001 * entropy.mean() + 0.5 * value_loss, logprob, values, old_logprobs


def gradients(agent) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in agent.parameters()])


def agent_of(script: str, bf16: bool):
    """The script's agent with its output layers rescaled so that on `batch` its logits have std 2 and its values std 1,
    as a trained agent's (at initialisation both are near 0, and so would be any error in them)."""
    torch.manual_seed(0)
    agent = load_script(script).Agent(15)
    obs = batch(script)[0]
    with torch.no_grad():
        agent.actor[-1].weight.mul_(2 / agent.actor(agent.trunk(obs)).std())
        values = agent.get_value(obs)
        heads = [agent.critic_ext, agent.critic_int] if isinstance(values, tuple) else [agent.critic[-1]]
        for head, value in zip(heads, values if isinstance(values, tuple) else [values]):
            head.weight.div_(value.std())
    agent.bf16 = bf16
    return agent


@pytest.mark.parametrize("script", EVERY_SCRIPT, ids=short)
def test_bf16_runs_the_trunk_in_bf16_and_keeps_loss_and_gradients_close_to_fp32(script):
    obs, actions, advantages, returns = batch(script)
    fp32, bf16 = agent_of(script, False), agent_of(script, True)
    conv_dtypes = []
    bf16.network[0].register_forward_hook(lambda module, inputs, output: conv_dtypes.append(output.dtype))

    loss, logprob, values, old_logprobs = ppo_loss(fp32, obs, actions, advantages, returns)
    loss.backward()
    bf16_loss, bf16_logprob, bf16_values, _ = ppo_loss(bf16, obs, actions, advantages, returns, old_logprobs)
    bf16_loss.backward()

    assert conv_dtypes == [torch.bfloat16]
    assert all(t.dtype == torch.float32 for t in (bf16_loss, bf16_logprob, *bf16_values, *bf16.parameters()))
    assert not torch.equal(bf16_logprob, logprob)  # bf16 did change the numbers
    assert (bf16_logprob - logprob).abs().max() < LOGPROB_ATOL
    assert (bf16_loss - loss).abs() < LOSS_RTOL * loss.abs()
    for value, bf16_value in zip(values, bf16_values):
        assert (bf16_value - value).abs().max() < VALUE_ATOL
    grad, bf16_grad = gradients(fp32), gradients(bf16)
    assert (bf16_grad - grad).norm() < GRADIENT_RTOL * grad.norm()
    with torch.no_grad():
        rollout_logprob = torch.cat(
            [bf16.get_action_and_value(obs[i : i + 8], actions[i : i + 8])[1] for i in range(0, 64, 8)]
        )
    assert (bf16_logprob.detach() - rollout_logprob).abs().max() < FIRST_RATIO_LOG_ATOL


@pytest.mark.parametrize(
    "script, method", [(RND, None), (PROCGEN, "snd-std"), (BASELINE, None)], ids=["rnd", "procgen-snd-std", "baseline"]
)
def test_compiled_networks_compute_what_the_eager_ones_do_and_keep_their_names(script, method):
    module = load_script(script)
    obs, actions, advantages, returns = batch(script, 16)
    eager, compiled = agent_of(script, False), agent_of(script, False)
    compiled.network.compile()
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    loss, *_, old_logprobs = ppo_loss(eager, obs, actions, advantages, returns)
    loss.backward()
    compiled_loss, *_ = ppo_loss(compiled, obs, actions, advantages, returns, old_logprobs)
    compiled_loss.backward()
    assert torch.allclose(compiled_loss, loss, rtol=1e-4)
    assert torch.allclose(gradients(compiled), gradients(eager), rtol=1e-3, atol=1e-6)
    if script == BASELINE:
        return
    torch.manual_seed(0)
    eager_motivation = module.MOTIVATION_MODELS[method]() if method else module.RNDModel()
    torch.manual_seed(0)
    compiled_motivation = module.MOTIVATION_MODELS[method]() if method else module.RNDModel()
    names = compiled_motivation.state_dict().keys()
    compiled_motivation.target.compile()
    compiled_motivation.predictor.compile()
    assert compiled_motivation.state_dict().keys() == names
    args = module.Args(**({"method": method} if method else {}))
    module.check_args(args)
    frame_shape = (3, 64, 64) if script == PROCGEN else (96, 96)  # the newest frame: RGB on Procgen, grey on Atari
    frames = torch.randint(0, 256, (16, *frame_shape), dtype=torch.uint8)
    next_frames = frames.roll(1, 0)
    losses = []
    for model in (eager_motivation, compiled_motivation):
        torch.manual_seed(2)  # the same masks
        loss, _, features = module.motivation_loss(model, args, frames, next_frames, slice(0, 16))
        loss.backward()
        losses.append((loss, features, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    (loss, features, grad), (compiled_loss, compiled_features, compiled_grad) = losses
    assert torch.allclose(compiled_loss, loss, rtol=1e-4)
    assert torch.allclose(compiled_features, features, rtol=1e-4, atol=1e-5)
    assert torch.allclose(compiled_grad, grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize(
    "script, flags", [(RND, ["--bf16", "--compile"]), (PROCGEN, ["--bf16"])], ids=["rnd-bf16-compile", "procgen-bf16"]
)
def test_a_tiny_run_with_each_flag_trains_and_logs(script, flags, tmp_path):
    run_script(script, tiny_run(script) + ["--total-timesteps", "64", *flags], tmp_path, timeout=600)
    (run_dir,) = run_dirs(tmp_path)
    scalars = read_scalars(run_dir)
    assert len(scalars["losses/policy_loss"]) == 2
    assert all(torch.isfinite(torch.tensor(values)).all() for values in scalars.values())
