"""Runs a grid of games x methods x seeds with the training scripts, on this machine or as a Slurm job array.

Each run is one command, `python <script> --env-id <game> --seed <seed>` (plus `--method` for `ppo_snd_procgen.py`),
with the script's defaults, which are the paper's settings. It runs in `--runs-root` (the repository by default), where
the script writes `runs/<run_name>/`. Before anything starts the launcher looks each run up there: a finished run (its
checkpoint is at the last iteration) is skipped, an interrupted one (a readable checkpoint short of it) gets
`--resume <its folder>`, any other starts anew. Launching the same grid again therefore continues it. (Finished means
at the budget the run was started with: to extend a finished run, resume it by hand with a larger `--total-timesteps`.)

    python benchmark/launch.py --games MontezumaRevenge-v5 jumper --methods rnd snd-vic --seeds 1 2 --dry-run
    python benchmark/launch.py --games Pitfall-v5 --workers 4                    # here, 4 runs at a time
    python benchmark/launch.py --games jumper --slurm --slurm-gpus 1 --dry-run    # write the Slurm job file only
    python benchmark/launch.py --games jumper --script-args="--total-timesteps 100000 --no-cuda" --runs-root /tmp/smoke

`--script-args` needs the `=` form: tyro reads a separate value that starts with `--` as a flag of its own.

On this machine (the default) each run appends its output to `<runs-root>/logs/<game>__<method>__<seed>.log`; a failed
run is reported with its exit code and log while the others go on, and the exit code is 1 if any run failed or never
started. A Ctrl-C (or SIGTERM) to the launcher starts no further run and is passed on to the runs in progress: each
saves a checkpoint and exits, and the next launch resumes them. A second Ctrl-C stops them at once.

`--slurm` writes `<runs-root>/logs/launch-<time>.sbatch`, a job array with one task per run that is not finished, and
submits it with `sbatch` (with `--dry-run` it only writes it and prints its path). `--slurm-template PATH` replaces the
built-in template (`SLURM_TEMPLATE` below) and implies `--slurm`. Its placeholders:

    {{array}}    the array's task ids, `0-<n - 1>` for n runs
    {{cpus}}     --slurm-cpus
    {{gpus}}     --slurm-gpus; every line that holds it is left out when it is 0
    {{time}}     --slurm-time
    {{workdir}}  --runs-root, absolute
    {{tasks}}    (required) the branches of a `case $SLURM_ARRAY_TASK_ID in ... esac`: each sets `log`, the run's log
                 file (the same as on this machine), and `command`, a bash array holding the run's command

The built-in template appends the command's output to `$log` and leaves Slurm's own messages in
`logs/slurm-<job>_<task>.log`. It asks for SIGTERM 5 minutes before the time limit, so a run cut off by the limit saves a
checkpoint; launch again to resume it. The commands are fixed when the file is written: a task that Slurm requeues
starts its command again as written, so the template does not ask for requeueing.

Runs are matched by game, script, method and seed only, not by the other flags: keep runs made with other
`--script-args` (a smoke test) under another `--runs-root`, or they count as this grid's.
"""

import difflib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal, Optional, get_args

import ale_py
import gymnasium as gym
import tyro

gym.register_envs(ale_py)

ROOT = Path(__file__).resolve().parents[1]  # where the training scripts are

# The paper's grid
ATARI_GAMES = ("MontezumaRevenge-v5", "Gravitar-v5", "Venture-v5", "PrivateEye-v5", "Pitfall-v5", "Solaris-v5")
PROCGEN_GAMES = ("caveflyer", "coinrun", "jumper", "climber")
Method = Literal["rnd", "snd-v", "snd-std", "snd-vic"]
METHODS = get_args(Method)

# The procgen games with an exploration level, the ones `ppo_snd_procgen.py` accepts
PROCGEN_EXPLORATION_GAMES = ("coinrun", "caveflyer", "leaper", "jumper", "maze", "heist", "climber", "ninja")
# Flags the launcher sets itself (`--exp-name` would rename the run folders, hiding them from it)
LAUNCHER_FLAGS = ("--env-id", "--seed", "--method", "--resume", "--exp-name")
STATUS_LABELS = {"new": "new", "interrupted": "resume", "finished": "skip"}

