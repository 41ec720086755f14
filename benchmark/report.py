"""Tables and learning curves of the training runs in `runs/`, next to the SND paper's published numbers.

Reads every TensorBoard run folder under `--runs-dir` (local files only), tells its game, method, seed and settings
from the `hyperparameters` text the scripts write (or, for runs without it, the game, method and seed from the folder
name), and writes to `--out`:

- `results.md`: the paper's two tables with their real definitions (per run, the mean over all training episodes of
  the reward events on Atari or the return on Procgen, then mean ± population std over seeds; and the mean over
  runs of each run's best episode score), our numbers next to the paper's, plus a final-performance table (mean
  return of each run's last 100 episodes; rooms visited), each cell with its seed count and the agent steps reached
  (a cell of one seed shows `x (1 seed)`: it has no spread);
- `curves/<game>.png`: per game, every method's learning curve (the table metric against agent steps, mean ± std
  over seeds, each method its own colour and line style) with the paper's end-of-training level of each method that
  has runs as a dashed line of its colour (read by eye off the paper's Fig. 3, the authors' `assets/results_chart.png`;
  the paper's tables are averages over training, not a level a curve ends at); beside it, where the runs logged them,
  the rooms visited (`charts/rooms_visited`, Montezuma's Revenge and Pitfall) and the mean intrinsic reward of a
  rollout (`motivation/int_reward_mean`).

The Baseline column (PPO without intrinsic reward) is filled from the runs of `ppo_atari.py` (exp_name `ppo_atari`)
on Atari and `ppo_procgen.py` (exp_name `ppo_procgen`) on Procgen, the method "baseline", which log no `motivation/*`;
without such runs it shows the paper's number alone.

    python benchmark/report.py                                   # runs/ -> benchmark/results/
    python benchmark/report.py --runs-dir /scratch/runs --out /tmp/report --bins 200

Evaluation-only runs (`--evaluate`, run name ending in `-eval`) and folders without a finished episode are skipped,
with a line saying so.

Runs of different settings are never averaged together: a table row (a method's column of the paper's tables) holds
the runs of one setting only, whose seeds it averages. The row named by the method alone ("RND") holds the runs at the
paper's settings, the ones `benchmark/launch.py` runs (the scripts' defaults), and has the paper's number beside it. A
run with other settings gets a row of its own named by the method and the flags in which it differs, as
"RND (--clip-coef 0.2)", with no paper number; a run without the hyperparameters text, whose settings are unknown,
gets "RND (settings not logged)". Settings are the hyperparameters text without `seed`, `exp_name` (a run with its own
exp_name is a method of its own already), `env_id` (the game; old runs say `MontezumaRevenge-v5`, new ones
`ALE/MontezumaRevenge-v5`), the sizes derived from other flags (`batch_size`, `minibatch_size`) and the flags a resume
may change (the scripts' `RESUME_MAY_CHANGE`: `total_timesteps`, `num_iterations`, `learning_rate`, ...; the agent
steps a row reached are in the tables). The paper's eta, which the scripts fill in per game and method unless `--eta`
is given, is a setting like the others. Refusing such a mix would be the other choice; separate rows keep a report of everything in `runs/` possible while
keeping each row's mean over seeds the mean of one experiment.
"""

import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Optional

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@dataclass
class Args:
    runs_dir: str = "runs"
    """the folder holding one TensorBoard run folder per training run (`runs/<run_name>/`)"""
    out: str = "benchmark/results"
    """where `results.md` and `curves/<game>.png` are written"""
    bins: int = 100
    """learning curves: episodes are averaged in this many equal bins of agent steps, up to the game's largest step"""
    last_episodes: int = 100
    """final-performance table: the mean return of each run's last this many episodes"""


