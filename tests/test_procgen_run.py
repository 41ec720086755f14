"""ppo_snd_procgen.py runs as a user runs it, with each --method: a tiny training run on jumper that logs every promised
key (the method's loss terms included), is stopped, resumed to the end, saves and evaluates its agent; checkpoints
restore exactly what was saved and are refused under another method or by another script; a seed gives one run."""

import os
import signal
import time

import pytest
import torch

from conftest import load_script, read_scalars, run_dirs, run_script
from test_checkpoint import assert_restores_what_was_saved
from test_rnd_atari_run import ITERATION_KEYS, start, wait_for_line

SCRIPT = "ppo_snd_procgen.py"
# A run small enough for 2 CPU cores: 2 envs x 64 steps; jumper's random episodes last about 50 steps
TINY_PROCGEN_RUN = ["--env-id", "jumper", "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2"]
TINY_PROCGEN_RUN += ["--eval-episodes", "0", "--no-cuda"]
BATCH = 2 * 64

# The terms of each method's target loss, logged as motivation/target_<term> (§4.2-4.4); RND's target is not trained
TARGET_TERMS = {
    "rnd": [],
    "snd-v": ["similarity", "magnitude"],
    "snd-std": ["global_local_infonce", "local_local_infonce", "logit_norm", "feature_std"],
    "snd-vic": ["invariance", "variance", "covariance"],
}
# The eta each method must use on jumper by default (§7)
JUMPER_ETA = {"rnd": 1.0, "snd-v": 0.5, "snd-std": 1.0, "snd-vic": 0.5}
# Procgen has no rooms and no binarised reward: those Atari keys are not logged
PROCGEN_ITERATION_KEYS = [key for key in ITERATION_KEYS if key != "charts/rooms_visited"]


@pytest.mark.parametrize("method", list(TARGET_TERMS))
def test_tiny_run_stopped_resumed_saved_and_evaluated(method, tmp_path):
    iterations = 3
    flags = [*TINY_PROCGEN_RUN, "--method", method, "--total-timesteps", str(iterations * BATCH), "--checkpoint-interval", "0"]

    # 1. SIGTERM once iteration 1's checkpoint is in place: the run saves the state that iteration started from and exits 143
    process = start([*flags, "--save-model"], tmp_path, SCRIPT)
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
    assert stopped["args"]["eta"] == JUMPER_ETA[method]
    assert (stopped["frame_mean"] is not None) == (method == "rnd")  # RND's running mean is saved with the run
    assert os.path.basename(run_dir).startswith(f"jumper__ppo_snd_procgen-{method}__1__")

    # 2. another method refuses the checkpoint, saying which flag differs
    other = next(name for name in TARGET_TERMS if name != method)
    refused = run_script(SCRIPT, [*flags, "--method", other, "--resume", run_dir], tmp_path, check=False)
    assert refused.returncode == 1 and f"--method {method!r} (now {other!r})" in refused.stderr, refused.stderr

    # 3. resume to the end, save the model and evaluate it
    result = run_script(SCRIPT, [*flags, "--save-model", "--eval-episodes", "2", "--resume", run_dir], tmp_path)
    assert f"resumed {run_dir} at iteration 2, global step {BATCH};" in result.stdout
    assert run_dirs(tmp_path) == [run_dir]
    scalars = read_scalars(run_dir)
    method_keys = [f"motivation/target_{term}" for term in ["loss", *TARGET_TERMS[method]]] if method != "rnd" else []
    missing = [key for key in PROCGEN_ITERATION_KEYS + method_keys + ["eval/episodic_return"] if key not in scalars]
    assert not missing, f"keys never logged: {missing}"
    for key in PROCGEN_ITERATION_KEYS + method_keys:
        assert [step for step, _ in scalars[key]] == [BATCH * i for i in range(1, iterations + 1)], key
    assert "charts/episodic_return" in scalars and "charts/episodic_length" in scalars
    assert not [
        key for key in ("charts/rooms_visited", "charts/episodic_rooms", "charts/episodic_reward_events") if key in scalars
    ]
    assert ("motivation/target_loss" in scalars) == (method != "rnd")
    assert all(0.0 <= value <= 1.0 for _, value in scalars["motivation/int_reward_max"])
    assert len(scalars["eval/episodic_return"]) == 2
    model = os.path.join(run_dir, "ppo_snd_procgen.cleanrl_model")
    assert torch.load(model, weights_only=True)["script"] == SCRIPT