SLURM_TEMPLATE = """#!/bin/bash
#SBATCH --job-name=snd
#SBATCH --array={{array}}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={{cpus}}
#SBATCH --gres=gpu:{{gpus}}
#SBATCH --time={{time}}
#SBATCH --signal=B:TERM@300
#SBATCH --output={{workdir}}/logs/slurm-%A_%a.log
# Written by benchmark/launch.py: array task i runs the i-th run below, in {{workdir}}. The run replaces this shell
# (exec), so the SIGTERM that --signal sends 5 minutes before the time limit reaches it and it saves a checkpoint.

case $SLURM_ARRAY_TASK_ID in
{{tasks}}
esac
cd "{{workdir}}"
echo "=== $(date) Slurm job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname): ${command[*]}" >> "$log"
exec "${command[@]}" >> "$log" 2>&1
"""


@dataclass
class Args:
    games: list[str] = field(default_factory=lambda: [*ATARI_GAMES, *PROCGEN_GAMES])
    """Atari games as `MontezumaRevenge-v5` (or `ALE/MontezumaRevenge-v5`), procgen games as `jumper`"""
    methods: list[Method] = field(default_factory=lambda: list(METHODS))
    """methods: each Atari method has its own script; on procgen they are `ppo_snd_procgen.py --method`"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds, one run each"""
    script_args: str = ""
    """more flags for every run, in one string given with `=`: `--script-args="--total-timesteps 100000 --no-cuda"`"""
    runs_root: Path = ROOT
    """the working directory of the runs: their `runs/` and the launcher's `logs/` are here"""
    dry_run: bool = False
    """print each run's status and command and run nothing (with --slurm: write the job file, do not submit it)"""
    workers: int = 1
    """on this machine: how many runs at a time"""
    slurm: bool = False
    """submit a Slurm job array, one task per run that is not finished, instead of running here"""
    slurm_template: Optional[Path] = None
    """an sbatch template to use instead of the built-in one (implies --slurm; placeholders: see the module docstring)"""
    slurm_gpus: int = 1
    """GPUs per task (`#SBATCH --gres=gpu:N`); 0 leaves the line out"""
    slurm_cpus: int = 16
    """CPUs per task (an Atari run steps its envs in one process each)"""
    slurm_time: str = "1-00:00:00"
    """time limit per task; a run stopped by it has saved a checkpoint and resumes at the next launch"""


@cache
def atari_games() -> frozenset:
    """Every ALE game gymnasium knows, as `MontezumaRevenge-v5`."""
    return frozenset(k[len("ALE/") :] for k in gym.registry if k.startswith("ALE/") and k.endswith("-v5") and "-ram-" not in k)


