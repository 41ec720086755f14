#!/usr/bin/env python3
"""Runs a grid of games x methods x seeds with the training scripts, on this machine or as a Slurm job array.

Each run is one command, `python <script> --env-id <game> --seed <seed>` (plus `--method` for `ppo_snd_procgen.py`; the
baseline, PPO without exploration bonus, is `ppo_atari.py` on Atari and `ppo_procgen.py` on Procgen),
with the script's defaults, which are the paper's settings, then the `--script-args` flags. It runs in `--runs-root`
(the repository by default), where the script writes `runs/<run_name>/`.

    python benchmark/launch.py --games MontezumaRevenge-v5 jumper --methods rnd snd-vic --seeds 1 2 --dry-run
    python benchmark/launch.py --games Pitfall-v5 --workers 4                    # here, 4 runs at a time
    python benchmark/launch.py --games jumper --slurm --slurm-gpus 1 --dry-run    # write the Slurm job file only
    python benchmark/launch.py --games jumper --script-args="--total-timesteps 100000 --no-cuda" --runs-root /tmp/smoke

`--script-args` needs the `=` form: tyro reads a separate value that starts with `--` as a flag of its own (the
launcher says so when it is given without `=`).

Before anything starts, the launcher builds each run's settings as its script would (the script's `Args` from the
command, then the script's `check_args`); flags a script refuses stop the launch there, exit code 2. Then it looks each
run up in `<runs-root>/runs/`: among the folders of its game, script, method and seed, newest first, the run is the
first whose checkpoint was written with the same settings, compared as the scripts' `--resume` compares them (every
field of the checkpoint's `args` but the script's `RESUME_MAY_CHANGE` flags, such as `--total-timesteps`; the paper's
`--eta`, which `check_args` fills in, is compared too). The checkpoint read is the newest readable of `checkpoint.pt.tmp`, `checkpoint.pt` and `checkpoint.prev.pt`, as the scripts'
`--resume` reads them. That run is

- running elsewhere if another process holds the lock of its folder (`run.lock`): it is not launched. A folder that has
  no checkpoint yet but is locked (a run just started, by another launcher say) counts as this run, running elsewhere;
- finished if its checkpoint is at its last iteration (its `args["num_iterations"]`, the budget it was started with:
  to extend a finished run, resume it by hand with a larger `--total-timesteps`): it is skipped;
- interrupted otherwise: it is resumed, `--resume <its folder>`.

With no such folder the run starts anew. Launching the same grid again therefore continues it. Folders of the same game,
script and seed written with other settings (a run started by hand with other flags, a smoke test) are listed with the
flags that differ and left alone; they never count as the grid's run.

On this machine (the default) each run appends its output to `<runs-root>/logs/<game>__<method>__<seed>.log`. Right
before a run starts, it is looked up again, so a run that another launcher started, or finished, in the meantime is
not started twice. A run that exits with 5 (its folder is locked by another process) is reported as running
elsewhere, one that exits with 128 + a signal number as stopped (it saved a checkpoint if it was training; the next
launch resumes it), any other non-zero exit as failed, with its log, while the others go on. A Ctrl-C (or SIGTERM) to
the launcher starts no further run and is passed on to the runs in progress: each saves a checkpoint and exits, and
the next launch resumes them. A second Ctrl-C stops them at once. The launcher's exit code: 0 when every run it had to
start is done or running elsewhere, 1 when a run failed, was stopped or was not started, 2 for bad input.

`--slurm` writes `<runs-root>/logs/launch-<time>.sbatch`, a job array with one task per run to start or resume (not
the finished ones, nor those running elsewhere), and submits it with `sbatch` (with `--dry-run` it only writes it and
prints its path). `--slurm-template PATH` replaces the built-in template (`SLURM_TEMPLATE` below) and implies
`--slurm`. Its placeholders:

    {{array}}    the array's task ids, `0-<n - 1>` for n runs
    {{cpus}}     --slurm-cpus
    {{gpus}}     --slurm-gpus; every line that holds it is left out when it is 0
    {{time}}     --slurm-time
    {{workdir}}  --runs-root, absolute and quoted for the shell where it needs it (write `cd {{workdir}}`, not
                 `cd "{{workdir}}"`; sbatch reads the same quotes in `#SBATCH` lines)
    {{tasks}}    (required) the branches of a `case $SLURM_ARRAY_TASK_ID in ... esac`: each sets `log`, the run's log
                 file (the same as on this machine), and `command`, a bash array holding the run's command

The built-in template appends the command's output to `$log` and leaves Slurm's own messages in
`logs/slurm-<job>_<task>.log`. It asks for SIGTERM 5 minutes before the time limit, so a run cut off by the limit saves a
checkpoint; launch again to resume it. The commands are fixed when the file is written: a task that Slurm requeues
starts its command again as written, so the template does not ask for requeueing. A task whose run is locked by
another process by the time it starts exits with 5.
"""

