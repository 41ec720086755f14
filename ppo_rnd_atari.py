# PPO + RND on hard-exploration Atari, the SND paper's RND baseline; docs and results: README.md#ppo_rnd_ataripy
import atexit
import difflib
import multiprocessing
import os
import random
import signal
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Optional

import ale_py
import cv2
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from stable_baselines3.common.atari_wrappers import MaxAndSkipEnv, WarpFrame
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

gym.register_envs(ale_py)


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch and the envs)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda will be enabled by default (a warning, and the CPU, where it is absent)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "snd"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to record videos of env 0 to the `videos/{run_name}` folder (mp4, OpenCV)"""
    video_interval: int = 100
    """record every `video_interval`-th episode of env 0"""
    save_model: bool = False
    """whether to save the agent to `runs/{run_name}/{exp_name}.cleanrl_model` after training"""
    eval_episodes: int = 10
    """episodes played with the trained policy after training (`eval/episodic_return`); 0 skips it"""
    evaluate: Optional[str] = None
    """evaluation only: play `eval_episodes` episodes with the agent in this model file or checkpoint, no training"""
    checkpoint_interval: float = 10.0
    """minutes between checkpoints (`runs/{run_name}/checkpoint.pt`); 0 saves after every iteration"""
    resume: Optional[str] = None
    """continue the run in this folder (`runs/{run_name}`) or from this checkpoint file, with the same flags"""

    # Algorithm specific arguments
    env_id: str = "MontezumaRevenge-v5"
    """the id of the environment: any ALE game, `MontezumaRevenge-v5` or `ALE/MontezumaRevenge-v5`"""
    total_timesteps: int = 128_000_000
    """total agent steps of the experiment (4 frames each)"""
    learning_rate: float = 1e-4
    """the learning rate of the optimizer"""
    num_envs: int = 128
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = False
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.998
    """the discount factor gamma of the extrinsic stream"""
    int_gamma: float = 0.99
    """the discount factor gamma of the intrinsic stream"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 32
    """the number of mini-batches (of the PPO epochs and of the motivation pass)"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    clip_coef: float = 0.1
    """the surrogate clipping coefficient"""
    ent_coef: float = 0.001
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function (sum of the extrinsic and intrinsic MSE)"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    ext_coef: float = 2.0
    """coefficient of the extrinsic advantage"""
    int_coef: float = 1.0
    """coefficient of the intrinsic advantage"""
    int_episodic: bool = True
    """if toggled, episode ends cut the intrinsic return too (the paper); off gives RND's non-episodic stream"""
    max_episode_steps: int = 4500
    """episode cap in agent steps, handled as a truncation"""

    # RND arguments
    eta: float = 1.0
    """intrinsic reward scale: r_int = clip(eta * error, 0, 1)"""
    motivation_learning_rate: float = 1e-4
    """the learning rate of the predictor's optimizer"""
    update_proportion: float = 0.25
    """proportion of the predictor-loss elements kept by the random mask"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


# Settings a resumed run may change (and the sizes derived from the others); every other flag must be the one the
# run was started with.
RESUMABLE_ARGS = {
    "resume",
    "total_timesteps",
    "checkpoint_interval",
    "cuda",
    "torch_deterministic",
    "track",
    "wandb_project_name",
    "wandb_entity",
    "capture_video",
    "video_interval",
    "save_model",
    "eval_episodes",
    "batch_size",
    "minibatch_size",
    "num_iterations",
}


# The range of each numeric flag, checked before anything starts
POSITIVE_ARGS = (
    "num_envs",
    "num_steps",
    "num_minibatches",
    "update_epochs",
    "total_timesteps",
    "max_episode_steps",
    "video_interval",
    "learning_rate",
    "motivation_learning_rate",
    "clip_coef",
)
NON_NEGATIVE_ARGS = ("eval_episodes", "checkpoint_interval", "eta", "ent_coef", "vf_coef", "max_grad_norm")
UNIT_INTERVAL_ARGS = ("gamma", "int_gamma", "gae_lambda", "update_proportion")


def check_args(args: Args) -> None:
    """Refuses bad settings with a message that says what to do, then fills in the runtime sizes."""
    for name in POSITIVE_ARGS:
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in NON_NEGATIVE_ARGS:
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    for name in UNIT_INTERVAL_ARGS:
        if not 0 < getattr(args, name) <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    args.batch_size = args.num_envs * args.num_steps
    if args.batch_size % args.num_minibatches != 0:
        divisors = [n for n in range(1, min(args.batch_size, 256) + 1) if args.batch_size % n == 0]
        raise ValueError(
            f"--num-envs {args.num_envs} x --num-steps {args.num_steps} = {args.batch_size} transitions do not split "
            f"into --num-minibatches {args.num_minibatches} equal minibatches; choose one of {divisors}"
        )
    args.minibatch_size = args.batch_size // args.num_minibatches
    if args.total_timesteps < args.batch_size:
        raise ValueError(
            f"--total-timesteps {args.total_timesteps} is below one rollout of --num-envs {args.num_envs} x "
            f"--num-steps {args.num_steps} = {args.batch_size} agent steps; raise it or shrink the rollout"
        )
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.resume and args.evaluate:
        raise ValueError("--resume and --evaluate exclude each other: evaluate a finished run's checkpoint on its own")
    if args.evaluate and args.eval_episodes == 0:
        raise ValueError("--evaluate needs --eval-episodes of at least 1")


def ale_game_id(env_id: str) -> str:
    """'MontezumaRevenge-v5' or 'ALE/MontezumaRevenge-v5' -> 'ALE/MontezumaRevenge-v5'; an unknown id raises a
    ValueError naming the closest games."""
    games = {k[len("ALE/") :]: k for k in gym.registry if k.startswith("ALE/") and k.endswith("-v5") and "-ram-" not in k}
    name = env_id[len("ALE/") :] if env_id.startswith("ALE/") else env_id
    if name in games:
        return games[name]
    lowercase = {game.lower(): game for game in games}
    close = [lowercase[m] for m in difflib.get_close_matches(name.lower(), lowercase, n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(close)}?" if close else "any ALE game works, e.g. MontezumaRevenge-v5 or Pitfall-v5"
    raise ValueError(f"unknown Atari env id {env_id!r}: {hint}")


# SPEC §1.4: the room number lives in one RAM byte (Montezuma's Revenge 3, Pitfall 1); other games have no rooms.
ROOM_RAM_ADDRESS = {"ALE/MontezumaRevenge-v5": 3, "ALE/Pitfall-v5": 1}


class AtariProtocol(gym.Wrapper):
    """The paper's reward and bookkeeping (SPEC §1.1): the agent gets max(0, sign r); `info["episode"]` reports, when an
    episode ends, its raw game score `r`, length `l`, the agent's reward events and the distinct rooms visited."""

    def __init__(self, env: gym.Env, room_address: Optional[int]):
        super().__init__(env)
        self.room_address = room_address

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.raw_return, self.reward_events, self.length, self.rooms = 0.0, 0, 0, set()
        self._read_room(info)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        agent_reward = 1.0 if reward > 0 else 0.0  # max(0, sign r): negative rewards are dropped (§1.1 item 4)
        self.raw_return += reward
        self.reward_events += int(agent_reward)
        self.length += 1
        self._read_room(info)
        if terminated or truncated:
            info["episode"] = {"r": self.raw_return, "l": self.length, "reward_events": self.reward_events}
            if self.room_address is not None:
                info["episode"]["rooms"] = len(self.rooms)
        return obs, agent_reward, terminated, truncated, info

    def _read_room(self, info: dict) -> None:
        if self.room_address is not None:
            info["room_id"] = int(self.env.unwrapped.ale.getRAM()[self.room_address])
            self.rooms.add(info["room_id"])


