"""GAE for both reward streams against a plain loop written from the equations, one env and one step at a time:
A_t = sum_k (gamma lambda)^(k-t) delta_k over the steps k >= t of the same trace, and
delta_k = r_k + gamma V(s_{k+1}) - V(s_k), where V(s_{k+1}) is 0 after a termination, the final observation's value
after a truncation, V(s_T) after the rollout's last step, and otherwise the next stored state's value. Without
episodic ends (the intrinsic stream with --no-int-episodic) the trace and the bootstrap run on across episodes.
`compute_gae` is byte-identical in every script, so one of them is tested; the discounts are each script's."""

import pytest
import torch
from conftest import SCRIPTS, load_script, short

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
    return torch.tensor(advantages)


def rollout():
    """6 steps x 5 envs: env 0 terminates at step 2, env 1 is truncated at step 3, env 2 runs through, env 3 terminates
    at step 1 and is truncated at step 5 (the rollout's last step), env 4 terminates at the last step."""
    torch.manual_seed(0)
    steps, envs = 6, 5
    terminations = torch.zeros(steps, envs, dtype=torch.bool)
    truncations = torch.zeros(steps, envs, dtype=torch.bool)
    terminations[2, 0] = terminations[1, 3] = terminations[5, 4] = True
    truncations[3, 1] = truncations[5, 3] = True
    final_values = torch.zeros(steps, envs)
    final_values[truncations] = torch.tensor([5.0, -3.0])
    rewards, values, next_value = torch.rand(steps, envs), torch.randn(steps, envs), torch.randn(envs)
    return rewards, values, next_value, final_values, terminations, truncations


def expected(inputs, gamma, lam, episodic):
    return reference_gae(*(x.tolist() for x in inputs), gamma, lam, episodic)


@pytest.mark.parametrize("episodic", [True, False], ids=["episodic", "non-episodic"])
@pytest.mark.parametrize("gamma,lam", [(GAMMA, LAMBDA), (0.99, 0.95), (1.0, 1.0)])
def test_gae_matches_the_equations(rnd, episodic, gamma, lam):
    inputs = rollout()
    advantages, returns = rnd.compute_gae(*inputs, gamma, lam, episodic)
    assert advantages.shape == returns.shape == (6, 5)
    torch.testing.assert_close(advantages, expected(inputs, gamma, lam, episodic))
    torch.testing.assert_close(returns, advantages + inputs[1])


def test_episodic_and_non_episodic_differ_only_where_a_trace_crosses_an_episode_end(rnd):
    inputs = rollout()
    episodic, _ = rnd.compute_gae(*inputs, GAMMA, LAMBDA, True)
    non_episodic, _ = rnd.compute_gae(*inputs, GAMMA, LAMBDA, False)
    torch.testing.assert_close(episodic[:, 2], non_episodic[:, 2])  # env 2 never ends an episode
    for env in (0, 1, 3, 4):
        assert not torch.allclose(episodic[:, env], non_episodic[:, env]), env
    # the steps after env 0's last episode end see no end ahead of them
    torch.testing.assert_close(episodic[3:, 0], non_episodic[3:, 0])


def test_truncation_bootstraps_from_the_final_observation_and_termination_does_not(rnd):
    """One env, one step each, lambda irrelevant: A = r + gamma * V_next - V."""
    rewards, values = torch.tensor([[1.0]]), torch.tensor([[0.5]])
    final_values, next_value = torch.tensor([[10.0]]), torch.tensor([100.0])
    no, yes = torch.tensor([[False]]), torch.tensor([[True]])

    def gae(term, trunc, episodic=True):
        return rnd.compute_gae(rewards, values, next_value, final_values, term, trunc, 0.5, 0.95, episodic)[0].item()

    assert gae(yes, no) == pytest.approx(1.0 - 0.5)  # terminated: no bootstrap
    assert gae(no, yes) == pytest.approx(1.0 + 0.5 * 10.0 - 0.5)  # truncated: the final observation's value
    assert gae(no, no) == pytest.approx(1.0 + 0.5 * 100.0 - 0.5)  # rollout cut: V(s_T), not 0 as the authors'
    for ends in ((yes, no), (no, yes)):  # non-episodic: the next state's value, whatever ended
        assert gae(*ends, episodic=False) == pytest.approx(1.0 + 0.5 * 100.0 - 0.5)


def test_the_trace_stops_at_an_episode_end(rnd):
    """Two steps of one env, ended at step 0: A_0 is step 0's delta alone; without the end it adds gamma lambda A_1."""
    rewards, values = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.5], [0.25]])
    final_values, next_value = torch.tensor([[4.0], [0.0]]), torch.tensor([3.0])
    none = torch.zeros(2, 1, dtype=torch.bool)
    ended = torch.tensor([[True], [False]])
    delta_1 = 2.0 + 0.5 * 3.0 - 0.25
    a_terminated = rnd.compute_gae(rewards, values, next_value, final_values, ended, none, 0.5, 0.8)[0]
    a_truncated = rnd.compute_gae(rewards, values, next_value, final_values, none, ended, 0.5, 0.8)[0]
    a_running = rnd.compute_gae(rewards, values, next_value, final_values, none, none, 0.5, 0.8)[0]
    torch.testing.assert_close(a_terminated, torch.tensor([[1.0 - 0.5], [delta_1]]))
    torch.testing.assert_close(a_truncated, torch.tensor([[1.0 + 0.5 * 4.0 - 0.5], [delta_1]]))
    torch.testing.assert_close(a_running, torch.tensor([[1.0 + 0.5 * 0.25 - 0.5 + 0.5 * 0.8 * delta_1], [delta_1]]))


@pytest.mark.parametrize("script", SCRIPTS, ids=short)
def test_each_stream_has_its_own_discount(script):
    """The extrinsic stream discounts by 0.998, the intrinsic one by 0.99 (the paper's settings), each as the loop."""
    args = load_script(script).Args
    assert (args.gamma, args.int_gamma, args.gae_lambda, args.int_episodic) == (0.998, 0.99, 0.95, True)
    rnd = load_script(SCRIPTS[0])
    inputs = rollout()
    ext, _ = rnd.compute_gae(*inputs, args.gamma, args.gae_lambda)
    intrinsic, _ = rnd.compute_gae(*inputs, args.int_gamma, args.gae_lambda)
    torch.testing.assert_close(ext, expected(inputs, 0.998, 0.95, True))
    torch.testing.assert_close(intrinsic, expected(inputs, 0.99, 0.95, True))
    assert not torch.allclose(ext, intrinsic)


def test_explained_variance(rnd):
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(rnd.explained_variance(returns, returns), torch.tensor(1.0))
    torch.testing.assert_close(rnd.explained_variance(torch.zeros(4), returns), torch.tensor(0.0))
    # 1 - Var(returns - values) / Var(returns): residuals (0.5, 0.5, -0.5, -0.5) have Var 1/3 against 5/3
    torch.testing.assert_close(
        rnd.explained_variance(returns - torch.tensor([0.5, 0.5, -0.5, -0.5]), returns), torch.tensor(0.8)
    )
    assert torch.isnan(rnd.explained_variance(torch.zeros(4), torch.ones(4)))