import contextlib
import dataclasses
import difflib
import fcntl
import importlib.util
import io
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
from typing import Literal, NoReturn, Optional, get_args

import ale_py
import gymnasium as gym
import tyro

gym.register_envs(ale_py)

ROOT = Path(__file__).resolve().parents[1]  # where the training scripts are

# The paper's grid
ATARI_GAMES = ("MontezumaRevenge-v5", "Gravitar-v5", "Venture-v5", "PrivateEye-v5", "Pitfall-v5", "Solaris-v5")
PROCGEN_GAMES = ("caveflyer", "coinrun", "jumper", "climber")
Method = Literal["baseline", "rnd", "snd-v", "snd-std", "snd-vic"]
METHODS = get_args(Method)

# The procgen games with an exploration level, the ones `ppo_snd_procgen.py` accepts
PROCGEN_EXPLORATION_GAMES = ("coinrun", "caveflyer", "leaper", "jumper", "maze", "heist", "climber", "ninja")
# Flags the launcher sets itself (`--exp-name` would rename the run folders, hiding them from it)
LAUNCHER_FLAGS = ("--env-id", "--seed", "--method", "--resume", "--exp-name")
STATUS_LABELS = {"new": "new", "interrupted": "resume", "finished": "skip", "running": "running"}
# As the scripts write them: their CHECKPOINT_FILES (newest first) and the lock file of a run folder
CHECKPOINT_FILES = ("checkpoint.pt.tmp", "checkpoint.pt", "checkpoint.prev.pt")
LOCK_FILE = "run.lock"
# Exit codes: the scripts' for a run folder locked by another process; the launcher's own
EXIT_RUN_LOCKED = 5
EXIT_INCOMPLETE, EXIT_BAD_INPUT = 1, 2

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
cd {{workdir}}
echo "=== $(date) Slurm job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname): ${command[*]}" >> "$log"
exec "${command[@]}" >> "$log" 2>&1
"""


@dataclass
class Args:
    games: list[str] = field(default_factory=lambda: [*ATARI_GAMES, *PROCGEN_GAMES])
    """Atari games as `MontezumaRevenge-v5` (or `ALE/MontezumaRevenge-v5`), procgen games as `jumper`"""
    methods: list[Method] = field(default_factory=lambda: list(METHODS))
    """methods: each Atari method has its own script; on procgen they are `ppo_snd_procgen.py --method`; the baseline is
    `ppo_atari.py` or `ppo_procgen.py`"""
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
    """submit a Slurm job array, one task per run to start or resume, instead of running here"""
    slurm_template: Optional[Path] = None
    """an sbatch template to use instead of the built-in one (implies --slurm; placeholders: see the module docstring)"""
    slurm_gpus: int = 1
    """GPUs per task (`#SBATCH --gres=gpu:N`); 0 leaves the line out"""
    slurm_cpus: int = 16
    """CPUs per task (an Atari run steps its envs in one process each)"""
    slurm_time: str = "1-00:00:00"
    """time limit per task; a run stopped by it has saved a checkpoint and resumes at the next launch"""


def quote(path) -> str:
    """A path as a shell reads it back (quoted where it holds a space or another special character)."""
    return shlex.quote(str(path))


def refuse(message) -> NoReturn:
    """Bad input: one line on stderr, exit code 2, nothing started or written."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


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