# exp_name (the script's name by default) -> method; any other exp_name is a method (a column) of its own
SCRIPT_METHODS = {
    "ppo_rnd_atari": "rnd",
    "ppo_snd_v_atari": "snd-v",
    "ppo_snd_std_atari": "snd-std",
    "ppo_snd_vic_atari": "snd-vic",
    "ppo_atari": "baseline",  # PPO without intrinsic reward: the paper's Baseline column
    "ppo_procgen": "baseline",
}
PROCGEN_SCRIPT = "ppo_snd_procgen"
PROCGEN_GAMES = {
    *("bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot"),
    *("heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot"),
}
METHOD_ORDER = ["rnd", "snd-v", "snd-std", "snd-vic"]
BASELINE_SCRIPTS = ("ppo_atari.py", "ppo_procgen.py")
METHOD_NAMES = {
    "baseline": "Baseline",
    "rnd": "RND",
    "snd-v": "SND-V",
    "snd-std": "SND-STD",
    "snd-vic": "SND-VIC",
}

# The paper's tables as published (arXiv 2302.11563; the authors' README at github.com/Iskandor/SND shows them as
# `assets/results_table.png` and `assets/results_score.png`, computed by `plots/analytic_table.py`), order Baseline, RND,
# SND-V, SND-STD, SND-VIC. Baseline is PPO without intrinsic reward (here `ppo_atari.py` and `ppo_procgen.py`).
PAPER_COLUMNS = ["baseline", *METHOD_ORDER]
PAPER_AVERAGE = {  # mean over all training episodes of reward events (Atari) or return (Procgen); mean, std over runs
    "MontezumaRevenge-v5": [(0.00, 0.00), (5.33, 0.23), (10.59, 1.99), (7.76, 1.73), (8.45, 1.12)],
    "Gravitar-v5": [(1.19, 0.00), (6.63, 1.55), (4.38, 0.46), (5.89, 0.43), (10.05, 0.66)],
    "Venture-v5": [(0.00, 0.00), (11.18, 0.42), (10.95, 0.14), (9.54, 0.90), (11.36, 0.37)],
    "PrivateEye-v5": [(0.81, 0.01), (2.41, 0.95), (6.59, 0.14), (3.79, 1.24), (5.93, 0.47)],
    "Pitfall-v5": [(0.00, 0.00), (0.00, 0.00), (0.00, 0.00), (0.00, 0.00), (0.00, 0.00)],
    "Solaris-v5": [(8.08, 0.15), (3.84, 0.25), (3.96, 0.41), (11.61, 1.12), (10.85, 1.20)],
    "caveflyer": [(0.00, 0.00), (0.00, 0.00), (7.28, 1.62), (10.86, 4.37), (11.14, 2.35)],
    "coinrun": [(0.00, 0.00), (0.25, 0.50), (9.40, 0.05), (9.40, 0.07), (2.55, 3.63)],
    "jumper": [(0.00, 0.00), (0.03, 0.02), (9.22, 0.21), (9.76, 0.04), (9.76, 0.03)],
    "climber": [(0.00, 0.00), (0.00, 0.00), (3.32, 3.04), (1.48, 2.40), (4.93, 2.88)],
}
PAPER_MAX_SCORE = {  # mean over runs of the run's best training episode, game points (Atari only)
    "MontezumaRevenge-v5": [400, 6689, 21565, 7212, 7838],
    "Gravitar-v5": [2611, 5600, 2741, 4643, 6712],
    "Venture-v5": [22, 2167, 1787, 2138, 2188],
    "PrivateEye-v5": [14870, 14996, 4213, 15089, 17313],
    "Pitfall-v5": [0, 0, 0, 0, 0],
    "Solaris-v5": [12344, 10667, 11582, 12460, 11865],
}
# The level each method's learning curve ends at in the paper (128M agent steps on Atari, 64M on Procgen), in the
# curves' units (reward events per episode on Atari, return on Procgen), order as PAPER_COLUMNS. Read by eye off the
# paper's Fig. 3 (the authors' `assets/results_chart.png`), to about ±1: not published numbers.
PAPER_FINAL_LEVEL = {
    "MontezumaRevenge-v5": [0, 8, 15.5, 10, 10.5],
    "Gravitar-v5": [1.2, 10, 6.75, 7.5, 14],
    "Venture-v5": [0, 13.25, 13.25, 11.5, 13.25],
    "PrivateEye-v5": [0.8, 2.75, 7, 5, 6.25],
    "Solaris-v5": [8, 4, 4, 12, 14.5],
    "Pitfall-v5": [0, 0, 0, 0, 0],
    "caveflyer": [0, 0, 13.5, 12.5, 12],
    "coinrun": [0, 1.25, 10, 10, 3],
    "jumper": [0, 0, 10, 10, 10],
    "climber": [0, 0, 7, 2, 8],
}