def test_evaluation_only_of_a_saved_model_and_refusals(tmp_path):
    run_script(SCRIPT, [*TINY_PROCGEN_RUN, "--total-timesteps", str(BATCH), "--save-model"], tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    model = os.path.join(run_dir, "ppo_snd_procgen.cleanrl_model")

    result = run_script(SCRIPT, [*TINY_PROCGEN_RUN, "--evaluate", model, "--eval-episodes", "3"], tmp_path)
    assert result.stdout.count("eval episode") == 3
    (eval_dir,) = [path for path in run_dirs(tmp_path) if path != run_dir]
    assert os.path.basename(eval_dir).startswith("jumper__ppo_snd_procgen-snd-vic-eval__1__")
    assert [step for step, _ in read_scalars(eval_dir)["eval/episodic_return"]] == [0, 1, 2]

    other_game = run_script(
        SCRIPT, [*TINY_PROCGEN_RUN, "--env-id", "coinrun", "--evaluate", model, "--eval-episodes", "1"], tmp_path, check=False
    )
    assert other_game.returncode == 1 and "holds an agent trained on jumper: pass --env-id jumper" in other_game.stderr
    atari = run_script("ppo_rnd_atari.py", ["--no-cuda", "--resume", run_dir], tmp_path, check=False)
    assert atari.returncode == 1 and "was written by ppo_snd_procgen.py, not ppo_rnd_atari.py" in atari.stderr


def test_same_seed_same_run(tmp_path):
    """Seeding (python, numpy, torch, procgen's rand_seed and the random actions): two runs with the same seed log the
    same losses and episodes, another seed does not."""
    logs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        os.mkdir(tmp_path / name)
        run_script(SCRIPT, [*TINY_PROCGEN_RUN, "--total-timesteps", str(2 * BATCH), "--seed", seed], tmp_path / name)
        scalars = read_scalars(run_dirs(tmp_path / name)[0])
        keys = ["losses/policy_loss", "losses/value_loss", "motivation/target_loss", "charts/episodic_length"]
        logs.append({key: scalars[key] for key in keys})
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]


def training_objects(procgen, method: str, seed: int):
    """The objects a run of `method` checkpoints, after one update each, so the optimiser moments are non-trivial."""
    torch.manual_seed(seed)
    agent, motivation = procgen.Agent(15), procgen.MOTIVATION_MODELS[method]()
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-4)
    trained = motivation.predictor if method == "rnd" else motivation
    motivation_optimizer = torch.optim.Adam(trained.parameters(), lr=1e-4)
    frame_mean = procgen.RunningMean((3, 64, 64), torch.device("cpu")) if method == "rnd" else None
    obs = torch.randint(0, 256, (4, 6, 64, 64), dtype=torch.uint8)
    _, logprob, _, ext_value, int_value = agent.get_action_and_value(obs)
    (logprob.sum() + ext_value.sum() + int_value.sum()).backward()
    optimizer.step()
    if frame_mean is not None:
        frame_mean.update(obs[None, :, 3:])  # one vector step
    target_features, predicted_features = motivation(
        procgen.motivation_input(obs[:, 3:], None if frame_mean is None else frame_mean.mean)
    )
    loss = (predicted_features - target_features.detach()).pow(2).mean()
    if method != "rnd":
        loss = loss + target_features.pow(2).mean()
    loss.backward()
    motivation_optimizer.step()
    return agent, optimizer, motivation, motivation_optimizer, frame_mean


def checkpoint_of(procgen, args, objects) -> dict:
    agent, optimizer, motivation, motivation_optimizer, frame_mean = objects
    return {
        "script": procgen.SCRIPT,
        "args": procgen.asdict(args),
        "run_name": "test_run",
        "num_actions": 15,
        **procgen.learner_state(agent, optimizer, motivation, motivation_optimizer),
        **procgen.progress_state(3, 96, frame_mean),
    }


@pytest.mark.parametrize("method", list(TARGET_TERMS))
def test_restore_equals_what_was_saved(method, tmp_path):
    procgen = load_script(SCRIPT)
    args = procgen.Args(method=method, num_envs=2, num_steps=16, num_minibatches=2, total_timesteps=320, eta=0.5)
    procgen.check_args(args)
    fresh = assert_restores_what_was_saved(
        procgen,
        args,
        lambda seed: training_objects(procgen, method, seed),
        lambda objects: checkpoint_of(procgen, args, objects),
        procgen.MOTIVATION_MODELS[method],
        tmp_path,
    )
    frame_mean = fresh[4]
    if method == "rnd":
        assert frame_mean.count == 2 and frame_mean.mean.abs().sum() > 0  # RND's running mean is restored too
