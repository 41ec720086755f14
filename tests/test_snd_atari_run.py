"""The three SND scripts run as a user runs them: a tiny training run that logs every promised key (the method's loss
terms included), is stopped, resumed to the end, saves and evaluates its agent; their checkpoints restore exactly
what was saved and are refused by the other scripts."""

import os
import signal
import time

import numpy as np
import pytest
import torch

from conftest import TINY_RUN, load_script, read_scalars, run_dirs, run_script
from test_checkpoint import assert_restores_what_was_saved
from test_rnd_atari_run import EPISODE_KEYS, EVAL_KEYS, ITERATION_KEYS, start, wait_for_line

BATCH = 2 * 16  # TINY_RUN: 2 envs x 16 steps

# The terms of each method's target loss, logged as motivation/target_<term> (§4.2-4.4)
TARGET_TERMS = {
    "ppo_snd_v_atari.py": ["similarity", "magnitude"],
    "ppo_snd_std_atari.py": ["global_local_infonce", "local_local_infonce", "logit_norm", "feature_std"],
    "ppo_snd_vic_atari.py": ["invariance", "variance", "covariance"],
}
# (game, the eta the run must use by default): SND-STD's comes from the paper's per-game table (§7)
GAME_AND_ETA = {
    "ppo_snd_v_atari.py": ("MontezumaRevenge-v5", 0.5),
    "ppo_snd_std_atari.py": ("Venture-v5", 0.25),
    "ppo_snd_vic_atari.py": ("MontezumaRevenge-v5", 0.25),
}


@pytest.mark.parametrize("script", list(TARGET_TERMS))
def test_tiny_run_stopped_resumed_saved_and_evaluated(script, tmp_path):
    game, eta = GAME_AND_ETA[script]
    iterations = 3
    flags = [*TINY_RUN, "--env-id", game, "--total-timesteps", str(iterations * BATCH), "--checkpoint-interval", "0"]

    # 1. SIGTERM once iteration 1's checkpoint is in place: the run saves the state that iteration started from and exits 143
    process = start([*flags, "--save-model"], tmp_path, script)
    wait_for_line(process, f"iteration 1/{iterations}")
    (run_dir,) = run_dirs(tmp_path)
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(run_dir, "checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output
    stopped = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    assert (stopped["iteration"], stopped["global_step"]) == (1, BATCH)
    assert stopped["args"]["eta"] == eta
    assert os.path.basename(run_dir).startswith(f"{game}__{script[:-3]}__1__")

    # 2. another script refuses the checkpoint
    other = next(name for name in TARGET_TERMS if name != script)
    refused = run_script(other, [*flags, "--resume", run_dir], tmp_path, check=False)
    assert refused.returncode == 1 and f"was written by {script}, not {other}: use that script" in refused.stderr

    # 3. resume to the end, save the model and evaluate it
    result = run_script(script, [*flags, "--save-model", "--eval-episodes", "2", "--resume", run_dir], tmp_path)
    assert f"resumed {run_dir} at iteration 2, global step {BATCH};" in result.stdout
    assert run_dirs(tmp_path) == [run_dir]
    scalars = read_scalars(run_dir)
    method_keys = ["motivation/target_loss"] + [f"motivation/target_{term}" for term in TARGET_TERMS[script]]
    iteration_keys = [key for key in ITERATION_KEYS if key != "charts/rooms_visited" or game.startswith("Montezuma")]
    missing = [key for key in iteration_keys + method_keys + EVAL_KEYS if key not in scalars]
    assert not missing, f"keys never logged: {missing}"
    for key in iteration_keys + method_keys:
        assert [step for step, _ in scalars[key]] == [BATCH * i for i in range(1, iterations + 1)], key
    episode_keys = [key for key in EPISODE_KEYS if key != "charts/episodic_rooms" or game.startswith("Montezuma")]
    assert all(key in scalars for key in episode_keys)
    assert all(0.0 <= value <= 1.0 for _, value in scalars["motivation/int_reward_max"])
    assert len(scalars["eval/episodic_return"]) == 2
    model = os.path.join(run_dir, f"{script[:-3]}.cleanrl_model")
    assert torch.load(model, weights_only=True)["script"] == script


def snd_training_objects(snd, seed: int):
    """The objects an SND run checkpoints, after one update each, so the optimiser moments are non-trivial; the one
    motivation optimiser covers the target too."""
    torch.manual_seed(seed)
    agent, motivation = snd.Agent(18), snd.SNDModel()
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-4)
    motivation_optimizer = torch.optim.Adam(motivation.parameters(), lr=1e-4)
    rooms_seen = np.zeros(256, dtype=bool)
    obs = torch.randint(0, 256, (4, 4, 96, 96), dtype=torch.uint8)
    _, logprob, _, ext_value, int_value = agent.get_action_and_value(obs)
    (logprob.sum() + ext_value.sum() + int_value.sum()).backward()
    optimizer.step()
    target_features, predicted_features = motivation(snd.snd_input(obs[:, -1]))
    (target_features.pow(2).mean() + (predicted_features - target_features.detach()).pow(2).mean()).backward()
    motivation_optimizer.step()
    rooms_seen[[1, seed % 24]] = True
    return agent, optimizer, motivation, motivation_optimizer, rooms_seen


def snd_checkpoint(snd, args, objects) -> dict:
    agent, optimizer, motivation, motivation_optimizer, rooms_seen = objects
    return {
        "script": snd.SCRIPT,
        "args": snd.asdict(args),
        "run_name": "test_run",
        "num_actions": 18,
        **snd.learner_state(agent, optimizer, motivation, motivation_optimizer),
        **snd.progress_state(3, 96, rooms_seen),
    }


@pytest.mark.parametrize("script", list(TARGET_TERMS))
def test_snd_restore_equals_what_was_saved(script, tmp_path):
    snd = load_script(script)
    args = snd.Args(num_envs=2, num_steps=16, num_minibatches=2, total_timesteps=320, eta=0.5)
    snd.check_args(args)
    fresh = assert_restores_what_was_saved(
        snd,
        args,
        lambda seed: snd_training_objects(snd, seed),
        lambda objects: snd_checkpoint(snd, args, objects),
        snd.SNDModel,
        tmp_path,
    )
    first_target_weight = next(fresh[2].target.parameters())
    assert fresh[3].state[first_target_weight]["exp_avg_sq"].abs().sum() > 0  # the target's optimiser state is there too