@dataclass
class Run:
    """One training run: who it is, and what the tables and curves need from its TensorBoard scalars."""

    name: str
    game: str  # "MontezumaRevenge-v5" (Atari) or "jumper" (Procgen)
    atari: bool
    method: str
    seed: int
    metric: list  # [(step, value)] per finished episode: reward events on Atari, return on Procgen (the paper's)
    returns: list  # [(step, charts/episodic_return)] per finished episode
    rooms: Optional[float]  # the last charts/rooms_visited, where the game has rooms
    steps: int  # agent steps reached: the largest step of any scalar
    settings: Optional[dict] = None  # the hyperparameters text ({flag: value as text}); None where there is none
    column: str = ""  # its row in the tables: the method, or the method and its differing flags (`assign_columns`)
    rooms_curve: list = field(default_factory=list)  # [(step, charts/rooms_visited)], per iteration; [] without rooms
    int_reward: list = field(default_factory=list)  # [(step, motivation/int_reward_mean)]; [] for the baseline

    def __post_init__(self):
        self.column = self.column or self.method


def parse_hyperparameters(text: str) -> dict:
    """The scripts' `|param|value|` markdown table -> {param: value} (values stay strings)."""
    rows = [line.strip()[1:-1].split("|", 1) for line in text.splitlines() if line.strip().startswith("|")]
    return {key: value for key, value in rows[2:]}  # rows[:2]: the header and the |-|-| line


def game_of(env_id: str) -> tuple:
    """(game, is_atari) as the run names spell it: 'ALE/MontezumaRevenge-v5' -> 'MontezumaRevenge-v5';
    'procgen-jumper-v0' or 'jumper' -> 'jumper'."""
    name = env_id.removeprefix("ALE/")
    procgen = name.lower().removeprefix("procgen-").removesuffix("-v0")
    return (procgen, False) if procgen in PROCGEN_GAMES else (name, True)


def method_of(exp_name: str, method: Optional[str]) -> str:
    """The column a run goes to. The procgen script's `method` arg (prefixed by a non-default exp_name, so a variant
    is not mixed into the paper's column); else the Atari script's method; else the exp_name itself."""
    if method is not None:
        return method if exp_name == PROCGEN_SCRIPT else f"{exp_name}-{method}"
    return SCRIPT_METHODS.get(exp_name, exp_name)