class RecordEpisodeVideo(gym.Wrapper):
    """Writes every `interval`-th episode as `{folder}/{prefix}-episode-{n}.mp4` with OpenCV, one frame per agent step."""

    def __init__(self, env: gym.Env, folder: str, prefix: str, interval: int, fps: int = 15):
        super().__init__(env)
        self.folder, self.prefix, self.interval, self.fps = folder, prefix, interval, fps
        self.episode, self.writer = -1, None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._close_writer()
        self.episode += 1
        if self.episode % self.interval == 0:
            frame = self.env.render()
            os.makedirs(self.folder, exist_ok=True)
            path = os.path.join(self.folder, f"{self.prefix}-episode-{self.episode}.mp4")
            self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, frame.shape[1::-1])
            self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.writer is not None:
            self.writer.write(cv2.cvtColor(self.env.render(), cv2.COLOR_RGB2BGR))
            if terminated or truncated:
                self._close_writer()
        return obs, reward, terminated, truncated, info

    def close(self):
        self._close_writer()
        super().close()

    def _close_writer(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def make_env(
    gym_id: str,
    max_episode_steps: int,
    video_folder: Optional[str] = None,
    video_prefix: str = "train",
    video_interval: int = 1,
):
    def thunk():
        if multiprocessing.parent_process() is not None:
            # In a vector-env worker: the main process alone handles SIGINT/SIGTERM (it saves a checkpoint, then closes us)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            cv2.setNumThreads(1)  # one process per env already uses the cores
        # SPEC §1.1: ALE v5, sticky actions 0.25 per frame, minimal action set; no no-op/fire reset, no episodic life
        env = gym.make(gym_id, frameskip=1, repeat_action_probability=0.25, render_mode="rgb_array" if video_folder else None)
        env = MaxAndSkipEnv(env, skip=4)
        env = gym.wrappers.TimeLimit(env, max_episode_steps)  # SPEC: the cap is a truncation (the reference: terminal)
        env = AtariProtocol(env, ROOM_RAM_ADDRESS.get(gym_id))
        if video_folder is not None:
            env = RecordEpisodeVideo(env, video_folder, video_prefix, video_interval)
        env = WarpFrame(env, width=96, height=96)  # grey, OpenCV's area filter (the reference: PIL's bicubic)
        env = gym.wrappers.ReshapeObservation(env, (96, 96))
        # Newest frame last; the stack starts filled with the reset frame (the reference keeps the old episode's frames)
        env = gym.wrappers.FrameStackObservation(env, 4)
        return env

    return thunk


def make_vector_env(
    gym_id: str,
    num_envs: int,
    max_episode_steps: int,
    video_folder: Optional[str] = None,
    video_prefix: str = "train",
    video_interval: int = 1,
) -> gym.vector.AsyncVectorEnv:
    """One worker process per env; observations come back through shared memory as uint8 (num_envs, 4, 96, 96).
    Same-step autoreset: an ended env returns its reset observation in its own row (the reference writes it into the
    wrong row, §1.3), the final one is in `info["final_obs"]`."""
    envs = gym.vector.AsyncVectorEnv(
        [
            make_env(gym_id, max_episode_steps, video_folder if i == 0 else None, video_prefix, video_interval)
            for i in range(num_envs)
        ],
        shared_memory=True,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    # The workers ignore SIGTERM, so after a crash multiprocessing's exit-time terminate() would wait for them forever:
    # close them through their pipes first (a no-op once closed)
    atexit.register(envs.close)
    return envs


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Actor-critic of §2.1 with an extrinsic and an intrinsic value head; reads uint8 (B, 4, 96, 96) stacks."""

    def __init__(self, num_actions: int):
        super().__init__()
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 3, stride=2, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 3, stride=2, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=2, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 128, 3, stride=1, padding=1)),
            nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(128 * 12 * 12, 512)),  # no activation: each head brings its own (§2.1)
        )
        self.actor = nn.Sequential(
            nn.ReLU(),
            layer_init(nn.Linear(512, 512), std=0.01),
            nn.ReLU(),
            layer_init(nn.Linear(512, num_actions), std=0.01),
        )
        # §2.1, §9 item 14: the critic reads the trunk output without a leading ReLU
        self.critic = nn.Sequential(layer_init(nn.Linear(512, 512), std=0.1), nn.ReLU())
        self.critic_ext = layer_init(nn.Linear(512, 1), std=0.01)
        self.critic_int = layer_init(nn.Linear(512, 1), std=0.01)

    def get_value(self, x):
        hidden = self.critic(self.network(x.float() / 255.0))
        return self.critic_ext(hidden).squeeze(1), self.critic_int(hidden).squeeze(1)

    def get_action_and_value(self, x, action=None):
        hidden = self.network(x.float() / 255.0)
        probs = Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        critic_hidden = self.critic(hidden)
        return (
            action,
            probs.log_prob(action),
            probs.entropy(),
            self.critic_ext(critic_hidden).squeeze(1),
            self.critic_int(critic_hidden).squeeze(1),
        )


def rnd_conv_encoder() -> list:
    """§2.3: the conv stack and 512-d projection shared in shape by the RND target and predictor (1 x 96 x 96 input)."""
    return [
        layer_init(nn.Conv2d(1, 32, 8, stride=4, padding=2)),
        nn.ELU(),
        layer_init(nn.Conv2d(32, 64, 3, stride=2, padding=1)),
        nn.ELU(),
        layer_init(nn.Conv2d(64, 64, 3, stride=1, padding=1)),
        nn.ELU(),
        nn.Flatten(),
        layer_init(nn.Linear(64 * 12 * 12, 512)),
    ]


class RNDModel(nn.Module):
    """§2.3: a frozen random target and a predictor trained to imitate it; the error is high on unfamiliar frames."""

    def __init__(self):
        super().__init__()
        self.target = nn.Sequential(*rnd_conv_encoder())
        self.predictor = nn.Sequential(
            *rnd_conv_encoder(),
            nn.ELU(),
            layer_init(nn.Linear(512, 512)),
            nn.ELU(),
            layer_init(nn.Linear(512, 512)),
        )
        self.target.requires_grad_(False)

    def forward(self, x):
        return self.target(x), self.predictor(x)


def rnd_input(frames: torch.Tensor, frame_mean: torch.Tensor) -> torch.Tensor:
    """SPEC §3: the newest frame minus its running mean (no division by a std), scaled to [0, 1] units: frames
    (..., 96, 96) give (..., 1, 96, 96)."""
    return ((frames.float() - frame_mean.float()) / 255.0).unsqueeze(-3)


def distillation_error(target_features: torch.Tensor, predicted_features: torch.Tensor) -> torch.Tensor:
    """§3: e = 1/2 * sum_k (T_k - P_k)^2 per sample."""
    return 0.5 * (target_features - predicted_features).pow(2).sum(1)


def intrinsic_reward(error: torch.Tensor, eta: float) -> torch.Tensor:
    """§3: r_int = clip(eta * e, 0, 1); no normalisation by a running std."""
    return (eta * error).clamp(0.0, 1.0)


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, keep_proportion: float) -> torch.Tensor:
    """§4.1: the MSE over a random `keep_proportion` of the (sample, feature) elements; the target is not trained."""
    squared_error = (predicted - target.detach()).pow(2)
    mask = (torch.rand_like(squared_error) < keep_proportion).float()
    return (squared_error * mask).sum() / mask.sum().clamp(min=1.0)


def target_feature_spread(target_features: torch.Tensor) -> torch.Tensor:
    """Mean over features of the batch std of each target feature: how far apart the target keeps states."""
    return target_features.std(0).mean()


class RunningMean:
    """§3: running mean of frames where each vector step's batch mean counts as one sample; it starts as one sample
    of 0, as the reference's. Kept in float64 on the device."""

    def __init__(self, shape: tuple, device: torch.device):
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.count = 1

    def update(self, step_frames: torch.Tensor) -> torch.Tensor:
        """Adds the frames of T vector steps, (T, N, ...), in one pass; returns the mean after each step, (T, ...), the
        same as T one-step updates would leave: the mean of all samples so far, from a cumulative sum."""
        step_batch_means = step_frames.sum(1, dtype=torch.float64) / step_frames.shape[1]
        counts = self.count + torch.arange(1, len(step_frames) + 1, device=self.mean.device)
        step_means = (self.count * self.mean + step_batch_means.cumsum(0)) / counts.view(-1, *[1] * self.mean.dim())
        self.mean.copy_(step_means[-1])
        self.count += len(step_frames)
        return step_means

    def state_dict(self) -> dict:
        return {"mean": self.mean.clone(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean.copy_(state["mean"])
        self.count = state["count"]


def next_state_frames(frames, final_frames, final_frame_slot, start: int, stop: int, num_envs: int) -> torch.Tensor:
    """Newest frames of s_{t+1} for the flat (step-major) rollout indices start..stop-1, read from the rollout
    storage without a copy of it. `frames`: newest frames of the num_steps + 1 stored states, flattened, so s_{t+1} is
    num_envs rows further on; where an episode ended at t, it is instead its final observation, kept in
    `final_frames` at index `final_frame_slot` (-1 elsewhere)."""
    next_frames = frames[start + num_envs : stop + num_envs]
    if len(final_frames) == 0:
        return next_frames
    slot = final_frame_slot[start:stop]
    return torch.where((slot >= 0)[:, None, None], final_frames[slot.clamp(min=0)], next_frames)


def rollout_distillation_errors(motivation, next_frames, step_means, chunk_frames: int) -> torch.Tensor:
    """SPEC §3: the error of every s_{t+1} of a rollout, from its newest frames (T, N, 96, 96) and the running mean
    after each step (T, 96, 96), after the rollout in passes of about `chunk_frames` frames (whole steps): the
    networks do not change during a rollout, so the errors are those of scoring each step as it came. Returns (T, N)."""
    chunk_steps = max(1, chunk_frames // next_frames.shape[1])
    errors = [
        distillation_error(*motivation(rnd_input(frames, means[:, None]).flatten(0, 1)))
        for frames, means in zip(next_frames.split(chunk_steps), step_means.split(chunk_steps))
    ]
    return torch.cat(errors).view(next_frames.shape[:2])


def compute_gae(rewards, values, next_value, final_values, terminations, truncations, gamma, gae_lambda, episodic=True):
    """GAE for one reward stream of a (num_steps, num_envs) rollout; returns (advantages, returns).
    values[t] = V(s_t); next_value = V(s_T), the state after the last step (SPEC: bootstrapped, the reference uses 0);
    final_values[t] = V(final observation) where the episode was truncated at step t (SPEC: the cap is a truncation,
    bootstrapped; the reference treats it as terminal). Episodic: an episode end stops the trace and a termination the
    bootstrap. Non-episodic (RND's intrinsic stream): the return runs on into the next episode's first state."""
    next_values = torch.cat([values[1:], next_value[None]])
    if episodic:
        next_values = torch.where(truncations, final_values, next_values)
        next_nonterminal = 1.0 - terminations.float()
        trace_continues = 1.0 - (terminations | truncations).float()
    else:
        next_nonterminal = trace_continues = torch.ones_like(rewards)
    advantages = torch.zeros_like(rewards)
    last_advantage = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_nonterminal[t] * next_values[t] - values[t]
        last_advantage = delta + gamma * gae_lambda * trace_continues[t] * last_advantage
        advantages[t] = last_advantage
    return advantages, advantages + values


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """1 - Var(returns - values) / Var(returns); nan where the returns do not vary."""
    variance = returns.var()
    return torch.where(variance > 0, 1.0 - (returns - values).var() / variance, torch.nan)


def evaluate(
    agent: Agent, args: Args, device: torch.device, writer: SummaryWriter, video_folder: Optional[str] = None
) -> None:
    """Plays `args.eval_episodes` episodes with the agent's stochastic policy and logs them as `eval/*`.
    Each env plays a fixed share of the episodes, so short episodes are not favoured."""
    num_envs = min(args.num_envs, args.eval_episodes)
    envs = make_vector_env(
        ale_game_id(args.env_id), num_envs, args.max_episode_steps, video_folder, "eval", args.video_interval
    )
    quota = np.full(num_envs, args.eval_episodes // num_envs)
    quota[: args.eval_episodes % num_envs] += 1
    finished = np.zeros(num_envs, dtype=int)
    # Seed sequence [seed, 0]: training uses [seed, iteration >= 1], so evaluation never replays training's envs
    obs, _ = envs.reset(seed=np.random.SeedSequence([args.seed, 0]).generate_state(num_envs).tolist())
    while (finished < quota).any():
        with torch.no_grad():
            action, _, _, _, _ = agent.get_action_and_value(torch.as_tensor(obs, device=device))
        obs, _, _, _, infos = envs.step(action.cpu().numpy())
        if "final_info" in infos:
            episode = infos["final_info"]["episode"]
            for i in np.flatnonzero(infos["final_info"]["_episode"] & (finished < quota)):
                idx = int(finished.sum())
                writer.add_scalar("eval/episodic_return", episode["r"][i], idx)
                writer.add_scalar("eval/episodic_reward_events", episode["reward_events"][i], idx)
                print(f"eval episode {idx}: return {episode['r'][i]}, reward events {episode['reward_events'][i]}")
                finished[i] += 1
    envs.close()


# Checkpoints: `checkpoint.pt` is the newest, `checkpoint.prev.pt` the one before it.
CHECKPOINT, PREVIOUS_CHECKPOINT = "checkpoint.pt", "checkpoint.prev.pt"
SCRIPT = os.path.basename(__file__)


class CheckpointError(ValueError):
    pass


def get_rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(legacy=False), "torch": torch.get_rng_state()}
    states["numpy"]["state"]["key"] = states["numpy"]["state"]["key"].tolist()  # plain types load with weights_only
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    numpy_state = {**states["numpy"], "state": {**states["numpy"]["state"]}}
    numpy_state["state"]["key"] = np.array(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def learner_state(agent, optimizer, motivation, motivation_optimizer) -> dict:
    """What the updates change: networks and optimisers."""
    return {
        "agent": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "motivation": motivation.state_dict(),
        "motivation_optimizer": motivation_optimizer.state_dict(),
    }


def progress_state(iteration: int, global_step: int, frame_mean: RunningMean, rooms_seen: np.ndarray) -> dict:
    """What a rollout changes, copied: counters, running statistics, rooms seen and RNG states."""
    return {
        "iteration": iteration,
        "global_step": global_step,
        "frame_mean": frame_mean.state_dict(),
        "rooms_seen": torch.from_numpy(rooms_seen.copy()),
        "rng": get_rng_states(),
    }


def restore_checkpoint(checkpoint, agent, optimizer, motivation, motivation_optimizer, frame_mean, rooms_seen):
    """Loads everything `learner_state` and `progress_state` saved; returns (iteration, global_step)."""
    agent.load_state_dict(checkpoint["agent"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    motivation.load_state_dict(checkpoint["motivation"])
    motivation_optimizer.load_state_dict(checkpoint["motivation_optimizer"])
    frame_mean.load_state_dict(checkpoint["frame_mean"])
    rooms_seen[:] = checkpoint["rooms_seen"].numpy()
    set_rng_states(checkpoint["rng"])
    return checkpoint["iteration"], checkpoint["global_step"]


def save_checkpoint(run_dir: str, checkpoint: dict) -> None:
    """Writes a temporary file and syncs it to disk, then renames: `checkpoint.pt` -> `checkpoint.prev.pt`, new ->
    `checkpoint.pt`. A crash at any moment leaves at least one complete checkpoint."""
    latest, temporary = os.path.join(run_dir, CHECKPOINT), os.path.join(run_dir, CHECKPOINT + ".tmp")
    with open(temporary, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(latest):
        os.replace(latest, os.path.join(run_dir, PREVIOUS_CHECKPOINT))
    os.replace(temporary, latest)


def read_checkpoint(path: str) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, overwritten or not a torch file
        first_sentence = str(error).splitlines()[0].split(". ")[0]
        raise CheckpointError(f"{path} is unreadable ({type(error).__name__}: {first_sentence})") from None
    if not isinstance(checkpoint, dict) or "script" not in checkpoint:
        raise CheckpointError(f"{path} is not a checkpoint of these scripts")
    return checkpoint


def check_script(saved: dict, path: str) -> None:
    if saved["script"] != SCRIPT:
        raise CheckpointError(f"{path} was written by {saved['script']}, not {SCRIPT}: use that script")


def check_settings(saved: dict, path: str, args: Args) -> None:
    """Refuses a checkpoint written with other settings than these (those a resumed run may change aside)."""
    saved_args, current = saved["args"], asdict(args)
    differences = [
        f"--{key.replace('_', '-')} {saved_args.get(key)!r} (now {current.get(key)!r})"
        for key in sorted(set(saved_args) | set(current))
        if key not in RESUMABLE_ARGS and saved_args.get(key) != current.get(key)
    ]
    if differences:
        raise CheckpointError(
            f"{path} was written with other settings: {', '.join(differences)}; pass the flags the run was started with"
        )


def check_architecture(saved: dict, path: str, modules: dict) -> None:
    """Refuses state dicts whose names or shapes differ from what this script builds (`modules`: key -> builder)."""
    with torch.device("meta"):  # shapes only, nothing allocated
        for key, build in modules.items():
            expected = {name: tuple(t.shape) for name, t in build().state_dict().items()}
            found = {name: tuple(t.shape) for name, t in saved[key].items()}
            if found != expected:
                first = sorted(set(expected.items()) ^ set(found.items()))[:3]
                raise CheckpointError(
                    f"{path} holds another '{key}' architecture than this script builds "
                    f"(first differences: {first}); it was written by another version of it"
                )


def load_checkpoint(path: str, args: Args, build_motivation) -> tuple:
    """Reads the checkpoint to resume from: a file, or a run folder's newest readable one; `build_motivation()` builds
    the motivation model it must fit. Returns (checkpoint, file, unreadable files passed over). Raises CheckpointError,
    saying what to do, for anything that cannot be resumed."""
    if os.path.isdir(path):
        candidates = [os.path.join(path, name) for name in (CHECKPOINT, PREVIOUS_CHECKPOINT)]
        candidates = [file for file in candidates if os.path.exists(file)]
        if not candidates:
            raise CheckpointError(f"{path} holds no {CHECKPOINT} or {PREVIOUS_CHECKPOINT}: nothing to resume")
    elif os.path.isfile(path):
        candidates = [path]
    else:
        raise CheckpointError(f"--resume {path}: no such run folder or checkpoint file")
    errors = []
    for file in candidates:
        try:
            checkpoint = read_checkpoint(file)
        except CheckpointError as error:
            errors.append(str(error))
            continue
        check_script(checkpoint, file)
        check_settings(checkpoint, file, args)
        check_architecture(
            checkpoint, file, {"agent": lambda: Agent(checkpoint["num_actions"]), "motivation": build_motivation}
        )
        return checkpoint, file, candidates[: len(errors)]
    previous = os.path.join(os.path.dirname(path), PREVIOUS_CHECKPOINT)
    hint = (
        f"; the previous checkpoint may be intact: --resume {previous}"
        if os.path.isfile(path) and os.path.exists(previous) and path != previous
        else ""
    )
    raise CheckpointError("; ".join(errors) + hint)


def load_agent_file(path: str, args: Args) -> dict:
    """Reads a model saved by --save-model (or a checkpoint) for --evaluate, refusing another script's or game's."""
    if not os.path.isfile(path):
        raise CheckpointError(f"--evaluate {path}: no such file")
    saved = read_checkpoint(path)
    check_script(saved, path)
    if ale_game_id(saved["args"]["env_id"]) != ale_game_id(args.env_id):
        raise CheckpointError(
            f"{path} holds an agent trained on {saved['args']['env_id']}: pass --env-id {saved['args']['env_id']}"
        )
    check_architecture(saved, path, {"agent": lambda: Agent(saved["num_actions"])})
    return saved


stop_signals = []  # signals received; the loop checks it at each step


def request_stop(signum, frame):
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, exit. A second signal acts at once."""
    stop_signals.append(signum)
    signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    print(f"{signal.Signals(signum).name}: saving a checkpoint, then stopping (send it again to stop at once)", flush=True)


if __name__ == "__main__":
    args = tyro.cli(Args)
    # Bad input is refused here, before any env is built or file written.
    try:
        gym_id = ale_game_id(args.env_id)
        game = gym_id[len("ALE/") :]
        check_args(args)
        if args.track:
            try:
                import wandb
            except ImportError:
                raise ValueError("--track needs Weights & Biases: pip install wandb") from None
        checkpoint, checkpoint_file, unreadable = (
            load_checkpoint(args.resume, args, RNDModel) if args.resume else (None, None, [])
        )
        saved_agent = load_agent_file(args.evaluate, args) if args.evaluate else None
    except ValueError as error:
        sys.exit(f"error: {error}")

    if args.cuda and not torch.cuda.is_available():
        print("warning: CUDA is not available, running on the CPU (--no-cuda silences this)", file=sys.stderr)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    if checkpoint is not None:
        run_name, run_dir = checkpoint["run_name"], os.path.dirname(os.path.abspath(checkpoint_file))
        for file in unreadable:  # keep a corrupt newest checkpoint out of the rotation, so the good one stays
            print(
                f"warning: {file} is unreadable, resumed from {checkpoint_file}; it is kept as {file}.corrupt", file=sys.stderr
            )
            os.replace(file, file + ".corrupt")
    else:
        kind = f"{args.exp_name}-eval" if args.evaluate else args.exp_name
        run_name = f"{game}__{kind}__{args.seed}__{int(time.time())}"
        run_dir = os.path.join("runs", run_name)
    video_folder = f"videos/{run_name}" if args.capture_video else None
    if args.track:
        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            id=run_name,
            resume="allow",
            save_code=True,
        )
    # SPEC: a resumed run continues the same TensorBoard run; points logged after its checkpoint are purged
    writer = SummaryWriter(run_dir, purge_step=checkpoint["global_step"] + 1 if checkpoint else None)
    if checkpoint is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))

    # TRY NOT TO MODIFY: seeding (the reference seeds nothing, §9 item 19)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    if args.evaluate:
        agent = Agent(saved_agent["num_actions"]).to(device, memory_format=torch.channels_last)
        agent.load_state_dict(saved_agent["agent"])
        evaluate(agent, args, device, writer, video_folder)
        writer.close()
        sys.exit()

    # env setup
    envs = make_vector_env(gym_id, args.num_envs, args.max_episode_steps, video_folder, "train", args.video_interval)
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), "only discrete action space is supported"
    num_actions = int(envs.single_action_space.n)
    room_address = ROOM_RAM_ADDRESS.get(gym_id)
    run_header = {"script": SCRIPT, "args": asdict(args), "run_name": run_name, "num_actions": num_actions}

    # channels_last: the conv layout oneDNN and cuDNN run fastest; fused Adam: one kernel for all the parameters
    agent = Agent(num_actions).to(device, memory_format=torch.channels_last)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, fused=True)  # default eps 1e-8, as the reference (§6)
    motivation = RNDModel().to(device, memory_format=torch.channels_last)
    motivation_optimizer = optim.Adam(motivation.predictor.parameters(), lr=args.motivation_learning_rate, fused=True)
    frame_mean = RunningMean((96, 96), device)
    rooms_seen = np.zeros(256, dtype=bool)  # every room id any env has been in, over the whole run
    start_iteration, global_step = 1, 0
    if checkpoint is not None:
        last_iteration, global_step = restore_checkpoint(
            checkpoint, agent, optimizer, motivation, motivation_optimizer, frame_mean, rooms_seen
        )
        start_iteration = last_iteration + 1
        print(f"resumed {run_dir} at iteration {start_iteration}, global step {global_step}; the envs start from reset")
        del checkpoint  # its copy of the weights

    # ALGO Logic: Storage setup (on the device; observations stay uint8)
    # A rollout's intrinsic rewards are computed after it, in passes of this many frames: large ones on a GPU (few
    # kernel launches), about 128 on a CPU, whose caches favour small passes (measured: README, Throughput)
    reward_chunk_frames = 4096 if device.type == "cuda" else 128
    # One row more than the steps: the last holds s_T, so obs[t + 1] is s_{t+1} wherever no episode ended at t
    obs = torch.zeros(
        (args.num_steps + 1, args.num_envs) + envs.single_observation_space.shape, dtype=torch.uint8, device=device
    )
    # Where an episode ended at step t, s_{t+1} is its final observation: its newest frame is kept aside at this slot
    # (the reference's SND pairs s_t with whatever its buffer row held, at times another env's reset frame, §4.0)
    final_frame_slot = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    ext_rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    terminations = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool, device=device)
    truncations = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool, device=device)
    ext_values = torch.zeros((args.num_steps, args.num_envs), device=device)
    int_values = torch.zeros((args.num_steps, args.num_envs), device=device)
    final_ext_values = torch.zeros((args.num_steps, args.num_envs), device=device)
    final_int_values = torch.zeros((args.num_steps, args.num_envs), device=device)

    # TRY NOT TO MODIFY: start the game
    # Env seeds differ per env and per resume, so a resumed run does not replay the episodes it started with
    env_seeds = np.random.SeedSequence([args.seed, start_iteration]).generate_state(args.num_envs).tolist()
    next_obs = torch.as_tensor(envs.reset(seed=env_seeds)[0], device=device)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    start_time = last_checkpoint_time = time.time()
    start_global_step = global_step

    for iteration in range(start_iteration, args.num_iterations + 1):
        # What the rollout changes, as it stands now: a stop during the rollout saves this, and the resumed run redoes it
        rollout_start = progress_state(iteration - 1, global_step, frame_mean, rooms_seen)
        timings = defaultdict(float)
        episode_returns = []
        final_ext_values.zero_()
        final_int_values.zero_()
        final_frame_slot.fill_(-1)
        final_frames = []
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / args.num_iterations) * args.learning_rate

        for step in range(args.num_steps):
            if stop_signals:
                break
            global_step += args.num_envs
            obs[step] = next_obs

            tic = time.perf_counter()
            with torch.no_grad():
                action, logprob, _, ext_value, int_value = agent.get_action_and_value(next_obs)
            actions[step], logprobs[step], ext_values[step], int_values[step] = action, logprob, ext_value, int_value
            cpu_action = action.cpu().numpy()
            timings["policy"] += time.perf_counter() - tic

            # TRY NOT TO MODIFY: execute the game and log data.
            tic = time.perf_counter()
            next_obs_np, reward, terminated, truncated, infos = envs.step(cpu_action)
            timings["env"] += time.perf_counter() - tic

            tic = time.perf_counter()
            ended = terminated | truncated
            ext_rewards[step] = torch.as_tensor(reward, device=device)  # already max(0, sign r) (AtariProtocol)
            terminations[step] = torch.as_tensor(terminated, device=device)
            truncations[step] = torch.as_tensor(truncated, device=device)
            next_obs = torch.as_tensor(next_obs_np, device=device)
            if room_address is not None:
                rooms_seen[infos["room_id"]] = True
            if ended.any():
                # SPEC: the reward is for s_{t+1}, which for an ended episode is its final observation, not the reset one
                final_obs = torch.as_tensor(np.stack(infos["final_obs"][ended]), device=device)
                ended_envs = torch.as_tensor(np.flatnonzero(ended), device=device)
                num_final_frames = sum(len(kept) for kept in final_frames)
                final_frame_slot[step, ended_envs] = torch.arange(len(ended_envs), device=device) + num_final_frames
                final_frames.append(final_obs[:, -1])
                if truncated.any():  # SPEC: bootstrap a truncated episode from its final observation's values
                    with torch.no_grad():
                        final_ext, final_int = agent.get_value(final_obs[torch.as_tensor(truncated[ended], device=device)])
                    truncated_envs = torch.as_tensor(np.flatnonzero(truncated), device=device)
                    final_ext_values[step, truncated_envs], final_int_values[step, truncated_envs] = final_ext, final_int
                final = infos["final_info"]
                if room_address is not None:
                    rooms_seen[final["room_id"][ended]] = True
                for i in np.flatnonzero(final["_episode"]):
                    writer.add_scalar("charts/episodic_return", final["episode"]["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", final["episode"]["l"][i], global_step)
                    writer.add_scalar("charts/episodic_reward_events", final["episode"]["reward_events"][i], global_step)
                    if room_address is not None:
                        writer.add_scalar("charts/episodic_rooms", final["episode"]["rooms"][i], global_step)
                    episode_returns.append(final["episode"]["r"][i])
            timings["policy"] += time.perf_counter() - tic

        if stop_signals:  # the partial rollout is dropped; the checkpoint is the state this iteration started from
            writer.flush()
            save_checkpoint(
                run_dir, {**run_header, **learner_state(agent, optimizer, motivation, motivation_optimizer), **rollout_start}
            )
            global_step = rollout_start["global_step"]
            break

        obs[-1] = next_obs
        # SPEC §3: the intrinsic rewards of the whole rollout at once; the motivation nets do not change during a rollout
        tic = time.perf_counter()
        b_frames = obs[:, :, -1].reshape(-1, 96, 96)  # a view: newest frames of s_0 .. s_T
        b_final_frames = (
            torch.cat(final_frames) if final_frames else torch.zeros((0, 96, 96), dtype=torch.uint8, device=device)
        )
        b_final_frame_slot = final_frame_slot.reshape(-1)
        next_frames = next_state_frames(b_frames, b_final_frames, b_final_frame_slot, 0, args.batch_size, args.num_envs)
        next_frames = next_frames.view(args.num_steps, args.num_envs, 96, 96)
        with torch.no_grad():
            # the running mean moves with the frames it scores, s_{t+1}, step by step (the reference: s_t, whole stack)
            step_means = frame_mean.update(next_frames)
            distillation_errors = rollout_distillation_errors(motivation, next_frames, step_means, reward_chunk_frames)
        int_rewards = intrinsic_reward(distillation_errors, args.eta)
        timings["intrinsic_reward"] = time.perf_counter() - tic

        # bootstrap value if not done
        tic = time.perf_counter()
        with torch.no_grad():
            next_ext_value, next_int_value = agent.get_value(next_obs)
            ext_advantages, ext_returns = compute_gae(
                ext_rewards,
                ext_values,
                next_ext_value,
                final_ext_values,
                terminations,
                truncations,
                args.gamma,
                args.gae_lambda,
            )
            # SPEC: the intrinsic stream is episodic by default, as in the paper
            int_advantages, int_returns = compute_gae(
                int_rewards,
                int_values,
                next_int_value,
                final_int_values,
                terminations,
                truncations,
                args.int_gamma,
                args.gae_lambda,
                args.int_episodic,
            )

        # flatten the batch (step-major: a contiguous slice is consecutive time steps of all envs)
        b_obs = obs[:-1].reshape((-1,) + envs.single_observation_space.shape)
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape(-1)
        b_ext_returns = ext_returns.reshape(-1)
        b_int_returns = int_returns.reshape(-1)
        # SPEC: A = 2 A_ext + 1 A_int, not normalised
        b_advantages = (args.ext_coef * ext_advantages + args.int_coef * int_advantages).reshape(-1)

        # Optimizing the policy and value network; statistics stay on the device until logged
        ppo_stats = defaultdict(float)
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(args.batch_size, device=device)  # SPEC: a fresh shuffle each epoch
            for start in range(0, args.batch_size, args.minibatch_size):
                mb_inds = b_inds[start : start + args.minibatch_size]
                _, newlogprob, entropy, new_ext_values, new_int_values = agent.get_action_and_value(
                    b_obs[mb_inds], b_actions[mb_inds]
                )
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    # calculate approx_kl http://joschu.net/blog/kl-approx.html
                    ppo_stats["old_approx_kl"] += (-logratio).mean()
                    ppo_stats["approx_kl"] += ((ratio - 1) - logratio).mean()
                    ppo_stats["clipfrac"] += ((ratio - 1.0).abs() > args.clip_coef).float().mean()

                mb_advantages = b_advantages[mb_inds]
                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss: unclipped, the sum of both heads' MSE (§6)
                ext_v_loss = ((new_ext_values - b_ext_returns[mb_inds]) ** 2).mean()
                int_v_loss = ((new_int_values - b_int_returns[mb_inds]) ** 2).mean()
                v_loss = ext_v_loss + int_v_loss

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
                for key, value in (
                    ("policy_loss", pg_loss),
                    ("value_loss", v_loss),
                    ("ext_value_loss", ext_v_loss),
                    ("int_value_loss", int_v_loss),
                    ("entropy", entropy_loss),
                ):
                    ppo_stats[key] += value.detach()
        timings["ppo_update"] = time.perf_counter() - tic

        # RND predictor: one pass after the PPO update, 32 minibatches in time order, as the reference (§4.0-4.1)
        tic = time.perf_counter()
        motivation_stats = defaultdict(float)
        for start in range(0, args.batch_size, args.minibatch_size):
            target_features, predicted_features = motivation(
                rnd_input(b_frames[start : start + args.minibatch_size], frame_mean.mean)
            )
            predictor_loss = masked_mse(predicted_features, target_features, args.update_proportion)
            motivation_optimizer.zero_grad()
            predictor_loss.backward()
            motivation_optimizer.step()
            motivation_stats["predictor_loss"] += predictor_loss.detach()
            motivation_stats["target_feature_spread"] += target_feature_spread(target_features)
        timings["motivation_update"] = time.perf_counter() - tic

        # TRY NOT TO MODIFY: record rewards for plotting purposes (the only host syncs of the update, once per iteration)
        if room_address is not None:
            writer.add_scalar("charts/rooms_visited", rooms_seen.sum(), global_step)
        num_updates = args.update_epochs * args.num_minibatches
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        for key, value in ppo_stats.items():
            writer.add_scalar(f"losses/{key}", value.item() / num_updates, global_step)
        writer.add_scalar("losses/ext_explained_variance", explained_variance(ext_values, ext_returns).item(), global_step)
        writer.add_scalar("losses/int_explained_variance", explained_variance(int_values, int_returns).item(), global_step)
        for key, value in motivation_stats.items():
            writer.add_scalar(f"motivation/{key}", value.item() / args.num_minibatches, global_step)
        writer.add_scalar("motivation/int_reward_mean", int_rewards.mean().item(), global_step)
        writer.add_scalar("motivation/int_reward_std", int_rewards.std().item(), global_step)
        writer.add_scalar("motivation/int_reward_max", int_rewards.max().item(), global_step)
        writer.add_scalar("motivation/distillation_error", distillation_errors.mean().item(), global_step)
        sps = int((global_step - start_global_step) / (time.time() - start_time))
        writer.add_scalar("charts/SPS", sps, global_step)
        for key, seconds in timings.items():
            writer.add_scalar(f"perf/{key}_seconds", seconds, global_step)
        if device.type == "cuda":  # the run's peak so far, read by benchmark/throughput.py
            writer.add_scalar("perf/cuda_peak_memory_gib", torch.cuda.max_memory_allocated(device) / 2**30, global_step)
        mean_return = (
            f"{np.mean(episode_returns):.1f} over {len(episode_returns)} episodes" if episode_returns else "no episode ended"
        )
        print(f"iteration {iteration}/{args.num_iterations}, global_step={global_step}, SPS={sps}, return {mean_return}")

        if (
            stop_signals
            or iteration == args.num_iterations
            or time.time() - last_checkpoint_time >= 60 * args.checkpoint_interval
        ):
            writer.flush()  # the events up to the checkpoint are on disk before it is
            save_checkpoint(
                run_dir,
                {
                    **run_header,
                    **learner_state(agent, optimizer, motivation, motivation_optimizer),
                    **progress_state(iteration, global_step, frame_mean, rooms_seen),
                },
            )
            last_checkpoint_time = time.time()
            if stop_signals:
                break

    envs.close()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the final checkpoint is saved: signals act at once again
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if stop_signals:
        writer.close()
        print(f"stopped at global step {global_step}; continue with --resume {run_dir}")
        sys.exit(128 + stop_signals[0])

    if args.save_model:
        model_path = f"{run_dir}/{args.exp_name}.cleanrl_model"
        torch.save({**run_header, "agent": agent.state_dict()}, model_path)
        print(f"model saved to {model_path}")
    if args.eval_episodes > 0:
        evaluate(agent, args, device, writer, video_folder)
    writer.close()
