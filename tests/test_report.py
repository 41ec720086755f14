"""benchmark/report.py on small synthetic TensorBoard runs whose table cells are known by hand.

The runs (written as the scripts write them: the `hyperparameters` text with every flag, then one point per finished
episode): Montezuma's Revenge with RND (3 seeds at the paper's settings, one of them 150 episodes long, one resumed
with a larger budget, two logged by an older version that wrote `env_id` without `ALE/`; and a run with another
--clip-coef), SND-VIC (2 seeds, one resumed with a purge), the PPO baseline (2 seeds of `ppo_atari.py`, which logs no
`motivation/*`) and a user's variant (its own exp_name); jumper on Procgen with RND (2 seeds, and one without the
hyperparameters text), SND-VIC (2 seeds) and the baseline (1 seed of `ppo_procgen.py`); an evaluation-only run and a
run without episodes, both to be skipped.
The motivation runs log `motivation/int_reward_mean`, the Montezuma runs `charts/rooms_visited`.
"""

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from conftest import BASELINE, PROCGEN_BASELINE, ROOT, load_script

MONTEZUMA = "MontezumaRevenge-v5"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report():
    return load_script("benchmark/report.py")


def write_run(runs, name, hparams, episodes=(), rooms=(), purge_step=None, int_rewards=None):
    """A run folder as the scripts write it. episodes: [(step, return, reward events or None)]; rooms:
    [(step, rooms visited)]; int_rewards: [(step, motivation/int_reward_mean)], by default one point per episode step
    where the run has a motivation (not the baseline's `ppo_atari`). With `purge_step`, a resumed run: the writer
    reopens the folder, purging later points."""
    if int_rewards is None:
        int_rewards = [] if "__ppo_atari__" in name else [(step, 0.01 * (i + 1)) for i, (step, _, _) in enumerate(episodes)]
    writer = SummaryWriter(str(runs / name), purge_step=purge_step)
    if hparams is not None and purge_step is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in hparams.items()))
    for step, episodic_return, reward_events in episodes:
        writer.add_scalar("charts/episodic_return", episodic_return, step)
        writer.add_scalar("charts/episodic_length", 10, step)
        if reward_events is not None:
            writer.add_scalar("charts/episodic_reward_events", reward_events, step)
    for step, value in rooms:
        writer.add_scalar("charts/rooms_visited", value, step)
    for step, value in int_rewards:
        writer.add_scalar("motivation/int_reward_mean", value, step)
    writer.close()


def settings(report, game, method, seed, **changes):
    """The hyperparameters a run of `benchmark/launch.py`'s grid logs (its script's `Args` after `check_args`, the eta
    that the script fills in when the run starts filled in), with `changes`."""
    args = report.launcher().Run(game, method, seed).settings().args
    return {**args, "eta": 1.0 if args["eta"] is None else args["eta"], **changes}


def baseline_settings(script_name, game, seed):
    """The hyperparameters a baseline run logs: its script's `Args` after `check_args`, as its main block writes them."""
    script = load_script(script_name)
    args = script.Args(env_id=game, seed=seed)
    script.check_args(args)
    return dataclasses.asdict(args)