@cache
def script_module(path: Path):
    """The training script at `path` imported as a module (the scripts run nothing on import), registered in
    `sys.modules` as tyro needs to read its docstrings. What the import prints (gym's deprecation banner, from procgen's
    import) is shown only if it fails."""
    name = "_launch_" + re.sub(r"\W", "_", str(path))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        sys.stderr.write(printed.getvalue())
        raise
    return module


@dataclass(frozen=True)
class Settings:
    """What a run's command gives its script: `args`, the script's `Args` after its `check_args`, as a dict, and
    `may_change`, the script's RESUME_MAY_CHANGE."""

    args: dict
    may_change: frozenset

    def differences(self, checkpoint: dict, script: str) -> list:
        """The flags a checkpoint holds at other values than these settings, as the scripts' --resume compares them:
        every field but `may_change`."""
        if checkpoint.get("script") != script:
            return [f"written by {checkpoint.get('script')}, not {script}"]
        saved = checkpoint["args"]
        return [
            f"--{key.replace('_', '-')} {saved.get(key)!r} (the grid's: {self.args.get(key)!r})"
            for key in sorted(set(saved) | set(self.args))
            if key not in self.may_change and saved.get(key) != self.args.get(key)
        ]


def read_checkpoint(folder: Path) -> tuple:
    """(checkpoint, None) for the newest readable of the run folder's `checkpoint.pt.tmp` (complete if a kill came
    between a save's two renames), `checkpoint.pt` and `checkpoint.prev.pt`, as the scripts' --resume reads them, only
    checkpoints of this version of the scripts; else (None, why none is), `why` empty if the folder has no checkpoint
    file at all (a run that stopped before its first checkpoint, or that has not reached it yet)."""
    import torch  # slow to import, and needed only once a run folder exists

    reasons = []
    for name in CHECKPOINT_FILES:
        if not (folder / name).exists():
            continue
        try:
            checkpoint = torch.load(folder / name, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # empty, truncated, being written, or not a torch file: the scripts cannot resume from it either
            reasons.append(f"{name} is unreadable")
            continue
        if (
            not isinstance(checkpoint, dict)
            or checkpoint.get("kind") != "checkpoint"
            or not isinstance(checkpoint.get("args"), dict)
            or "num_iterations" not in checkpoint["args"]
            or "iteration" not in checkpoint
        ):
            reasons.append(f"{name} is not a checkpoint of this version of the scripts")
            continue
        return checkpoint, None
    return None, "; ".join(reasons)


def lock_holder(folder: Path) -> Optional[str]:
    """If a live process holds the lock of the run folder (`run.lock`, as the scripts take it): the PID it wrote there
    ("?" if none); else None. Finds out by taking the lock, released at once."""
    try:
        lock = open(folder / LOCK_FILE, "r+")  # writable where it can be: NFS locks only a file open for writing
    except PermissionError:
        lock = open(folder / LOCK_FILE)
    except FileNotFoundError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock.read().strip() or "?"
        except OSError:  # a file system without locks: nothing to tell
            return None
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None


@dataclass
class Found:
    """Where a run of the grid stands in a runs root."""

    status: str  # "new", "interrupted", "finished" or "running" (elsewhere: its folder is locked by another process)
    folder: Optional[Path] = None  # its run folder, except when new
    pid: str = ""  # running: the PID the lock holder wrote in `run.lock`
    others: list = field(default_factory=list)  # [(folder, why)]: folders of its game, script and seed it is not


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
        if self.method == "baseline":
            return "ppo_procgen.py" if self.procgen else "ppo_atari.py"
        return "ppo_snd_procgen.py" if self.procgen else f"ppo_{self.method.replace('-', '_')}_atari.py"

    @property
    def takes_method(self) -> bool:
        """Whether its script takes `--method` (the procgen script of the four exploration methods)."""
        return self.script == "ppo_snd_procgen.py"

    @property
    def name(self) -> str:
        """`<game>__<method>__<seed>`, the name of its log file."""
        return f"{self.game}__{self.method}__{self.seed}"

    @property
    def folder_prefix(self) -> str:
        """Its run folders' names up to the unix time that ends them, as the scripts name them."""
        exp_name = f"ppo_snd_procgen-{self.method}" if self.takes_method else self.script[: -len(".py")]
        return f"{self.game}__{exp_name}__{self.seed}__"

    def command(self, extra=(), resume: Optional[Path] = None) -> list:
        """The command that runs it: the script's defaults, then `extra`, then `--resume` if it continues a run."""
        method = ["--method", self.method] if self.takes_method else []
        command = [sys.executable, str(ROOT / self.script), "--env-id", self.game, "--seed", str(self.seed), *method]
        return command + list(extra) + (["--resume", str(resume)] if resume else [])

    def settings(self, extra=()) -> Settings:
        """The settings its command gives its script. Raises ValueError, with the script's reason, if the script refuses
        the command (tyro has printed its own message then)."""
        module = script_module(ROOT / self.script)
        flags = self.command(extra)[2:]
        refused = f"{self.script} refuses the flags {shlex.join(flags)}"
        try:
            args = tyro.cli(module.Args, args=flags, prog=self.script)
        except SystemExit:  # tyro has printed why
            raise ValueError(f"{refused} (see above)") from None
        try:
            module.check_args(args)
        except (ValueError, gym.error.Error) as error:
            raise ValueError(f"{refused}: {error}") from None
        return Settings(dataclasses.asdict(args), frozenset(module.RESUME_MAY_CHANGE))

    def folders(self, runs_root: Path) -> list:
        """Its game's, script's and seed's run folders in `runs_root/runs`, newest first (by the unix time that ends a
        run name), whatever their settings."""
        prefix = self.folder_prefix
        found = [p for p in (runs_root / "runs").glob(prefix + "*") if p.name[len(prefix) :].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(prefix) :]), reverse=True)

    def find(self, runs_root: Path, settings: Settings) -> Found:
        """Where it stands (see the module docstring): the newest of its folders written with `settings`, or locked
        without a checkpoint yet, is the run; the folders written with other settings are listed in `others`."""
        found, others = None, []
        for folder in self.folders(runs_root):
            checkpoint, why = read_checkpoint(folder)
            pid = lock_holder(folder)
            if checkpoint is None:
                if pid is not None and found is None:  # started, its first checkpoint not written yet
                    found = Found("running", folder, pid)
                elif why:
                    others.append((folder, f"{why}; the scripts cannot resume it"))
                continue
            differences = settings.differences(checkpoint, self.script)
            if differences:
                running = f", running (PID {pid})" if pid is not None else ""
                others.append((folder, f"other settings: {', '.join(differences)}{running}"))
            elif found is None:
                if pid is not None:
                    found = Found("running", folder, pid)
                else:
                    finished = checkpoint["iteration"] >= checkpoint["args"]["num_iterations"]
                    found = Found("finished" if finished else "interrupted", folder)
        found = found or Found("new")
        found.others = others
        return found

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