def read_run(run_dir: str):
    """A `Run`, or the reason (a string) to skip the folder. Read with TensorBoard's own loader, which drops the
    points a resumed run purged (those logged after its checkpoint by the interrupted process)."""
    name = os.path.basename(os.path.normpath(run_dir))
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    hparams = {}
    if "hyperparameters/text_summary" in tags["tensors"]:
        hparams = parse_hyperparameters(events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode())
    parts = name.split("__")  # <game>__<exp_name>[-<method>][-eval]__<seed>__<time>
    if "env_id" not in hparams and len(parts) != 4:
        return "no hyperparameters text, and the name is not <game>__<exp_name>__<seed>__<time>"
    kinds = [hparams.get("exp_name", ""), parts[1] if len(parts) == 4 else ""]
    if any(kind.endswith("-eval") for kind in kinds) or hparams.get("evaluate", "None") != "None":
        return "evaluation-only run"
    if "env_id" in hparams:
        exp_name, method = hparams["exp_name"], hparams.get("method")
    else:  # from the run name; the procgen script appends its method to exp_name
        exp_name, method = parts[1], None
        if parts[1].startswith(PROCGEN_SCRIPT + "-"):
            exp_name, method = PROCGEN_SCRIPT, parts[1][len(PROCGEN_SCRIPT) + 1 :]
    game, atari = game_of(hparams.get("env_id", parts[0]))
    metric_tag = "charts/episodic_reward_events" if atari else "charts/episodic_return"
    if metric_tag not in tags["scalars"] or "charts/episodic_return" not in tags["scalars"]:
        return f"no finished training episode (no {metric_tag})"
    scalars = lambda tag: (
        sorted(((e.step, e.value) for e in events.Scalars(tag)), key=lambda point: point[0]) if tag in tags["scalars"] else []
    )
    rooms_curve = scalars("charts/rooms_visited")
    return Run(
        name=name,
        game=game,
        atari=atari,
        method=method_of(exp_name, method),
        seed=int(hparams["seed"] if "seed" in hparams else parts[2]),
        metric=scalars(metric_tag),
        returns=scalars("charts/episodic_return"),
        rooms=rooms_curve[-1][1] if rooms_curve else None,
        steps=max(events.Scalars(tag)[-1].step for tag in tags["scalars"]),
        settings=hparams if "env_id" in hparams else None,
        rooms_curve=rooms_curve,
        int_reward=scalars("motivation/int_reward_mean"),
    )


def read_runs(runs_dir: str) -> tuple:
    """([Run], [(folder name, reason skipped)]) for every folder in `runs_dir`."""
    runs, skipped = [], []
    for run_dir in sorted(path for path in Path(runs_dir).iterdir() if path.is_dir()):
        run = read_run(str(run_dir))
        if isinstance(run, str):
            skipped.append((run_dir.name, run))
        else:
            runs.append(run)
    return runs, skipped


# Not settings: the seed, the run's name parts and the sizes computed from other flags (RESUME_MAY_CHANGE is added)
NOT_SETTINGS = {"seed", "exp_name", "env_id", "batch_size", "minibatch_size", "evaluate", "resume"}
SCRIPTS = ("ppo_rnd_atari.py", "ppo_snd_v_atari.py", "ppo_snd_std_atari.py", "ppo_snd_vic_atari.py", "ppo_snd_procgen.py")