@pytest.fixture(scope="module")
def runs(report, tmp_path_factory):
    runs = tmp_path_factory.mktemp("report") / "runs"
    m = MONTEZUMA
    old = {"env_id": m}  # an older version's hyperparameters text, without ALE/
    method = report.SCRIPT_METHODS
    atari_args = lambda exp_name, seed, **changes: settings(report, m, method[exp_name], seed, exp_name=exp_name, **changes)
    procgen_args = lambda method, seed: settings(report, "jumper", method, seed)
    # RND: reward-event means 2, 6, 1 -> 3.00 ± 2.16 (population std); best scores 400, 2500, 149
    write_run(
        runs, f"{m}__ppo_rnd_atari__1__1", atari_args("ppo_rnd_atari", 1, **old), [(100, 100, 1), (200, 400, 3)], [(200, 3)]
    )
    episodes = [(100, 0, 4), (150, 2500, 6), (150, 300, 8)]  # two episodes ending at the same step
    write_run(runs, f"{m}__ppo_rnd_atari__2__1", atari_args("ppo_rnd_atari", 2), episodes, [(150, 5)])
    episodes = [(10 * (i + 1), i, i % 3) for i in range(150)]  # returns 0..149: the last 100 average 99.5
    # resumed with a larger budget and a lower learning rate, flags a resume may change: still the paper's settings
    extended = dict(total_timesteps=256_000_000, num_iterations=15625, learning_rate=1e-5, cuda=False, **old)
    write_run(runs, f"{m}__ppo_rnd_atari__3__1", atari_args("ppo_rnd_atari", 3, **extended), episodes, [(750, 2), (1500, 4)])
    # started by hand with another --clip-coef: a row of its own, whose numbers would change RND's
    write_run(runs, f"{m}__ppo_rnd_atari__1__2", atari_args("ppo_rnd_atari", 1, clip_coef=0.2), [(100, 9999, 90)])
    # SND-VIC, seed 1 resumed from a checkpoint at step 249: the points from 250 on are purged, then logged anew
    name = f"{m}__ppo_snd_vic_atari__1__1"
    write_run(runs, name, atari_args("ppo_snd_vic_atari", 1), [(100, 10, 2), (200, 20, 2), (300, 99999, 50)], [(300, 40)])
    write_run(runs, name, None, [(300, 30, 4), (400, 40, 4)], [(400, 6)], purge_step=250)
    write_run(runs, f"{m}__ppo_snd_vic_atari__2__1", atari_args("ppo_snd_vic_atari", 2), [(500, 700, 5)], [(500, 2)])
    # the PPO baseline, ppo_atari.py: reward-event means 0.5, 1.5 -> 1.00 ± 0.50
    baseline = lambda seed: baseline_settings(BASELINE, m, seed)
    write_run(runs, f"{m}__ppo_atari__1__1", baseline(1), [(100, 0, 0), (200, 100, 1)], [(200, 1)])
    write_run(runs, f"{m}__ppo_atari__2__1", baseline(2), [(300, 300, 1.5)], [(300, 2)])
    my_variant = settings(report, m, "rnd", 1, exp_name="my_variant")
    write_run(runs, f"{m}__my_variant__1__1", my_variant, [(100, 70, 7)], [(100, 1)])
    # skipped: an evaluation-only run (its episodes would change RND's cells) and a run that has no episode yet
    eval_args = atari_args("ppo_rnd_atari", 1, evaluate="runs/x/checkpoint.pt")
    write_run(runs, f"{m}__ppo_rnd_atari-eval__1__2", eval_args, [(0, 99999, 1000)])
    write_run(runs, f"{m}__ppo_rnd_atari__9__1", atari_args("ppo_rnd_atari", 9))
    # jumper: the table metric is the return. RND means 5, 2.5, and 1 for seed 3 (no hyperparameters text: its
    # settings are not known, its seed is read from the folder name); SND-VIC 10, 8
    write_run(runs, "jumper__ppo_snd_procgen-rnd__1__1", procgen_args("rnd", 1), [(100, 0, None), (200, 10, None)])
    write_run(
        runs, "jumper__ppo_snd_procgen-rnd__2__1", procgen_args("rnd", 2), [(s, r, None) for s, r in enumerate([0, 0, 0, 10])]
    )
    write_run(runs, "jumper__ppo_snd_procgen-rnd__3__1", None, [(300, 1, None)])
    write_run(runs, "jumper__ppo_snd_procgen-snd-vic__1__1", procgen_args("snd-vic", 1), [(100, 10, None), (200, 10, None)])
    write_run(runs, "jumper__ppo_snd_procgen-snd-vic__2__1", procgen_args("snd-vic", 2), [(400, 8, None)])
    # the Procgen baseline, ppo_procgen.py, one seed: returns 0, 2
    jumper_baseline = baseline_settings(PROCGEN_BASELINE, "jumper", 1)
    write_run(runs, "jumper__ppo_procgen__1__1", jumper_baseline, [(100, 0, None), (200, 2, None)], int_rewards=[])
    return runs


@pytest.fixture(scope="module")
def result(report, runs):
    return report.report(str(runs), str(runs.parent / "out"))