def script_args_hint(argv: list) -> Optional[str]:
    """For `--script-args --total-timesteps 100` (tyro reads a separate value that starts with `-` as a flag and stops
    with "Missing value"): the message that says how to give it; else None."""
    names = {f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(Args)}
    launcher = names | {name.replace("--", "--no-", 1) for name in names} | {"-h", "--help"}
    for i, arg in enumerate(argv):
        if arg.replace("_", "-") != "--script-args" or (i + 1 < len(argv) and not argv[i + 1].startswith("-")):
            continue
        given = []
        for flag in argv[i + 1 :]:
            if flag.split("=")[0].replace("_", "-") in launcher:
                break
            given.append(flag)
        value = " ".join(given) or "--total-timesteps 100000 --no-cuda"
        example = f'--script-args="{value}"' if not re.search(r'["$`\\]', value) else f"--script-args={quote(value)}"
        return (
            f"--script-args takes the script's flags as one value joined to it with '=', as {example}: given apart, a "
            "value starting with '-' is read as a flag of the launcher"
        )
    return None


def render_slurm(template: str, jobs: list, args: Args, runs_root: Path) -> str:
    """The sbatch file for `jobs` ([(run, command)]): `template` with its placeholders filled in."""
    tasks = [
        f"  {i}) log={quote(run.log(runs_root))}; command=({shlex.join(command)}) ;;" for i, (run, command) in enumerate(jobs)
    ]
    tasks.append('  *) echo "array task $SLURM_ARRAY_TASK_ID has no run" >&2; exit 1 ;;')
    values = {
        "array": f"0-{len(jobs) - 1}",
        "cpus": str(args.slurm_cpus),
        "gpus": str(args.slurm_gpus),
        "time": args.slurm_time,
        "workdir": quote(runs_root),
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
    print(f"wrote {quote(path)} ({len(jobs)} array tasks)")
    if args.dry_run:
        return 0
    try:
        return subprocess.run(["sbatch", str(path)]).returncode
    except FileNotFoundError:
        print(f"error: sbatch not found (not a Slurm login node?); submit {quote(path)} from one", file=sys.stderr)
        return EXIT_INCOMPLETE


def run_environment(workers: int) -> dict:
    """The runs' environment: unbuffered output, and torch's threads set to an equal share of the cores
    (`OMP_NUM_THREADS`, unless set already), since each run would otherwise use every core and `workers` runs would
    oversubscribe them (two runs on two cores ran five times slower)."""
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers)), **os.environ, "PYTHONUNBUFFERED": "1"}


