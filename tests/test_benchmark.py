"""benchmark/throughput.py measures a real run and prints one table row per script."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, load_script


@pytest.mark.parametrize("script", ["ppo_rnd_atari.py", "ppo_snd_procgen.py --method snd-std"])
def test_throughput_prints_steps_per_second_and_the_time_split(script):
    command = [
        sys.executable,
        str(ROOT / "benchmark" / "throughput.py"),
        "--scripts",
        script,
        "--num-envs",
        "2",
        "--num-steps",
        "16",
        "--iterations",
        "2",
        "--no-cuda",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
    assert "machine: " in output and "cores" in output
    (row,) = [line for line in output.splitlines() if line.startswith(f"| {script} |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    sps, seconds, *phases, host_rss, host_pss, gpu = cells[1:]
    # 2 x 16 agent steps per iteration; the row rounds the steps/s to a whole number, the seconds to 0.01
    assert float(sps) > 0 and abs(float(sps) * float(seconds) - 32) <= 0.5 * float(seconds) + 0.005 * float(sps) + 0.01
    shares = [re.fullmatch(r"([\d.]+) \((\d+)%\)", phase) for phase in phases]
    assert len(shares) == 6 and all(shares), phases  # env, policy, intrinsic reward, PPO, motivation, other
    assert 90 <= sum(int(m.group(2)) for m in shares) <= 110
    assert 0.1 < float(host_rss) < 8 and 0.1 < float(host_pss) < 8 and gpu == "-"  # a torch process: a few hundred MB


def test_the_memory_sample_covers_the_process_and_its_descendants():
    """The env workers' memory counts: a process started by a child of the measured process is found, and read."""
    throughput = load_script("benchmark/throughput.py")
    grandchild = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", grandchild])
    try:
        for _ in range(100):  # until the grandchild has started
            tree = throughput.process_tree(child.pid)
            if len(tree) == 2:
                break
            time.sleep(0.05)
        assert tree[0] == child.pid and len(tree) == 2, tree
        assert all(throughput.memory_kib(pid, "smaps_rollup", "Pss") > 0 for pid in tree)
    finally:
        for pid in reversed(tree):
            os.kill(pid, signal.SIGKILL)
        child.wait()
    assert throughput.memory_kib(child.pid, "status", "VmRSS") == 0  # gone: nothing to add
