"""ppo_rnd_atari.py run as a user runs it: a tiny training run with every promised log key, evaluation, video,
interruption (SIGKILL, SIGTERM) and resume, determinism."""

import os
import signal
import subprocess
import sys
import time

import cv2
import torch

from conftest import ROOT, TINY_RUN, raw_scalar_steps, read_scalars, run_dirs, run_script

SCRIPT = "ppo_rnd_atari.py"
BATCH = 2 * 16  # TINY_RUN: 2 envs x 16 steps

ITERATION_KEYS = [
    "charts/SPS",
    "charts/learning_rate",
    "charts/rooms_visited",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/ext_value_loss",
    "losses/int_value_loss",
    "losses/entropy",
    "losses/old_approx_kl",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/ext_explained_variance",
    "losses/int_explained_variance",
    "motivation/int_reward_mean",
    "motivation/int_reward_std",
    "motivation/int_reward_max",
    "motivation/distillation_error",
    "motivation/predictor_loss",
    "motivation/target_feature_spread",
    "perf/env_seconds",
    "perf/policy_seconds",
    "perf/intrinsic_reward_seconds",
    "perf/ppo_update_seconds",
    "perf/motivation_update_seconds",
]
EPISODE_KEYS = ["charts/episodic_return", "charts/episodic_length", "charts/episodic_reward_events", "charts/episodic_rooms"]
EVAL_KEYS = ["eval/episodic_return", "eval/episodic_reward_events"]


def test_tiny_run_logs_every_key_saves_and_evaluates(tmp_path):
    flags = [flag for flag in TINY_RUN if flag != "--no-cuda"]  # --cuda is the default: on a CPU machine, a warning
    result = run_script(
        SCRIPT,
        [
            *flags,
            "--total-timesteps",
            str(3 * BATCH),
            "--save-model",
            "--eval-episodes",
            "2",
            "--capture-video",
            "--video-interval",
            "2",
        ],
        tmp_path,
    )
    if not torch.cuda.is_available():
        assert "CUDA is not available, running on the CPU" in result.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert os.path.basename(run_dir).startswith("MontezumaRevenge-v5__ppo_rnd_atari__1__")
    scalars = read_scalars(run_dir)
    missing = [key for key in ITERATION_KEYS + EPISODE_KEYS + EVAL_KEYS if key not in scalars]
    assert not missing, f"keys never logged: {missing}"
    for key in ITERATION_KEYS:
        assert [step for step, _ in scalars[key]] == [BATCH, 2 * BATCH, 3 * BATCH], key
    assert {value for _, value in scalars["charts/episodic_length"]} <= set(range(1, 21))  # capped at 20 steps
    assert len(scalars["eval/episodic_return"]) == 2
    assert all(0.0 <= value <= 1.0 for _, value in scalars["motivation/int_reward_max"])

    files = set(os.listdir(run_dir))
    assert {"checkpoint.pt", "ppo_rnd_atari.cleanrl_model"} <= files
    videos = sorted(os.listdir(tmp_path / "videos" / os.path.basename(run_dir)))
    assert "train-episode-0.mp4" in videos and "train-episode-2.mp4" in videos and "eval-episode-0.mp4" in videos
    capture = cv2.VideoCapture(str(tmp_path / "videos" / os.path.basename(run_dir) / "train-episode-0.mp4"))
    ok, frame = capture.read()
    assert ok and frame.shape == (210, 160, 3)
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 21  # the reset frame and 20 steps

    # evaluation-only mode on the saved model: a new run with the eval keys and nothing else
    model = os.path.join(run_dir, "ppo_rnd_atari.cleanrl_model")
    run_script(SCRIPT, ["--evaluate", model, "--eval-episodes", "3", "--max-episode-steps", "20", "--no-cuda"], tmp_path)
    (eval_dir,) = [d for d in run_dirs(tmp_path) if d != run_dir]
    assert "__ppo_rnd_atari-eval__" in eval_dir
    eval_scalars = read_scalars(eval_dir)
    assert sorted(eval_scalars) == EVAL_KEYS and len(eval_scalars["eval/episodic_return"]) == 3


def test_same_seed_same_run(tmp_path):
    """Seeding: two runs with the same seed log the same losses and episode returns, another seed does not."""
    logs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        os.mkdir(tmp_path / name)
        run_script(SCRIPT, [*TINY_RUN, "--total-timesteps", str(2 * BATCH), "--seed", seed], tmp_path / name)
        scalars = read_scalars(run_dirs(tmp_path / name)[0])
        logs.append(
            {
                key: scalars[key]
                for key in (
                    "losses/policy_loss",
                    "losses/value_loss",
                    "motivation/predictor_loss",
                    "motivation/distillation_error",
                    "charts/episodic_length",
                )
            }
        )
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]