def exit_reason(code: int) -> str:
    """'exit code 3', 'exit code 130 (SIGINT)' (a script stopped by a signal exits with 128 + its number), 'killed by
    signal 9' (a negative code: the signal ended the process)."""
    if code < 0:
        return f"killed by signal {-code}"
    try:
        return f"exit code {code} ({signal.Signals(code - 128).name})" if code > 128 else f"exit code {code}"
    except ValueError:
        return f"exit code {code}"


def run_local(jobs: list, runs_root: Path, workers: int, recheck=None) -> int:
    """Runs `jobs` ([(run, command)]) here, `workers` at a time, each appending its output to its log. `recheck(run)`,
    if given, is called right before a run starts and returns (its `Found` then, the command to run or None): a run
    found running elsewhere or finished is not started. Returns 0 if every run is done or running elsewhere, else 1.
    A run is stopped, not failed, if it exits with 128 + a signal number (the scripts' exit after a stop signal), or
    is killed by a signal after the launcher was interrupted.

    The runs are started in sessions of their own, so a Ctrl-C (or SIGTERM) reaches them only through the launcher: it
    first stops new runs from starting, then passes the signal on. (Were they in the terminal's process group, a run
    could save and exit before the launcher saw the signal, and the next run would start.)"""
    lock, stopping, running = threading.RLock(), threading.Event(), []

    def stop(signum, frame):
        with lock:
            if not stopping.is_set():
                print(
                    f"interrupted: the runs in progress save a checkpoint and stop; the same launch (--runs-root "
                    f"{quote(runs_root)}) resumes them",
                    flush=True,
                )
            stopping.set()
            for process in running:  # a second Ctrl-C is passed on too: the scripts then stop at once
                process.send_signal(signum)

    def work(run: Run, command: list):
        """The run's exit code; None if it was not started; or its `Found` if it needs no start."""
        if stopping.is_set():
            return None
        if recheck is not None:
            found, command = recheck(run)
            if command is None:
                return found
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
    done, elsewhere, stopped, failed, not_started = 0, 0, [], [], 0
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(work, run, command): run for run, command in jobs}
            for future in as_completed(futures):
                run, code = futures[future], future.result()
                log = quote(run.log(runs_root))
                if code is None:
                    not_started += 1
                elif isinstance(code, Found) and code.status == "finished":
                    done += 1
                    print(f"done    {run.name}: finished meanwhile, in {quote(code.folder)}", flush=True)
                elif isinstance(code, Found):
                    elsewhere += 1
                    print(f"running {run.name}: running elsewhere, {quote(code.folder)} (PID {code.pid})", flush=True)
                elif code == 0:
                    done += 1
                    print(f"done    {run.name}", flush=True)
                elif code == EXIT_RUN_LOCKED:
                    elsewhere += 1
                    print(f"running {run.name}: running elsewhere (its run folder is locked by another process), log {log}")
                elif code > 128 or code < 0 and stopping.is_set():  # it saved a checkpoint if it was training
                    stopped.append(f"{run.name}: {exit_reason(code)}, log {log}")
                    print(f"stopped {stopped[-1]}", flush=True)
                else:
                    failed.append(f"{run.name}: {exit_reason(code)}, log {log}")
                    print(f"failed  {failed[-1]}", flush=True)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    counts = f"{done} done, {elsewhere} running elsewhere, {len(stopped)} stopped, {len(failed)} failed"
    print(f"\n{counts}, {not_started} not started")
    for line in stopped:
        print(f"  stopped {line}")
    for line in failed:
        print(f"  failed {line}")
    return EXIT_INCOMPLETE if stopped or failed or not_started else 0


