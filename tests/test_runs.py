"""The scripts run as a user runs them, through the command line, on tiny runs: every promised key once per iteration,
evaluation points that never repeat, resumes (also of a finished run, with the other env id spelling), kills and
signals at any moment (during the env start, the rollout or the updates), divergence, a full disk, two processes on one
run folder, damaged checkpoints, and seeding. A test that kills or signals a run asserts the checkpoint files after."""

import os
import re
import signal
import time

import cv2
import pytest
import torch

from conftest import (
    BASELINE,
    BATCH,
    PROCGEN,
    PROCGEN_BASELINE,
    RND,
    FINISHED_RND_FLAGS,
    SND_ATARI,
    copy_run,
    group_processes,
    raw_scalar_steps,
    read_scalars,
    run_dirs,
    run_script,
    short,
    start_script,
    tiny_run,
    wait_for_line,
)

ITERATION_KEYS = [
    *("charts/SPS", "charts/learning_rate", "losses/policy_loss", "losses/value_loss", "losses/ext_value_loss"),
    *("losses/int_value_loss", "losses/entropy", "losses/old_approx_kl", "losses/approx_kl", "losses/clipfrac"),
    *("losses/grad_norm", "losses/ext_explained_variance", "losses/int_explained_variance"),
    *("motivation/int_reward_mean", "motivation/int_reward_std", "motivation/int_reward_max"),
    *("motivation/distillation_error", "motivation/predictor_loss", "motivation/target_feature_spread"),
    "motivation/target_effective_rank",
    *("perf/env_seconds", "perf/policy_seconds", "perf/intrinsic_reward_seconds", "perf/ppo_update_seconds"),
    "perf/motivation_update_seconds",
]
ATARI_KEYS = ["charts/rooms_visited"]  # Montezuma's Revenge has rooms
EPISODE_KEYS = ["charts/episodic_return", "charts/episodic_length"]
ATARI_EPISODE_KEYS = ["charts/episodic_reward_events", "charts/episodic_rooms"]
# Each SND method's target loss and its terms, logged as motivation/target_<term>
TARGET_TERMS = {
    "ppo_snd_v_atari.py": ["loss", "similarity", "magnitude"],
    "ppo_snd_std_atari.py": ["loss", "global_local_infonce", "local_local_infonce", "logit_norm", "feature_std"],
    "ppo_snd_vic_atari.py": ["loss", "invariance", "variance", "covariance"],
    "snd-v": ["loss", "similarity", "magnitude"],
    "snd-std": ["loss", "global_local_infonce", "local_local_infonce", "logit_norm", "feature_std"],
    "snd-vic": ["loss", "invariance", "variance", "covariance"],
}


def checkpoint_of(run_dir, name="checkpoint.pt") -> dict:
    return torch.load(os.path.join(run_dir, name), map_location="cpu", weights_only=True)


def expected_keys(script: str, method: str = "snd-vic") -> list:
    """The keys logged each iteration; `method`: the procgen script's."""
    keys = ITERATION_KEYS + [
        f"motivation/target_{term}" for term in TARGET_TERMS.get(method if script == PROCGEN else script, [])
    ]
    return keys + (ATARI_KEYS if script != PROCGEN else [])


def assert_logged_once_per_iteration(run_dir, keys: list, iterations: int) -> dict:
    scalars = read_scalars(run_dir)
    missing = [key for key in keys if key not in scalars]
    assert not missing, f"keys never logged: {missing}"
    for key in keys:
        assert [step for step, _ in scalars[key]] == [BATCH * i for i in range(1, iterations + 1)], key
    return scalars


# A whole run's life, for RND and procgen; the other scripts share that code (tests/test_shared_blocks.py), so they
# get one run each that checks what is theirs: the keys of their losses, their default eta


