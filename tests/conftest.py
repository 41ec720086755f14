"""Helpers shared by the tests: the scripts, importing one as a module, running one as a user would (also with a patch
applied first, to inject a fault), reading its TensorBoard run, and describing networks layer by layer."""

import functools
import glob
import hashlib
import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

# The tests run in two workers (pyproject.toml), each starting scripts with env workers: one OpenMP thread per process.
# More oversubscribe 2 cores, and OpenMP threads that spin-wait for each other then slow a tiny run several-fold.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
RND, SND_V, SND_STD, SND_VIC = "ppo_rnd_atari.py", "ppo_snd_v_atari.py", "ppo_snd_std_atari.py", "ppo_snd_vic_atari.py"
ATARI = (RND, SND_V, SND_STD, SND_VIC)
SND_ATARI = (SND_V, SND_STD, SND_VIC)
PROCGEN = "ppo_snd_procgen.py"  # the four methods in one script, `--method`
SCRIPTS = ATARI + (PROCGEN,)  # the scripts with an exploration bonus
BASELINE, PROCGEN_BASELINE = "ppo_atari.py", "ppo_procgen.py"  # PPO alone, the paper's baseline
EVERY_SCRIPT = SCRIPTS + (BASELINE, PROCGEN_BASELINE)
PROCGEN_METHODS = ("rnd", "snd-v", "snd-std", "snd-vic")
SQRT2 = math.sqrt(2)


