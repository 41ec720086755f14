"""benchmark/launch.py: the grid, the settings of a run and how existing run folders are matched to it (finished,
interrupted, of other settings, running elsewhere), the dry run, the Slurm job file and the local pool.

No training: the pool and the Slurm tasks run fake scripts (the module's ROOT pointed at a folder of stubs, while the
settings still come from the real scripts), the run folders hold fake checkpoints with what the launcher reads, and
the real scripts only parse the launcher's commands, or meet a locked run folder, which they leave at once.
"""

import fcntl
import inspect
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
STAMP = 1700000000  # the unix time that ends a run folder's name


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
    """The launcher's scripts replaced by STUB; the settings of a run are still the real script's."""
    folder = write_stubs(tmp_path / "scripts", STUB)
    real_module = launch.script_module
    monkeypatch.setattr(launch, "ROOT", folder)
    monkeypatch.setattr(launch, "script_module", lambda path: real_module(ROOT / path.name))
    return folder


def fake_run(launch, runs_root: Path, run, iteration: int, num_iterations=7, file="checkpoint.pt", stamp=STAMP, **changes):
    """A run folder of `run` (a launch.Run) with a checkpoint as the scripts save it: its `args` are the grid's settings
    for the run (those the script fills in at start filled in), `changes` applied, and `num_iterations`."""
    folder = runs_root / "runs" / f"{run.folder_prefix}{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    args = dict(run.settings().args)
    args.update(num_iterations=num_iterations, **changes)
    checkpoint = {"kind": "checkpoint", "script": run.script, "args": args, "iteration": iteration}
    checkpoint.update(global_step=iteration * 16384, state={}, rng={})
    torch.save(checkpoint, folder / file)
    return folder