@pytest.mark.parametrize("script", [RND, PROCGEN], ids=short)
def test_a_run_logs_every_key_once_evaluates_and_is_resumed_and_extended_without_duplicates(script, tmp_path):
    flags = [*tiny_run(script), "--total-timesteps", str(2 * BATCH), "--save-model", "--eval-episodes", "2"]
    result = run_script(script, [*flags, "--capture-video", "--video-interval", "1"], tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    relative = os.path.relpath(run_dir, tmp_path)
    lines = result.stdout.splitlines()
    # the run folder and how to watch it come before anything slow; each iteration line has the time and an ETA
    assert lines[0] == f"run folder {relative}; watch it with: tensorboard --logdir {relative}"
    assert f"iteration 2/2, global_step={2 * BATCH}, SPS=" in result.stdout and ", elapsed 0:00:" in result.stdout
    assert ", ETA 0:00:00, return " in result.stdout
    episode_keys = EPISODE_KEYS + (ATARI_EPISODE_KEYS if script == RND else [])
    scalars = assert_logged_once_per_iteration(run_dir, expected_keys(script), 2)
    assert all(key in scalars for key in episode_keys)
    assert [step for step, _ in scalars["eval/episodic_return"]] == [2 * BATCH] * 2  # at the agent steps trained
    assert {"checkpoint.pt", "run.lock", f"{script[:-3]}.cleanrl_model"} <= set(os.listdir(run_dir))
    video_dir = tmp_path / "videos" / os.path.basename(run_dir)
    videos = sorted(os.listdir(video_dir))
    assert "train-episode-0.mp4" in videos and "eval-episode-0.mp4" in videos
    frames = {video: int(cv2.VideoCapture(str(video_dir / video)).get(cv2.CAP_PROP_FRAME_COUNT)) for video in videos}
    assert min(frames.values()) > 1, frames  # no stub of an episode that was reset but never played

    # resuming the finished run does nothing, with the env id spelled the other way for Atari
    other_spelling = ["--env-id", "ALE/MontezumaRevenge-v5"] if script == RND else ["--env-id", "procgen-jumper-v0"]
    finished = run_script(script, [*flags, *other_spelling, "--resume", run_dir], tmp_path)
    assert f"{run_dir} is finished at global step {2 * BATCH}" in finished.stdout
    # extending it: one more iteration, evaluated at its own step; no point logged twice
    extended = run_script(
        script, [*flags, *other_spelling, "--total-timesteps", str(3 * BATCH), "--resume", run_dir], tmp_path
    )
    assert "at iteration 3, global step 64; the envs start anew" in extended.stdout
    scalars = assert_logged_once_per_iteration(run_dir, expected_keys(script), 3)
    assert [step for step, _ in scalars["eval/episodic_return"]] == [2 * BATCH] * 2 + [3 * BATCH] * 2
    assert run_dirs(tmp_path) == [run_dir]

    # evaluation only, of the saved model: a run of its own, at the model's agent steps
    model = os.path.join(run_dir, f"{script[:-3]}.cleanrl_model")
    evaluated = run_script(script, [*tiny_run(script), "--evaluate", model, "--eval-episodes", "3"], tmp_path)
    assert evaluated.stdout.count("eval episode") == 3
    (eval_dir,) = [path for path in run_dirs(tmp_path) if path != run_dir]
    assert "-eval__1__" in os.path.basename(eval_dir)
    assert {k: [s for s, _ in v] for k, v in read_scalars(eval_dir).items()}["eval/episodic_return"] == [3 * BATCH] * 3


SCRIPT_RUNS = [(script, "", ["--env-id", "Venture-v5"] if script == "ppo_snd_std_atari.py" else []) for script in SND_ATARI]
SCRIPT_RUNS += [(PROCGEN, method, ["--method", method]) for method in ("rnd", "snd-v", "snd-std")]
DEFAULT_ETA = {"ppo_snd_v_atari.py": 0.5, "ppo_snd_std_atari.py": 0.25, "ppo_snd_vic_atari.py": 0.25, "rnd": 1.0}
DEFAULT_ETA.update({"snd-v": 0.5, "snd-std": 1.0})


@pytest.mark.parametrize(
    "script, method, flags", SCRIPT_RUNS, ids=[short(s) + (f"-{m}" if m else "") for s, m, _ in SCRIPT_RUNS]
)
def test_each_method_logs_its_loss_terms_and_uses_the_papers_eta(script, method, flags, tmp_path):
    run_script(script, [*tiny_run(script), *flags, "--total-timesteps", str(2 * BATCH)], tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    keys = [key for key in expected_keys(script, method) if "Venture-v5" not in flags or key not in ATARI_KEYS]
    assert_logged_once_per_iteration(run_dir, keys, 2)
    assert checkpoint_of(run_dir)["args"]["eta"] == DEFAULT_ETA[method or script]
    assert ("motivation/target_loss" in read_scalars(run_dir)) == (method != "rnd")


BASELINE_KEYS = [
    *("charts/SPS", "charts/learning_rate", "losses/policy_loss", "losses/value_loss", "losses/entropy"),
    *("losses/old_approx_kl", "losses/approx_kl", "losses/clipfrac", "losses/grad_norm", "losses/explained_variance"),
    *("perf/env_seconds", "perf/policy_seconds", "perf/ppo_update_seconds"),
]


@pytest.mark.parametrize(
    "script, flags, gamma",
    [(BASELINE, ["--env-id", "Gravitar-v5"], 0.998), (BASELINE, [], 0.99), (PROCGEN_BASELINE, [], 0.99)],
    ids=["atari-gravitar", "atari", "procgen"],
)
def test_the_baseline_logs_its_keys_uses_the_papers_gamma_and_evaluates(script, flags, gamma, tmp_path):
    run_script(script, [*tiny_run(script), *flags, "--total-timesteps", str(2 * BATCH), "--eval-episodes", "1"], tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    rooms = ATARI_KEYS if script == BASELINE and not flags else []
    scalars = assert_logged_once_per_iteration(run_dir, BASELINE_KEYS + rooms, 2)
    assert not [key for key in scalars if key.startswith("motivation/") or "int_" in key]  # no exploration bonus
    assert [step for step, _ in scalars["eval/episodic_return"]] == [2 * BATCH]
    checkpoint = checkpoint_of(run_dir)
    assert checkpoint["args"]["gamma"] == gamma and set(checkpoint["state"]) >= {"agent", "optimizer"}
    assert "motivation" not in checkpoint["state"]


def test_same_seed_same_run_other_seed_other_run(finished_rnd_run, tmp_path):
    run_folders = [finished_rnd_run]  # seed 1, the default
    for name, seed in (("b", "1"), ("c", "2")):
        os.mkdir(tmp_path / name)
        run_script(RND, [*FINISHED_RND_FLAGS, "--seed", seed], tmp_path / name)
        run_folders += run_dirs(tmp_path / name)
    logged = []
    for run_dir in run_folders:
        scalars = read_scalars(run_dir)
        keys = ("losses/policy_loss", "losses/value_loss", "motivation/predictor_loss", "charts/episodic_length")
        logged.append({key: scalars[key] for key in keys})
    assert logged[0] == logged[1] and logged[0] != logged[2]


def test_procgen_same_seed_same_run(tmp_path):
    logged = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        os.mkdir(tmp_path / name)
        run_script(PROCGEN, [*tiny_run(PROCGEN), "--total-timesteps", str(BATCH), "--seed", seed], tmp_path / name)
        scalars = read_scalars(run_dirs(tmp_path / name)[0])
        logged.append(
            {key: scalars[key] for key in ("losses/policy_loss", "motivation/predictor_loss", "motivation/distillation_error")}
        )
    assert logged[0] == logged[1] and logged[0] != logged[2]


# Kills and signals


def wait_for_new_checkpoint(checkpoint: str, timeout: float = 60) -> None:
    """Returns as soon as `checkpoint` is replaced (a new file: a new inode), i.e. as the next rollout starts."""

    def inode():
        try:
            return os.stat(checkpoint).st_ino
        except FileNotFoundError:  # between the two renames of a save
            return old

    old, deadline = inode(), time.time() + timeout
    while inode() == old and time.time() < deadline:
        time.sleep(0.005)


def test_killed_and_stopped_run_resumes_without_gaps_or_duplicates(tmp_path):
    iterations = 8
    flags = [*tiny_run(RND), "--total-timesteps", str(iterations * BATCH), "--checkpoint-interval", "0"]

    # 1. SIGKILL right after the checkpoint of iteration 3 is in place: its events must be on disk already
    process = start_script(RND, flags, tmp_path)
    wait_for_line(process, f"iteration 3/{iterations}")
    (run_dir,) = run_dirs(tmp_path)
    wait_for_new_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    process.kill()
    process.wait()
    assert checkpoint_of(run_dir)["iteration"] == 3

    # 2. resume; SIGKILL while iteration 5 is being logged and checkpointed
    process = start_script(RND, [*flags, "--resume", run_dir], tmp_path)
    assert f"at iteration 4, global step {3 * BATCH};" in "".join(wait_for_line(process, f"iteration 5/{iterations}"))
    process.kill()
    process.wait()
    checkpoint, last_logged = checkpoint_of(run_dir), max(raw_scalar_steps(run_dir, "charts/SPS"))
    assert checkpoint["iteration"] in (4, 5)
    assert last_logged - checkpoint["global_step"] <= BATCH  # lost at most one checkpoint interval (one iteration)

    # 3. resume, then SIGTERM as iteration 7's rollout starts: it drops the partial rollout, saves the state the
    # iteration started from and exits with 128 + 15
    process = start_script(RND, [*flags, "--resume", run_dir], tmp_path)
    wait_for_line(process, f"iteration 6/{iterations}")
    wait_for_new_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output
    stopped = checkpoint_of(run_dir)
    assert (stopped["iteration"], stopped["global_step"]) == (6, 6 * BATCH)
    assert f"stopped at global step {stopped['global_step']}; continue with --resume {run_dir}" in output

    # 4. resume to the end: every iteration is in the TensorBoard run exactly once
    result = run_script(RND, [*flags, "--resume", run_dir], tmp_path)
    assert f"resumed {run_dir}/checkpoint.pt at iteration 7" in result.stdout
    scalars = assert_logged_once_per_iteration(run_dir, expected_keys(RND), iterations)
    for key in EPISODE_KEYS:
        steps = [step for step, _ in scalars[key]]
        assert steps == sorted(steps) and all(steps.count(s) <= 2 for s in steps), key  # at most one per env
    assert (checkpoint_of(run_dir)["iteration"], checkpoint_of(run_dir)["global_step"]) == (iterations, iterations * BATCH)


# Steps at which a patched Adam.step stops or breaks the run: both optimisers count, 4 epochs x 2 minibatches of PPO
# and 2 motivation minibatches an iteration in TINY_RUN (10 steps), `epochs` x 2 + 2 with --update-epochs
COUNT_ADAM_STEPS = """
import os, signal, time, torch
calls = [0]
real_step = torch.optim.Adam.step
def step(self, *args, **kwargs):
    out = real_step(self, *args, **kwargs)
    calls[0] += 1
    {action}
    return out
torch.optim.Adam.step = step
"""


@pytest.mark.parametrize("phase", ["ppo", "motivation"])
def test_a_stop_during_an_update_saves_the_iterations_start_within_seconds(tmp_path, phase):
    """SIGTERM during iteration 2's PPO update (55 of its 60 minibatches to go) or its motivation update (one of two):
    the next minibatch does not run, the state iteration 2 started from is saved, and the process exits."""
    epochs = 30
    at = 2 * epochs + 2 + (5 if phase == "ppo" else 2 * epochs + 1)  # an Adam step of iteration 2's update
    action = f"if calls[0] == {at}: print('SIGTERM at step', calls[0], flush=True); os.kill(os.getpid(), signal.SIGTERM)"
    patch = COUNT_ADAM_STEPS.format(action=action) + "import atexit; atexit.register(lambda: print('steps', calls[0]))\n"
    flags = [
        *tiny_run(RND),
        "--update-epochs",
        str(epochs),
        "--total-timesteps",
        str(10 * BATCH),
        "--checkpoint-interval",
        "0",
    ]
    process = start_script(RND, flags, tmp_path, patch=patch)
    wait_for_line(process, "SIGTERM at step")
    signalled = time.time()
    output = process.communicate(timeout=120)[0]
    assert time.time() - signalled < 15, output
    assert process.returncode == 128 + signal.SIGTERM, output
    assert f"steps {at}" in output  # no minibatch after the signal's
    (run_dir,) = run_dirs(tmp_path)
    stopped = checkpoint_of(run_dir)
    assert (stopped["iteration"], stopped["global_step"]) == (1, BATCH)
    assert max(raw_scalar_steps(run_dir, "charts/SPS")) == BATCH


def test_a_stop_during_the_rollout_waits_for_the_steps_under_way_and_saves_the_iterations_start(tmp_path):
    """SIGINT as iteration 2's rollout starts its second step in the first half of the envs (2 envs: halves of one):
    the other half's step is still under way when the stop is seen. It is waited for before the envs close (gymnasium
    warns of a close with a step pending), the state iteration 2 started from is saved, and no worker is left."""
    at = 2 * 16 + 3  # step_async calls: 2 halves x 16 steps in iteration 1, then iteration 2's steps 0 (2) and 1
    patch = "import os, signal, gymnasium\nreal_step_async, calls = gymnasium.vector.AsyncVectorEnv.step_async, [0]\n"
    patch += "def step_async(self, actions):\n    real_step_async(self, actions)\n    calls[0] += 1\n"
    patch += f"    if calls[0] == {at}: os.kill(os.getpid(), signal.SIGINT)\n"
    patch += "gymnasium.vector.AsyncVectorEnv.step_async = step_async\n"
    flags = [*tiny_run(RND), "--total-timesteps", str(10 * BATCH), "--checkpoint-interval", "0"]
    process = start_script(RND, flags, tmp_path, patch=patch)
    output, errors = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, errors
    assert "SIGINT: saving a checkpoint" in output and "pending call" not in errors and "Traceback" not in errors, errors
    (run_dir,) = run_dirs(tmp_path)
    stopped = checkpoint_of(run_dir)
    assert (stopped["iteration"], stopped["global_step"]) == (1, BATCH)
    assert group_processes(process.pid) == []


@pytest.mark.parametrize("network, adam_step, quantity", [("predictor", 29, "predictor_loss"), ("agent", 21, r"\w+")])
def test_a_diverged_run_stops_without_saving_and_resumes_with_other_settings(tmp_path, network, adam_step, quantity):
    """nan in the network after its first step of iteration 3 (the agent's PPO update or the predictor's update): the
    next minibatch's loss is nan. The agent's nan logits must reach the guard (no argument check that raises first)."""
    action = (
        f"if calls[0] == {adam_step}:\n        with torch.no_grad(): self.param_groups[0]['params'][0].fill_(float('nan'))"
    )
    flags = [*tiny_run(RND), "--total-timesteps", str(5 * BATCH), "--checkpoint-interval", "0"]
    result = run_script(RND, flags, tmp_path, check=False, patch=COUNT_ADAM_STEPS.format(action=action))
    (run_dir,) = run_dirs(tmp_path)
    assert result.returncode == 3, result.stderr
    assert re.search(f"error: diverged at iteration 3: {quantity} is nan or inf. Nothing was saved", result.stderr)
    relative = os.path.relpath(run_dir, tmp_path)
    assert f"--resume {relative} --learning-rate 1e-05" in result.stderr and "Traceback" not in result.stderr
    assert (checkpoint_of(run_dir)["iteration"], checkpoint_of(run_dir, "checkpoint.prev.pt")["iteration"]) == (2, 1)
    resumed = run_script(RND, [*flags, "--resume", run_dir, "--learning-rate", "1e-05"], tmp_path)
    assert "at iteration 3, global step 64" in resumed.stdout
    assert checkpoint_of(run_dir)["args"]["learning_rate"] == 1e-05
    assert [value for _, value in read_scalars(run_dir)["charts/learning_rate"]][-1] == pytest.approx(1e-05)


def test_a_full_disk_keeps_both_checkpoints_and_says_so(finished_rnd_run, tmp_path):
    """Writes of more than 50 MB fail as on a full disk (RLIMIT_FSIZE): a checkpoint is 200 MB, the logs are small."""
    flags = [*tiny_run(RND), "--total-timesteps", str(2 * BATCH), "--checkpoint-interval", "0"]
    run_dir = copy_run(finished_rnd_run, tmp_path)
    before = {name: os.path.getmtime(os.path.join(run_dir, name)) for name in ("checkpoint.pt", "checkpoint.prev.pt")}
    full_disk = "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    full_disk += "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000_000, 50_000_000))\n"
    extended = [*flags, "--total-timesteps", str(4 * BATCH), "--resume", run_dir]
    result = run_script(RND, extended, tmp_path, check=False, patch=full_disk)
    assert result.returncode == 4, result.stderr
    assert f"could not write {run_dir}/checkpoint.pt.tmp" in result.stderr and "GiB are free" in result.stderr
    assert "The good checkpoints are kept" in result.stderr and "Traceback" not in result.stderr
    assert {name for name in os.listdir(run_dir) if not name.startswith("events")} == {
        "checkpoint.pt",
        "checkpoint.prev.pt",
        "run.lock",
        "ppo_rnd_atari.cleanrl_model",
    }
    assert {name: os.path.getmtime(os.path.join(run_dir, name)) for name in before} == before
    # stopping for SIGTERM on the full disk (here during the first PPO update) exits as a stopped run, which the
    # launcher resumes later
    sigterm = full_disk + COUNT_ADAM_STEPS.format(action="if calls[0] == 1: os.kill(os.getpid(), signal.SIGTERM)")
    result = run_script(RND, extended, tmp_path, check=False, patch=sigterm)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "could not write" in result.stderr and not os.path.exists(os.path.join(run_dir, "checkpoint.pt.tmp"))
    assert {name: os.path.getmtime(os.path.join(run_dir, name)) for name in before} == before
    # without room for three checkpoints, a run does not start at all (and writes nothing)
    no_room = "import shutil\nshutil.disk_usage = lambda path: shutil._ntuple_diskusage(2**40, 2**40 - 2**20, 2**20)\n"
    result = run_script(RND, tiny_run(RND), tmp_path, check=False, patch=no_room)
    assert result.returncode == 2 and "GiB free; a run needs room for three checkpoints of about 0.19 GiB" in result.stderr
    new_dir = next(path for path in run_dirs(tmp_path) if path != run_dir)
    assert os.listdir(new_dir) == ["run.lock"]


def test_a_second_process_on_a_run_folder_is_refused_with_the_holders_pid(tmp_path):
    flags = [*tiny_run(RND), "--total-timesteps", str(100 * BATCH), "--checkpoint-interval", "0"]
    first = start_script(RND, flags, tmp_path)
    wait_for_line(first, "iteration 1/100")
    (run_dir,) = run_dirs(tmp_path)
    second = run_script(RND, [*flags, "--resume", run_dir], tmp_path, check=False)
    assert second.returncode == 5 and f"{run_dir} is in use by another process (PID {first.pid})" in second.stderr
    assert first.poll() is None  # the first one trains on
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 128 + signal.SIGTERM, output
    assert checkpoint_of(run_dir)["iteration"] >= 1
    # the lock dies with its holder: a resume now goes through
    one_more = str((checkpoint_of(run_dir)["iteration"] + 1) * BATCH)
    assert "resumed" in run_script(RND, [*flags, "--total-timesteps", one_more, "--resume", run_dir], tmp_path).stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_the_envs_start_ends_every_process_within_seconds(tmp_path, signum):
    """A terminal's Ctrl-C (or a SIGTERM) reaches the whole process group while 32 env workers are being started."""
    process = start_script(RND, [*tiny_run(RND), "--num-envs", "32", "--num-minibatches", "1"], tmp_path)
    wait_for_line(process, "starting 32 envs")
    time.sleep(1.0)  # the workers are being forked and their games loaded
    assert len(group_processes(process.pid)) > 1
    os.killpg(process.pid, signum)
    stopped = time.time()
    output, errors = process.communicate(timeout=30)
    assert time.time() - stopped < 10 and process.returncode == 128 + signum, errors
    assert f"{signal.Signals(signum).name}: stopped (no training in progress, nothing to save)" in errors
    assert "Traceback" not in errors
    deadline = time.time() + 5
    while group_processes(process.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert group_processes(process.pid) == []  # no orphaned env worker
    (run_dir,) = run_dirs(tmp_path)
    assert not os.path.exists(os.path.join(run_dir, "checkpoint.pt"))


def test_ctrl_c_to_the_process_group_saves_and_a_killed_run_leaves_no_worker(tmp_path):
    flags = [*tiny_run(RND), "--total-timesteps", str(50 * BATCH), "--checkpoint-interval", "0"]
    process = start_script(RND, flags, tmp_path)
    wait_for_line(process, "iteration 2/50")
    (run_dir,) = run_dirs(tmp_path)
    os.killpg(process.pid, signal.SIGINT)  # the env workers get it too; they ignore it, the main process saves
    output, errors = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, errors
    assert "SIGINT: saving a checkpoint" in output and "Traceback" not in errors
    assert checkpoint_of(run_dir)["iteration"] >= 2

    # SIGKILL to the main process alone: its env workers die with it, quietly
    process = start_script(RND, [*flags, "--resume", run_dir], tmp_path)
    wait_for_line(process, "/50, global_step=")
    assert len(group_processes(process.pid)) >= 3  # the main process and its two env workers
    process.kill()
    output, errors = process.communicate(timeout=30)
    deadline = time.time() + 5
    while group_processes(process.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert group_processes(process.pid) == [] and "Traceback" not in errors and "BrokenPipeError" not in errors, errors


def test_damaged_and_foreign_checkpoints_at_start_up(finished_rnd_run, tmp_path):
    flags = FINISHED_RND_FLAGS
    run_dir = copy_run(finished_rnd_run, tmp_path)
    # a saved model is no checkpoint to resume from
    model = os.path.join(run_dir, "ppo_rnd_atari.cleanrl_model")
    result = run_script(RND, [*flags, "--resume", model], tmp_path, check=False)
    assert result.returncode == 2 and "evaluate a saved model with --evaluate" in result.stderr
    # a read-only run folder is refused before anything is renamed
    read_only = (
        f"import os\nreal_access = os.access\nos.access = lambda path, mode: path != {run_dir!r} and real_access(path, mode)\n"
    )
    open(os.path.join(run_dir, "checkpoint.pt"), "wb").close()  # an empty newest checkpoint, to be set aside
    result = run_script(RND, [*flags, "--resume", run_dir], tmp_path, check=False, patch=read_only)
    assert result.returncode == 2 and f"cannot write in {run_dir}" in result.stderr and "corrupt" not in result.stderr
    assert os.path.getsize(os.path.join(run_dir, "checkpoint.pt")) == 0
    # writable: the empty file is set aside and the previous checkpoint resumed
    result = run_script(RND, [*flags, "--total-timesteps", str(3 * BATCH), "--resume", run_dir], tmp_path)
    assert f"warning: {run_dir}/checkpoint.pt is unreadable" in result.stderr
    assert "at iteration 2, global step 32" in result.stdout
    assert os.path.getsize(os.path.join(run_dir, "checkpoint.pt.corrupt")) == 0
    assert (checkpoint_of(run_dir)["iteration"], checkpoint_of(run_dir, "checkpoint.prev.pt")["iteration"]) == (3, 2)
