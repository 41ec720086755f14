"""Short-budget checks that a method learns: each trains a run (or two, to compare) at a budget where the paper's curves
already tell the methods apart, reads the TensorBoard logs and prints one PASS/FAIL line with the figures and what the
paper shows there.

    python benchmark/learning_check.py                          # every check, the paper's settings (needs a GPU)
    python benchmark/learning_check.py --only jumper-snd-vic jumper-rnd montezuma-rooms
    python benchmark/learning_check.py --total-timesteps 65536 --script-args="--num-envs 8 --no-cuda"  # a smoke run

The thresholds are deliberately loose, read by eye off the paper's learning curves (arXiv 2302.11563; the authors'
README at github.com/Iskandor/SND shows them as `assets/results_chart.png`): SND variants solve coinrun and jumper,
about 10, by 5-8M agent steps, RND stays near 0; on Montezuma's Revenge SND-VIC reaches about 3 reward events by 5M
steps, RND about 2 by 15M. A smaller budget (`--total-timesteps`) runs the same pipeline, but its PASS/FAIL then says
nothing about learning. The exit code is the number of failed checks.
"""

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import read_run, run_values  # noqa: E402  (the benchmark tools share one reader of the logs)

ROOT = Path(__file__).resolve().parents[1]


# The runs the checks read: (script and flags, the budget in agent steps)
RUNS = {
    "jumper-snd-vic": (("ppo_snd_procgen.py", "--env-id", "jumper", "--method", "snd-vic"), 8_000_000),
    "jumper-rnd": (("ppo_snd_procgen.py", "--env-id", "jumper", "--method", "rnd"), 8_000_000),
    "coinrun-snd-std": (("ppo_snd_procgen.py", "--env-id", "coinrun", "--method", "snd-std"), 8_000_000),
    "coinrun-rnd": (("ppo_snd_procgen.py", "--env-id", "coinrun", "--method", "rnd"), 8_000_000),
    "montezuma-snd-vic": (("ppo_snd_vic_atari.py", "--env-id", "MontezumaRevenge-v5"), 5_000_000),
    "montezuma-rnd": (("ppo_rnd_atari.py", "--env-id", "MontezumaRevenge-v5"), 5_000_000),
}


@dataclass(frozen=True)
class Check:
    """One run's metric against a bound (`at_least` / `at_most`), or, with two runs, the first's above the second's."""

    name: str
    runs: tuple
    metric: str  # as report.run_values names it: "final" (mean return of the last 100 episodes) or "rooms" (visited)
    paper: str  # what the paper's curves show at this budget
    at_least: Optional[float] = None
    at_most: Optional[float] = None

    def passes(self, values: list) -> bool:
        if len(values) == 2:
            return values[0] > values[1]
        return (self.at_least is None or values[0] >= self.at_least) and (self.at_most is None or values[0] <= self.at_most)

    def condition(self) -> str:
        if len(self.runs) == 2:
            return f"{self.runs[0]} > {self.runs[1]}"
        bounds = ((">=", self.at_least), ("<=", self.at_most))
        return " and ".join(f"{op} {bound:g}" for op, bound in bounds if bound is not None)


CHECKS = [
    Check("jumper-snd-vic", ("jumper-snd-vic",), "final", "SND-VIC solves jumper (~10) by 5-8M", at_least=5.0),
    Check("jumper-rnd", ("jumper-rnd",), "final", "RND stays near 0 on jumper", at_most=1.0),
    Check("coinrun-snd-std", ("coinrun-snd-std",), "final", "SND-STD solves coinrun (~10) by 5-8M", at_least=5.0),
    Check("coinrun-rnd", ("coinrun-rnd",), "final", "RND stays near 0 on coinrun", at_most=1.0),
    Check(
        "montezuma-rooms",
        ("montezuma-snd-vic", "montezuma-rnd"),
        "rooms",
        "SND-VIC ~3 reward events by 5M steps, RND ~2 only by 15M",
    ),
]


@dataclass
class Args:
    only: list = field(default_factory=list)
    """names of the checks to run (default: all of them); each trains the runs it reads"""
    seed: int = 1
    """seed of every run"""
    total_timesteps: Optional[int] = None
    """override every check's budget (a smoke run: its PASS/FAIL says nothing about learning)"""
    script_args: str = ""
    """extra flags for every run, given with `=`: `--script-args="--num-envs 8 --no-cuda"`"""
    runs_root: str = "benchmark/learning_check"
    """folder of the runs: each trains in `<runs_root>/<run>/` (its TensorBoard log in `runs/`, its output in `output.log`)"""


def metric_value(run, metric: str) -> float:
    """The check's figure from one run (nan where the run ended no episode, or has no rooms)."""
    value = None if isinstance(run, str) else run_values(run)[metric]
    return float("nan") if value is None else float(value)


def train(name: str, args: Args) -> tuple:
    """Trains one of RUNS in `<runs_root>/<name>/`; returns (report.read_run of its log, or why there is none; wall
    seconds)."""
    (script, *flags), budget = RUNS[name]
    folder = Path(args.runs_root, name)
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / script), *flags, "--seed", str(args.seed)]
    command += [
        "--total-timesteps",
        str(args.total_timesteps or budget),
        "--eval-episodes",
        "0",
        *shlex.split(args.script_args),
    ]
    start = time.time()
    with open(folder / "output.log", "w") as log:
        exit_code = subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT).returncode
    if exit_code != 0:
        return f"the run exited with {exit_code}, see {folder / 'output.log'}", time.time() - start
    newest = max((folder / "runs").iterdir(), key=os.path.getmtime)
    return read_run(str(newest)), time.time() - start


def figure(name: str, value: float, run, seconds: float) -> str:
    if isinstance(run, str):  # why there is no figure
        return f"{name}: {run}"
    return f"{name} {value:.2f} at {run.steps:,} agent steps ({seconds / 60:.1f} min)"


def main(args: Args) -> int:
    names = {check.name for check in CHECKS}
    if set(args.only) - names:
        sys.exit(f"error: unknown check(s) {sorted(set(args.only) - names)}; the checks are {sorted(names)}")
    trained = {}
    failed = 0
    for check in CHECKS:
        if args.only and check.name not in args.only:
            continue
        for name in check.runs:
            if name not in trained:
                trained[name] = train(name, args)
        values = [metric_value(trained[name][0], check.metric) for name in check.runs]
        passed = check.passes(values)
        failed += not passed
        figures = ", ".join(figure(name, value, *trained[name]) for name, value in zip(check.runs, values))
        print(
            f"{'PASS' if passed else 'FAIL'} {check.name}: {check.metric} {figures}; needs {check.condition()}; "
            f"paper: {check.paper}",
            flush=True,
        )
    return failed


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
