"""GAE for both streams against a plain loop written from the equations, one env and one step at a time:
A_t = sum_k (gamma lambda)^(k-t) delta_k over the steps k >= t of the same trace, and
delta_k = r_k + gamma V(s_{k+1}) - V(s_k), where V(s_{k+1}) is 0 after a termination, the final observation's value
after a truncation, V(s_T) after the rollout's last step, and otherwise the next stored state's value."""

import pytest
import torch

GAMMA, LAMBDA = 0.9, 0.8


def reference_gae(rewards, values, next_value, final_values, terminations, truncations, gamma, lam, episodic):
    steps, envs = len(rewards), len(rewards[0])
    advantages = [[0.0] * envs for _ in range(steps)]
    for e in range(envs):
        for t in range(steps):
            total, weight = 0.0, 1.0
            for k in range(t, steps):
                if episodic and terminations[k][e]:
                    next_v = 0.0
                elif episodic and truncations[k][e]:
                    next_v = final_values[k][e]
                elif k == steps - 1:
                    next_v = next_value[e]
                else:
                    next_v = values[k + 1][e]
                total += weight * (rewards[k][e] + gamma * next_v - values[k][e])
                if episodic and (terminations[k][e] or truncations[k][e]):
                    break
                weight *= gamma * lam
            advantages[t][e] = total
    return advantages


def rollout():
    """6 steps x 4 envs: env 0 terminates at step 2, env 1 is truncated at step 3, env 2 runs through,
    env 3 terminates at step 1 and is truncated at step 5, the rollout's last step."""
    torch.manual_seed(0)
    steps, envs = 6, 4
    terminations = torch.zeros(steps, envs, dtype=torch.bool)
    truncations = torch.zeros(steps, envs, dtype=torch.bool)
    terminations[2, 0] = terminations[1, 3] = True
    truncations[3, 1] = truncations[5, 3] = True
    final_values = torch.zeros(steps, envs)
    final_values[truncations] = torch.tensor([5.0, -3.0])
    return (torch.rand(steps, envs), torch.randn(steps, envs), torch.randn(envs), final_values, terminations, truncations)


@pytest.mark.parametrize("episodic", [True, False], ids=["episodic", "non-episodic"])
def test_gae_matches_the_equations(rnd, episodic):
    rewards, values, next_value, final_values, terminations, truncations = rollout()
    advantages, returns = rnd.compute_gae(
        rewards, values, next_value, final_values, terminations, truncations, GAMMA, LAMBDA, episodic
    )
    expected = reference_gae(
        rewards.tolist(),
        values.tolist(),
        next_value.tolist(),
        final_values.tolist(),
        terminations.tolist(),
        truncations.tolist(),
        GAMMA,
        LAMBDA,
        episodic,
    )
    torch.testing.assert_close(advantages, torch.tensor(expected))
    torch.testing.assert_close(returns, advantages + values)


def test_truncation_bootstraps_from_the_final_observation_and_termination_does_not(rnd):
    """One env, one step each, lambda irrelevant: A = r + gamma * V_next - V."""
    rewards, values = torch.tensor([[1.0]]), torch.tensor([[0.5]])
    final_values, next_value = torch.tensor([[10.0]]), torch.tensor([100.0])
    no, yes = torch.tensor([[False]]), torch.tensor([[True]])
    gae = lambda term, trunc: rnd.compute_gae(rewards, values, next_value, final_values, term, trunc, 0.5, 0.95)[0].item()
    assert gae(yes, no) == pytest.approx(1.0 - 0.5)  # terminated: no bootstrap
    assert gae(no, yes) == pytest.approx(1.0 + 0.5 * 10.0 - 0.5)  # truncated: the final observation's value
    assert gae(no, no) == pytest.approx(1.0 + 0.5 * 100.0 - 0.5)  # rollout cut: V(s_T), not 0 as in the reference


def test_streams_use_their_own_discount(rnd):
    rewards, values, next_value, final_values, terminations, truncations = rollout()
    ext, _ = rnd.compute_gae(rewards, values, next_value, final_values, terminations, truncations, 0.998, 0.95)
    intr, _ = rnd.compute_gae(rewards, values, next_value, final_values, terminations, truncations, 0.99, 0.95)
    assert not torch.allclose(ext, intr)
