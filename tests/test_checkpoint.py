"""Checkpoints: what is restored equals exactly what was saved, writes are atomic, bad checkpoints are refused with
a message and left as they were."""

import hashlib
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import ROOT


def training_objects(rnd, seed: int):
    """The objects the main loop checkpoints, with one update each so optimiser moments and statistics are non-trivial."""
    torch.manual_seed(seed)
    agent, motivation = rnd.Agent(18), rnd.RNDModel()
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-4)
    motivation_optimizer = torch.optim.Adam(motivation.predictor.parameters(), lr=1e-4)
    frame_mean = rnd.RunningMean((96, 96), torch.device("cpu"))
    rooms_seen = np.zeros(256, dtype=bool)
    obs = torch.randint(0, 256, (4, 4, 96, 96), dtype=torch.uint8)
    _, logprob, _, ext_value, int_value = agent.get_action_and_value(obs)
    (logprob.sum() + ext_value.sum() + int_value.sum()).backward()
    optimizer.step()
    frame_mean.update(obs[None, :, -1])  # one vector step
    target_features, predicted_features = motivation(rnd.rnd_input(obs[:, -1], frame_mean.mean))
    rnd.masked_mse(predicted_features, target_features, 0.25).backward()
    motivation_optimizer.step()
    rooms_seen[[1, seed % 24]] = True
    return agent, optimizer, motivation, motivation_optimizer, frame_mean, rooms_seen


def make_checkpoint(rnd, args, objects, iteration=3, global_step=96) -> dict:
    agent, optimizer, motivation, motivation_optimizer, frame_mean, rooms_seen = objects
    return {
        "script": rnd.SCRIPT,
        "args": rnd.asdict(args),
        "run_name": "test_run",
        "num_actions": 18,
        **rnd.learner_state(agent, optimizer, motivation, motivation_optimizer),
        **rnd.progress_state(iteration, global_step, frame_mean, rooms_seen),
    }


def tiny_args(rnd, **overrides):
    args = rnd.Args(**{"num_envs": 2, "num_steps": 16, "num_minibatches": 2, "total_timesteps": 320, **overrides})
    rnd.check_args(args)
    return args


def assert_same(a, b, path="checkpoint"):
    """Exact equality, recursively through dicts, lists, tuples, tensors and arrays."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    else:
        assert a == b, path


def assert_restores_what_was_saved(script, args, build_objects, checkpoint_of, build_motivation, tmp_path):
    """Saves a checkpoint of `build_objects(seed=1)`, restores it into `build_objects(seed=2)` (other parameters,
    moments, statistics, RNG states) and asserts that the restored objects give the same checkpoint, the RNG states
    compared through what they draw next. `checkpoint_of(objects)` builds the checkpoint dict (iteration 3, step 96).
    Returns the restored objects."""
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    saved = checkpoint_of(build_objects(seed=1))
    script.save_checkpoint(tmp_path, saved)
    draws = (random.random(), np.random.rand(), torch.rand(3))  # what the saved RNG states produce next

    fresh = build_objects(seed=2)
    checkpoint, file, unreadable = script.load_checkpoint(str(tmp_path), args, build_motivation)
    assert file == os.path.join(tmp_path, "checkpoint.pt") and unreadable == []
    assert script.restore_checkpoint(checkpoint, *fresh) == (3, 96)
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(3), draws[2])
    restored = checkpoint_of(fresh)
    saved["rng"] = restored["rng"] = None  # compared through the draws above
    assert_same(restored, saved)
    return fresh


def file_digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_restore_equals_what_was_saved(rnd, tmp_path):
    args = tiny_args(rnd)
    fresh = assert_restores_what_was_saved(
        rnd,
        args,
        lambda seed: training_objects(rnd, seed),
        lambda objects: make_checkpoint(rnd, args, objects),
        rnd.RNDModel,
        tmp_path,
    )
    agent, optimizer, motivation, motivation_optimizer, frame_mean, rooms_seen = fresh
    assert optimizer.state_dict()["state"][0]["exp_avg_sq"].abs().sum() > 0  # the moments are really there
    assert frame_mean.count == 2 and rooms_seen[1]


def test_rotation_keeps_the_previous_checkpoint(rnd, tmp_path):
    args = tiny_args(rnd)
    objects = training_objects(rnd, seed=1)
    for iteration in (1, 2, 3):
        rnd.save_checkpoint(tmp_path, make_checkpoint(rnd, args, objects, iteration=iteration))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.prev.pt", "checkpoint.pt"]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 3
    assert torch.load(tmp_path / "checkpoint.prev.pt", weights_only=True)["iteration"] == 2


def test_kill_during_checkpoint_write_leaves_previous_loadable(rnd, tmp_path):
    """A process SIGKILLs itself half way through writing the bytes of its third checkpoint."""
    code = textwrap.dedent(f"""
        import io, os, signal, sys
        import torch
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from conftest import load_script
        from test_checkpoint import make_checkpoint, tiny_args, training_objects
        rnd = load_script("ppo_rnd_atari.py")
        args = tiny_args(rnd)
        objects = training_objects(rnd, seed=1)
        rnd.save_checkpoint({str(tmp_path)!r}, make_checkpoint(rnd, args, objects, iteration=1))
        rnd.save_checkpoint({str(tmp_path)!r}, make_checkpoint(rnd, args, objects, iteration=2))

        real_save = torch.save
        def save_half_then_die(obj, f):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save_half_then_die
        rnd.save_checkpoint({str(tmp_path)!r}, make_checkpoint(rnd, args, objects, iteration=3))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr
    assert os.path.getsize(tmp_path / "checkpoint.pt.tmp") > 0  # the interrupted write
    args = tiny_args(rnd)
    checkpoint, file, unreadable = rnd.load_checkpoint(str(tmp_path), args, rnd.RNDModel)
    assert checkpoint["iteration"] == 2 and file.endswith("checkpoint.pt") and unreadable == []
    rnd.save_checkpoint(tmp_path, make_checkpoint(rnd, args, training_objects(rnd, seed=1), iteration=3))
    assert rnd.load_checkpoint(str(tmp_path), args, rnd.RNDModel)[0]["iteration"] == 3  # the next write goes through
    assert not os.path.exists(tmp_path / "checkpoint.pt.tmp")