@cache
def launcher():
    """benchmark/launch.py as a module: it builds a run's settings as its script does."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import launch

    return launch


@cache
def not_compared() -> frozenset:
    """The flags left out of the settings: NOT_SETTINGS and every script's RESUME_MAY_CHANGE (the baselines' too, where
    their scripts exist)."""
    launch = launcher()
    scripts = [*SCRIPTS, *(script for script in BASELINE_SCRIPTS if (launch.ROOT / script).exists())]
    return frozenset(NOT_SETTINGS).union(*(launch.script_module(launch.ROOT / script).RESUME_MAY_CHANGE for script in scripts))


@cache
def paper_settings(game: str, method: str) -> Optional[dict]:
    """{flag: value as the hyperparameters text writes it} of the paper's run of `method` on `game`, as the launcher's
    grid runs it (the script's defaults), without the flags not compared and those the script fills in when the run
    starts; None for a method or game that no script of the grid runs (the baseline, until the launcher runs it: its
    runs are then grouped by the settings in which they differ from each other)."""
    launch = launcher()
    try:
        args = launch.Run(game, method, 1).settings().args
    except (ValueError, OSError):  # a game or method of no script, or a script not there
        return None
    return {key: str(value) for key, value in args.items() if value is not None and key not in not_compared()}


def column_name(column: str) -> str:
    """'rnd' -> 'RND'; 'rnd (--clip-coef 0.2)' -> 'RND (--clip-coef 0.2)'."""
    method, _, flags = column.partition(" (")
    return METHOD_NAMES.get(method, method) + (f" ({flags}" if flags else "")


def assign_columns(runs: list) -> None:
    """Sets each run's `column`: its method if its settings are the paper's, else the method and the flags that differ
    (see the module docstring); runs of one column have the same settings."""
    cells = defaultdict(list)
    for run in runs:
        cells[run.game, run.method].append(run)
    for (game, method), cell in cells.items():
        paper = paper_settings(game, method) if method in PAPER_COLUMNS else None
        groups = defaultdict(list)  # settings -> runs
        for run in cell:
            compared = None if run.settings is None else {k: v for k, v in run.settings.items() if k not in not_compared()}
            groups[None if compared is None else tuple(sorted(compared.items()))].append(run)
        known = [dict(key) for key in groups if key is not None]
        varying = {key for settings in known for key in settings if len({s.get(key) for s in known}) > 1}
        for key, members in groups.items():
            if key is None:
                label = f"{method} (settings not logged)"
            else:
                settings = dict(key)
                differing = {k for k in varying if paper is None or k not in paper}
                differing |= {k for k, value in (paper or {}).items() if settings.get(k) != value}
                flags = [f"--{k.replace('_', '-')} {settings.get(k, 'not logged')}" for k in sorted(differing)]
                label = f"{method} ({', '.join(flags)})" if flags else method
            for run in members:
                run.column = label


def run_values(run: Run, last_episodes: int = 100) -> dict:
    """The per-run numbers the tables average over seeds."""
    metric, returns = [v for _, v in run.metric], [v for _, v in run.returns]
    return {
        "average": float(np.mean(metric)),  # the paper's table: all training episodes, not the final policy
        "max_score": float(np.max(returns)),
        "final": float(np.mean(returns[-last_episodes:])),
        "rooms": run.rooms,
    }


def summarise(runs: list, last_episodes: int = 100) -> dict:
    """{(game, column): {key: (mean, population std, seeds, min steps, max steps)}} for each key of `run_values`
    (population std, ddof 0, as the authors' table code, `plots/analytic_table.py`); a key no run of the cell has is
    left out."""
    groups = defaultdict(list)
    for run in runs:
        groups[run.game, run.column].append(run)
    cells = {}
    for cell, group in groups.items():
        values = [run_values(run, last_episodes) for run in group]
        steps = [run.steps for run in group]
        cells[cell] = {}
        for key in values[0]:
            column = [v[key] for v in values if v[key] is not None]
            if column:
                cells[cell][key] = (float(np.mean(column)), float(np.std(column)), len(column), min(steps), max(steps))
    return cells


def binned_curve(points: list, edges: np.ndarray, last_step: int) -> np.ndarray:
    """Mean of the episodes ending in each bin (edges[i], edges[i+1]], an empty bin carrying the previous value
    forward; NaN before the first episode and in bins that start after the run's last step."""
    steps, values = np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float)
    count = len(edges) - 1
    index = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, count - 1)
    sums, counts = np.bincount(index, values, count), np.bincount(index, minlength=count)
    curve = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    curve = curve[np.maximum.accumulate(np.where(counts > 0, np.arange(count), 0))]  # bin 0 stays NaN if empty
    curve[edges[:-1] >= last_step] = np.nan
    return curve


