"""benchmark/features.py, the target-feature analysis, on checkpoints written here in the scripts' format: an untrained RND
run (a fresh `ppo_rnd_atari.py` model) and an SND-VIC run whose target and predictor had a few motivation updates on real
frames of Montezuma's Revenge, through the script's own `motivation_loss`. The tool runs on them through the command
line as a user runs it; its numbers are checked on hand-made feature sets whose answer is known, and on the two runs for
what a few updates already show.

What a few updates show (measured): VICReg's invariance term first pulls the features of consecutive states together,
so the SND-VIC target's consecutive / random-pair distance ratio falls well below the untrained RND target's: the
direction of the paper's argument. Its effective rank falls too, below RND's: the untrained SND-VIC target's features
are tiny (std about 0.01, far below VICReg's variance target of 1), and its first updates grow a few directions. Trained
longer (on random-play frames, minibatches of 128) the rank fell to 3.4 by update 50 and rose again, to 4.9 by update
80, as the variance term was met and the covariance term took over; the spread the paper's trained targets show takes
far more training than a test can afford, so the rank is tested on the hand-made sets only."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import BASELINE, PROCGEN, RND, ROOT, SCRIPTS, SND_VIC, load_script, tiny_args

MONTEZUMA = "ALE/MontezumaRevenge-v5"
NUM_TRAIN_FRAMES = 201  # random play: 200 transitions (s_t, s_{t+1}) of one episode
TRAIN_STEPS, BATCH_SIZE = 10, 32  # SND-VIC motivation steps at the script's motivation learning rate
TOOL_FRAMES = 200  # frames the tool plays per run
RND_STEP, SND_VIC_STEP = 0, 2048  # the agent steps the checkpoints say they were trained for
# Measured with torch seeds 0-4 (the RND target's and the SND-VIC model's init; the same agent for both, so the tool plays
# the same frames on both): consecutive / random distance ratio RND 0.44-0.49, SND-VIC after 10 updates 0.18-0.24 (after
# 20: 0.12-0.15); effective rank RND 28-33, SND-VIC after 10 updates 3.9-5.7 (after 20: 2.3-3.2).
MAX_RATIO_OF_RATIOS = 0.6  # SND-VIC's ratio over RND's must be at most this (measured 0.38-0.49)


@pytest.fixture(scope="module")
def features():
    return load_script("benchmark/features.py")


def play(script, num_frames: int, seed: int) -> tuple:
    """The newest frames of seeded random play in Montezuma's Revenge, uint8 (num_frames, 96, 96), and a flag per frame,
    True where its state starts an episode."""
    env = script.make_env(MONTEZUMA, max_episode_steps=10_000)()
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames, starts = [obs[-1]], [True]
    while len(frames) < num_frames:
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        frames.append(obs[-1])
        starts.append(False)
        if terminated or truncated:
            obs, _ = env.reset()
            frames.append(obs[-1])
            starts.append(True)
    env.close()
    return torch.as_tensor(np.stack(frames[:num_frames])), torch.as_tensor(starts[:num_frames])


def save(script, run_dir, agent, motivation, motivation_optimizer=None, global_step=0, changes=None):
    """A checkpoint of `script` in `run_dir`, as its main block writes one (`checkpoint_state`, then `save_checkpoint`,
    which rotates the previous one to `checkpoint.prev.pt`), with the entries `changes` replaced."""
    os.makedirs(run_dir, exist_ok=True)
    stateful = dict(agent=agent, optimizer=torch.optim.Adam(agent.parameters(), lr=1e-4))
    if motivation is not None:
        trained = motivation.predictor if script.SCRIPT == RND else motivation
        stateful["motivation"] = motivation
        stateful["motivation_optimizer"] = motivation_optimizer or torch.optim.Adam(trained.parameters(), lr=1e-4)
    stateful["rooms_seen"] = torch.zeros(256, dtype=torch.bool)
    checkpoint = script.checkpoint_state(tiny_args(script), stateful, max(1, global_step // 32), global_step)
    script.save_checkpoint(str(run_dir), {**checkpoint, **(changes or {})})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two run folders: untrained RND, with a partial `checkpoint.pt.tmp` beside its checkpoint (a save killed while
    writing); and SND-VIC, its `checkpoint.pt` after the motivation updates, `checkpoint.prev.pt` from before them."""
    rnd, vic = load_script(RND), load_script(SND_VIC)
    runs = tmp_path_factory.mktemp("features") / "runs"
    torch.manual_seed(0)
    agent = rnd.Agent(18)  # Montezuma's Revenge's 18 actions; both runs get this agent, so the tool plays the same frames
    rnd_dir = runs / "MontezumaRevenge-v5__ppo_rnd_atari__1__1"
    save(rnd, rnd_dir, agent, rnd.RNDModel(), global_step=RND_STEP)
    (rnd_dir / "checkpoint.pt.tmp").write_bytes(b"PK\x03\x04 partial")

    torch.manual_seed(0)
    vic_agent, model = vic.Agent(18), vic.SNDModel()
    vic_agent.load_state_dict(agent.state_dict())
    vic_dir = runs / "MontezumaRevenge-v5__ppo_snd_vic_atari__1__1"
    optimizer = torch.optim.Adam(model.parameters(), lr=vic.Args.motivation_learning_rate)  # one Adam, as the script
    save(vic, vic_dir, vic_agent, model, optimizer, global_step=0)
    frames, starts = play(vic, NUM_TRAIN_FRAMES, seed=0)
    t = torch.nonzero(~starts[1:]).squeeze(1)  # s_{t+1} in the same episode as s_t
    args = tiny_args(vic)
    for _ in range(TRAIN_STEPS):
        mb = torch.randint(len(t), (BATCH_SIZE,))
        loss, _, _ = vic.motivation_loss(model, args, frames[t], frames[t + 1], mb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save(vic, vic_dir, vic_agent, model, optimizer, global_step=SND_VIC_STEP)
    return {"rnd": rnd_dir, "snd-vic": vic_dir}


def run_tool(*args, cwd=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # 2 shared cores
    command = [sys.executable, str(ROOT / "benchmark" / "features.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment, cwd=cwd, check=False)


def table_rows(text: str) -> list:
    """The rows of features.md's table, each {column: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.fixture(scope="module")
def tool(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("features_out")
    result = run_tool(runs["rnd"], runs["snd-vic"], "--out", out, "--frames", TOOL_FRAMES, "--seed", 1)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"out": out, "stdout": result.stdout, "rows": table_rows((out / "features.md").read_text())}


def test_the_tool_writes_the_pictures_and_one_row_per_run(tool, runs):
    from PIL import Image

    out = tool["out"]
    with Image.open(out / "projection.png") as image:
        assert image.format == "PNG" and image.size == (2 * 400, 440)  # a 400 x 440 panel per run, side by side
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # points drawn, not a blank canvas
    with Image.open(out / "spectrum.png") as image:
        assert image.format == "PNG" and image.size == (640, 420)
    rnd, vic = tool["rows"]
    assert rnd["run"] == f"`{runs['rnd'].name}`" and vic["run"] == f"`{runs['snd-vic'].name}`"
    assert rnd["script (method)"] == "ppo_rnd_atari.py (RND)" and vic["script (method)"] == "ppo_snd_vic_atari.py (SND-VIC)"
    for row in (rnd, vic):
        assert row["game"] == "MontezumaRevenge-v5" and row["frames"] == str(TOOL_FRAMES)
        rooms_seen = int(row["rooms seen"])  # an untrained agent may stay in the first room: then by episode or time
        assert rooms_seen >= 1
        assert row["coloured by"] == "room" if rooms_seen > 1 else row["coloured by"] in ("episode", "time step")
        rank, _, dimensions = row["effective rank"].partition(" of ")
        assert 1 <= float(rank) <= 512 and dimensions == "512"
        assert 0 < float(row["top-1 share"]) <= float(row["top-10 share"]) <= 1
        near, far = float(row["consecutive distance"]), float(row["random-pair distance"])
        assert 0 < near and 0 < far and float(row["ratio"]) == pytest.approx(near / far, rel=2e-3)
        assert float(row["distillation error"]) > 0 and float(row["feature std"]) > 0
    # the newest readable checkpoint: RND's partial .tmp is passed over; SND-VIC's checkpoint.pt, not the older .prev
    assert rnd["agent steps"] == str(RND_STEP) and vic["agent steps"] == str(SND_VIC_STEP)
    assert f"checkpoint {runs['rnd'] / 'checkpoint.pt'}" in tool["stdout"]


def test_a_few_snd_vic_updates_pull_consecutive_states_together_relative_to_random_pairs(tool):
    rnd, vic = tool["rows"]
    report = (
        f"consecutive / random distance ratio: RND {rnd['ratio']}, SND-VIC {vic['ratio']} after {TRAIN_STEPS} updates; "
        f"effective rank RND {rnd['effective rank']}, SND-VIC {vic['effective rank']}"
    )
    print(report)
    assert float(vic["ratio"]) <= MAX_RATIO_OF_RATIOS * float(rnd["ratio"]), report


def test_effective_rank_and_spectrum_of_hand_made_features(features):
    rnd = load_script(RND)
    rng = np.random.default_rng(0)
    n, d = 4000, 32
    starts = np.zeros(n, dtype=bool)
    starts[0] = True
    collapsed = np.tile(rng.normal(size=d), (n, 1))  # every state the same point
    line = rng.normal(size=(n, 1)) * rng.normal(size=(1, d)) + 5.0  # states on a line
    isotropic = rng.normal(size=(n, d))
    latent = rng.normal(size=(n, 3)) * np.array([3.0, 2.0, 1.0])  # 3 directions mixed into every feature
    correlated = latent @ rng.normal(size=(3, d)) + 0.01 * rng.normal(size=(n, d))
    numbers = {
        name: features.feature_numbers(rnd, f, starts, 0)
        for name, f in [("collapsed", collapsed), ("line", line), ("isotropic", isotropic), ("correlated", correlated)]
    }
    assert numbers["collapsed"]["effective_rank"] == pytest.approx(1.0)
    assert numbers["line"]["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert numbers["line"]["top1_share"] == pytest.approx(1.0)
    assert numbers["isotropic"]["effective_rank"] > 0.95 * d
    assert numbers["isotropic"]["top1_share"] < 2 / d and numbers["isotropic"]["top10_share"] < 0.4
    assert correlated.std(0).min() > 0.1  # every feature varies, yet the features span 3 directions
    assert numbers["correlated"]["effective_rank"] < 3.5
    assert numbers["correlated"]["top10_share"] > 0.999 and numbers["correlated"]["dimensions"] == d
    shares = features.spectrum(correlated)
    assert shares.sum() == pytest.approx(1.0) and np.all(np.diff(shares) <= 1e-12)  # largest first
    assert numbers["collapsed"]["feature_std"] == pytest.approx(0.0, abs=1e-12)  # the scripts' target_feature_spread
    assert numbers["isotropic"]["feature_std"] == pytest.approx(1.0, abs=0.05)


def test_distances_leave_out_the_pairs_across_an_episode_end(features):
    rnd = load_script(RND)
    rng = np.random.default_rng(1)
    d, length = 16, 500
    # two episodes, each a slow random walk (steps of norm about 0.1 * 4 = 0.4), the second 1000 away from the first
    walks = [np.cumsum(0.1 * rng.normal(size=(length, d)), axis=0) + offset for offset in (0.0, 1000.0)]
    walk = np.concatenate(walks)
    starts = np.zeros(2 * length, dtype=bool)
    starts[[0, length]] = True
    near, _ = features.pair_distances(walk, starts, seed=0)
    assert len(near) == 2 * length - 2 and near.max() < 1.5  # the jump of about 4000 between the episodes is left out
    numbers = features.feature_numbers(rnd, walk, starts, 0)
    assert numbers["consecutive_distance"] == pytest.approx(near.mean())
    assert numbers["distance_ratio"] < 0.01  # neighbours close, random pairs far apart
    iid = rng.normal(size=(2000, d))  # states unrelated in time: consecutive pairs are random pairs
    iid_starts = np.zeros(2000, dtype=bool)
    iid_starts[0] = True
    assert features.feature_numbers(rnd, iid, iid_starts, 0)["distance_ratio"] == pytest.approx(1.0, abs=0.05)


def test_projections_and_colouring(features):
    rng = np.random.default_rng(2)
    clusters = np.concatenate([rng.normal(size=(60, 20)), rng.normal(size=(60, 20)) + 20.0])
    for method in ("pca", "tsne"):
        coordinates, labels = features.project(clusters, method, seed=0)
        assert coordinates.shape == (120, 2) and np.isfinite(coordinates).all() and len(labels) == 2
        a, b = coordinates[:60], coordinates[60:]
        spread = max(np.linalg.norm(a - a.mean(0), axis=1).mean(), np.linalg.norm(b - b.mean(0), axis=1).mean())
        assert np.linalg.norm(a.mean(0) - b.mean(0)) > 3 * spread, method  # the two clusters stay apart
    episodes = np.array([0, 0, 1, 1])
    assert features.colouring({"rooms": np.array([1, 1, 4, 4]), "episodes": episodes})[1] == "room"
    assert features.colouring({"rooms": np.ones(4, dtype=int), "episodes": episodes})[1] == "episode"  # one room
    assert features.colouring({"rooms": None, "episodes": episodes})[1] == "episode"  # Procgen, games without rooms
    values, kind = features.colouring({"rooms": None, "episodes": np.zeros(5, dtype=int)})
    assert kind == "time step" and list(values) == [0, 1, 2, 3, 4]


def test_the_tool_knows_the_scripts_checkpoint_files_and_methods(features):
    for script in SCRIPTS:
        assert load_script(script).CHECKPOINT_FILES == features.CHECKPOINT_FILES
    assert set(features.ATARI_METHODS) | {features.PROCGEN_SCRIPT} == set(SCRIPTS)
    assert features.PROCGEN_SCRIPT == PROCGEN


def refusal(features, capsys, *paths, frames=TOOL_FRAMES) -> str:
    """features.py's main on `paths`: it must exit with code 2 and one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exit_info:
        features.main(features.Args(runs=[str(p) for p in paths], frames=frames))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_bad_input_is_refused_with_one_line_and_exit_code_2(features, runs, tmp_path, capsys):
    rnd = load_script(RND)
    empty = tmp_path / "MontezumaRevenge-v5__ppo_rnd_atari__1__2"
    empty.mkdir()
    assert "has no checkpoint" in refusal(features, capsys, runs["rnd"], empty)  # checked before anything is played
    assert "no such run folder" in refusal(features, capsys, tmp_path / "missing")
    assert "pass one or more run folders" in refusal(features, capsys)
    assert "at least" in refusal(features, capsys, runs["rnd"], frames=1)
    torch.manual_seed(0)
    agent, model = rnd.Agent(18), rnd.RNDModel()
    save(rnd, tmp_path / "unknown", agent, model, changes={"script": "ppo_mystery_atari.py"})
    assert "ppo_mystery_atari.py, a script this tool does not know" in refusal(features, capsys, tmp_path / "unknown")
    # a `--save-model` model holds the agent alone; a run of the baseline (ppo_atari.py, PPO without intrinsic reward)
    # has no motivation model either
    model_file = tmp_path / "ppo_rnd_atari.cleanrl_model"
    torch.save({**rnd.checkpoint_state(tiny_args(rnd), {"agent": agent}, 10, 320), "kind": "model"}, model_file)
    assert "has no motivation model: a `--save-model` model" in refusal(features, capsys, model_file)
    baseline = load_script(BASELINE)
    baseline_agent = baseline.Agent(18)
    stateful = dict(agent=baseline_agent, optimizer=torch.optim.Adam(baseline_agent.parameters(), lr=1e-4))
    stateful["rooms_seen"] = torch.zeros(256, dtype=torch.bool)
    (tmp_path / "baseline").mkdir()
    baseline.save_checkpoint(str(tmp_path / "baseline"), baseline.checkpoint_state(tiny_args(baseline), stateful, 1, 32))
    assert "has no motivation model: a run of the PPO baseline" in refusal(features, capsys, tmp_path / "baseline")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    assert "unreadable" in refusal(features, capsys, tmp_path / "garbage.pt")


def test_the_command_line_refuses_a_folder_without_a_checkpoint(tmp_path):
    result = run_tool(tmp_path, "--out", tmp_path / "out")
    assert (
        result.returncode == 2
        and result.stderr.strip()
        == f"error: {tmp_path} has no checkpoint (checkpoint.pt.tmp, checkpoint.pt, checkpoint.prev.pt): pass a run folder of the scripts"
    )
    assert not (tmp_path / "out").exists()