def resolve_game(name: str) -> str:
    """'ALE/MontezumaRevenge-v5' or 'MontezumaRevenge-v5' -> 'MontezumaRevenge-v5' (as run names spell it); 'jumper' ->
    'jumper'. Any other name raises a ValueError naming the closest games."""
    if name.removeprefix("ALE/") in atari_games():
        return name.removeprefix("ALE/")
    if name in PROCGEN_EXPLORATION_GAMES:
        return name
    close = difflib.get_close_matches(name.removeprefix("ALE/"), [*atari_games(), *PROCGEN_EXPLORATION_GAMES], n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(
        f"unknown game {name!r}: {hint}give an Atari game as MontezumaRevenge-v5 (or ALE/MontezumaRevenge-v5) or a "
        f"procgen game with an exploration level: {', '.join(PROCGEN_EXPLORATION_GAMES)}"
    )


def read_progress(folder: Path) -> Optional[tuple]:
    """(iteration, num_iterations) of the run's checkpoint, or of the previous one if it cannot be read (as the
    scripts' --resume does); None if neither can be read."""
    import torch  # slow to import, and needed only once a run folder exists

    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        try:
            checkpoint = torch.load(folder / name, map_location="cpu", weights_only=True, mmap=True)
            return checkpoint["iteration"], checkpoint["args"]["num_iterations"]
        except Exception:  # missing, truncated, corrupt or not a checkpoint: the scripts cannot resume from it either
            continue
    return None


@dataclass(frozen=True)
class Run:
    """One training run of the grid. The game is stored as `resolve_game` returns it."""

    game: str
    method: str
    seed: int

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose from {', '.join(METHODS)}")
        object.__setattr__(self, "game", resolve_game(self.game))

    @property
    def procgen(self) -> bool:
        return self.game in PROCGEN_EXPLORATION_GAMES

    @property
    def script(self) -> str:
        return "ppo_snd_procgen.py" if self.procgen else f"ppo_{self.method.replace('-', '_')}_atari.py"

    @property
    def name(self) -> str:
        """`<game>__<method>__<seed>`, the name of its log file."""
        return f"{self.game}__{self.method}__{self.seed}"

    def command(self, extra=(), resume: Optional[Path] = None) -> list:
        """The command that runs it: the script's defaults, then `extra`, then `--resume` if it continues a run."""
        method = ["--method", self.method] if self.procgen else []
        command = [sys.executable, str(ROOT / self.script), "--env-id", self.game, "--seed", str(self.seed), *method]
        return command + list(extra) + (["--resume", str(resume)] if resume else [])

    def folders(self, runs_root: Path) -> list:
        """Its run folders in `runs_root/runs`, newest first (by the unix time that ends a run name)."""
        exp_name = f"ppo_snd_procgen-{self.method}" if self.procgen else self.script[: -len(".py")]
        prefix = f"{self.game}__{exp_name}__{self.seed}__"
        found = [p for p in (runs_root / "runs").glob(prefix + "*") if p.name[len(prefix) :].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(prefix) :]), reverse=True)

    def status(self, runs_root: Path) -> tuple:
        """("finished" | "interrupted", folder) for the newest of its folders with a readable checkpoint (its
        iteration the last one or not), else ("new", None): a folder without one has nothing to resume."""
        for folder in self.folders(runs_root):
            progress = read_progress(folder)
            if progress is not None:
                return ("finished" if progress[0] >= progress[1] else "interrupted"), folder
        return "new", None

    def log(self, runs_root: Path) -> Path:
        return runs_root / "logs" / f"{self.name}.log"


def expand(games: list, methods: list, seeds: list) -> list:
    """Every (game, method, seed), game by game; a game named twice (`ALE/...` and not) is run once."""
    games = dict.fromkeys(resolve_game(game) for game in games)
    return [Run(game, method, seed) for game in games for method in dict.fromkeys(methods) for seed in dict.fromkeys(seeds)]


def script_flags(script_args: str) -> list:
    """`--script-args` split as a shell would; the flags the launcher sets itself are refused."""
    flags = shlex.split(script_args)
    for flag in flags:
        name = flag.split("=")[0].replace("_", "-")
        if name in LAUNCHER_FLAGS:
            raise ValueError(f"--script-args may not hold {name}: the launcher sets {', '.join(LAUNCHER_FLAGS)} itself")
    return flags


def render_slurm(template: str, jobs: list, args: Args, runs_root: Path) -> str:
    """The sbatch file for `jobs` ([(run, command)]): `template` with its placeholders filled in."""
    tasks = [
        f"  {i}) log={shlex.quote(str(run.log(runs_root)))}; command=({shlex.join(command)}) ;;"
        for i, (run, command) in enumerate(jobs)
    ]
    tasks.append('  *) echo "array task $SLURM_ARRAY_TASK_ID has no run" >&2; exit 1 ;;')
    values = {
        "array": f"0-{len(jobs) - 1}",
        "cpus": str(args.slurm_cpus),
        "gpus": str(args.slurm_gpus),
        "time": args.slurm_time,
        "workdir": str(runs_root),
        "tasks": "\n".join(tasks),
    }
    if "{{tasks}}" not in template:
        raise ValueError("the Slurm template has no {{tasks}}: its array tasks would run nothing")
    if args.slurm_gpus == 0:
        template = "".join(line for line in template.splitlines(keepends=True) if "{{gpus}}" not in line)

    def fill(match):
        if match.group(1) not in values:
            raise ValueError(f"unknown placeholder {match.group(0)} in the Slurm template; known: {', '.join(values)}")
        return values[match.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", fill, template)


def submit_slurm(jobs: list, template: str, args: Args, runs_root: Path) -> int:
    """Writes the job file to `logs/` and, unless --dry-run, submits it; returns sbatch's exit code."""
    path = runs_root / "logs" / f"launch-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    path.write_text(render_slurm(template, jobs, args, runs_root))
    print(f"wrote {path} ({len(jobs)} array tasks)")
    if args.dry_run:
        return 0
    try:
        return subprocess.run(["sbatch", str(path)]).returncode
    except FileNotFoundError:
        print(f"error: sbatch not found (not a Slurm login node?); submit {path} from one", file=sys.stderr)
        return 1


def run_environment(workers: int) -> dict:
    """The runs' environment: unbuffered output, and torch's threads set to an equal share of the cores
    (`OMP_NUM_THREADS`, unless set already), since each run would otherwise use every core and `workers` runs would
    oversubscribe them (two runs on two cores ran five times slower)."""
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers)), **os.environ, "PYTHONUNBUFFERED": "1"}