def test_paper_table_is_the_mean_over_all_training_episodes_then_mean_and_population_std_over_seeds(result):
    cells = result["cells"]
    # (mean, std, seeds, fewest agent steps, most): reward events on Atari, not game points
    assert cells[MONTEZUMA, "rnd"]["average"] == pytest.approx((3.0, math.sqrt(14 / 3), 3, 150, 1500))
    assert cells[MONTEZUMA, "snd-vic"]["average"] == pytest.approx((4.0, 1.0, 2, 400, 500))  # (2+2+4+4)/4 and 5
    assert cells["jumper", "rnd"]["average"] == pytest.approx((3.75, 1.25, 2, 3, 200))
    assert cells["jumper", "rnd (settings not logged)"]["average"] == pytest.approx((1.0, 0.0, 1, 300, 300))
    assert cells[MONTEZUMA, "rnd (--clip-coef 0.2)"]["average"] == pytest.approx((90.0, 0.0, 1, 100, 100))
    assert cells["jumper", "snd-vic"]["average"] == pytest.approx((9.0, 1.0, 2, 200, 400))


def test_best_score_final_performance_and_rooms(report, result):
    cells = result["cells"]
    assert cells[MONTEZUMA, "rnd"]["max_score"][:3] == pytest.approx((3049 / 3, np.std([400, 2500, 149]), 3))
    assert cells["jumper", "rnd"]["max_score"][0] == pytest.approx(10.0)  # maxima 10, 10: shown for Procgen too
    (long_run,) = [run for run in result["runs"] if run.name == f"{MONTEZUMA}__ppo_rnd_atari__3__1"]
    assert report.run_values(long_run)["final"] == pytest.approx(99.5)  # the last 100 of 150 episodes
    assert report.run_values(long_run, last_episodes=10)["final"] == pytest.approx(144.5)
    assert cells[MONTEZUMA, "rnd"]["final"][:2] == pytest.approx(
        (np.mean([250, 2800 / 3, 99.5]), np.std([250, 2800 / 3, 99.5]))
    )
    assert cells[MONTEZUMA, "rnd"]["rooms"][:3] == pytest.approx((4.0, math.sqrt(2 / 3), 3))  # the last of 3, 5, 4
    assert "rooms" not in cells["jumper", "rnd"]


def test_points_purged_by_a_resumed_run_do_not_count(report, runs):
    run = report.read_run(str(runs / f"{MONTEZUMA}__ppo_snd_vic_atari__1__1"))
    assert [value for _, value in run.metric] == [2, 2, 4, 4]
    assert [step for step, _ in run.returns] == [100, 200, 300, 400]
    assert report.run_values(run) == {"average": 3.0, "max_score": 40.0, "final": 25.0, "rooms": 6.0}
    assert run.steps == 400 and (run.game, run.method, run.seed) == (MONTEZUMA, "snd-vic", 1)


def test_runs_are_grouped_by_game_method_settings_and_seed(result):
    groups = {}
    for run in result["runs"]:
        groups.setdefault((run.game, run.column), []).append(run.seed)
    assert {cell: sorted(seeds) for cell, seeds in groups.items()} == {
        # `ALE/MontezumaRevenge-v5` and `MontezumaRevenge-v5` are one game; a larger budget the same settings
        (MONTEZUMA, "rnd"): [1, 2, 3],
        (MONTEZUMA, "rnd (--clip-coef 0.2)"): [1],  # never merged into the paper's row
        (MONTEZUMA, "snd-vic"): [1, 2],
        (MONTEZUMA, "baseline"): [1, 2],  # exp_name ppo_atari: the paper's Baseline column
        (MONTEZUMA, "my_variant"): [1],  # an unknown exp_name is a method of its own
        ("jumper", "rnd"): [1, 2],
        ("jumper", "rnd (settings not logged)"): [3],  # no hyperparameters text: seed from the folder name
        ("jumper", "snd-vic"): [1, 2],
        ("jumper", "baseline"): [1],  # exp_name ppo_procgen
    }
    assert all(run.atari == (run.game == MONTEZUMA) for run in result["runs"])


def test_game_and_method_names(report):
    assert report.game_of("ALE/PrivateEye-v5") == ("PrivateEye-v5", True)
    assert report.game_of("procgen-coinrun-v0") == ("coinrun", False)
    assert report.method_of("ppo_snd_std_atari", None) == "snd-std"
    assert report.method_of("ppo_atari", None) == report.method_of("ppo_procgen", None) == "baseline"
    assert report.method_of("ppo_snd_procgen", "snd-v") == "snd-v"
    assert report.method_of("bigger_net", "snd-v") == "bigger_net-snd-v"  # a procgen variant gets its own column


