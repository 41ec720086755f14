"""The Atari scripts' rollout is pipelined over two halves of the envs (one half's actions are computed while the
other half's workers step). It must record each env's transitions where stepping all envs at once would: the same
observations, actions, rewards, episode ends, final observations and s_{t+1} frames at the same (step, env).

That is well defined for a policy whose action is a function of the observation alone: each env's episode then
depends only on its seed. A patch makes the script's policy such a function (the sum of the stack's pixels modulo the
number of actions) and its values a fingerprint of the observation (the same sum, exact in float32), and saves what
the first rollout hands to compute_gae (and, in the SND scripts, to the intrinsic reward) and the observation and
action buffers the PPO update reads. A plain loop here steps one
vector env of all envs, seeded as the script seeds them, and must find the same."""

import numpy as np
import pytest
import torch

from conftest import ATARI_TINY_RUN, BASELINE, SND_VIC, load_script, run_script

NUM_STEPS, EPISODE_CAP = 16, 6  # episodes truncated within the rollout

PATCH = """
import sys, torch, tyro
real_cli = tyro.cli

def fingerprint(obs):
    return obs.flatten(1).sum(1).float()

def cli(*args, **kwargs):
    script = sys._getframe(1).f_globals  # the script's namespace: patched before its main block goes on
    Agent, compute_gae = script["Agent"], script["compute_gae"]
    real_act, real_value = Agent.get_action_and_value, Agent.get_value
    captured = {}

    def act(self, x, action=None):
        if action is not None:  # the update: unchanged
            return real_act(self, x, action)
        out = real_act(self, x, x.flatten(1).sum(1) % self.actor[-1].out_features)
        return (*out[:3], *[fingerprint(x)] * (len(out) - 3))

    def value(self, x):
        return fingerprint(x) if isinstance(real_value(self, x), torch.Tensor) else (fingerprint(x), fingerprint(x))

    def gae(rewards, values, next_value, final_values, terminations, truncations, *rest):
        if "rewards" not in captured:
            captured.update(rewards=rewards, values=values, next_value=next_value, final_values=final_values)
            captured.update(terminations=terminations, truncations=truncations, actions=script["actions"])
            captured["obs"] = fingerprint(script["obs"].flatten(0, 1)).view(values.shape)  # the update's observations
            torch.save({key: value.clone() for key, value in captured.items()}, "rollout.pt")
        return compute_gae(rewards, values, next_value, final_values, terminations, truncations, *rest)

    Agent.get_action_and_value, Agent.get_value, script["compute_gae"] = act, value, gae
    if "rollout_distillation_errors" in script:  # an SND script: the s_{t+1} frames its rewards score
        errors = script["rollout_distillation_errors"]

        def scored(motivation, next_frames, chunk_frames):
            captured.setdefault("next_frames", next_frames)
            return errors(motivation, next_frames, chunk_frames)

        script["rollout_distillation_errors"] = scored
    return real_cli(*args, **kwargs)

tyro.cli = cli
"""


def fingerprint(obs: np.ndarray) -> np.ndarray:
    return obs.reshape(len(obs), -1).sum(1, dtype=np.int64).astype(np.float32)


def stepped_at_once(script, num_envs: int) -> dict:
    """The reference: one vector env of all envs, stepped with the same observation-determined policy."""
    env_id = script.resolve_env_id(script.Args.env_id)
    with script.gym.make(env_id) as probe:
        num_actions = probe.action_space.n
    envs = script.make_vector_env(env_id, num_envs, EPISODE_CAP)
    obs, _ = envs.reset(seed=np.random.SeedSequence([1, 1]).generate_state(num_envs).tolist())
    keys = ("values", "rewards", "terminations", "truncations", "final_values", "obs", "actions")
    expected = {key: np.zeros((NUM_STEPS, num_envs)) for key in keys}
    expected["next_frames"] = np.zeros((NUM_STEPS, num_envs, 96, 96))
    for step in range(NUM_STEPS):
        expected["values"][step] = expected["obs"][step] = fingerprint(obs)
        expected["actions"][step] = action = obs.reshape(num_envs, -1).sum(1, dtype=np.int64) % num_actions
        obs, reward, terminated, truncated, infos = envs.step(action)
        for key, value in zip(keys[1:4], (reward, terminated, truncated)):
            expected[key][step] = value
        expected["next_frames"][step] = obs[:, -1]
        for i in np.flatnonzero(terminated | truncated):
            expected["next_frames"][step, i] = infos["final_obs"][i][-1]
            expected["final_values"][step, i] = fingerprint(infos["final_obs"][i][None])[0] if truncated[i] else 0
    expected["next_value"] = fingerprint(obs)
    envs.close()
    return expected


@pytest.mark.parametrize(
    "name, num_envs", [(BASELINE, 5), (SND_VIC, 5), (BASELINE, 1)], ids=["atari-5-envs", "snd_vic-5-envs", "atari-1-env"]
)
def test_the_pipelined_rollout_records_what_stepping_all_envs_at_once_gives(name, num_envs, tmp_path):
    """5 envs: halves of 2 and 3; a single env: one half."""
    sizes = {"--num-envs": num_envs, "--num-steps": NUM_STEPS, "--max-episode-steps": EPISODE_CAP}
    sizes["--total-timesteps"] = num_envs * NUM_STEPS  # one rollout
    run_script(name, [*ATARI_TINY_RUN, *[str(word) for item in sizes.items() for word in item]], tmp_path, patch=PATCH)
    recorded = torch.load(tmp_path / "rollout.pt")
    expected = stepped_at_once(load_script(name), num_envs)
    assert expected["truncations"].sum() >= num_envs * (NUM_STEPS // EPISODE_CAP)  # episodes end within the rollout
    assert num_envs == 1 or len({tuple(column) for column in expected["values"].T}) > 1  # the envs' episodes differ
    for key in [*expected] if name == SND_VIC else [key for key in expected if key != "next_frames"]:
        np.testing.assert_array_equal(recorded[key].numpy().astype(np.float64), expected[key], err_msg=key)