def main(args: Args) -> int:
    try:
        runs = expand(args.games, args.methods, args.seeds)
        extra = script_flags(args.script_args)
        if args.workers < 1 or args.slurm_cpus < 1 or args.slurm_gpus < 0:
            raise ValueError("--workers and --slurm-cpus must be at least 1, --slurm-gpus at least 0")
        slurm = args.slurm or args.slurm_template is not None
        template = args.slurm_template.read_text() if args.slurm_template else SLURM_TEMPLATE
        settings = {run: run.settings(extra) for run in runs}  # each script refuses bad flags now, not in every run
    except (ValueError, OSError) as error:
        refuse(error)

    runs_root = args.runs_root.resolve()
    plan = [(run, run.find(runs_root, settings[run])) for run in runs]

    def command(run: Run, found: Found) -> Optional[list]:
        """The run's command if it is to start or resume, else None."""
        if found.status in ("new", "interrupted"):
            return run.command(extra, found.folder if found.status == "interrupted" else None)

    commands = {run: to_run for run, found in plan if (to_run := command(run, found))}
    count = {status: sum(found.status == status for _, found in plan) for status in STATUS_LABELS}
    counts = f"{count['new']} new, {count['interrupted']} to resume, {count['finished']} finished"
    others = sum(len(found.others) for _, found in plan)
    left_alone = f"; {others} other run folder{'s' if others > 1 else ''} left alone" if others else ""
    print(f"{len(plan)} runs in {quote(runs_root)}: {counts}, {count['running']} running elsewhere{left_alone}")
    for run, found in plan:
        if found.status == "finished":
            shown = f"{quote(found.folder)} is finished"
        elif found.status == "running":
            shown = f"{quote(found.folder)} is running elsewhere (PID {found.pid})"
        else:
            shown = shlex.join(commands[run])
        if args.dry_run and not slurm or found.status == "running":
            print(f"{STATUS_LABELS[found.status]:<7} {shown}")
        for folder, why in found.others:
            print(f"other   {quote(folder)}: {why}; left alone")
    jobs = list(commands.items())
    if args.dry_run and not slurm:
        return 0
    if not jobs:
        print("nothing to run")
        return 0
    (runs_root / "logs").mkdir(parents=True, exist_ok=True)
    if slurm:
        try:
            return submit_slurm(jobs, template, args, runs_root)
        except ValueError as error:
            refuse(error)

    def recheck(run: Run) -> tuple:
        found = run.find(runs_root, settings[run])
        return found, command(run, found)

    return run_local(jobs, runs_root, args.workers, recheck)


if __name__ == "__main__":
    if hint := script_args_hint(sys.argv[1:]):
        refuse(hint)
    sys.exit(main(tyro.cli(Args)))
