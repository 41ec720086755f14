"""benchmark/launch.py: the grid, the status of existing run folders, the dry run, the Slurm job file and the local pool.

No training: the pool and the Slurm tasks run fake scripts (the module's ROOT pointed at a folder of stubs), and one
test runs the real scripts with `--num-envs 0`, which they refuse at once after parsing every flag.
"""

import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, load_script

SCRIPTS = ["ppo_rnd_atari.py", "ppo_snd_v_atari.py", "ppo_snd_std_atari.py", "ppo_snd_vic_atari.py", "ppo_snd_procgen.py"]
# A stub for every script: prints its flags and working directory, fails for seed 2
STUB = """import os, sys
print("flags", *sys.argv[1:])
print("cwd", os.getcwd())
sys.exit(3 if sys.argv[sys.argv.index("--seed") + 1] == "2" else 0)
"""


@pytest.fixture(scope="module")
def launch():
    return load_script("benchmark/launch.py")


def write_stubs(folder: Path, body: str) -> Path:
    folder.mkdir()
    for script in SCRIPTS:
        (folder / script).write_text(body)
    return folder


@pytest.fixture
def stubs(launch, tmp_path, monkeypatch) -> Path:
    """The launcher's scripts replaced by STUB."""
    folder = write_stubs(tmp_path / "scripts", STUB)
    monkeypatch.setattr(launch, "ROOT", folder)
    return folder


def fake_run(runs_root: Path, run_name: str, iteration: int, num_iterations: int = 7, file: str = "checkpoint.pt") -> Path:
    """A run folder with a checkpoint holding what the launcher reads, as the scripts save it."""
    folder = runs_root / "runs" / run_name
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "iteration": iteration,
        "args": {"num_iterations": num_iterations, "total_timesteps": num_iterations * 32},
        "run_name": run_name,
        "script": "fake.py",
    }
    torch.save(checkpoint, folder / file)
    return folder


def cli(*flags) -> subprocess.CompletedProcess:
    """`python benchmark/launch.py flags`, as a user runs it."""
    command = [sys.executable, str(ROOT / "benchmark" / "launch.py"), *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_grid_has_one_run_per_game_method_and_seed_with_the_right_script_and_flags(launch):
    atari = launch.expand(launch.ATARI_GAMES, launch.METHODS, [1, 2, 3])
    procgen = launch.expand(launch.PROCGEN_GAMES, launch.METHODS, [1, 2, 3])
    assert len(atari) == 6 * 4 * 3 and len(set(atari)) == len(atari)
    assert len(procgen) == 4 * 4 * 3 and len(set(procgen)) == len(procgen)
    assert {run.seed for run in atari + procgen} == {1, 2, 3}
    scripts = dict(zip(["rnd", "snd-v", "snd-std", "snd-vic"], SCRIPTS))
    for run in atari:
        flags = ["--env-id", run.game, "--seed", str(run.seed)]
        assert run.command() == [sys.executable, str(ROOT / scripts[run.method]), *flags]
    for run in procgen:
        flags = ["--env-id", run.game, "--seed", str(run.seed), "--method", run.method]
        assert run.command() == [sys.executable, str(ROOT / "ppo_snd_procgen.py"), *flags]
    assert all((ROOT / run.script).is_file() for run in atari + procgen)

    # ALE/ names are the same game; extra flags go after the launcher's, --resume last
    (run,) = launch.expand(["ALE/Pitfall-v5", "Pitfall-v5"], ["snd-std"], [4, 4])
    assert run == launch.Run("Pitfall-v5", "snd-std", 4) and run.game == "Pitfall-v5"
    command = run.command(("--total-timesteps", "100", "--no-cuda"), resume=Path("/runs/x"))
    assert command[-5:] == ["--total-timesteps", "100", "--no-cuda", "--resume", "/runs/x"]
    assert launch.script_flags("--total-timesteps 100 --capture-video") == ["--total-timesteps", "100", "--capture-video"]


def test_an_unknown_game_and_a_flag_the_launcher_sets_are_refused(launch, tmp_path):
    with pytest.raises(ValueError, match="unknown game 'Montezuma-v5': did you mean MontezumaRevenge-v5"):
        launch.expand(["Montezuma-v5"], ["rnd"], [1])
    with pytest.raises(ValueError, match="unknown game 'starpilot'.*coinrun, caveflyer"):  # no exploration level
        launch.Run("starpilot", "rnd", 1)
    with pytest.raises(ValueError, match="unknown method"):
        launch.Run("jumper", "ppo", 1)
    for flags in ["--seed 3", "--no-cuda --env_id Pong-v5", "--resume=runs/x", "--exp-name mine"]:
        with pytest.raises(ValueError, match="--script-args may not hold"):
            launch.script_flags(flags)

    result = cli("--games", "jumper", "Montezuma-v5", "--runs-root", str(tmp_path), "--dry-run")
    assert result.returncode != 0 and "error: unknown game 'Montezuma-v5'" in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())


