"""Checkpoints: what a resume restores equals what was saved (every script), saves are atomic and rotate, a kill between
a save's renames or during its write is survived, damaged or foreign files are passed over or refused with a message,
nan never reaches a file, a failed write keeps the good checkpoints, and one process at a time holds a run folder.

The checkpoint functions are byte-identical in every script (tests/test_shared_blocks.py), so beyond the round trip
they are tested in one script on small stand-in objects."""

import io
import os
import shutil

import pytest
import torch
import torch.nn as nn

from conftest import ATARI, BASELINE, PROCGEN, RND, load_script, short, tiny_args

BASELINES = (BASELINE,)

rnd = load_script(RND)
ARGS = tiny_args(rnd)
TEMPORARY, LATEST, PREVIOUS = rnd.CHECKPOINT_FILES


def training_state(script_name: str, seed: int, method: str = "snd-vic") -> tuple:
    """(args, stateful): the objects the script's main block checkpoints, each changed by one update (so Adam's moments,
    RND's running mean and the rooms are not trivial)."""
    script = load_script(script_name)
    args = tiny_args(script, **({"method": method} if script_name == PROCGEN else {}))
    torch.manual_seed(seed)
    if script_name in BASELINES:
        agent, obs = script.Agent(18), torch.randint(0, 256, (4, 4, 96, 96), dtype=torch.uint8)
        optimizer = torch.optim.Adam(agent.parameters(), lr=1e-4)
        _, logprob, _, value = agent.get_action_and_value(obs)
        (logprob.sum() + value.sum()).backward()
        optimizer.step()
        return args, dict(agent=agent, optimizer=optimizer, rooms_seen=torch.arange(256) == seed)
    if script_name == PROCGEN:
        agent, motivation, obs = script.Agent(15), script.MOTIVATION_MODELS[method](), torch.randint(0, 256, (4, 6, 64, 64))
        frames = obs[:, 3:]
    else:
        agent, obs = script.Agent(18), torch.randint(0, 256, (4, 4, 96, 96))
        motivation, frames = (script.RNDModel() if script_name == RND else script.SNDModel()), obs[:, -1]
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-4)
    trained = motivation.predictor if getattr(motivation, "method", script_name) in ("rnd", RND) else motivation
    motivation_optimizer = torch.optim.Adam(trained.parameters(), lr=1e-4)
    _, logprob, _, ext_value, int_value = agent.get_action_and_value(obs.to(torch.uint8))
    (logprob.sum() + ext_value.sum() + int_value.sum()).backward()
    optimizer.step()
    frames = frames.to(torch.uint8)
    if hasattr(motivation, "frame_mean"):
        motivation.frame_mean.update(frames[None])
    script.motivation_loss(motivation, args, frames, frames.flip(0), slice(None))[0].backward()
    motivation_optimizer.step()
    stateful = dict(agent=agent, optimizer=optimizer, motivation=motivation, motivation_optimizer=motivation_optimizer)
    if script_name in ATARI:
        stateful["rooms_seen"] = torch.zeros(256, dtype=torch.bool)
        stateful["rooms_seen"][[1, seed]] = True
    return args, stateful


