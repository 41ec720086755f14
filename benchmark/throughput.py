"""Agent steps per second of the training scripts, with the time split of an iteration and the peak memory.

Runs each script for a few iterations in a scratch folder, then reads its TensorBoard run: the wall time between
consecutive iterations and the `perf/*_seconds` each iteration logged. The first iteration (start-up, allocation,
first env resets) is left out unless only one is run. While it runs, the host memory is read from /proc (Linux): the
peak RSS of the training process (the kernel's high-water mark), and the peak PSS summed over it and its env workers,
sampled every 10 s and whenever the training process grows (PSS splits shared pages among the processes sharing
them, so the sum is the memory the run really holds). On CUDA the peak GPU memory is the script's own
`perf/cuda_peak_memory_gib` (torch's peak allocation).

    python benchmark/throughput.py --num-envs 8 --num-steps 128 --iterations 3  # every script and procgen method
    python benchmark/throughput.py --scripts "ppo_snd_procgen.py --method rnd --env-id coinrun"  # flags after the name

On CUDA the scripts read the clock of the intrinsic-reward, PPO-update and motivation-update phases after a device
synchronisation (their `phase_clock`), so each is charged its own kernels; the rollout's env and policy times are read
on the host, where each step's copy of the actions to the host waits for the policy's kernels.
"""

import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["env", "policy", "intrinsic_reward", "ppo_update", "motivation_update"]


@dataclass
class Args:
    scripts: list = field(
        default_factory=lambda: [
            "ppo_rnd_atari.py",
            "ppo_snd_v_atari.py",
            "ppo_snd_std_atari.py",
            "ppo_snd_vic_atari.py",
            *(f"ppo_snd_procgen.py --method {method}" for method in ("rnd", "snd-v", "snd-std", "snd-vic")),
        ]
    )
    """the scripts to measure, each with its own flags if any (`"ppo_snd_procgen.py --method rnd"`)"""
    num_envs: int = 8
    """parallel envs"""
    num_steps: int = 128
    """steps per env per rollout"""
    minibatch_size: int = 512
    """PPO minibatch size to aim for (the paper's 512): the script gets as many minibatches as divide the batch"""
    iterations: int = 3
    """iterations to run; all but the first are measured"""
    cuda: bool = True
    """use CUDA where it is available"""


def machine() -> str:
    cpu = platform.processor() or "cpu"
    if os.path.exists("/proc/cpuinfo"):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}"


def num_minibatches(args: Args) -> int:
    """As many minibatches of about `minibatch_size` as divide the batch evenly."""
    batch = args.num_envs * args.num_steps
    count = max(1, batch // args.minibatch_size)
    while batch % count:
        count -= 1
    return count


def process_tree(root: int) -> list:
    """`root` and every process descended from it, from the parent pids in /proc/*/stat."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # the name in parentheses may hold spaces: the fields after the last ")" are state, ppid, ...
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended while being read
            continue
    tree = [root]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def memory_kib(pid: int, file: str, field: str) -> int:
    """A `field:` line of /proc/<pid>/<file> in KiB, 0 if the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/{file}").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(field + ":")), 0)


PSS_INTERVAL_SECONDS = 10  # a PSS sweep walks every page table of ~130 processes: rare enough to cost ~1% of a core


def run_sampling_memory(command: list, cwd: str) -> dict:
    """Runs `command` to completion; returns the peak host memory in GiB, NaN where /proc is not there. The training
    process's peak RSS is the kernel's own high-water mark (VmHWM), read each second; the PSS sum is sampled."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL)
    peak_rss = peak_pss = rss_at_last_pss = 0
    last_pss_time = 0.0
    while process.poll() is None:
        if os.path.exists("/proc/self/smaps_rollup"):
            peak_rss = max(peak_rss, memory_kib(process.pid, "status", "VmHWM"))
            rss = memory_kib(process.pid, "status", "VmRSS")
            # a PSS sweep every 10 s, and whenever the training process has grown by 5% since the last one
            if time.monotonic() - last_pss_time >= PSS_INTERVAL_SECONDS or rss > 1.05 * rss_at_last_pss:
                last_pss_time, rss_at_last_pss = time.monotonic(), rss
                peak_pss = max(peak_pss, sum(memory_kib(pid, "smaps_rollup", "Pss") for pid in process_tree(process.pid)))
        time.sleep(1.0)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    to_gib = lambda kib: kib / 2**20 if kib else float("nan")  # noqa: E731
    return {"host_rss_gib": to_gib(peak_rss), "host_pss_gib": to_gib(peak_pss)}


def measure(script: str, args: Args) -> dict:
    batch = args.num_envs * args.num_steps
    with tempfile.TemporaryDirectory() as scratch:
        name, *flags = shlex.split(script)
        command = [
            sys.executable,
            str(ROOT / name),
            *flags,
            "--num-envs",
            str(args.num_envs),
            "--num-steps",
            str(args.num_steps),
            "--num-minibatches",
            str(num_minibatches(args)),
            "--total-timesteps",
            str(batch * args.iterations),
            "--eval-episodes",
            "0",
            "--checkpoint-interval",
            "1e9",
            "--cuda" if args.cuda else "--no-cuda",
        ]
        memory = run_sampling_memory(command, scratch)
        (run_dir,) = Path(scratch, "runs").iterdir()
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        events.Reload()
    sps_events = events.Scalars("charts/SPS")
    measured = slice(1, None) if len(sps_events) > 1 else slice(None)
    if len(sps_events) > 1:  # wall time between the ends of consecutive iterations
        iteration_seconds = [b.wall_time - a.wall_time for a, b in zip(sps_events, sps_events[1:])]
    else:
        iteration_seconds = [batch / sps_events[0].value]
    mean = lambda values: sum(values) / len(values)
    seconds = mean(iteration_seconds)
    logged = set(events.Tags()["scalars"])  # the baselines have no intrinsic reward or motivation phase: 0 s
    split = {
        phase: (
            mean([e.value for e in events.Scalars(f"perf/{phase}_seconds")][measured])
            if f"perf/{phase}_seconds" in logged
            else 0.0
        )
        for phase in PHASES
    }
    split["other"] = max(0.0, seconds - sum(split.values()))
    if "perf/cuda_peak_memory_gib" in events.Tags()["scalars"]:
        memory["gpu_peak_gib"] = max(e.value for e in events.Scalars("perf/cuda_peak_memory_gib"))
    return {"sps": batch / seconds, "seconds": seconds, "split": split, "memory": memory}


def main(args: Args) -> None:
    print(f"machine: {machine()}")
    print(f"envs x steps: {args.num_envs} x {args.num_steps}, {num_minibatches(args)} minibatches")
    print(f"iterations: {args.iterations} (the first is left out)\n")
    header = ["script", "agent steps/s", "s/iteration", *PHASES, "other", "host RSS GiB", "host PSS GiB", "GPU GiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for script in args.scripts:
        result = measure(script, args)
        shares = [
            f"{result['split'][p]:.2f} ({100 * result['split'][p] / result['seconds']:.0f}%)" for p in [*PHASES, "other"]
        ]
        memory = result["memory"]
        gpu = f"{memory['gpu_peak_gib']:.2f}" if "gpu_peak_gib" in memory else "-"
        print(
            f"| {script} | {result['sps']:.0f} | {result['seconds']:.2f} | "
            + " | ".join(shares)
            + f" | {memory['host_rss_gib']:.2f} | {memory['host_pss_gib']:.2f} | {gpu} |",
            flush=True,
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