def test_evaluation_runs_and_runs_without_episodes_are_skipped_with_the_reason(result):
    assert dict(result["skipped"]) == {
        f"{MONTEZUMA}__ppo_rnd_atari-eval__1__2": "evaluation-only run",
        f"{MONTEZUMA}__ppo_rnd_atari__9__1": "no finished training episode (no charts/episodic_reward_events)",
    }
    assert "`MontezumaRevenge-v5__ppo_rnd_atari-eval__1__2`: evaluation-only run" in result["markdown"]


def test_markdown_shows_the_papers_numbers_next_to_ours(result, runs):
    text = (runs.parent / "out" / "results.md").read_text()
    assert text == result["markdown"]
    rows = [line for line in text.splitlines() if line.startswith(f"| {MONTEZUMA} | RND |")]
    assert rows[0] == f"| {MONTEZUMA} | RND | 3.00 ± 2.16 | 5.33 ± 0.23 | 3 | 150 - 1500 |"  # the paper's main table
    assert rows[1] == f"| {MONTEZUMA} | RND | 1016 | 6689 | 3 | 150 - 1500 |"  # best score
    assert rows[2] == f"| {MONTEZUMA} | RND | 427.61 ± 362.84 | 4.0 ± 0.8 | 3 | 150 - 1500 |"  # last 100, rooms
    assert f"| {MONTEZUMA} | SND-V | - | 10.59 ± 1.99 | - | - |" in text  # no runs: the paper's number alone
    # the Baseline column from the runs of ppo_atari.py and ppo_procgen.py
    assert f"| {MONTEZUMA} | Baseline | 1.00 ± 0.50 | 0.00 ± 0.00 | 2 | 200 - 300 |" in text
    assert f"| {MONTEZUMA} | Baseline | 200 | 400 | 2 | 200 - 300 |" in text  # best scores 100, 300
    assert "| jumper | Baseline | 1.00 (1 seed) | 0.00 ± 0.00 | 1 | 200 |" in text
    assert "| jumper | SND-STD | - | 9.76 ± 0.04 | - | - |" in text  # no runs: the paper's number alone
    assert "paper only" not in text
    assert "| jumper | SND-VIC | 9.00 ± 1.00 | 9.76 ± 0.03 | 2 | 200 - 400 |" in text
    assert "| jumper | SND-VIC | 9.00 | - | 2 | 200 - 400 |" in text  # the paper has no Procgen best score
    assert "![jumper](curves/jumper.png)" in text and f"![{MONTEZUMA}](curves/{MONTEZUMA}.png)" in text
    # a row of other settings: its own numbers, no paper number, and its runs named
    # one seed has no spread: `x (1 seed)`, never `x ± 0.00`
    assert f"| {MONTEZUMA} | RND (--clip-coef 0.2) | 90.00 (1 seed) | - | 1 | 100 |" in text
    assert "| jumper | RND (settings not logged) | 1.00 (1 seed) | - | 1 | 300 |" in text
    assert f"| {MONTEZUMA} | my_variant | 70.00 (1 seed) | 1.0 (1 seed) | 1 | 100 |" in text  # last 100, rooms
    one_seed = [row.split(" | ") for row in text.splitlines() if row.startswith("| ") and row.split(" | ")[-2] == "1"]
    assert len(one_seed) >= 8 and not any("±" in cells[2] for cells in one_seed)  # our cell of any one-seed row
    assert "| jumper | RND | 3.75 ± 1.25 | 0.03 ± 0.02 | 2 | 3 - 200 |" in text
    assert f"- {MONTEZUMA}, RND (--clip-coef 0.2): `{MONTEZUMA}__ppo_rnd_atari__1__2`" in text


def test_one_valid_png_per_game(runs, result):
    import matplotlib.image

    for game in (MONTEZUMA, "jumper"):
        path = runs.parent / "out" / "curves" / f"{game}.png"
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = matplotlib.image.imread(path).shape
        assert width > 300 and height > 200
    assert sorted(p.name for p in (runs.parent / "out" / "curves").iterdir()) == ["MontezumaRevenge-v5.png", "jumper.png"]


def curve_lines(axes) -> tuple:
    """(the method curves, {label: line}; the paper's level lines) of a panel: axhline's lines have no label."""
    curves = {line.get_label(): line for line in axes.get_lines() if not line.get_label().startswith("_")}
    return curves, [line for line in axes.get_lines() if line.get_label().startswith("_")]