# Each paper method's colour and line style in the curves; other rows (other settings, other methods) take the next of
# OTHER_COLOURS and OTHER_STYLES. The paper's levels are thin dashed lines of the method's colour.
METHOD_STYLES = {
    "baseline": ("tab:gray", ":"),
    "rnd": ("tab:blue", "-"),
    "snd-v": ("tab:orange", (0, (8, 2))),
    "snd-std": ("tab:green", "-."),
    "snd-vic": ("tab:red", (0, (4, 1, 1, 1, 1, 1))),
}
OTHER_COLOURS = ["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "black"]
OTHER_STYLES = ["-.", "-", (0, (8, 2)), (0, (4, 1, 1, 1, 1, 1)), ":"]
PAPER_LEVEL_STYLE = dict(linestyle=(0, (3, 3)), linewidth=1.0, alpha=0.7, zorder=2)


def curve_styles(columns: list) -> dict:
    """{column: (colour, line style)}: a paper method's own at its paper settings, distinct ones for every other row."""
    styles, others = {}, 0
    for column in columns:
        if column in METHOD_STYLES:
            styles[column] = METHOD_STYLES[column]
        else:
            styles[column] = (OTHER_COLOURS[others % len(OTHER_COLOURS)], OTHER_STYLES[others % len(OTHER_STYLES)])
            others += 1
    return styles


def seeds_text(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"


def mean_and_std(curves: np.ndarray) -> tuple:
    """Per bin, the mean and population std over the runs that have a value there (NaN where none has)."""
    present = (~np.isnan(curves)).sum(0)
    mean = np.where(present > 0, np.nansum(curves, 0) / np.maximum(present, 1), np.nan)
    std = np.sqrt(np.where(present > 0, np.nansum((curves - mean) ** 2, 0) / np.maximum(present, 1), np.nan))
    return mean, std


def curve_panels(runs: list) -> list:
    """[(title, y label, the Run field of its points)]: the table metric; the rooms visited and the mean intrinsic reward
    where any run logged them."""
    panels = [("learning curve", "reward events per episode" if runs[0].atari else "episodic return", "metric")]
    if any(run.rooms_curve for run in runs):
        panels.append(("rooms visited (charts/rooms_visited)", "distinct rooms since the start", "rooms_curve"))
    if any(run.int_reward for run in runs):
        panels.append(("intrinsic reward (motivation/int_reward_mean)", "mean intrinsic reward of a rollout", "int_reward"))
    return panels


def curve_figure(game: str, runs: list, bins: int = 100):
    """A matplotlib figure of the panels of `curve_panels` side by side: per column (method and settings), the mean over
    seeds of the binned per-run curves over a ± std band; on the first, each paper method's end-of-training level
    (PAPER_FINAL_LEVEL) as a dashed line of its colour, for the methods with runs at the paper's settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    edges = np.linspace(0, max(1, *(run.steps for run in runs)), bins + 1)
    panels = curve_panels(runs)
    figure, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.2), squeeze=False)
    columns = sorted({run.column for run in runs}, key=method_key)
    styles = curve_styles(columns)
    for ax, (title, ylabel, key) in zip(axes[0], panels):
        for column in columns:
            members = [run for run in runs if run.column == column and getattr(run, key)]
            if not members:
                continue
            curves = np.array([binned_curve(getattr(run, key), edges, run.steps) for run in members])
            mean, std = mean_and_std(curves)
            colour, style = styles[column]
            ax.fill_between(edges[1:], mean - std, mean + std, color=colour, alpha=0.15, linewidth=0, zorder=1)
            label = f"{column_name(column)}, {seeds_text(len(members))}"
            ax.plot(edges[1:], mean, linestyle=style, color=colour, linewidth=1.8, label=label, zorder=3)
        ax.set_title(f"{game}: {title}", fontsize=10)
        ax.set_xlabel("agent steps")
        ax.set_ylabel(ylabel)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.3)
    first = axes[0][0]
    levels = [(c, PAPER_FINAL_LEVEL[game][PAPER_COLUMNS.index(c)]) for c in columns if c in PAPER_COLUMNS]
    if game in PAPER_FINAL_LEVEL and levels:
        for column, level in levels:
            first.axhline(level, color=styles[column][0], **PAPER_LEVEL_STYLE)
        budget = "128M" if runs[0].atari else "64M"
        handles, labels = first.get_legend_handles_labels()
        handles.append(Line2D([], [], color="tab:gray", **{k: v for k, v in PAPER_LEVEL_STYLE.items() if k != "zorder"}))
        labels.append(f"paper's level at {budget} steps (colour: method),\nread off the paper's Fig. 3")
        first.legend(handles, labels, frameon=False, fontsize=8)
    else:
        first.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    return figure


def plot_curves(game: str, runs: list, path: Path, bins: int = 100) -> None:
    """`curve_figure` as `path` (PNG)."""
    import matplotlib.pyplot as plt

    figure = curve_figure(game, runs, bins)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def method_key(column: str) -> tuple:
    """The paper's column order (Baseline, RND, SND-V, SND-STD, SND-VIC), then other methods by name; a method's rows of
    other settings after its own."""
    method = column.partition(" (")[0]
    return (PAPER_COLUMNS.index(method), column) if method in PAPER_COLUMNS else (len(PAPER_COLUMNS), column)


def steps_text(steps: int) -> str:
    return f"{steps / 1e6:.1f}M" if steps >= 1e6 else f"{steps / 1e3:.1f}k" if steps >= 1e4 else str(steps)


def cell_text(cell: Optional[tuple], digits: int = 2, std: bool = True) -> list:
    """[ours, seeds, agent steps] cells of a table row; '-' where there is no run. With `std`, the mean ± std over seeds,
    or `x (1 seed)` for a single seed, which has no spread to show."""
    if cell is None:
        return ["-", "-", "-"]
    mean, deviation, seeds, low, high = cell
    budget = steps_text(low) if low == high else f"{steps_text(low)} - {steps_text(high)}"
    ours = f"{mean:.{digits}f}"
    if std:
        ours += " (1 seed)" if seeds == 1 else f" ± {deviation:.{digits}f}"
    return [ours, str(seeds), budget]


def markdown(runs: list, skipped: list, cells: dict, curves: dict, last_episodes: int = 100) -> str:
    """results.md: the three tables (one row per game, method and setting), the runs of other settings, the curves, and
    the skipped folders."""
    games = sorted({run.game for run in runs}, key=lambda game: (not any(r.atari for r in runs if r.game == game), game))
    methods = {game: sorted({r.column for r in runs if r.game == game} | set(METHOD_ORDER), key=method_key) for game in games}
    atari = {run.game: run.atari for run in runs}

    def table(key: str, paper: dict, paper_text, std: bool) -> list:
        lines = ["| game | method | ours | paper | seeds | agent steps |", "|---|---|---|---|---|---|"]
        for game in games:
            digits = 0 if key == "max_score" and atari[game] else 2  # game points need no decimals
            rows = methods[game] + (["baseline"] if game in paper and "baseline" not in methods[game] else [])
            for method in sorted(rows, key=method_key):
                ours, seeds, budget = cell_text(cells.get((game, method), {}).get(key), digits, std)
                published = (
                    paper_text(paper[game][PAPER_COLUMNS.index(method)]) if method in PAPER_COLUMNS and game in paper else "-"
                )
                lines.append(f"| {game} | {column_name(method)} | {ours} | {published} | {seeds} | {budget} |")
        return lines

    lines = [
        "# Results",
        "",
        f"{len(runs)} training runs. The paper ran 128M agent steps on Atari and 64M on Procgen; 'agent steps' is the",
        "range reached by the runs of a cell. Mean ± std over seeds (population std, as the authors' table code);",
        "'-' where there is no run (or no published number). A method's row holds its runs at the paper's settings (the",
        "scripts' defaults); runs of other settings have rows of their own, named by the flags that differ, never mixed in.",
        "Baseline is PPO without intrinsic reward: our runs of `ppo_atari.py` and `ppo_procgen.py` where there are any,",
        "else the paper's number alone. A cell of one seed shows `x (1 seed)`. The paper's SND-V numbers come from the",
        "co-author's code base (for the max score: an EMA of env 0's episode scores).",
        "",
        "## Average over all training episodes (the paper's main table)",
        "",
        "Per run, the mean over all training episodes of the reward events per episode on Atari (positive rewards, "
        "`charts/episodic_reward_events`; not game points) or the return on Procgen (`charts/episodic_return`). "
        "An area under the learning curve, not final performance.",
        "",
        *table("average", PAPER_AVERAGE, lambda p: f"{p[0]:.2f} ± {p[1]:.2f}", True),
        "",
        "## Best episode score",
        "",
        "Per run, the highest `charts/episodic_return` (game points) of any training episode; mean over seeds. "
        "The paper reports it for Atari only.",
        "",
        *table("max_score", PAPER_MAX_SCORE, lambda p: f"{p:.0f}", False),
        "",
        "## Final performance (not in the paper)",
        "",
        f"Per run, the mean `charts/episodic_return` of its last {last_episodes} training episodes; rooms visited: the "
        "last `charts/rooms_visited` (distinct rooms since the run started, Montezuma's Revenge and Pitfall).",
        "",
        "| game | method | return | rooms visited | seeds | agent steps |",
        "|---|---|---|---|---|---|",
    ]
    for game in games:
        for method in methods[game]:
            cell = cells.get((game, method), {})
            ours, seeds, budget = cell_text(cell.get("final"))
            rooms = cell_text(cell.get("rooms"), digits=1)[0]
            lines.append(f"| {game} | {column_name(method)} | {ours} | {rooms} | {seeds} | {budget} |")
    variants = sorted(
        {(run.game, run.column) for run in runs if run.column != run.method}, key=lambda c: (c[0], method_key(c[1]))
    )
    if variants:
        lines += ["", "## Runs of other settings than the paper's", ""]
        for game, column in variants:
            names = sorted(run.name for run in runs if (run.game, run.column) == (game, column))
            lines.append(f"- {game}, {column_name(column)}: {', '.join(f'`{name}`' for name in names)}")
    lines += [
        "",
        "## Learning curves",
        "",
        "Per game, the table metric against agent steps (episodes averaged in bins of agent steps, then mean ± std over "
        "seeds, the band under the line), and where the runs logged them the rooms visited and the mean intrinsic reward "
        "of a rollout. Thin dashed lines: each method's level at the end of the paper's training (128M agent steps on "
        "Atari, 64M on Procgen), read by eye off the paper's Fig. 3 (the authors' `assets/results_chart.png`, to about "
        "±1), drawn for the methods with runs at the paper's settings; the paper's tables above are averages over "
        "training, not such a level.",
        "",
    ]
    lines += [f"![{game}]({path})" for game, path in curves.items()]
    if skipped:
        lines += ["", "## Skipped folders", ""] + [f"- `{name}`: {reason}" for name, reason in skipped]
    return "\n".join(lines) + "\n"


def report(runs_dir: str, out: str, bins: int = 100, last_episodes: int = 100) -> dict:
    """Reads the runs, writes `out/results.md` and `out/curves/<game>.png`; returns what it computed."""
    runs, skipped = read_runs(runs_dir)
    for name, reason in skipped:
        print(f"skipped {name}: {reason}")
    assign_columns(runs)
    for (game, column, seed), count in Counter((run.game, run.column, run.seed) for run in runs).items():
        if count > 1:  # e.g. a run restarted instead of resumed: each folder counts as a seed
            print(f"warning: {count} runs of {game} {column_name(column)} with seed {seed}; each counts as one seed")
    cells = summarise(runs, last_episodes)
    curves = {}
    for game in sorted({run.game for run in runs}):
        plot_curves(game, [run for run in runs if run.game == game], Path(out, "curves", f"{game}.png"), bins)
        curves[game] = f"curves/{game}.png"
    text = markdown(runs, skipped, cells, curves, last_episodes)
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "results.md").write_text(text)
    return {"runs": runs, "skipped": skipped, "cells": cells, "markdown": text}


def main(args: Args) -> None:
    if not Path(args.runs_dir).is_dir():
        raise SystemExit(f"error: no folder {args.runs_dir!r}; pass the folder of the TensorBoard runs with --runs-dir")
    result = report(args.runs_dir, args.out, args.bins, args.last_episodes)
    print(result["markdown"])
    print(f"wrote {Path(args.out, 'results.md')} ({len(result['runs'])} runs, {len(result['skipped'])} skipped)")


if __name__ == "__main__":
    main(tyro.cli(Args))