@functools.cache
def load_script(name: str):
    """Imports `ROOT/name` (e.g. "ppo_rnd_atari.py") without running its main block."""
    spec = importlib.util.spec_from_file_location(name[: -len(".py")], ROOT / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # tyro and inspect look classes up by their module
    spec.loader.exec_module(module)
    return module


def short(script: str) -> str:
    """A test id: 'ppo_snd_vic_atari.py' -> 'snd_vic'."""
    return script.removeprefix("ppo_").removesuffix(".py").removesuffix("_atari")


@pytest.fixture(scope="session")
def rnd():
    return load_script(RND)


@pytest.fixture(scope="session")
def procgen():
    return load_script(PROCGEN)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """On 2 shared cores, two OpenMP threads make the orthogonal inits of the networks about 10 times slower."""
    torch.set_num_threads(1)


# A run small enough for 2 CPU cores: 2 envs x 16 steps, episodes capped at 20 steps so several finish.
TINY_RUN = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--eval-episodes", "0", "--no-cuda"]
ATARI_TINY_RUN = TINY_RUN + ["--max-episode-steps", "20"]
BATCH = 2 * 16


def tiny_run(script: str) -> list:
    """TINY_RUN with the episode cap where the script has one (Atari)."""
    return TINY_RUN if script in (PROCGEN, PROCGEN_BASELINE) else ATARI_TINY_RUN


def script_command(script: str, args: list, patch: str = "") -> list:
    """`python script args`, or, with `patch` (Python code, e.g. a monkeypatch of torch), a wrapper that runs `patch`
    and then the script as `__main__`, as `python script` would."""
    if not patch:
        return [sys.executable, str(ROOT / script), *args]
    runner = f"import runpy, sys\n{patch}\nsys.argv = [{str(ROOT / script)!r}] + sys.argv[1:]\n"
    runner += f"runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n"
    return [sys.executable, "-c", runner, *args]


def run_script(script: str, args: list, cwd: Path, timeout: float = 240, check: bool = True, patch: str = ""):
    """Runs the script as a user would, in `cwd`, returning the CompletedProcess; see `script_command`."""
    result = subprocess.run(
        script_command(script, args, patch),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


STARTED = []  # the processes `start_script` started, killed with their groups after each test


def start_script(script: str, args: list, cwd: Path, patch: str = "") -> subprocess.Popen:
    """The script started in a session of its own (so a test can signal its whole process group), output to pipes."""
    process = subprocess.Popen(
        script_command(script, args, patch),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    STARTED.append(process)
    return process


@pytest.fixture(autouse=True)
def kill_what_a_test_started():
    yield
    while STARTED:
        process = STARTED.pop()
        for pid in group_processes(process.pid):
            os.kill(pid, 9)
        process.wait()


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> list:
    """Reads the process's stdout until a line holding `text`; returns the lines read. Fails if it exits first."""
    import selectors
    import time

    lines, deadline = [], time.time() + timeout
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    while time.time() < deadline:
        if selector.select(timeout=1):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if text in line:
                return lines
    raise AssertionError(f"no line with {text!r} (exit code {process.poll()}); read:\n{''.join(lines)}")


def group_processes(pgid: int) -> list:
    """The PIDs of the live processes of process group `pgid` (from /proc), zombies aside."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.split("/")[2]))
    return found


def run_dirs(cwd: Path) -> list:
    return sorted(glob.glob(str(cwd / "runs" / "*")))


# The flags of `finished_rnd_run`: two iterations, a checkpoint after each (so checkpoint.prev.pt exists), a saved model
FINISHED_RND_FLAGS = ATARI_TINY_RUN + ["--total-timesteps", str(2 * BATCH), "--checkpoint-interval", "0", "--save-model"]


@pytest.fixture(scope="session")
def finished_rnd_run(tmp_path_factory) -> str:
    """A finished run of `ppo_rnd_atari.py` with FINISHED_RND_FLAGS, made once; tests use a copy (`copy_run`)."""
    cwd = tmp_path_factory.mktemp("finished_rnd_run")
    run_script(RND, FINISHED_RND_FLAGS, cwd)
    return run_dirs(cwd)[0]


def copy_run(run_dir: str, cwd: Path) -> str:
    """A copy of the run folder `run_dir` in `cwd`/runs, as if that run had been made there."""
    return str(shutil.copytree(run_dir, cwd / "runs" / os.path.basename(run_dir)))


def read_scalars(run_dir: str) -> dict:
    """{tag: [(step, value), ...]} as TensorBoard shows it (points purged by a resumed run are gone)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def raw_scalar_steps(run_dir: str, tag: str) -> list:
    """Every step written for `tag`, in file order, purges ignored: what the writers actually put on disk."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            if any(value.tag == tag for value in event.summary.value):
                steps.append(event.step)
    return steps


def tree(path) -> dict:
    """Every file below `path` with a digest of its bytes."""
    return {
        os.path.join(d, f): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
        for d, _, files in os.walk(path)
        for f in files
    }


def tiny_args(script, **overrides):
    """The script's Args for a tiny run, checked (runtime sizes filled in) as its main block does."""
    args = script.Args(**{"num_envs": 2, "num_steps": 16, "num_minibatches": 2, "total_timesteps": 320, **overrides})
    script.check_args(args)
    return args


# Networks, layer by layer


def describe(sequential: nn.Module) -> list:
    """Each layer as a tuple: ("conv", in, out, kernel, stride, padding), ("linear", in, out) or the activation name."""
    layers = []
    for layer in sequential:
        if isinstance(layer, nn.Conv2d):
            layers.append(
                ("conv", layer.in_channels, layer.out_channels, layer.kernel_size[0], layer.stride[0], layer.padding[0])
            )
        elif isinstance(layer, nn.Linear):
            layers.append(("linear", layer.in_features, layer.out_features))
        else:
            layers.append(type(layer).__name__)
    return layers


def assert_orthogonal(weight: torch.Tensor, gain: float):
    """W (flattened to rows x fan-in) has orthogonal rows (or columns) of norm `gain`."""
    w = weight.detach().reshape(weight.shape[0], -1).double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    torch.testing.assert_close(gram, gain**2 * eye, atol=1e-5 + 1e-4 * gain**2, rtol=0)


def weighted(module: nn.Module) -> list:
    """The conv and linear layers of `module`, in order."""
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def assert_layer_inits(module: nn.Module, gains: list):
    layers = weighted(module)
    assert len(layers) == len(gains)
    for layer, gain in zip(layers, gains):
        assert_orthogonal(layer.weight, gain)
        assert torch.all(layer.bias == 0)