def test_curves_tell_the_methods_apart_and_show_the_papers_levels_rooms_and_intrinsic_reward(report, result):
    import matplotlib.pyplot as plt

    runs = [run for run in result["runs"] if run.game == MONTEZUMA]
    figure = report.curve_figure(MONTEZUMA, runs, bins=10)
    reward, rooms, intrinsic = figure.axes  # the return's panel, then the rooms visited and the intrinsic reward beside it
    assert "learning curve" in reward.get_title() and reward.get_ylabel() == "reward events per episode"
    assert "charts/rooms_visited" in rooms.get_title() and "motivation/int_reward_mean" in intrinsic.get_title()
    curves, levels = curve_lines(reward)
    assert sorted(curves) == [
        "Baseline, 2 seeds",
        "RND (--clip-coef 0.2), 1 seed",  # "1 seed", not "1 seeds"
        "RND, 3 seeds",
        "SND-VIC, 2 seeds",
        "my_variant, 1 seed",
    ]
    looks = [(line.get_color(), str(line.get_linestyle())) for line in curves.values()]
    assert len({colour for colour, _ in looks}) == len(looks)  # no line hides another: a colour per row
    # and the paper's methods line styles that differ, for readers who cannot tell the colours apart
    assert len({str(style) for _, style in report.METHOD_STYLES.values()}) == len(report.METHOD_STYLES)
    assert curves["RND, 3 seeds"].get_linestyle() != curves["RND (--clip-coef 0.2), 1 seed"].get_linestyle()
    # the std bands lie under every line
    assert max(band.get_zorder() for band in reward.collections) < min(line.get_zorder() for line in reward.get_lines())
    # the paper's end-of-training levels of the methods with runs at the paper's settings, dashed, in their colours
    paper = report.PAPER_FINAL_LEVEL[MONTEZUMA]
    expected = {curves["Baseline, 2 seeds"].get_color(): paper[0], curves["RND, 3 seeds"].get_color(): paper[1]}
    expected[curves["SND-VIC, 2 seeds"].get_color()] = paper[4]
    assert (
        {line.get_color(): line.get_ydata()[0] for line in levels}
        == expected
        == {"tab:gray": 0, "tab:blue": 8, "tab:red": 10.5}
    )
    assert all(line.get_linestyle() == "--" and line.get_linewidth() < 1.8 for line in levels)
    assert any("read off the paper's Fig. 3" in text.get_text() for text in reward.get_legend().get_texts())
    # rooms: every Montezuma run logs them; the intrinsic reward: all but the baseline, which has no motivation
    assert "Baseline, 2 seeds" in curve_lines(rooms)[0] and "Baseline, 2 seeds" not in curve_lines(intrinsic)[0]
    assert len(curve_lines(intrinsic)[0]) == 4 and not curve_lines(intrinsic)[1]  # the paper's levels on the return only
    # SND-VIC's rooms, bins of 150 steps: seed 1's 6 at step 400 (its 40 at 300 purged), seed 2's 2 at 500; each run's
    # curve ends with the run
    rooms_curve = curve_lines(rooms)[0]["SND-VIC, 2 seeds"].get_ydata()
    np.testing.assert_array_equal(rooms_curve, [np.nan, np.nan, 6, 2] + [np.nan] * 6)
    plt.close(figure)
    figure = report.curve_figure("jumper", [run for run in result["runs"] if run.game == "jumper"], bins=10)
    assert len(figure.axes) == 2 and "motivation/int_reward_mean" in figure.axes[1].get_title()  # no rooms on Procgen
    levels = curve_lines(figure.axes[0])[1]
    assert sorted(line.get_ydata()[0] for line in levels) == [0, 0, 10]  # Baseline, RND and SND-VIC
    plt.close(figure)


def test_the_papers_end_of_training_levels_cover_its_games_and_methods(report):
    assert set(report.PAPER_FINAL_LEVEL) == set(report.PAPER_AVERAGE)
    assert all(len(levels) == len(report.PAPER_COLUMNS) for levels in report.PAPER_FINAL_LEVEL.values())
    assert report.PAPER_FINAL_LEVEL["MontezumaRevenge-v5"] == [0, 8, 15.5, 10, 10.5]  # Baseline, RND, SND-V, -STD, -VIC


