"""Bad input is refused before any env is built or file written, with a message that says what to do, and leaves
existing checkpoints as they were."""

import hashlib
import importlib.util
import os

import pytest
import torch

from conftest import TINY_RUN, run_script
from test_checkpoint import make_checkpoint, tiny_args, training_objects

SCRIPT = "ppo_rnd_atari.py"
FLAGS = [*TINY_RUN, "--total-timesteps", "320"]


def tree(path) -> dict:
    """Every file below `path` with a digest of its bytes."""
    return {
        os.path.join(d, f): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
        for d, _, files in os.walk(path)
        for f in files
    }


def assert_refused(args: list, cwd, message: str):
    before = tree(cwd)
    result = run_script(SCRIPT, args, cwd, check=False)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
    assert "A.L.E: Arcade Learning Environment" not in result.stderr  # no env was built
    assert tree(cwd) == before  # nothing written, nothing changed


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--env-id", "MontezumasRevenge-v5"],
            "unknown Atari env id 'MontezumasRevenge-v5': did you mean MontezumaRevenge-v5",
        ),
        (["--env-id", "Breakout"], "did you mean Breakout-v5?"),
        (
            ["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"],
            "--num-envs 3 x --num-steps 5 = 15 transitions do not split into --num-minibatches 4 equal minibatches; choose one of [1, 3, 5, 15]",
        ),
        (
            ["--total-timesteps", "31"],
            "--total-timesteps 31 is below one rollout of --num-envs 2 x --num-steps 16 = 32 agent steps",
        ),
        (["--num-envs", "0"], "--num-envs must be positive, got 0"),
        (["--num-steps", "-4"], "--num-steps must be positive, got -4"),
        (["--learning-rate", "0"], "--learning-rate must be positive"),
        (["--gamma", "1.5"], "--gamma must be in (0, 1], got 1.5"),
        (["--resume", "runs/x", "--evaluate", "model.pt"], "--resume and --evaluate exclude each other"),
        (["--resume", "runs/nowhere"], "--resume runs/nowhere: no such run folder or checkpoint file"),
        (["--evaluate", "nowhere.cleanrl_model", "--eval-episodes", "1"], "--evaluate nowhere.cleanrl_model: no such file"),
        (["--evaluate", "model.cleanrl_model", "--eval-episodes", "0"], "--evaluate needs --eval-episodes of at least 1"),
    ],
    ids=[
        "env-id-typo",
        "env-id-no-version",
        "minibatches",
        "budget",
        "num-envs",
        "num-steps",
        "learning-rate",
        "gamma",
        "resume-and-evaluate",
        "resume-missing",
        "evaluate-missing",
        "evaluate-no-episodes",
    ],
)
def test_bad_flags(tmp_path, args, message):
    assert_refused([*FLAGS, *args], tmp_path, message)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_track_without_wandb_says_how_to_install(tmp_path):
    assert_refused([*FLAGS, "--track"], tmp_path, "--track needs Weights & Biases: pip install wandb")


@pytest.fixture(scope="module")
def run_dir(rnd, tmp_path_factory):
    """A run folder with two checkpoints written with FLAGS."""
    path = tmp_path_factory.mktemp("cwd") / "runs" / "MontezumaRevenge-v5__ppo_rnd_atari__1__0"
    path.mkdir(parents=True)
    args = tiny_args(rnd, max_episode_steps=20, eval_episodes=0, cuda=False)
    objects = training_objects(rnd, seed=1)
    rnd.save_checkpoint(path, make_checkpoint(rnd, args, objects, iteration=1))
    rnd.save_checkpoint(path, make_checkpoint(rnd, args, objects, iteration=2))
    return path


def edited_copy(run_dir, tmp_path, edit) -> str:
    """A copy of the run folder whose newest checkpoint went through `edit`."""
    copy = tmp_path / "runs" / run_dir.name
    copy.mkdir(parents=True)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, copy / "checkpoint.pt")
    return str(copy)


def test_checkpoint_of_another_script(run_dir, tmp_path):
    copy = edited_copy(run_dir, tmp_path, lambda c: c.update(script="ppo_snd_v_atari.py"))
    assert_refused(
        [*FLAGS, "--resume", copy], tmp_path, "was written by ppo_snd_v_atari.py, not ppo_rnd_atari.py: use that script"
    )


def test_checkpoint_of_another_architecture(run_dir, tmp_path):
    copy = edited_copy(run_dir, tmp_path, lambda c: c["agent"].update({"actor.3.weight": torch.zeros(9, 512)}))
    assert_refused([*FLAGS, "--resume", copy], tmp_path, "holds another 'agent' architecture than this script builds")


def test_checkpoint_with_other_settings(run_dir, tmp_path):
    copy = edited_copy(run_dir, tmp_path, lambda c: None)
    assert_refused(
        [*FLAGS, "--env-id", "Pitfall-v5", "--resume", copy],
        tmp_path,
        "was written with other settings: --env-id 'MontezumaRevenge-v5' (now 'Pitfall-v5'); pass the flags the run was started with",
    )


def test_corrupt_checkpoint_file(run_dir, tmp_path):
    copy = tmp_path / "runs" / run_dir.name
    copy.mkdir(parents=True)
    (copy / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes()[:1000])
    (copy / "checkpoint.prev.pt").write_bytes((run_dir / "checkpoint.prev.pt").read_bytes())
    assert_refused(
        [*FLAGS, "--resume", str(copy / "checkpoint.pt")],
        tmp_path,
        f"is unreadable (RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory); "
        f"the previous checkpoint may be intact: --resume {copy / 'checkpoint.prev.pt'}",
    )