def start(args: list, cwd, script: str = SCRIPT) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 180) -> list:
    """Reads the process's output until a line contains `text`; returns the lines read."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    process.kill()
    raise AssertionError(f"no line with {text!r} in:\n{''.join(lines)}")


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
    iterations = 10
    flags = [*TINY_RUN, "--total-timesteps", str(iterations * BATCH), "--checkpoint-interval", "0"]
    load = lambda: torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)

    # 1. SIGKILL right after the checkpoint of iteration 3 is in place: its events must be on disk already
    process = start(flags, tmp_path)
    wait_for_line(process, f"iteration 3/{iterations}")
    (run_dir,) = run_dirs(tmp_path)
    wait_for_new_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load()["iteration"] == 3

    # 2. resume; SIGKILL while iteration 5 is being logged and checkpointed
    process = start([*flags, "--resume", run_dir], tmp_path)
    lines = wait_for_line(process, f"iteration 5/{iterations}")
    assert f"at iteration 4, global step {3 * BATCH};" in "".join(lines)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint, last_logged = load(), max(raw_scalar_steps(run_dir, "charts/SPS"))
    assert checkpoint["iteration"] in (4, 5)
    assert last_logged - checkpoint["global_step"] <= BATCH  # lost at most one checkpoint interval (one iteration)

    # 3. resume, then SIGTERM as iteration 8's rollout starts: it drops the partial rollout, saves the state the
    # iteration started from and exits with 128 + 15
    process = start([*flags, "--resume", run_dir], tmp_path)
    lines = wait_for_line(process, f"iteration 7/{iterations}")
    assert f"global step {checkpoint['global_step']};" in "".join(lines)
    wait_for_new_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output
    stopped = load()
    assert (stopped["iteration"], stopped["global_step"]) == (7, 7 * BATCH)
    assert f"stopped at global step {stopped['global_step']}; continue with --resume {run_dir}" in output

    # 4. resume to the end: every iteration is in the TensorBoard run exactly once
    result = run_script(SCRIPT, [*flags, "--resume", run_dir], tmp_path)
    assert f"resumed {run_dir} at iteration {stopped['iteration'] + 1}" in result.stdout
    assert run_dirs(tmp_path) == [run_dir]
    scalars = read_scalars(run_dir)
    expected_steps = [BATCH * i for i in range(1, iterations + 1)]
    for key in ITERATION_KEYS:
        assert [step for step, _ in scalars[key]] == expected_steps, key
    for key in EPISODE_KEYS:
        steps = [step for step, _ in scalars[key]]
        assert steps == sorted(steps) and all(steps.count(s) <= 2 for s in steps), key  # at most one per env
    final = load()
    assert (final["iteration"], final["global_step"]) == (iterations, iterations * BATCH)


def test_resume_passes_over_a_corrupt_newest_checkpoint(tmp_path):
    flags = [*TINY_RUN, "--checkpoint-interval", "0"]
    run_script(SCRIPT, [*flags, "--total-timesteps", str(2 * BATCH)], tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    latest = os.path.join(run_dir, "checkpoint.pt")
    with open(latest, "r+b") as f:
        f.truncate(1000)
    result = run_script(SCRIPT, [*flags, "--total-timesteps", str(3 * BATCH), "--resume", run_dir], tmp_path)
    assert f"{latest} is unreadable, resumed from {run_dir}/checkpoint.prev.pt" in result.stderr
    assert "at iteration 2, global step 32" in result.stdout  # the previous checkpoint: iteration 1
    assert os.path.getsize(latest + ".corrupt") == 1000  # kept aside, out of the rotation
    assert torch.load(latest, weights_only=True)["iteration"] == 3
    assert torch.load(os.path.join(run_dir, "checkpoint.prev.pt"), weights_only=True)["iteration"] == 2
    assert [step for step, _ in read_scalars(run_dir)["charts/SPS"]] == [BATCH, 2 * BATCH, 3 * BATCH]


def test_ctrl_c_to_the_process_group_still_saves(tmp_path):
    """A terminal's Ctrl-C reaches the env workers too; they ignore it and the main process saves and exits 130."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / SCRIPT), *TINY_RUN, "--total-timesteps", str(50 * BATCH), "--checkpoint-interval", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group, as a terminal job
    )
    wait_for_line(process, "iteration 2/50")
    (run_dir,) = run_dirs(tmp_path)
    wait_for_new_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGINT, output
    assert "SIGINT: saving a checkpoint" in output and "Traceback" not in output
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    relative_run_dir = os.path.relpath(run_dir, tmp_path)
    assert f"stopped at global step {checkpoint['global_step']}; continue with --resume {relative_run_dir}" in output
