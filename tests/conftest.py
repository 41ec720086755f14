"""Helpers shared by the tests: import a script as a module, run it as a user would, read its TensorBoard run."""

import functools
import glob
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def load_script(name: str):
    """Imports `ROOT/name` (e.g. "ppo_rnd_atari.py") without running its main block."""
    spec = importlib.util.spec_from_file_location(name[: -len(".py")], ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def rnd():
    return load_script("ppo_rnd_atari.py")


# A run small enough for 2 CPU cores: 2 envs x 16 steps, episodes capped at 20 steps so several finish.
TINY_RUN = [
    "--num-envs",
    "2",
    "--num-steps",
    "16",
    "--num-minibatches",
    "2",
    "--max-episode-steps",
    "20",
    "--eval-episodes",
    "0",
    "--no-cuda",
]


def run_script(script: str, args: list, cwd: Path, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `python script args` in `cwd` as a user would, returning its output."""
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def run_dirs(cwd: Path) -> list:
    return sorted(glob.glob(str(cwd / "runs" / "*")))


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
