"""Agent steps per second of the rollout alone: the policy forward and the env step, as the scripts do them, and the
variants the rollout could take, at each number of envs.

- `sequential`: one vector env of all envs. Each vector step computes the actions of all envs, then steps all envs
  (the scripts' rollout before the pipelined one).
- `two-halves`: what the Atari scripts do. Two vector envs of half the envs each; while one half's workers step, the
  main process computes the other half's actions (`step_async` / `step_wait`), pipelined across vector steps. The same
  transitions per env, the actions drawn in another order.
- `two-halves-per-step`: the same two halves within each vector step: the first half's actions, its step started,
  the second half's actions (while the first steps), its step started, then both waited for.
- `learner-1-thread`: sequential with `torch.set_num_threads(1)` in the learner, which leaves the cores to the env
  workers (each already runs one thread).

    python benchmark/rollout.py --num-envs 32 128 --steps 64
    python benchmark/rollout.py --script ppo_snd_procgen.py --num-envs 32 128   # Procgen: one C++ env, no halves

Each figure is the mean over `--steps` vector steps after `--warmup` steps, with the env and policy time per step.
"""

import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmark"))
from throughput import machine  # noqa: E402  (the benchmark tools share one description of the machine)


@dataclass
class Args:
    script: str = "ppo_snd_vic_atari.py"
    """the script whose envs and agent are used (the four Atari scripts share both)"""
    env_id: str = ""
    """the game; default: the script's"""
    num_envs: list = field(default_factory=lambda: [32, 128])
    """the numbers of envs to measure"""
    steps: int = 64
    """vector steps measured per variant"""
    warmup: int = 8
    """vector steps run first and not measured"""
    variants: list = field(default_factory=lambda: ["sequential", "two-halves", "two-halves-per-step", "learner-1-thread"])
    """the variants to measure (see the module docstring)"""
    cuda: bool = True
    """use CUDA where it is available"""


def load(script: str):
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Timer:
    def __init__(self):
        self.env = self.policy = 0.0

    def time(self, phase: str, function, *args):
        tic = time.perf_counter()
        result = function(*args)
        setattr(self, phase, getattr(self, phase) + time.perf_counter() - tic)
        return result


to_device = None  # the measured script's own copy to the device (pinned and non-blocking on CUDA), set by main


def policy(agent, obs: np.ndarray, device) -> np.ndarray:
    """The rollout's policy step as the scripts take it: observations to the device, the actions back."""
    with torch.no_grad():
        return agent.get_action_and_value(to_device(obs, device))[0].cpu().numpy()


def make_envs(module, env_id: str, num_envs: int, first_seed: int = 0):
    """The script's vector env, reset; returns (envs, observations)."""
    if hasattr(module, "ProcgenVectorEnv"):
        envs = module.ProcgenVectorEnv(env_id, num_envs)
        return envs, envs.reset(seed=first_seed)[0]
    envs = module.make_vector_env(env_id, num_envs, module.Args.max_episode_steps)
    return envs, envs.reset(seed=list(range(first_seed, first_seed + num_envs)))[0]


def sequential(module, agent, env_id: str, num_envs: int, args: Args, device, timer: Timer) -> None:
    envs, obs = make_envs(module, env_id, num_envs)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            timer.__init__()
        actions = timer.time("policy", policy, agent, obs, device)
        obs = timer.time("env", envs.step, actions)[0]
    envs.close()


def two_halves(module, agent, env_id: str, num_envs: int, args: Args, device, timer: Timer) -> None:
    """Half A steps while half B's actions are computed, then the other way round: per vector step, each half's
    workers run during the other half's policy forward."""
    halves, obs = zip(*[make_envs(module, env_id, num_envs // 2, i * num_envs // 2) for i in range(2)])
    obs = list(obs)
    halves[0].step_async(policy(agent, obs[0], device))
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            timer.__init__()
        halves[1].step_async(timer.time("policy", policy, agent, obs[1], device))
        obs[0] = timer.time("env", halves[0].step_wait)[0]
        halves[0].step_async(timer.time("policy", policy, agent, obs[0], device))
        obs[1] = timer.time("env", halves[1].step_wait)[0]
    halves[0].step_wait()
    for envs in halves:
        envs.close()


def two_halves_per_step(module, agent, env_id: str, num_envs: int, args: Args, device, timer: Timer) -> None:
    halves, obs = zip(*[make_envs(module, env_id, num_envs // 2, i * num_envs // 2) for i in range(2)])
    obs = list(obs)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            timer.__init__()
        for half, half_obs in zip(halves, obs):
            half.step_async(timer.time("policy", policy, agent, half_obs, device))
        obs = [timer.time("env", half.step_wait)[0] for half in halves]
    for envs in halves:
        envs.close()


VARIANTS = {"sequential": sequential, "two-halves": two_halves, "two-halves-per-step": two_halves_per_step}


def main(args: Args) -> None:
    global to_device
    module = load(args.script)
    to_device = module.to_device
    env_id = module.resolve_env_id(args.env_id or module.Args.env_id)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    num_actions = (
        module.ProcgenVectorEnv.single_action_space.n
        if hasattr(module, "ProcgenVectorEnv")
        else module.gym.make(env_id).action_space.n
    )
    agent = module.Agent(num_actions).to(device, memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    print(f"machine: {machine()}; learner threads {threads}")
    print(f"{args.script} on {env_id}, {args.steps} vector steps after {args.warmup}\n")
    print("| envs | variant | agent steps/s | env ms/step | policy ms/step |")
    print("|---|---|---|---|---|")
    for num_envs in args.num_envs:
        for variant in args.variants:
            if variant.startswith("two-halves") and hasattr(module, "ProcgenVectorEnv"):
                continue  # one C++ object steps all envs on its own threads: nothing to overlap
            timer = Timer()
            torch.set_num_threads(1 if variant == "learner-1-thread" else threads)
            VARIANTS.get(variant, sequential)(module, agent, env_id, num_envs, args, device, timer)
            seconds = timer.env + timer.policy
            print(
                f"| {num_envs} | {variant} | {num_envs * args.steps / seconds:.0f} | {1000 * timer.env / args.steps:.1f} | "
                f"{1000 * timer.policy / args.steps:.1f} |",
                flush=True,
            )
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main(tyro.cli(Args))