@pytest.fixture
def two_checkpoints(rnd, tmp_path):
    args = tiny_args(rnd)
    objects = training_objects(rnd, seed=1)
    rnd.save_checkpoint(tmp_path, make_checkpoint(rnd, args, objects, iteration=1))
    rnd.save_checkpoint(tmp_path, make_checkpoint(rnd, args, objects, iteration=2))
    return args, tmp_path


def test_corrupt_checkpoint_is_refused_and_the_previous_named(rnd, two_checkpoints):
    args, run_dir = two_checkpoints
    latest, previous = run_dir / "checkpoint.pt", run_dir / "checkpoint.prev.pt"
    with open(latest, "r+b") as f:
        f.truncate(os.path.getsize(latest) // 2)
    digests = file_digest(latest), file_digest(previous)
    with pytest.raises(rnd.CheckpointError, match=rf"unreadable.*--resume {previous}"):
        rnd.load_checkpoint(str(latest), args, rnd.RNDModel)
    # given the run folder, the newest readable checkpoint is used and the unreadable one reported
    checkpoint, file, unreadable = rnd.load_checkpoint(str(run_dir), args, rnd.RNDModel)
    assert checkpoint["iteration"] == 1 and file == str(previous) and unreadable == [str(latest)]
    assert (file_digest(latest), file_digest(previous)) == digests


def test_checkpoint_of_another_script_is_refused(rnd, two_checkpoints):
    args, run_dir = two_checkpoints
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**checkpoint, "script": "ppo_snd_vic_atari.py"}, run_dir / "checkpoint.pt")
    with pytest.raises(rnd.CheckpointError, match="written by ppo_snd_vic_atari.py, not ppo_rnd_atari.py"):
        rnd.load_checkpoint(str(run_dir), args, rnd.RNDModel)


def test_checkpoint_with_other_settings_is_refused(rnd, two_checkpoints):
    _, run_dir = two_checkpoints
    with pytest.raises(rnd.CheckpointError, match=r"other settings: --num-envs 2 \(now 4\).*flags the run was started with"):
        rnd.load_checkpoint(str(run_dir), tiny_args(rnd, num_envs=4), rnd.RNDModel)
    # a longer budget, another checkpoint interval or evaluation count are fine
    rnd.load_checkpoint(
        str(run_dir), tiny_args(rnd, total_timesteps=640, checkpoint_interval=1.0, eval_episodes=0), rnd.RNDModel
    )


def test_checkpoint_with_another_architecture_is_refused(rnd, two_checkpoints):
    args, run_dir = two_checkpoints
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["motivation"]["predictor.9.weight"] = torch.zeros(256, 512)
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    with pytest.raises(rnd.CheckpointError, match="another 'motivation' architecture"):
        rnd.load_checkpoint(str(run_dir), args, rnd.RNDModel)


def test_missing_resume_path(rnd, tmp_path):
    args = tiny_args(rnd)
    with pytest.raises(rnd.CheckpointError, match="no such run folder"):
        rnd.load_checkpoint(str(tmp_path / "nowhere"), args, rnd.RNDModel)
    with pytest.raises(rnd.CheckpointError, match="nothing to resume"):
        rnd.load_checkpoint(str(tmp_path), args, rnd.RNDModel)