def fake_run(report, method, seed, settings, game="jumper"):
    """A Run with one episode, `settings` as the hyperparameters text gives them (strings)."""
    settings = None if settings is None else {key: str(value) for key, value in settings.items()}
    return report.Run(
        f"{game}__{method}__{seed}", game, game != "jumper", method, seed, [(1, 1.0)], [(1, 1.0)], None, 1, settings
    )


def test_runs_of_different_settings_get_rows_of_their_own(report):
    m = MONTEZUMA
    paper = settings(report, m, "rnd", 1)
    older = {key: value for key, value in paper.items() if key != "max_episode_steps"}  # a flag it did not have yet
    runs = [
        fake_run(report, "rnd", 1, paper, m),
        fake_run(report, "rnd", 2, {**paper, "seed": 2, "env_id": m, "total_timesteps": 1024, "eval_episodes": 0}, m),
        fake_run(report, "rnd", 3, {**paper, "num_envs": 8, "batch_size": 1024, "minibatch_size": 32}, m),
        fake_run(report, "rnd", 4, older, m),
        fake_run(report, "rnd", 5, None, m),
    ]
    # the eta ppo_snd_procgen.py fills in when a run starts is compared among the runs: 0.5 is not mixed with 1.0
    snd_std = settings(report, "jumper", "snd-std", 1)
    runs += [fake_run(report, "snd-std", seed, {**snd_std, "seed": seed}) for seed in (1, 2)]
    runs.append(fake_run(report, "snd-std", 3, {**snd_std, "eta": 0.5}))
    # a method of no script (its own exp_name) has no paper settings: its rows are named by what differs among them
    variant = {**snd_std, "exp_name": "bigger_net"}
    runs += [fake_run(report, "bigger_net", 1, variant), fake_run(report, "bigger_net", 2, {**variant, "num_envs": 8})]
    report.assign_columns(runs)
    assert [run.column for run in runs[:5]] == [
        "rnd",
        "rnd",  # the seed, the env_id spelling and the flags a resume may change are not settings
        "rnd (--num-envs 8)",  # the sizes derived from it are left out of the name
        "rnd (--max-episode-steps not logged)",
        "rnd (settings not logged)",
    ]
    assert runs[5].column == runs[6].column != runs[7].column and "--eta 0.5" in runs[7].column
    assert [run.column for run in runs[8:]] == ["bigger_net (--num-envs 128)", "bigger_net (--num-envs 8)"]
    assert report.column_name("snd-std (--eta 0.5)") == "SND-STD (--eta 0.5)"
    assert report.method_key("rnd") < report.method_key("rnd (--num-envs 8)") < report.method_key("snd-v")


def test_the_flags_a_resume_may_change_are_not_settings(report):
    for script in report.SCRIPTS:
        assert load_script(script).RESUME_MAY_CHANGE <= report.not_compared()
    assert {"seed", "exp_name", "env_id", "batch_size", "minibatch_size"} <= report.not_compared()
    assert "clip_coef" not in report.not_compared() and "eta" not in report.not_compared()


def test_binned_curve_averages_each_bin_and_carries_the_last_value_through_empty_ones(report):
    edges = np.linspace(0, 100, 6)  # bins (0, 20], (20, 40], ... ; step 0 falls in the first
    points = [(30, 1.0), (40, 3.0), (90, 5.0)]
    curve = report.binned_curve(points, edges, last_step=70)
    np.testing.assert_array_equal(curve, [np.nan, 2.0, 2.0, 2.0, np.nan])  # the run ended at step 70
    np.testing.assert_array_equal(report.binned_curve([(0, 4.0)], edges, 100), [4.0] * 5)


def test_command_line(runs, tmp_path):
    command = [
        sys.executable,
        str(ROOT / "benchmark" / "report.py"),
        "--runs-dir",
        str(runs),
        "--out",
        str(tmp_path),
        "--bins",
        "7",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    assert f"skipped {MONTEZUMA}__ppo_rnd_atari-eval__1__2: evaluation-only run" in output
    assert f"| {MONTEZUMA} | RND | 3.00 ± 2.16 | 5.33 ± 0.23 | 3 | 150 - 1500 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "curves" / "jumper.png").read_bytes()[:8] == PNG_SIGNATURE
    missing = subprocess.run(
        [*command[:3], str(tmp_path / "nothing")], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert missing.returncode != 0 and "no folder" in missing.stderr