def run_local(jobs: list, runs_root: Path, workers: int) -> int:
    """Runs `jobs` ([(run, command)]) here, `workers` at a time, each appending its output to its log. Returns 0 if every
    run exited with 0, else 1.

    The runs are started in sessions of their own, so a Ctrl-C (or SIGTERM) reaches them only through the launcher: it
    first stops new runs from starting, then passes the signal on. (Were they in the terminal's process group, a run
    could save and exit before the launcher saw the signal, and the next run would start.)"""
    lock, stopping, running = threading.RLock(), threading.Event(), []

    def stop(signum, frame):
        with lock:
            if not stopping.is_set():
                print("interrupted: the runs in progress save a checkpoint and stop; launch again to resume", flush=True)
            stopping.set()
            for process in running:  # a second Ctrl-C is passed on too: the scripts then stop at once
                process.send_signal(signum)

    def work(run: Run, command: list) -> Optional[int]:
        with lock:
            if stopping.is_set():
                return None
            log = open(run.log(runs_root), "a")
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
            log.flush()
            process = subprocess.Popen(
                command,
                cwd=runs_root,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=run_environment(workers),
                start_new_session=True,
            )
            running.append(process)
        print(f"started {run.name}", flush=True)
        code = process.wait()
        with lock:
            running.remove(process)
        log.close()
        return code

    handlers = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    done, failed, not_started = 0, [], 0
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(work, run, command): run for run, command in jobs}
            for future in as_completed(futures):
                run, code = futures[future], future.result()
                if code is None:
                    not_started += 1
                elif code == 0:
                    done += 1
                    print(f"done    {run.name}", flush=True)
                else:  # a negative code: killed by that signal (a Ctrl-C before the script could save, say)
                    reason = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
                    failed.append(f"{run.name}: {reason}, log {run.log(runs_root)}")
                    print(f"failed  {failed[-1]}", flush=True)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    print(f"\n{done} done, {len(failed)} failed, {not_started} not started")
    for line in failed:
        print(f"  failed {line}")
    return 0 if done == len(jobs) else 1


def main(args: Args) -> int:
    try:
        runs = expand(args.games, args.methods, args.seeds)
        extra = script_flags(args.script_args)
        if args.workers < 1 or args.slurm_cpus < 1 or args.slurm_gpus < 0:
            raise ValueError("--workers and --slurm-cpus must be at least 1, --slurm-gpus at least 0")
        slurm = args.slurm or args.slurm_template is not None
        template = args.slurm_template.read_text() if args.slurm_template else SLURM_TEMPLATE
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")

    runs_root = args.runs_root.resolve()
    plan = [(run, *run.status(runs_root)) for run in runs]
    jobs = [(run, run.command(extra, folder)) for run, status, folder in plan if status != "finished"]
    count = {status: sum(s == status for _, s, _ in plan) for status in STATUS_LABELS}
    counts = f"{count['new']} new, {count['interrupted']} to resume, {count['finished']} finished"
    print(f"{len(plan)} runs in {runs_root}: {counts}")
    if args.dry_run and not slurm:
        commands = dict(jobs)
        for run, status, folder in plan:
            shown = f"{folder} is finished" if status == "finished" else shlex.join(commands[run])
            print(f"{STATUS_LABELS[status]:<7} {shown}")
        return 0
    if not jobs:
        print("nothing to run")
        return 0
    (runs_root / "logs").mkdir(parents=True, exist_ok=True)
    if slurm:
        try:
            return submit_slurm(jobs, template, args, runs_root)
        except ValueError as error:
            sys.exit(f"error: {error}")
    return run_local(jobs, runs_root, args.workers)


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