def hold_lock(folder: Path, pid: str = "4242"):
    """Takes the run folder's lock as a script does (an exclusive flock on run.lock, its PID written in it); the lock is
    held until the returned file is closed."""
    lock = open(folder / "run.lock", "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.truncate(0)
    lock.write(f"{pid}\n")
    lock.flush()
    return lock


def cli(*flags, env=None) -> subprocess.CompletedProcess:
    """`python benchmark/launch.py flags`, as a user runs it."""
    command = [sys.executable, str(ROOT / "benchmark" / "launch.py"), *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_the_grid_has_one_run_per_game_method_and_seed_with_the_right_script_and_flags(launch):
    atari = launch.expand(launch.ATARI_GAMES, launch.METHODS, [1, 2, 3])
    procgen = launch.expand(launch.PROCGEN_GAMES, launch.METHODS, [1, 2, 3])
    assert len(atari) == 6 * 5 * 3 and len(set(atari)) == len(atari)  # the baseline and the four methods
    assert len(procgen) == 4 * 5 * 3 and len(set(procgen)) == len(procgen)
    assert {run.seed for run in atari + procgen} == {1, 2, 3}
    scripts = dict(zip(["rnd", "snd-v", "snd-std", "snd-vic"], SCRIPTS), baseline="ppo_atari.py")
    for run in atari:
        flags = ["--env-id", run.game, "--seed", str(run.seed)]
        assert run.command() == [sys.executable, str(ROOT / scripts[run.method]), *flags]
    for run in procgen:
        flags = ["--env-id", run.game, "--seed", str(run.seed)]
        if run.method == "baseline":
            assert run.command() == [sys.executable, str(ROOT / "ppo_procgen.py"), *flags]
        else:
            assert run.command() == [sys.executable, str(ROOT / "ppo_snd_procgen.py"), *flags, "--method", run.method]
    assert all((ROOT / run.script).is_file() for run in atari + procgen)

    # ALE/ names are the same game; extra flags go after the launcher's, --resume last
    (run,) = launch.expand(["ALE/Pitfall-v5", "Pitfall-v5"], ["snd-std"], [4, 4])
    assert run == launch.Run("Pitfall-v5", "snd-std", 4) and run.game == "Pitfall-v5"
    command = run.command(("--total-timesteps", "100", "--no-cuda"), resume=Path("/runs/x"))
    assert command[-5:] == ["--total-timesteps", "100", "--no-cuda", "--resume", "/runs/x"]
    assert launch.script_flags("--total-timesteps 100 --capture-video") == ["--total-timesteps", "100", "--capture-video"]


def test_a_runs_settings_are_its_scripts_args_as_the_script_builds_them(launch):
    settings = launch.Run("Pitfall-v5", "rnd", 2).settings(["--num-envs", "8", "--no-cuda"])
    assert settings.args["env_id"] == "ALE/Pitfall-v5" and settings.args["seed"] == 2  # canonical, as a checkpoint has it
    assert settings.args["num_envs"] == 8 and settings.args["batch_size"] == 8 * 128 and settings.args["cuda"] is False
    assert settings.args["num_iterations"] == 128_000_000 // (8 * 128)  # the runtime sizes are filled in
    assert settings.may_change == load_script("ppo_rnd_atari.py").RESUME_MAY_CHANGE
    procgen = launch.Run("jumper", "snd-std", 1).settings()
    assert procgen.args["method"] == "snd-std" and procgen.args["eta"] == 1.0  # the paper's, filled in by check_args
    with pytest.raises(ValueError, match=r"ppo_snd_std_atari.py refuses the flags .*: --clip-coef must be a number"):
        launch.Run("Pitfall-v5", "snd-std", 1).settings(["--clip-coef", "2.0"])


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
    assert result.returncode == 2 and "error: unknown game 'Montezuma-v5'" in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())


def test_flags_a_script_refuses_stop_the_launch_before_anything_starts(launch, tmp_path, capsys):
    flags = ["--games", "Gravitar-v5", "caveflyer", "--methods", "snd-vic", "--seeds", "1", "--runs-root", str(tmp_path)]
    result = cli(*flags, "--script-args=--num-envs 0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: ppo_snd_vic_atari.py refuses the flags --env-id Gravitar-v5 --seed 1 --num-envs 0: " in result.stderr
    assert "--num-envs must be a number in [1, inf), got 0" in result.stderr
    assert not list(tmp_path.iterdir())  # no logs/, no run
    # a flag the script does not know: tyro's message, then the launcher's
    with pytest.raises(
        ValueError, match=r"refuses the flags --env-id caveflyer --seed 1 --method snd-vic --no-such-flag 1 \(see"
    ):
        launch.Run("caveflyer", "snd-vic", 1).settings(["--no-such-flag", "1"])
    assert "Unrecognized options: --no-such-flag" in capsys.readouterr().err


def test_script_args_given_without_equals_get_a_hint(launch, tmp_path):
    result = cli("--games", "jumper", "--script-args", "--total-timesteps", "100", "--dry-run", "--runs-root", str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert (
        "error: --script-args takes the script's flags as one value joined to it with '=', as --script-args=\"--total-timesteps 100\""
        in result.stderr
    )
    assert not list(tmp_path.iterdir())
    assert launch.script_args_hint(["--script-args=--total-timesteps 100", "--dry-run"]) is None
    assert launch.script_args_hint(["--script-args", "", "--dry-run"]) is None  # a value tyro takes
    assert '--script-args="--no-cuda"' in launch.script_args_hint(["--games", "jumper", "--script_args", "--no-cuda"])
    assert '--script-args="--total-timesteps 100000 --no-cuda"' in launch.script_args_hint(["--script-args"])  # an example


def test_finished_runs_are_skipped_interrupted_ones_resumed_others_new(launch, tmp_path):
    runs = launch.expand(["Pitfall-v5"], ["snd-vic"], [1, 2, 3])
    finished = fake_run(launch, tmp_path, runs[0], iteration=7)
    interrupted = fake_run(launch, tmp_path, runs[1], iteration=3)
    # Not these runs': another method whose name starts the same, another seed, an evaluation run
    fake_run(launch, tmp_path, launch.Run("Pitfall-v5", "snd-v", 3), iteration=3)
    fake_run(launch, tmp_path, launch.Run("Pitfall-v5", "snd-vic", 13), iteration=3)
    eval_run = tmp_path / "runs" / f"Pitfall-v5__ppo_snd_vic_atari-eval__3__{STAMP}"
    eval_run.mkdir()
    found = [run.find(tmp_path, run.settings()) for run in runs]
    assert [(f.status, f.folder, f.others) for f in found] == [
        ("finished", finished, []),
        ("interrupted", interrupted, []),
        ("new", None, []),
    ]
    assert runs[1].command(resume=interrupted)[-2:] == ["--resume", str(interrupted)]

    # procgen: the method is in the run name; finished is at the budget the run was started with
    jumper = launch.Run("jumper", "snd-vic", 1)
    folder = fake_run(launch, tmp_path, jumper, iteration=7)
    assert jumper.find(tmp_path, jumper.settings(["--total-timesteps", "999999999"])).status == "finished"
    snd_v = launch.Run("jumper", "snd-v", 1)
    assert snd_v.find(tmp_path, snd_v.settings()).status == "new"
    assert folder.name == f"jumper__ppo_snd_procgen-snd-vic__1__{STAMP}"


def test_the_newest_folder_with_a_readable_checkpoint_of_this_version_is_the_run(launch, tmp_path):
    run = launch.Run("MontezumaRevenge-v5", "rnd", 1)
    settings = run.settings()
    fake_run(launch, tmp_path, run, iteration=7, stamp=1700000000)
    newer = fake_run(launch, tmp_path, run, iteration=2, stamp=1800000000)
    assert (run.find(tmp_path, settings).status, run.find(tmp_path, settings).folder) == ("interrupted", newer)
    # a still newer folder without a checkpoint (a run that died before its first one) holds nothing to resume
    newest = tmp_path / "runs" / f"{run.folder_prefix}1900000000"
    newest.mkdir()
    assert run.find(tmp_path, settings).folder == newer and run.find(tmp_path, settings).others == []
    # an unreadable checkpoint.pt: the previous one counts, as for the scripts' --resume
    fake_run(launch, tmp_path, run, iteration=5, stamp=1900000000, file="checkpoint.prev.pt")
    (newest / "checkpoint.pt").write_bytes(b"half a checkpoint")
    found = run.find(tmp_path, settings)
    assert (found.status, found.folder, found.others) == ("interrupted", newest, [])
    # a complete checkpoint.pt.tmp (a kill between a save's renames) is the newest: the script's resume finishes its save
    fake_run(launch, tmp_path, run, iteration=7, stamp=1900000000, file="checkpoint.pt.tmp")
    assert (run.find(tmp_path, settings).status, run.find(tmp_path, settings).folder) == ("finished", newest)

    # a checkpoint of the old format (no "kind"), which the scripts refuse, is listed and not used
    old = tmp_path / "runs" / f"{run.folder_prefix}2000000000"
    old.mkdir()
    torch.save({"iteration": 3, "args": {"num_iterations": 7}, "run_name": old.name}, old / "checkpoint.pt")
    found = run.find(tmp_path, settings)
    assert (found.status, found.folder) == ("finished", newest)
    assert found.others == [
        (old, "checkpoint.pt is not a checkpoint of this version of the scripts; the scripts cannot resume it")
    ]


def test_a_run_of_other_settings_is_listed_and_left_alone_and_the_grid_starts_a_new_one(launch, stubs, tmp_path, capsys):
    run = launch.Run("Pitfall-v5", "rnd", 1)
    # started by hand with another --clip-coef, newer than the grid's own (interrupted) run
    other = fake_run(launch, tmp_path, run, iteration=3, stamp=1800000000, clip_coef=0.2)
    own = fake_run(launch, tmp_path, run, iteration=3, stamp=1700000000)
    found = run.find(tmp_path, run.settings())
    assert (found.status, found.folder) == ("interrupted", own)
    assert found.others == [(other, "other settings: --clip-coef 0.2 (the grid's: 0.1)")]
    # what a resume may change does not count: the grid's run resumes with a larger budget and other learning rate
    extended = run.settings(["--total-timesteps", "256000000", "--learning-rate", "1e-5", "--no-cuda"])
    assert run.find(tmp_path, extended).folder == own
    # the paper's eta the script fills in counts as a setting: a run with another --eta is another run
    std = launch.Run("Pitfall-v5", "snd-std", 1)
    eta = fake_run(launch, tmp_path, std, iteration=3, eta=0.25)
    assert std.find(tmp_path, std.settings()).others == [(eta, "other settings: --eta 0.25 (the grid's: 1.0)")]
    assert std.find(tmp_path, std.settings(["--eta", "0.25"])).folder == eta

    # Only a run of other settings: the grid starts a new one (without --resume) and lists it
    own.joinpath("checkpoint.pt").unlink()
    args = launch.Args(games=["Pitfall-v5"], methods=["rnd"], seeds=[1], runs_root=tmp_path, dry_run=True)
    assert launch.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == f"1 runs in {tmp_path}: 1 new, 0 to resume, 0 finished, 0 running elsewhere; 1 other run folder left alone"
    )
    assert lines[1:] == [
        f"new     {shlex.join(run.command())}",
        f"other   {other}: other settings: --clip-coef 0.2 (the grid's: 0.1); left alone",
    ]
    args.dry_run = False
    assert launch.main(args) == 0
    header, *output = (tmp_path / "logs" / "Pitfall-v5__rnd__1.log").read_text().splitlines()
    assert output[0] == "flags --env-id Pitfall-v5 --seed 1"  # a new run, not --resume of the other


def test_a_locked_run_is_running_elsewhere_and_not_launched(launch, stubs, tmp_path, capsys):
    run = launch.Run("coinrun", "snd-v", 1)
    folder = fake_run(launch, tmp_path, run, iteration=3)
    lock = hold_lock(folder)
    found = run.find(tmp_path, run.settings())
    assert (found.status, found.folder, found.pid) == ("running", folder, "4242")
    args = launch.Args(games=["coinrun"], methods=["snd-v"], seeds=[1], runs_root=tmp_path)
    assert launch.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"1 runs in {tmp_path}: 0 new, 0 to resume, 0 finished, 1 running elsewhere",
        f"running {folder} is running elsewhere (PID 4242)",
        "nothing to run",
    ]
    assert not (tmp_path / "logs").exists()  # nothing started
    lock.close()  # the holder exits: the run is interrupted again, and the launcher's look left the lock free
    assert run.find(tmp_path, run.settings()).status == "interrupted"
    with open(folder / "run.lock") as free:
        fcntl.flock(free, fcntl.LOCK_EX | fcntl.LOCK_NB)

    # A run just started by another launcher: locked, no checkpoint yet. It is this run, running elsewhere, even
    # next to an older interrupted one; the lock held by another process (a subprocess here)
    started = tmp_path / "runs" / f"{run.folder_prefix}{STAMP + 1}"
    started.mkdir()
    holder = "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
    holder += "f.write(str(os.getpid())); f.flush(); print('locked', flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", holder, str(started / "run.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "locked\n"
        found = run.find(tmp_path, run.settings())
        assert (found.status, found.folder, found.pid) == ("running", started, str(process.pid))
        args.dry_run = True
        assert launch.main(args) == 0
        assert f"running {started} is running elsewhere (PID {process.pid})" in capsys.readouterr().out
    finally:
        process.kill()
        process.wait()
    assert run.find(tmp_path, run.settings()).folder == folder  # the holder died: nothing there to resume


def test_a_launched_run_that_exits_with_5_is_running_elsewhere_not_failed(launch, tmp_path, monkeypatch, capsys):
    stub = 'import sys\nif "--seed" in sys.argv and sys.argv[sys.argv.index("--seed") + 1] == "2":\n'
    stub += '    print("error: runs/x is in use by another process (PID 7)", file=sys.stderr)\n    sys.exit(5)\n'
    monkeypatch.setattr(launch, "ROOT", write_stubs(tmp_path / "scripts", stub))
    runs = launch.expand(["climber"], ["rnd"], [1, 2])
    jobs = [(run, run.command()) for run in runs]
    (tmp_path / "logs").mkdir()
    assert launch.run_local(jobs, tmp_path, workers=2) == 0  # not a failure
    out = capsys.readouterr().out
    log = tmp_path / "logs" / "climber__rnd__2.log"
    assert f"running climber__rnd__2: running elsewhere (its run folder is locked by another process), log {log}\n" in out
    assert "done    climber__rnd__1\n" in out and "1 done, 1 running elsewhere, 0 stopped, 0 failed, 0 not started\n" in out
    assert "in use by another process (PID 7)" in log.read_text()

    # A run found running elsewhere, or finished, right before it would start (another launcher took it): not started
    other = launch.Found("running", tmp_path / "runs" / "x", "9")
    recheck = {runs[0]: (launch.Found("finished", tmp_path / "runs" / "y"), None), runs[1]: (other, None)}
    assert launch.run_local(jobs, tmp_path, workers=1, recheck=recheck.get) == 0
    out = capsys.readouterr().out
    assert f"done    climber__rnd__1: finished meanwhile, in {tmp_path}/runs/y\n" in out
    assert f"running climber__rnd__2: running elsewhere, {tmp_path}/runs/x (PID 9)\n" in out
    assert log.read_text().count("=== ") == 1  # the earlier start only


def test_the_launcher_reads_run_folders_as_the_scripts_write_them(launch):
    """The checkpoint files (newest first), the lock file and the exit code of a locked run are the scripts' own."""
    for script in SCRIPTS:
        module = load_script(script)
        assert module.CHECKPOINT_FILES == launch.CHECKPOINT_FILES and module.EXIT_RUN_LOCKED == launch.EXIT_RUN_LOCKED
        assert f'"{launch.LOCK_FILE}"' in inspect.getsource(module.lock_run_folder)
        assert module.checkpoint_state.__doc__ and '"kind": "checkpoint"' in inspect.getsource(module.checkpoint_state)


def test_dry_run_prints_every_command_with_its_status_and_runs_nothing(launch, tmp_path):
    root = tmp_path / "runs root"  # a space: every path printed is quoted
    extra = "--total-timesteps 16384 --no-cuda"
    finished = fake_run(launch, root, launch.Run("Pitfall-v5", "rnd", 1), iteration=7)
    interrupted = fake_run(launch, root, launch.Run("jumper", "rnd", 2), iteration=3)
    flags = ["--games", "ALE/Pitfall-v5", "jumper", "--methods", "rnd", "--seeds", "1", "2", "--runs-root", str(root)]
    result = cli(*flags, f"--script-args={extra}", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"4 runs in '{root}': 2 new, 1 to resume, 1 finished, 0 running elsewhere"
    python = sys.executable
    assert lines[1:] == [
        f"skip    '{finished}' is finished",
        f"new     {python} {ROOT}/ppo_rnd_atari.py --env-id Pitfall-v5 --seed 2 {extra}",
        f"new     {python} {ROOT}/ppo_snd_procgen.py --env-id jumper --seed 1 --method rnd {extra}",
        f"resume  {python} {ROOT}/ppo_snd_procgen.py --env-id jumper --seed 2 --method rnd {extra} --resume '{interrupted}'",
    ]
    assert sorted(p.name for p in root.iterdir()) == ["runs"]  # no logs/, no run started


def test_the_slurm_job_file_has_one_task_per_run_to_start_selected_by_the_array_task_id(launch, stubs, tmp_path, capsys):
    runs_root = tmp_path / "my grid"  # a space: quoted in the job file's shell lines and #SBATCH lines
    fake_run(launch, runs_root, launch.Run("Venture-v5", "snd-std", 1), iteration=7)
    interrupted = fake_run(launch, runs_root, launch.Run("coinrun", "snd-std", 1), iteration=1)
    elsewhere = fake_run(launch, runs_root, launch.Run("coinrun", "snd-std", 3), iteration=1)
    args = launch.Args(games=["Venture-v5", "coinrun"], methods=["snd-std"], seeds=[1, 2, 3], runs_root=runs_root)
    args.slurm, args.dry_run, args.slurm_gpus, args.slurm_time = True, True, 2, "12:00:00"
    with hold_lock(elsewhere):
        assert launch.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"running '{elsewhere}' is running elsewhere (PID 4242)" in out
    wrote = shlex.split(out[-1])
    assert wrote[0] == "wrote" and wrote[2:] == ["(4", "array", "tasks)"]
    path = Path(wrote[1])
    job = path.read_text()
    assert path.parent == runs_root / "logs" and path.suffix == ".sbatch"
    assert "#SBATCH --array=0-3\n" in job  # six runs, one finished, one running elsewhere
    assert "#SBATCH --gres=gpu:2\n" in job and "#SBATCH --time=12:00:00\n" in job and "#SBATCH --cpus-per-task=16\n" in job
    (output,) = [line for line in job.splitlines() if line.startswith("#SBATCH --output=")]
    assert shlex.split(output) == ["#SBATCH", f"--output={runs_root}/logs/slurm-%A_%a.log"]  # as sbatch reads quotes
    assert f"\ncd '{runs_root}'\n" in job
    procgen = ["ppo_snd_procgen.py", "--env-id", "coinrun"]
    expected = [
        ("Venture-v5__snd-std__2", ["ppo_snd_std_atari.py", "--env-id", "Venture-v5", "--seed", "2"]),
        ("Venture-v5__snd-std__3", ["ppo_snd_std_atari.py", "--env-id", "Venture-v5", "--seed", "3"]),
        ("coinrun__snd-std__1", [*procgen, "--seed", "1", "--method", "snd-std", "--resume", str(interrupted)]),
        ("coinrun__snd-std__2", [*procgen, "--seed", "2", "--method", "snd-std"]),
    ]
    for i, (name, (script, *flags)) in enumerate(expected):
        command = shlex.join([sys.executable, str(stubs / script), *flags])
        assert f"  {i}) log='{runs_root}/logs/{name}.log'; command=({command}) ;;\n" in job
    assert job.count(") log=") == 4  # the finished run and the one running elsewhere have no task

    # Each array task runs its own run, in the runs root, with its output in the run's log
    for task, (name, (script, *flags)) in enumerate(expected):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_JOB_ID": "77"}
        result = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == (3 if flags[3] == "2" else 0), result.stderr
        log = (runs_root / "logs" / f"{name}.log").read_text().splitlines()
        assert log[0].startswith("=== ") and f"Slurm job 77_{task} on " in log[0]
        assert log[1:] == ["flags " + " ".join(flags), f"cwd {runs_root}"]
    result = subprocess.run(
        ["bash", str(path)], env={**os.environ, "SLURM_ARRAY_TASK_ID": "4"}, capture_output=True, text=True
    )
    assert result.returncode == 1 and "array task 4 has no run" in result.stderr


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
    with pytest.raises(SystemExit) as exit:
        launch.main(args)
    assert exit.value.code == 2 and r"error: unknown placeholder {{qos}}" in capsys.readouterr().err
    template.write_text("#SBATCH --gres=gpu:{{gpus}}\n")
    with pytest.raises(SystemExit) as exit:
        launch.main(args)
    assert exit.value.code == 2 and r"the Slurm template has no {{tasks}}" in capsys.readouterr().err


def test_the_local_pool_reports_a_failed_run_with_its_log_and_runs_the_others(launch, stubs, tmp_path, capsys):
    args = launch.Args(games=["Solaris-v5", "climber"], methods=["snd-v"], seeds=[1, 2], runs_root=tmp_path, workers=2)
    args.script_args = "--total-timesteps 32768"
    assert launch.main(args) == 1
    out = capsys.readouterr().out
    logs = tmp_path / "logs"
    for name in ["Solaris-v5__snd-v__2", "climber__snd-v__2"]:
        assert f"failed  {name}: exit code 3, log {logs / name}.log\n" in out
        assert f"  failed {name}: exit code 3, log {logs / name}.log\n" in out  # in the summary too
    assert "done    Solaris-v5__snd-v__1\n" in out and "done    climber__snd-v__1\n" in out
    assert "2 done, 0 running elsewhere, 0 stopped, 2 failed, 0 not started\n" in out
    for name, flags in [
        ("Solaris-v5__snd-v__1", "--env-id Solaris-v5 --seed 1 --total-timesteps 32768"),
        ("climber__snd-v__2", "--env-id climber --seed 2 --method snd-v --total-timesteps 32768"),
    ]:
        header, *output = (logs / f"{name}.log").read_text().splitlines()
        assert header.startswith("=== ") and header.endswith(flags)
        assert output == [f"flags {flags}", f"cwd {tmp_path}"]

    # A second launch appends to the logs
    assert launch.main(launch.Args(games=["climber"], methods=["snd-v"], seeds=[1], runs_root=tmp_path)) == 0
    assert (logs / "climber__snd-v__1.log").read_text().count("=== ") == 2


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
    runs_root = tmp_path / "runs root"  # a space: quoted in the messages
    wrapper = f"import sys; sys.path.insert(0, {str(ROOT / 'benchmark')!r}); import launch; from pathlib import Path; "
    wrapper += "real, root = launch.script_module, launch.ROOT; launch.script_module = lambda path: real(root / path.name); "
    wrapper += f"launch.ROOT = Path({str(scripts)!r}); sys.exit(launch.main(launch.tyro.cli(launch.Args)))"
    flags = ["--games", "jumper", "--methods", "rnd", "--seeds", "1", "2", "--runs-root", str(runs_root)]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    command = [sys.executable, "-c", wrapper, *flags]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    first = runs_root / "logs" / "jumper__rnd__1.log"
    output = lambda: first.read_text().splitlines()[1:] if first.exists() else []  # below the launcher's header
    deadline = time.time() + 60
    while output() != ["running"] and time.time() < deadline:
        time.sleep(0.1)
    assert output() == ["running"]
    os.killpg(launcher.pid, signal.SIGINT)  # as a Ctrl-C in its terminal: the launcher and its runs
    out, _ = launcher.communicate(timeout=30)
    assert launcher.returncode == 1
    assert f"interrupted: the runs in progress save a checkpoint and stop; the same launch (--runs-root '{runs_root}')" in out
    assert "0 done, 0 running elsewhere, 1 stopped, 0 failed, 1 not started" in out
    assert f"stopped jumper__rnd__1: exit code 130 (SIGINT), log '{first}'" in out
    assert output() == ["running", "saved"]
    assert not (runs_root / "logs" / "jumper__rnd__2.log").exists()


def test_the_launcher_is_executable_like_the_table_scripts():
    path = ROOT / "benchmark" / "launch.py"
    assert path.stat().st_mode & stat.S_IXUSR and path.read_text().startswith("#!/usr/bin/env python3\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0 and "--script-args" in result.stdout, result.stderr


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
    grid_flags = ["--games", *games, "--methods", "baseline", "rnd", "snd-v", "snd-std", "snd-vic", "--seeds", "1", "2", "3"]
    assert shown == [str(ROOT / "benchmark" / "launch.py"), *grid_flags, *flags]

    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run([str(path), *flags], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    runs = launch.expand(games, launch.METHODS, [1, 2, 3])
    assert len(runs) == len(games) * 5 * 3
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