def test_finished_runs_are_skipped_interrupted_ones_resumed_others_new(launch, tmp_path):
    finished = fake_run(tmp_path, "Pitfall-v5__ppo_snd_vic_atari__1__1700000000", iteration=7)
    interrupted = fake_run(tmp_path, "Pitfall-v5__ppo_snd_vic_atari__2__1700000000", iteration=3)
    # Not these runs': another method whose name starts the same, another seed, an evaluation run
    fake_run(tmp_path, "Pitfall-v5__ppo_snd_v_atari__3__1700000000", iteration=3)
    fake_run(tmp_path, "Pitfall-v5__ppo_snd_vic_atari__13__1700000000", iteration=3)
    fake_run(tmp_path, "Pitfall-v5__ppo_snd_vic_atari-eval__3__1700000000", iteration=3)
    runs = launch.expand(["Pitfall-v5"], ["snd-vic"], [1, 2, 3])
    assert [run.status(tmp_path) for run in runs] == [("finished", finished), ("interrupted", interrupted), ("new", None)]
    assert runs[1].command(resume=interrupted)[-2:] == ["--resume", str(interrupted)]

    # procgen: the method is in the run name
    jumper = fake_run(tmp_path, "jumper__ppo_snd_procgen-snd-vic__1__1700000000", iteration=7)
    assert launch.Run("jumper", "snd-vic", 1).status(tmp_path) == ("finished", jumper)
    assert launch.Run("jumper", "snd-v", 1).status(tmp_path) == ("new", None)


def test_the_newest_folder_with_a_readable_checkpoint_is_the_run(launch, tmp_path):
    run = launch.Run("MontezumaRevenge-v5", "rnd", 1)
    fake_run(tmp_path, "MontezumaRevenge-v5__ppo_rnd_atari__1__1700000000", iteration=7)
    newer = fake_run(tmp_path, "MontezumaRevenge-v5__ppo_rnd_atari__1__1800000000", iteration=2)
    assert run.status(tmp_path) == ("interrupted", newer)
    # a still newer folder without a checkpoint (a run that died before its first one) holds nothing to resume
    (tmp_path / "runs" / "MontezumaRevenge-v5__ppo_rnd_atari__1__1900000000").mkdir()
    assert run.status(tmp_path) == ("interrupted", newer)
    # an unreadable checkpoint.pt: the previous one counts, as for the scripts' --resume
    newest = fake_run(tmp_path, "MontezumaRevenge-v5__ppo_rnd_atari__1__1900000000", iteration=5, file="checkpoint.prev.pt")
    (newest / "checkpoint.pt").write_bytes(b"half a checkpoint")
    assert run.status(tmp_path) == ("interrupted", newest)
    fake_run(tmp_path, newest.name, iteration=7)
    assert run.status(tmp_path) == ("finished", newest)