def assert_same(a, b, path="state"):
    """Exact equality, recursively through dicts, lists and tensors."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    else:
        assert a == b, path


@pytest.mark.parametrize(
    "script_name, method",
    [(s, None) for s in ATARI] + [(PROCGEN, "rnd"), (PROCGEN, "snd-std"), (BASELINE, None)],
    ids=lambda x: x and short(x),
)
def test_a_resume_restores_exactly_what_was_saved(script_name, method, tmp_path):
    script = load_script(script_name)
    args, saved_objects = training_state(script_name, seed=1, **({"method": method} if method else {}))
    saved = script.checkpoint_state(args, saved_objects, 3, 96)
    script.save_checkpoint(str(tmp_path), saved)
    draws = torch.rand(5)  # what the saved torch RNG state draws next

    _, fresh = training_state(script_name, seed=2, **({"method": method} if method else {}))
    checkpoint, file = script.load_checkpoint(str(tmp_path), args, fresh)
    assert file == str(tmp_path / LATEST) and (checkpoint["iteration"], checkpoint["global_step"]) == (3, 96)
    assert torch.equal(torch.rand(5), draws)  # the RNG the run draws from continues where it was saved
    restored = script.checkpoint_state(args, fresh, 3, 96)
    assert_same(restored["state"], saved["state"])
    assert fresh["optimizer"].state_dict()["state"][0]["exp_avg_sq"].abs().sum() > 0  # the moments are really there
    if hasattr(fresh.get("motivation"), "frame_mean"):
        assert fresh["motivation"].frame_mean.count == 2  # RND's running mean travels with the model


# The mechanics, on small stand-ins for the networks


def stand_in(seed: int) -> dict:
    """A network, its Adam with moments, and a tensor: what a stateful dict holds, small."""
    torch.manual_seed(seed)
    net = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return {"net": net, "optimizer": optimizer, "rooms_seen": torch.arange(4) == seed}


def save(run_dir, iteration: int, args=ARGS) -> None:
    rnd.save_checkpoint(str(run_dir), rnd.checkpoint_state(args, stand_in(iteration), iteration, 32 * iteration))


def iteration_of(path) -> int:
    return torch.load(path, weights_only=True)["iteration"]


def digests(run_dir) -> dict:
    return {name: open(run_dir / name, "rb").read() for name in sorted(os.listdir(run_dir))}


def test_saves_rotate_the_previous_checkpoint_and_leave_no_temporary_file(tmp_path):
    for iteration in (1, 2, 3):
        save(tmp_path, iteration)
    assert sorted(os.listdir(tmp_path)) == [PREVIOUS, LATEST]
    assert (iteration_of(tmp_path / LATEST), iteration_of(tmp_path / PREVIOUS)) == (3, 2)


@pytest.mark.parametrize("renamed", [False, True], ids=["killed-before-the-renames", "killed-between-the-renames"])
def test_a_complete_temporary_file_finishes_its_save(tmp_path, renamed):
    save(tmp_path, 1)
    save(tmp_path, 2)
    torch.save(rnd.checkpoint_state(ARGS, stand_in(3), 3, 96), tmp_path / TEMPORARY)  # written, not yet renamed
    if renamed:
        os.replace(tmp_path / LATEST, tmp_path / PREVIOUS)  # the first of the two renames happened
    checkpoint, file = rnd.load_checkpoint(str(tmp_path), ARGS, stand_in(0))
    assert checkpoint["iteration"] == 3 and file == str(tmp_path / LATEST)
    assert sorted(os.listdir(tmp_path)) == [PREVIOUS, LATEST]
    assert (iteration_of(tmp_path / LATEST), iteration_of(tmp_path / PREVIOUS)) == (3, 2)


def test_a_partial_temporary_file_is_removed(tmp_path, capsys):
    save(tmp_path, 1)
    save(tmp_path, 2)
    buffer = io.BytesIO()
    torch.save(rnd.checkpoint_state(ARGS, stand_in(3), 3, 96), buffer)
    (tmp_path / TEMPORARY).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # a kill during the write
    before = digests(tmp_path)
    checkpoint, file = rnd.load_checkpoint(str(tmp_path), ARGS, stand_in(0))
    assert checkpoint["iteration"] == 2 and file == str(tmp_path / LATEST)
    assert digests(tmp_path) == {name: data for name, data in before.items() if name != TEMPORARY}
    assert f"{tmp_path / TEMPORARY} is unreadable" in capsys.readouterr().err


def with_nan(path) -> None:
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state"]["net"]["weight"][0, 0] = torch.nan  # a diverged run's state (older versions could save one)
    torch.save(checkpoint, path)


DAMAGES = {
    "empty": lambda path: path.write_bytes(b""),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:100]),
    "not-a-dict": lambda path: torch.save([1, 2, 3], path),
    "missing-keys": lambda path: torch.save({"script": RND, "agent": {}}, path),
    "nan": with_nan,
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_and_is_set_aside(tmp_path, damage, capsys):
    save(tmp_path, 1)
    save(tmp_path, 2)
    DAMAGES[damage](tmp_path / LATEST)
    damaged, previous = (tmp_path / LATEST).read_bytes(), (tmp_path / PREVIOUS).read_bytes()
    checkpoint, file = rnd.load_checkpoint(str(tmp_path), ARGS, stand_in(0))
    assert checkpoint["iteration"] == 1 and file == str(tmp_path / PREVIOUS)
    assert (tmp_path / (LATEST + ".corrupt")).read_bytes() == damaged  # out of the rotation: the next save keeps previous
    assert (tmp_path / PREVIOUS).read_bytes() == previous and not (tmp_path / LATEST).exists()
    assert f"warning: {tmp_path / LATEST}" in capsys.readouterr().err
    # given as a file, a damaged checkpoint is refused, and the run folder named as the way to try the others
    with pytest.raises(rnd.CheckpointError, match=f"--resume {tmp_path} tries each checkpoint there"):
        rnd.load_checkpoint(str(tmp_path / (LATEST + ".corrupt")), ARGS, stand_in(0))


def test_refusals_say_what_to_do(tmp_path):
    save(tmp_path, 1)
    refuse = lambda pattern: pytest.raises(rnd.CheckpointError, match=pattern)
    with refuse(r"other settings: --num-envs 2 \(now 4\)"):
        rnd.load_checkpoint(str(tmp_path), tiny_args(rnd, num_envs=4), stand_in(0))
    with refuse(r"trained on ALE/MontezumaRevenge-v5: pass --env-id ALE/MontezumaRevenge-v5"):
        rnd.load_checkpoint(str(tmp_path), tiny_args(rnd, env_id="Pitfall-v5"), stand_in(0))
    with refuse("does not fit the networks"):
        rnd.load_checkpoint(str(tmp_path), ARGS, {**stand_in(0), "net": nn.Linear(3, 5)})
    os.mkdir(tmp_path / "empty")
    with refuse("has no checkpoint"):
        rnd.load_checkpoint(str(tmp_path / "empty"), ARGS, stand_in(0))
    checkpoint = torch.load(tmp_path / LATEST, weights_only=True)
    torch.save({**checkpoint, "script": "ppo_snd_vic_atari.py"}, tmp_path / "other.pt")
    with refuse("written by ppo_snd_vic_atari.py, not ppo_rnd_atari.py: use that script"):
        rnd.load_checkpoint(str(tmp_path / "other.pt"), ARGS, stand_in(0))
    torch.save({**checkpoint, "kind": "model", "state": {"net": checkpoint["state"]["net"]}}, tmp_path / "model.pt")
    with refuse("is a model without optimizer, rooms_seen: evaluate a saved model with --evaluate"):
        rnd.load_checkpoint(str(tmp_path / "model.pt"), ARGS, stand_in(0))
    # the flags a resume may change: a longer budget, other learning rates, another checkpoint interval
    changed = tiny_args(rnd, total_timesteps=640, learning_rate=1e-5, max_grad_norm=0.1, checkpoint_interval=1.0)
    assert rnd.load_checkpoint(str(tmp_path), changed, stand_in(0))[0]["iteration"] == 1


def test_a_state_with_nan_is_never_written(tmp_path, capsys):
    save(tmp_path, 1)
    save(tmp_path, 2)
    before = digests(tmp_path)
    diverged = stand_in(3)
    with torch.no_grad():
        diverged["net"].weight[0, 0] = torch.nan
    with pytest.raises(SystemExit) as exit:
        rnd.save_checkpoint(str(tmp_path), rnd.checkpoint_state(ARGS, diverged, 3, 96))
    assert exit.value.code == rnd.EXIT_DIVERGED == 3
    assert "diverged: nan or inf in net.weight" in capsys.readouterr().err
    assert digests(tmp_path) == before


@pytest.mark.parametrize("stopping", [False, True], ids=["training", "stopping-for-SIGTERM"])
def test_a_failed_write_removes_its_partial_file_and_keeps_the_checkpoints(tmp_path, monkeypatch, capsys, stopping):
    save(tmp_path, 1)
    save(tmp_path, 2)
    before = digests(tmp_path)

    def disk_full(obj, f):  # what torch says when the disk fills up during a save
        f.write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", disk_full)
    monkeypatch.setattr(rnd, "stop_signals", [15] if stopping else [])
    with pytest.raises(SystemExit) as exit:
        rnd.save_checkpoint(str(tmp_path), rnd.checkpoint_state(ARGS, stand_in(3), 3, 96))
    assert exit.value.code == (128 + 15 if stopping else rnd.EXIT_WRITE_FAILED)
    message = capsys.readouterr().err
    assert f"could not write {tmp_path / TEMPORARY}" in message and "GiB are free" in message and "takes about" in message
    assert digests(tmp_path) == before  # the partial file is gone, both good checkpoints as they were


def test_one_process_at_a_time_holds_a_run_folder(tmp_path, capsys):
    lock = rnd.lock_run_folder(str(tmp_path), 0)
    assert (tmp_path / "run.lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(SystemExit) as exit:  # a second holder, as a second process would be (flock is per open file)
        rnd.lock_run_folder(str(tmp_path), 0)
    assert exit.value.code == rnd.EXIT_RUN_LOCKED == 5
    assert f"{tmp_path} is in use by another process (PID {os.getpid()})" in capsys.readouterr().err
    lock.close()  # as when the holder dies, however: the lock file with its old PID no longer blocks
    rnd.lock_run_folder(str(tmp_path), 0).close()


def test_a_folder_without_room_for_three_checkpoints_or_not_writable_is_refused(tmp_path, monkeypatch):
    save(tmp_path, 1)
    present = os.path.getsize(tmp_path / LATEST)
    free = 10 * 2**30
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(free * 2, free * 2 - free, free))
    rnd.lock_run_folder(str(tmp_path), (free + present) // 3).close()  # the checkpoint already there counts
    with pytest.raises(rnd.CheckpointError, match=r"10.00 GiB free; a run needs room for three checkpoints of about 3.5"):
        rnd.lock_run_folder(str(tmp_path), int(3.5 * 2**30))
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(rnd.CheckpointError, match=f"cannot write in {tmp_path}"):
        rnd.lock_run_folder(str(tmp_path), 0)
