"""benchmark/throughput.py measures a real run and prints one table row per script."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT


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
    assert float(sps) > 0 and abs(float(sps) * float(seconds) - 32) < 1  # 2 x 16 agent steps per iteration
    shares = [re.fullmatch(r"([\d.]+) \((\d+)%\)", phase) for phase in phases]
    assert len(shares) == 6 and all(shares), phases  # env, policy, intrinsic reward, PPO, motivation, other
    assert 90 <= sum(int(m.group(2)) for m in shares) <= 110
    # a torch process holds a few hundred MB; the PSS sum counts the env workers too (procgen has none of its own)
    assert 0.1 < float(host_rss) < 8 and float(host_pss) > 0.1 and gpu == "-"
    if script == "ppo_rnd_atari.py":
        assert float(host_pss) > float(host_rss)  # the main process and its two env workers