def test_dry_run_prints_every_command_with_its_status_and_runs_nothing(tmp_path):
    finished = fake_run(tmp_path, "Pitfall-v5__ppo_rnd_atari__1__1700000000", iteration=7)
    interrupted = fake_run(tmp_path, "jumper__ppo_snd_procgen-rnd__2__1700000000", iteration=3)
    flags = ["--games", "ALE/Pitfall-v5", "jumper", "--methods", "rnd", "--seeds", "1", "2", "--runs-root", str(tmp_path)]
    result = cli(*flags, "--script-args=--total-timesteps 64 --no-cuda", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"4 runs in {tmp_path}: 2 new, 1 to resume, 1 finished"
    python, extra = sys.executable, "--total-timesteps 64 --no-cuda"
    assert lines[1:] == [
        f"skip    {finished} is finished",
        f"new     {python} {ROOT}/ppo_rnd_atari.py --env-id Pitfall-v5 --seed 2 {extra}",
        f"new     {python} {ROOT}/ppo_snd_procgen.py --env-id jumper --seed 1 --method rnd {extra}",
        f"resume  {python} {ROOT}/ppo_snd_procgen.py --env-id jumper --seed 2 --method rnd {extra} --resume {interrupted}",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no logs/, no run started


def test_the_slurm_job_file_has_one_task_per_run_not_finished_selected_by_the_array_task_id(launch, stubs, tmp_path, capsys):
    runs_root = tmp_path / "grid"
    fake_run(runs_root, "Venture-v5__ppo_snd_std_atari__1__1700000000", iteration=7)
    interrupted = fake_run(runs_root, "coinrun__ppo_snd_procgen-snd-std__1__1700000000", iteration=1)
    args = launch.Args(games=["Venture-v5", "coinrun"], methods=["snd-std"], seeds=[1, 2], runs_root=runs_root)
    args.slurm, args.dry_run, args.slurm_gpus, args.slurm_time = True, True, 2, "12:00:00"
    assert launch.main(args) == 0
    path = Path(capsys.readouterr().out.splitlines()[-1].split()[1])
    job = path.read_text()
    assert path.parent == runs_root / "logs" and path.suffix == ".sbatch"
    assert "#SBATCH --array=0-2\n" in job  # four runs, one finished
    assert "#SBATCH --gres=gpu:2\n" in job and "#SBATCH --time=12:00:00\n" in job and "#SBATCH --cpus-per-task=16\n" in job
    procgen = ["ppo_snd_procgen.py", "--env-id", "coinrun"]
    expected = [
        ("Venture-v5__snd-std__2", ["ppo_snd_std_atari.py", "--env-id", "Venture-v5", "--seed", "2"]),
        ("coinrun__snd-std__1", [*procgen, "--seed", "1", "--method", "snd-std", "--resume", str(interrupted)]),
        ("coinrun__snd-std__2", [*procgen, "--seed", "2", "--method", "snd-std"]),
    ]
    for i, (name, (script, *flags)) in enumerate(expected):
        command = shlex.join([sys.executable, str(stubs / script), *flags])
        assert f"  {i}) log={runs_root}/logs/{name}.log; command=({command}) ;;\n" in job
    assert job.count(") log=") == 3  # the finished run has no task

    # Each array task runs its own run, in the runs root, with its output in the run's log
    for task, (name, (script, *flags)) in enumerate(expected):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_JOB_ID": "77"}
        result = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == (3 if flags[3] == "2" else 0), result.stderr
        log = (runs_root / "logs" / f"{name}.log").read_text().splitlines()
        assert log[0].startswith("=== ") and f"Slurm job 77_{task} on " in log[0]
        assert log[1:] == ["flags " + " ".join(flags), f"cwd {runs_root}"]
    result = subprocess.run(
        ["bash", str(path)], env={**os.environ, "SLURM_ARRAY_TASK_ID": "3"}, capture_output=True, text=True
    )
    assert result.returncode == 1 and "array task 3 has no run" in result.stderr


def test_slurm_without_gpus_with_a_template_and_submitted_with_sbatch(launch, stubs, tmp_path, capsys, monkeypatch):
    args = launch.Args(games=["jumper"], methods=["rnd"], seeds=[1], runs_root=tmp_path, slurm=True, dry_run=True)
    args.slurm_gpus = 0
    assert launch.main(args) == 0
    job = Path(capsys.readouterr().out.splitlines()[-1].split()[1]).read_text()
    assert "--gres" not in job and "#SBATCH --array=0-0\n" in job

    template = tmp_path / "template.sh"
    template.write_text("#SBATCH --partition=long\n#SBATCH --gpus-per-task={{gpus}}\ncd {{workdir}}\n{{tasks}}\n")
    args = launch.Args(games=["jumper"], methods=["rnd"], seeds=[1], runs_root=tmp_path, slurm_template=template)
    bin_dir = tmp_path / "bin"  # a fake sbatch that records what it was given
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/sbatch_args\necho "Submitted batch job 5"\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert launch.main(args) == 0  # the template implies --slurm
    path = Path(capsys.readouterr().out.splitlines()[-1].split()[1])
    assert (tmp_path / "sbatch_args").read_text() == f"{path}\n"
    assert path.read_text().startswith(f"#SBATCH --partition=long\n#SBATCH --gpus-per-task=1\ncd {tmp_path}\n  0) log=")

    template.write_text("#SBATCH --qos={{qos}}\n{{tasks}}\n")
    with pytest.raises(SystemExit, match=r"unknown placeholder \{\{qos\}\}"):
        launch.main(args)
    template.write_text("#SBATCH --gres=gpu:{{gpus}}\n")
    with pytest.raises(SystemExit, match=r"no \{\{tasks\}\}"):
        launch.main(args)


def test_the_local_pool_reports_a_failed_run_with_its_log_and_runs_the_others(launch, stubs, tmp_path, capsys):
    args = launch.Args(games=["Solaris-v5", "climber"], methods=["snd-v"], seeds=[1, 2], runs_root=tmp_path, workers=2)
    args.script_args = "--total-timesteps 64"
    assert launch.main(args) == 1
    out = capsys.readouterr().out
    logs = tmp_path / "logs"
    for name in ["Solaris-v5__snd-v__2", "climber__snd-v__2"]:
        assert f"failed  {name}: exit code 3, log {logs / name}.log\n" in out
        assert f"  failed {name}: exit code 3, log {logs / name}.log\n" in out  # in the summary too
    assert "done    Solaris-v5__snd-v__1\n" in out and "done    climber__snd-v__1\n" in out
    assert "2 done, 2 failed, 0 not started\n" in out
    for name, flags in [
        ("Solaris-v5__snd-v__1", "--env-id Solaris-v5 --seed 1 --total-timesteps 64"),
        ("climber__snd-v__2", "--env-id climber --seed 2 --method snd-v --total-timesteps 64"),
    ]:
        header, *output = (logs / f"{name}.log").read_text().splitlines()
        assert header.startswith("=== ") and header.endswith(flags)
        assert output == [f"flags {flags}", f"cwd {tmp_path}"]

    # A second launch appends to the logs
    assert launch.main(launch.Args(games=["climber"], methods=["snd-v"], seeds=[1], runs_root=tmp_path)) == 0
    assert (logs / "climber__snd-v__1.log").read_text().count("=== ") == 2


def test_the_real_scripts_accept_the_commands(tmp_path):
    """`--num-envs 0` is refused after every flag is parsed: a flag a script does not know would fail before it."""
    flags = ["--games", "Gravitar-v5", "caveflyer", "--methods", "snd-vic", "--seeds", "1", "--workers", "2"]
    result = cli(*flags, "--runs-root", str(tmp_path), "--script-args=--num-envs 0")
    assert result.returncode == 1 and "0 done, 2 failed, 0 not started" in result.stdout, result.stdout + result.stderr
    for name in ["Gravitar-v5__snd-vic__1", "caveflyer__snd-vic__1"]:
        assert f"failed  {name}: exit code 1, log {tmp_path}/logs/{name}.log" in result.stdout
        assert "error: --num-envs must be positive, got 0" in (tmp_path / "logs" / f"{name}.log").read_text()


def test_ctrl_c_lets_the_running_run_save_and_starts_no_other(tmp_path):
    stub = """import signal, sys, time
def save(*_):
    print("saved", flush=True)
    sys.exit(130)
signal.signal(signal.SIGINT, save)
print("running")  # unflushed: the launcher makes the runs' output unbuffered, so that their logs are live
time.sleep(60)
"""
    scripts = write_stubs(tmp_path / "scripts", stub)
    wrapper = f"import sys; sys.path.insert(0, {str(ROOT / 'benchmark')!r}); import launch; from pathlib import Path; "
    wrapper += f"launch.ROOT = Path({str(scripts)!r}); sys.exit(launch.main(launch.tyro.cli(launch.Args)))"
    flags = ["--games", "jumper", "--methods", "rnd", "--seeds", "1", "2", "--runs-root", str(tmp_path)]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    command = [sys.executable, "-c", wrapper, *flags]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    first = tmp_path / "logs" / "jumper__rnd__1.log"
    output = lambda: first.read_text().splitlines()[1:] if first.exists() else []  # below the launcher's header
    deadline = time.time() + 30
    while output() != ["running"] and time.time() < deadline:
        time.sleep(0.1)
    assert output() == ["running"]
    os.killpg(launcher.pid, signal.SIGINT)  # as a Ctrl-C in its terminal: the launcher and its runs
    out, _ = launcher.communicate(timeout=30)
    assert launcher.returncode == 1
    assert "interrupted: the runs in progress save a checkpoint and stop" in out
    assert "0 done, 1 failed, 1 not started" in out and "failed  jumper__rnd__1: exit code 130" in out
    assert output() == ["running", "saved"]
    assert not (tmp_path / "logs" / "jumper__rnd__2.log").exists()


@pytest.mark.parametrize("script, grid", [("atari_hard.sh", "ATARI_GAMES"), ("procgen_exploration.sh", "PROCGEN_GAMES")])
def test_the_table_scripts_launch_the_papers_grid_and_pass_flags_on(launch, script, grid, tmp_path):
    path, games = ROOT / "benchmark" / script, getattr(launch, grid)
    assert path.stat().st_mode & stat.S_IXUSR
    flags = ["--dry-run", "--runs-root", str(tmp_path)]
    # First with a `python` that only echoes its arguments, so that a script which lost "$@" starts no training
    echo = tmp_path / "bin" / "python"
    echo.parent.mkdir()
    echo.write_text('#!/bin/bash\necho "$@"\n')
    echo.chmod(0o755)
    env = {**os.environ, "PATH": f"{echo.parent}{os.pathsep}{os.environ['PATH']}"}
    shown = subprocess.run([str(path), *flags], env=env, capture_output=True, text=True, timeout=30).stdout.split()
    grid_flags = ["--games", *games, "--methods", "rnd", "snd-v", "snd-std", "snd-vic", "--seeds", "1", "2", "3"]
    assert shown == [str(ROOT / "benchmark" / "launch.py"), *grid_flags, *flags]

    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run([str(path), *flags], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    runs = launch.expand(games, launch.METHODS, [1, 2, 3])
    assert len(runs) == len(games) * 4 * 3
    python = str(
        Path(sys.executable).parent / "python"
    )  # the `python` the table script ran (sys.executable may be python3.11)
    assert result.stdout.splitlines()[1:] == [f"new     {shlex.join([python, *run.command()[1:]])}" for run in runs]


def test_the_runs_share_the_cores_unless_the_user_set_the_threads(launch, monkeypatch):
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert launch.run_environment(4)["OMP_NUM_THREADS"] == "4" and launch.run_environment(32)["OMP_NUM_THREADS"] == "1"
    assert launch.run_environment(1)["PYTHONUNBUFFERED"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch.run_environment(4)["OMP_NUM_THREADS"] == "3"
