"""PPO + RND on hard-exploration Atari, the SND paper's RND baseline. Docs and results: README.md#ppo_rnd_ataripy"""

import atexit
import copy
import ctypes
import datetime
import fcntl
import itertools
import math
import multiprocessing
import os
import re
import shlex
import shutil
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
    """seed of the experiment (torch and the envs)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda will be enabled by default (a warning, and the CPU, where it is absent)"""
    bf16: bool = False
    """if toggled, the agent's trunk runs under bf16 autocast (its heads, the losses and the motivation model stay fp32)"""
    compile: bool = False
    """if toggled, `torch.compile` the agent's trunk and the motivation networks (the first iterations compile)"""
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
    eta: Optional[float] = None
    """intrinsic reward scale: r_int = clip(eta * error, 0, 1); default: the paper's, 1 on every game"""
    motivation_learning_rate: float = 1e-4
    """the learning rate of the predictor's optimizer"""
    update_proportion: float = 0.25
    """proportion of the predictor-loss elements kept by the random mask"""

    # to be filled in runtime
    batch_size: tyro.conf.Suppress[int] = 0
    """the batch size (computed in runtime)"""
    minibatch_size: tyro.conf.Suppress[int] = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: tyro.conf.Suppress[int] = 0
    """the number of iterations (computed in runtime)"""


def resolve_env_id(env_id: str) -> str:
    """'MontezumaRevenge-v5' or 'ALE/MontezumaRevenge-v5' -> 'ALE/MontezumaRevenge-v5', the id a run records; an unknown
    game raises a ValueError with gymnasium's message and its "did you mean"."""
    try:
        gym.spec(gym_id := env_id if env_id.startswith("ALE/") else f"ALE/{env_id}")
    except gym.error.Error as error:
        raise ValueError(f"--env-id {env_id}: {error} (any ALE game works, e.g. MontezumaRevenge-v5)") from None
    return gym_id


def paper_defaults(args: Args) -> None:
    """The paper's value for the flags left unset: eta 1 on every game (the authors' config 2)."""
    args.eta = 1.0 if args.eta is None else args.eta


# The room number lives in one RAM byte (Montezuma's Revenge 3, Pitfall 1: the co-authors' VisitedRoomsEnv)
ROOM_RAM_ADDRESS = {"ALE/MontezumaRevenge-v5": 3, "ALE/Pitfall-v5": 1}


class RoomsVisited(gym.Wrapper):
    """Each step's room id as `info["room_id"]` and, when an episode ends, its count of distinct rooms, `info["rooms"]`."""

    def __init__(self, env: gym.Env, room_address: int):
        super().__init__(env)
        self.room_address, self.rooms = room_address, set()

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.rooms.clear()
        return obs, self._add_room(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = self._add_room(info)
        if terminated or truncated:
            info["rooms"] = len(self.rooms)
        return obs, reward, terminated, truncated, info

    def _add_room(self, info: dict) -> dict:
        info["room_id"] = int(self.env.unwrapped.ale.getRAM()[self.room_address])
        self.rooms.add(info["room_id"])
        return info


class RecordEpisodeVideo(gym.Wrapper):
    """Writes every `interval`-th episode as `{folder}/{prefix}-episode-{n}.mp4` with OpenCV, one frame per agent step.
    The file is opened at the episode's first step: an episode reset but never played leaves none."""

    def __init__(self, env: gym.Env, folder: str, prefix: str, interval: int, fps: int = 15):
        super().__init__(env)
        self.folder, self.prefix, self.interval, self.fps = folder, prefix, interval, fps
        self.episode, self.frames, self.writer = -1, [], None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.close_writer()
        self.episode += 1
        self.frames = [self.env.render()] if self.episode % self.interval == 0 else []  # held until the first step
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.frames and self.writer is None:
            os.makedirs(self.folder, exist_ok=True)
            path = os.path.join(self.folder, f"{self.prefix}-episode-{self.episode}.mp4")
            self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.frames[0].shape[1::-1])
        if self.writer is not None:
            for frame in [*self.frames, self.env.render()]:
                self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            self.frames = []
            if terminated or truncated:
                self.close_writer()
        return obs, reward, terminated, truncated, info

    def close_writer(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.writer = None

    def close(self):
        self.close_writer()
        super().close()


def make_env(gym_id: str, max_episode_steps: int, video_folder=None, video_prefix="train", video_interval=1):
    def thunk():
        if multiprocessing.parent_process() is not None:
            # An env worker: the main process alone handles SIGINT/SIGTERM (it saves, then closes us), and we die with it
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if sys.platform == "linux":
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: SIGKILL when the parent dies
                if os.getppid() != multiprocessing.parent_process().pid:
                    os._exit(0)  # it died before that
            cv2.setNumThreads(1)  # one process per env already uses the cores
        # ALE v5 with sticky actions 0.25 per frame, minimal action set; no no-op or fire reset, no episodic life
        env = gym.make(gym_id, frameskip=1, repeat_action_probability=0.25, render_mode="rgb_array" if video_folder else None)
        env = MaxAndSkipEnv(env, skip=4)
        env = gym.wrappers.TimeLimit(env, max_episode_steps)  # a truncation (the authors' RawScoreEnv: a terminal)
        env = gym.wrappers.RecordEpisodeStatistics(env)  # the raw game score and length: `info["episode"]`'s `r`, `l`
        # The paper's reward: max(0, sign r), negative rewards dropped (the authors' RawScoreEnv); its sum per episode,
        # the paper's table metric, is `info["reward_events"]["r"]`
        env = gym.wrappers.TransformReward(env, lambda reward: float(reward > 0))
        env = gym.wrappers.RecordEpisodeStatistics(env, stats_key="reward_events")
        if gym_id in ROOM_RAM_ADDRESS:
            env = RoomsVisited(env, ROOM_RAM_ADDRESS[gym_id])
        if video_folder is not None:
            env = RecordEpisodeVideo(env, video_folder, video_prefix, video_interval)
        env = WarpFrame(env, width=96, height=96)  # grey, OpenCV's area filter (the authors' ResizeEnv: PIL's bicubic)
        env = gym.wrappers.ReshapeObservation(env, (96, 96))
        # Newest frame last; the stack starts filled with the reset frame (the authors' keeps the old episode's frames)
        return gym.wrappers.FrameStackObservation(env, 4)

    return thunk


def make_vector_env(gym_id: str, num_envs: int, max_episode_steps: int, video_folder=None, prefix="train", interval=1):
    """One worker process per env; observations come back through shared memory as uint8 (num_envs, 4, 96, 96). Same-step
    autoreset: an ended env returns its reset observation in its own row (the authors' loop writes it into the wrong
    row), the final one is in `info["final_obs"]`."""
    atexit.register(kill_env_workers)  # however this process exits
    thunks = [make_env(gym_id, max_episode_steps, video_folder if i == 0 else None, prefix, interval) for i in range(num_envs)]
    return gym.vector.AsyncVectorEnv(thunks, shared_memory=True, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """The authors' PPOAtariMotivationNetwork: an actor and a critic with an extrinsic and an intrinsic value head on one
    trunk; reads uint8 (B, 4, 96, 96) stacks."""

    def __init__(self, num_actions: int, bf16: bool = False):
        super().__init__()
        self.bf16 = bf16
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
            layer_init(nn.Linear(128 * 12 * 12, 512)),  # no activation: each head brings its own
        )
        self.actor = nn.Sequential(
            nn.ReLU(), layer_init(nn.Linear(512, 512), std=0.01), nn.ReLU(), layer_init(nn.Linear(512, num_actions), std=0.01)
        )
        # The critic reads the trunk output without a leading ReLU, as the authors' Critic2Heads
        self.critic = nn.Sequential(layer_init(nn.Linear(512, 512), std=0.1), nn.ReLU())
        self.critic_ext = layer_init(nn.Linear(512, 1), std=0.01)
        self.critic_int = layer_init(nn.Linear(512, 1), std=0.01)

    def trunk(self, x):
        """The trunk's features of uint8 observations, in fp32; with bf16, computed under bf16 autocast (the heads read
        them in fp32, so log-probabilities, ratios and values are fp32)."""
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.bf16):
            return self.network(x.float() / 255.0).float()

    def get_value(self, x):
        hidden = self.critic(self.trunk(x))
        return self.critic_ext(hidden).squeeze(1), self.critic_int(hidden).squeeze(1)

    def get_action_and_value(self, x, action=None):
        hidden = self.trunk(x)
        # validate_args=False: the check reads the logits on the host (a sync) and would raise on nan before the
        # divergence guard can say which quantity diverged and how to resume
        probs = Categorical(logits=self.actor(hidden), validate_args=False)
        if action is None:
            action = probs.sample()
        critic_hidden = self.critic(hidden)
        ext_value, int_value = self.critic_ext(critic_hidden).squeeze(1), self.critic_int(critic_hidden).squeeze(1)
        return action, probs.log_prob(action), probs.entropy(), ext_value, int_value


def rnd_conv_encoder() -> list:
    """The conv stack and 512-d projection of the RND target and predictor (the authors' RNDModelAtari), 1 x 96 x 96."""
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


class RunningMean(nn.Module):
    """Running mean of frames where each vector step's batch mean counts as one sample, starting as one sample of 0 (the
    authors' RunningStatsSimple, whose std is never used); float64 buffers, saved with the model that owns it. It is
    kept for the newest frame only and moved by s_{t+1}'s frames, the ones it scores (a departure: the authors'
    keeps the whole stack's, moved by s_t's; README)."""

    def __init__(self, shape: tuple):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("count", torch.ones((), dtype=torch.int64))

    def update(self, step_frames: torch.Tensor) -> torch.Tensor:
        """Adds the frames of T vector steps, (T, N, ...), in one pass; returns the mean after each step, (T, ...), as T
        one-step updates would leave it: the mean of all samples so far, from a cumulative sum."""
        step_batch_means = step_frames.sum(1, dtype=torch.float64) / step_frames.shape[1]
        counts = self.count + torch.arange(1, len(step_frames) + 1, device=self.mean.device)
        step_means = (self.count * self.mean + step_batch_means.cumsum(0)) / counts.view(-1, *[1] * self.mean.dim())
        self.mean.copy_(step_means[-1])
        self.count += len(step_frames)
        return step_means


class RNDModel(nn.Module):
    """A frozen random target and a predictor trained to imitate it; the error is high on unfamiliar frames. Both read
    the newest frame minus its running mean, kept here."""

    def __init__(self):
        super().__init__()
        self.target = nn.Sequential(*rnd_conv_encoder())
        head = [nn.ELU(), layer_init(nn.Linear(512, 512)), nn.ELU(), layer_init(nn.Linear(512, 512))]
        self.predictor = nn.Sequential(*rnd_conv_encoder(), *head)
        self.target.requires_grad_(False)
        self.frame_mean = RunningMean((96, 96))

    def forward(self, x):
        return self.target(x), self.predictor(x)


def rnd_input(frames: torch.Tensor, frame_mean: torch.Tensor) -> torch.Tensor:
    """The newest frame minus its running mean (no division by a std) in [0, 1] units: (..., 96, 96) -> (..., 1, 96, 96)."""
    return ((frames.float() - frame_mean.float()) / 255.0).unsqueeze(-3)


def distillation_error(target_features: torch.Tensor, predicted_features: torch.Tensor) -> torch.Tensor:
    """e = 1/2 * sum_k (T_k - P_k)^2 per sample (the authors' RNDModelAtari.error)."""
    return 0.5 * (target_features - predicted_features).pow(2).sum(1)


def intrinsic_reward(error: torch.Tensor, eta: float) -> torch.Tensor:
    """r_int = clip(eta * e, 0, 1); no normalisation by a running std."""
    return (eta * error).clamp(0.0, 1.0)


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, keep_proportion: float) -> torch.Tensor:
    """The MSE over a random `keep_proportion` of the (sample, feature) elements; the target is not trained."""
    squared_error = (predicted - target.detach()).pow(2)
    mask = (torch.rand_like(squared_error) < keep_proportion).float()
    return (squared_error * mask).sum() / mask.sum().clamp(min=1.0)


def target_feature_spread(target_features: torch.Tensor) -> torch.Tensor:
    """Mean over features of the batch std of each target feature: how far apart the target keeps states."""
    return target_features.std(0).mean()


def effective_rank(features: torch.Tensor) -> torch.Tensor:
    """How many directions features (N, D) spread over: exp of the entropy of the normalised eigenvalues of their
    covariance over the batch (Roy and Vetterli, 2007). D for uncorrelated features of equal variance, 1 for features on
    a line (or not varying), whatever their magnitude: it shows a target collapsing where the features' spread cannot."""
    eigenvalues = torch.linalg.eigvalsh(torch.cov(features.T.double())).clamp(min=0)
    p = eigenvalues / eigenvalues.sum().clamp(min=1e-300)
    return torch.exp(-(p * p.clamp(min=1e-300).log()).sum()).float()


def motivation_loss(motivation: RNDModel, args: Args, b_frames, b_next_frames, mb: slice) -> tuple:
    """The predictor's loss on the minibatch `mb` of the rollout's flat newest frames: those of s_{t+1}, the frames the
    rewards score (RND does not use s_t's, `b_frames`); the MSE over a random `update_proportion` of the elements,
    as the authors' RNDModelAtari. Where it trains on s_{t+1} it departs from the authors' code, which trains on s_t
    (README). Returns (loss, the statistics to log, the target's features of s_{t+1})."""
    target_features, predicted_features = motivation(rnd_input(b_next_frames[mb], motivation.frame_mean.mean))
    loss = masked_mse(predicted_features, target_features, args.update_proportion)
    return loss, {"predictor_loss": loss.detach()}, target_features.detach()


def rollout_distillation_errors(motivation: RNDModel, next_frames: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """The error of every s_{t+1} of a rollout from its newest frames (T, N, 96, 96), in passes of about `chunk_frames`
    frames. The running mean moves first, step by step, with the frames it scores; each step is scored with the mean
    as it stood after that step. Returns (T, N)."""
    step_means = motivation.frame_mean.update(next_frames)
    chunk_steps = max(1, chunk_frames // next_frames.shape[1])
    errors = [
        distillation_error(*motivation(rnd_input(frames, means[:, None]).flatten(0, 1)))
        for frames, means in zip(next_frames.split(chunk_steps), step_means.split(chunk_steps))
    ]
    return torch.cat(errors).view(next_frames.shape[:2])


def compute_gae(rewards, values, next_value, final_values, terminations, truncations, gamma, gae_lambda, episodic=True):
    """GAE for one reward stream of a (num_steps, num_envs) rollout; returns (advantages, returns). values[t] = V(s_t);
    next_value = V(s_T), the state after the last step (the authors' PPO.calc_advantage leaves the last step at 0);
    final_values[t] = V(final observation) where the episode was truncated at t, bootstrapped. Episodic: an episode end
    stops the trace, a termination the bootstrap. Non-episodic: the return runs on into the next episode."""
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


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on `device`. On CUDA it is copied from pinned memory without waiting, queued before the
    kernels that read it; a copy from pageable memory would make the host wait for the GPU's queue to drain."""
    tensor = torch.from_numpy(np.asarray(array))
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


def phase_clock(device: torch.device) -> float:
    """time.perf_counter() once the device has run the work queued so far: CUDA kernels run asynchronously, so a phase's
    time would otherwise be charged to the next phase that waits for a result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def play_eval_episodes(agent: Agent, args: Args, device, writer: SummaryWriter, video_folder, global_step: int) -> None:
    """Plays `args.eval_episodes` episodes with the agent's stochastic policy and logs each as `eval/*` at `global_step`,
    the agent steps it was trained for. Each env plays a fixed share of the episodes, so short ones are not favoured."""
    num_envs = min(args.num_envs, args.eval_episodes)
    envs = make_vector_env(args.env_id, num_envs, args.max_episode_steps, video_folder, "eval", args.video_interval)
    quota = np.full(num_envs, args.eval_episodes // num_envs)
    quota[: args.eval_episodes % num_envs] += 1
    finished = np.zeros(num_envs, dtype=int)
    # Seed sequence [seed, 0]: training uses [seed, iteration >= 1], so evaluation never replays training's envs
    obs, _ = envs.reset(seed=np.random.SeedSequence([args.seed, 0]).generate_state(num_envs).tolist())
    while (finished < quota).any():
        with torch.no_grad():
            action = agent.get_action_and_value(torch.as_tensor(obs, device=device))[0]
        obs, _, _, _, infos = envs.step(action.cpu().numpy())
        final = infos.get("final_info", {})
        for i in np.flatnonzero(final.get("_episode", np.zeros(num_envs, bool)) & (finished < quota)):
            episode_return, reward_events = final["episode"]["r"][i], final["reward_events"]["r"][i]
            writer.add_scalar("eval/episodic_return", episode_return, global_step)
            writer.add_scalar("eval/episodic_reward_events", reward_events, global_step)
            print(f"eval episode {finished.sum()}: return {episode_return}, reward events {reward_events}")
            finished[i] += 1
    envs.close()


# BAD INPUT. Flags a resumed run may change (every other must be what the run was started with), and the range of every
# numeric flag ("[" and "]" include the bound, "(" and ")" exclude it; nan is in no range)
RESUME_MAY_CHANGE = {
    *("resume", "total_timesteps", "checkpoint_interval", "cuda", "compile", "torch_deterministic", "track"),
    *("wandb_project_name", "wandb_entity", "capture_video", "video_interval", "save_model", "eval_episodes"),
    *("learning_rate", "motivation_learning_rate", "max_grad_norm"),  # to continue a diverged run more gently
    *("batch_size", "minibatch_size", "num_iterations"),  # computed from flags that are checked
}
ARG_RANGES = {
    **{"seed": "[0, 4294967295]", "num_envs": "[1, inf)", "num_steps": "[1, inf)", "num_minibatches": "[1, inf)"},
    **{"update_epochs": "[1, inf)", "total_timesteps": "[1, inf)", "max_episode_steps": "[1, inf)"},
    **{"video_interval": "[1, inf)", "eval_episodes": "[0, inf)", "checkpoint_interval": "[0, inf)"},
    **{"learning_rate": "(0, inf)", "motivation_learning_rate": "(0, inf)", "max_grad_norm": "(0, inf)"},
    **{"gamma": "(0, 1]", "int_gamma": "(0, 1]", "gae_lambda": "(0, 1]", "clip_coef": "(0, 1)"},
    **{"ent_coef": "[0, inf)", "vf_coef": "[0, inf)", "ext_coef": "[0, inf)", "int_coef": "[0, inf)", "eta": "[0, inf)"},
    **{"update_proportion": "(0, 1]"},
}


def check_args(args: Args) -> None:
    """Refuses bad settings before any file or env exists, with an error that says what to do; fills in the env id that
    a run records and the runtime sizes."""
    for name, bounds in ARG_RANGES.items():
        value, (low, high) = getattr(args, name), map(float, bounds[1:-1].split(","))
        if value is None:  # the paper's value, filled in below
            continue
        inside = (low <= value if bounds[0] == "[" else low < value) and (value <= high if bounds[-1] == "]" else value < high)
        if not (math.isfinite(value) and inside):
            raise ValueError(f"--{name.replace('_', '-')} must be a number in {bounds}, got {value}")
    if not re.fullmatch(r"[\w.-]+", args.exp_name) or args.exp_name in (".", "..") or "__" in args.exp_name:
        raise ValueError(f"--exp-name {args.exp_name!r}: give a plain name (letters, digits, . - _), it names a folder")
    for flag, path in (("--resume", args.resume), ("--evaluate", args.evaluate)):
        if path is not None and not os.path.exists(path):
            raise ValueError(f"{flag} {path!r}: no such file or folder" if path else f"{flag} got an empty path")
    if args.resume and args.evaluate:
        raise ValueError("--resume and --evaluate exclude each other: evaluate a finished run's checkpoint on its own")
    if args.evaluate and args.eval_episodes == 0:
        raise ValueError("--evaluate needs --eval-episodes of at least 1")
    args.env_id = resolve_env_id(args.env_id)
    paper_defaults(args)
    args.batch_size = args.num_envs * args.num_steps
    if args.batch_size % args.num_minibatches != 0:
        divisors = [n for n in range(1, min(args.batch_size, 256) + 1) if args.batch_size % n == 0]
        raise ValueError(
            f"a rollout's {args.batch_size} transitions do not split into --num-minibatches; use one of {divisors}"
        )
    if args.total_timesteps < args.batch_size:
        raise ValueError(f"--total-timesteps {args.total_timesteps} is below one rollout, {args.batch_size} agent steps")
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size


# CHECKPOINTS. A save writes `checkpoint.pt.tmp`, then renames `checkpoint.pt` -> `checkpoint.prev.pt` and the new file
# -> `checkpoint.pt`. The run folder's `run.lock` lets one process at a time work on the run.
CHECKPOINT_FILES = ("checkpoint.pt.tmp", "checkpoint.pt", "checkpoint.prev.pt")  # newest first
SCRIPT = os.path.basename(__file__)
EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_WRITE_FAILED, EXIT_RUN_LOCKED = 2, 3, 4, 5


class CheckpointError(ValueError): ...  # a run folder or checkpoint that cannot be used: the message says what to do


class DamagedCheckpoint(CheckpointError): ...  # unreadable, no checkpoint, or holding nan or inf: an older one may be good


def exit_with(message: str, code: int):
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)


def describe(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


def tensors_of(state, prefix: str = "") -> list:
    """(name, tensor) for every tensor of a nested state dict."""
    if isinstance(state, torch.Tensor):
        return [(prefix.rstrip("."), state)]
    return (
        [item for key, value in state.items() for item in tensors_of(value, f"{prefix}{key}.")]
        if isinstance(state, dict)
        else []
    )


def nonfinite_entries(state) -> list:
    return [name for name, tensor in tensors_of(state) if tensor.is_floating_point() and not tensor.isfinite().all()]


def checkpoint_state(args: Args, stateful: dict, iteration: int, global_step: int) -> dict:
    """A checkpoint as references to the live tensors: who wrote it, with which settings, the counters, each stateful
    object's state, and torch's RNG states, the only RNGs the run draws from (the envs are seeded anew on resume)."""
    return {
        "kind": "checkpoint",
        "script": SCRIPT,
        "args": asdict(args),
        "iteration": iteration,
        "global_step": global_step,
        "state": {name: obj if isinstance(obj, torch.Tensor) else obj.state_dict() for name, obj in stateful.items()},
        "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None},
    }


def save_checkpoint(run_dir: str, checkpoint: dict) -> None:
    """Writes `checkpoint.pt.tmp`, syncs it, rotates it in and syncs the folder: a crash at any moment leaves a complete
    checkpoint. If the state holds nan or inf, or the write fails (a full disk: its partial file is removed), one line
    and an exit: EXIT_DIVERGED, or EXIT_WRITE_FAILED (the signal's code when stopping for one, as any stopped run)."""
    if nonfinite := nonfinite_entries(checkpoint["state"]):
        exit_with(
            f"error: diverged: nan or inf in {', '.join(nonfinite[:3])}; not saved, the checkpoints are kept", EXIT_DIVERGED
        )
    temporary, latest, previous = (os.path.join(run_dir, name) for name in CHECKPOINT_FILES)
    try:
        with open(temporary, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
        if os.path.exists(temporary):
            os.remove(temporary)
        needed, free = sum(t.nbytes for _, t in tensors_of(checkpoint)) / 2**30, shutil.disk_usage(run_dir).free / 2**30
        exit_with(
            f"error: could not write {temporary} ({describe(error)}); {free:.2f} GiB are free, a checkpoint takes about "
            f"{needed:.2f} GiB. The good checkpoints are kept: free some space, then resume",
            128 + stop_signals[0] if stop_signals else EXIT_WRITE_FAILED,
        )
    if os.path.exists(latest):
        os.replace(latest, previous)
    os.replace(temporary, latest)
    folder = os.open(run_dir, os.O_RDONLY)
    os.fsync(folder)  # the renames are on disk too
    os.close(folder)


def read_checkpoint(path: str, stateful: dict, env_id: str) -> dict:
    """Reads a checkpoint or a `--save-model` model of this script and game, and loads it into `stateful` (load_state_dict
    checks the networks' names and shapes). Raises DamagedCheckpoint if the file cannot be read, is neither, or holds
    nan or inf (an older checkpoint may be good), CheckpointError if another script, game or network wrote it."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # empty, truncated, overwritten or not a torch file
        raise DamagedCheckpoint(f"{path} is unreadable ({describe(error)})") from None
    if not isinstance(saved, dict) or not {"kind", "script", "args", "state"} <= saved.keys():
        raise DamagedCheckpoint(f"{path} is not a checkpoint of this version of these scripts")
    if nonfinite := nonfinite_entries(saved["state"]):
        raise DamagedCheckpoint(f"{path} holds nan or inf ({', '.join(nonfinite[:3])}): the run had diverged")
    if saved["script"] != SCRIPT:
        raise CheckpointError(f"{path} was written by {saved['script']}, not {SCRIPT}: use that script")
    if saved["args"]["env_id"] != env_id:
        raise CheckpointError(f"{path} was trained on {saved['args']['env_id']}: pass --env-id {saved['args']['env_id']}")
    if missing := [name for name in stateful if name not in saved["state"]]:
        hint = ": evaluate a saved model with --evaluate" if saved["kind"] == "model" else ""
        raise CheckpointError(f"{path} is a {saved['kind']} without {', '.join(missing)}{hint}")
    try:
        for name, obj in stateful.items():
            obj.copy_(saved["state"][name]) if isinstance(obj, torch.Tensor) else obj.load_state_dict(saved["state"][name])
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path} does not fit the networks {SCRIPT} builds ({describe(error)})") from None
    return saved


def load_checkpoint(path: str, args: Args, stateful: dict) -> tuple:
    """Loads the checkpoint to resume from into `stateful` and torch's RNG states: the file `path`, or the newest good one
    of the run folder `path` (whose lock this process holds). There, a complete `checkpoint.pt.tmp` (a kill between a
    save's renames) finishes its save, a partial one is removed, and a damaged `checkpoint.pt` is set aside as `.corrupt`
    (so the next rotation keeps the good one). Returns (checkpoint, file); raises CheckpointError, saying what to do."""
    damaged = []
    for file in filter(os.path.exists, [os.path.join(path, f) for f in CHECKPOINT_FILES] if os.path.isdir(path) else [path]):
        try:
            checkpoint = read_checkpoint(file, stateful, args.env_id)
            break
        except DamagedCheckpoint as error:
            damaged.append((file, str(error)))
    else:
        hint = "" if os.path.isdir(path) else f"; --resume {os.path.dirname(path) or '.'} tries each checkpoint there"
        raise CheckpointError("; ".join(reason for _, reason in damaged) + hint if damaged else f"{path} has no checkpoint")
    saved_args, current = checkpoint["args"], asdict(args)
    differences = [
        f"--{key.replace('_', '-')} {saved_args.get(key)!r} (now {current.get(key)!r})"
        for key in sorted(set(saved_args) | set(current))
        if key not in RESUME_MAY_CHANGE and saved_args.get(key) != current.get(key)
    ]
    if differences:
        raise CheckpointError(f"{file} was written with other settings: {', '.join(differences)}; pass the run's flags")
    torch.set_rng_state(checkpoint["rng"]["cpu"])
    if checkpoint["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(checkpoint["rng"]["cuda"])
    for damaged_file, reason in damaged:
        print(f"warning: {reason}; resuming from {file}", file=sys.stderr)
        os.remove(damaged_file) if damaged_file.endswith(".tmp") else os.replace(damaged_file, damaged_file + ".corrupt")
    temporary, latest, previous = (os.path.join(os.path.dirname(file), name) for name in CHECKPOINT_FILES)
    if file == temporary:  # finish the save that a kill interrupted
        if os.path.exists(latest):
            os.replace(latest, previous)
        os.replace(temporary, latest)
    return checkpoint, latest if file == temporary else file


def lock_run_folder(run_dir: str, checkpoint_bytes: int):
    """Takes the run folder's lock for this process's lifetime (the OS drops it when the process dies, however): a second
    process on the run exits with EXIT_RUN_LOCKED and the holder's PID. Refuses a folder it cannot write in, too, or
    without room for three checkpoints of `checkpoint_bytes`: the newest, the previous and the one being written."""
    if not os.access(run_dir, os.W_OK):
        raise CheckpointError(f"cannot write in {run_dir}: a run keeps its checkpoints and logs there; make it writable")
    lock = open(os.path.join(run_dir, "run.lock"), "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        exit_with(f"error: {run_dir} is in use by another process (PID {lock.read().strip() or '?'})", EXIT_RUN_LOCKED)
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    present = sum(
        os.path.getsize(file) for file in (os.path.join(run_dir, f) for f in CHECKPOINT_FILES) if os.path.exists(file)
    )
    if (free := shutil.disk_usage(run_dir).free) < 3 * checkpoint_bytes - present:
        raise CheckpointError(
            f"{run_dir} has {free / 2**30:.2f} GiB free; a run needs room for three checkpoints of about "
            f"{checkpoint_bytes / 2**30:.2f} GiB (the newest, the previous and the one being written)"
        )
    return lock


# SIGNALS. Until training starts, and after it ends, a signal stops the process at once: there is nothing to save.
# During training it stops the run at the next stop point (a rollout step or an update minibatch), which saves.
stop_signals = []


class StopRequested(Exception): ...


def kill_env_workers() -> None:
    """The env workers ignore SIGINT and SIGTERM (the main process closes them), on which multiprocessing's exit relies."""
    for worker in multiprocessing.active_children():
        worker.kill()


def exit_at_once(signum, frame):
    """A hard exit: an exception raised here could be swallowed where the signal lands (in a fork hook, say)."""
    if multiprocessing.parent_process() is None:  # not an env worker just forked (its parent decides)
        print(f"{signal.Signals(signum).name}: stopped (no training in progress, nothing to save)", file=sys.stderr)
        sys.stdout.flush()
        kill_env_workers()
        os._exit(128 + signum)


def request_stop(signum, frame):
    stop_signals.append(signum)
    signal.signal(signum, signal.SIG_DFL)
    print(f"{signal.Signals(signum).name}: saving a checkpoint, then stopping (send it again to stop at once)", flush=True)


def stop_point() -> None:
    if stop_signals:
        raise StopRequested


if __name__ == "__main__":
    args = tyro.cli(Args, description=__doc__)
    signal.signal(signal.SIGINT, exit_at_once)
    signal.signal(signal.SIGTERM, exit_at_once)
    try:  # bad input is refused here, before any file or env exists
        check_args(args)
        if args.track:
            try:
                import wandb
            except ImportError:
                raise ValueError("--track needs Weights & Biases: pip install wandb") from None
    except ValueError as error:
        exit_with(f"error: {error}", EXIT_BAD_INPUT)
    if args.cuda and not torch.cuda.is_available():
        print("warning: CUDA is not available, running on the CPU (--no-cuda silences this)", file=sys.stderr)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    torch.manual_seed(args.seed)  # the only RNG the run draws from; each env gets its own seed
    torch.backends.cudnn.deterministic = args.torch_deterministic

    # AGENT AND MOTIVATION MODEL (channels_last: the layout oneDNN and cuDNN run fastest; fused Adam: one kernel)
    with gym.make(args.env_id) as probe:  # one env, closed before the workers fork: its actions
        num_actions = probe.action_space.n
    agent = Agent(num_actions, args.bf16).to(device, memory_format=torch.channels_last)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, fused=True)  # eps 1e-8, as the authors' PPO
    motivation = RNDModel().to(device, memory_format=torch.channels_last)
    motivation_optimizer = optim.Adam(motivation.predictor.parameters(), lr=args.motivation_learning_rate, fused=True)
    rooms_seen = torch.zeros(256, dtype=torch.bool)  # every room id any env has been in, over the whole run
    if args.compile:  # in place, so the state dicts keep their names
        for network in (agent.network, motivation.target, motivation.predictor):
            network.compile()
    # What a checkpoint holds, saved and restored in a loop (with the counters and torch's RNG states)
    stateful = dict(agent=agent, optimizer=optimizer, motivation=motivation, motivation_optimizer=motivation_optimizer)
    stateful["rooms_seen"] = rooms_seen
    checkpoint_bytes = sum(
        t.nbytes * (1 + 2 * t.requires_grad) for m in (agent, motivation) for t in m.state_dict(keep_vars=True).values()
    )

    # RUN FOLDER, locked for this process. A resume loads its checkpoint, which checks its script, settings and networks
    checkpoint = None
    try:
        if args.evaluate:
            evaluated = read_checkpoint(args.evaluate, {"agent": agent}, args.env_id)
        if args.resume:
            run_dir = args.resume if os.path.isdir(args.resume) else os.path.dirname(os.path.abspath(args.resume))
        else:
            kind = f"{args.exp_name}-eval" if args.evaluate else args.exp_name
            run_dir = os.path.join("runs", f"{args.env_id.removeprefix('ALE/')}__{kind}__{args.seed}__{int(time.time())}")
            os.makedirs(run_dir, exist_ok=True)
        run_lock = lock_run_folder(run_dir, 0 if args.evaluate else checkpoint_bytes)
        if args.resume:
            checkpoint, checkpoint_file = load_checkpoint(args.resume, args, stateful)
            optimizer.param_groups[0]["lr"] = args.learning_rate  # a resume may change the learning rates
            motivation_optimizer.param_groups[0]["lr"] = args.motivation_learning_rate
    except (ValueError, OSError) as error:
        exit_with(f"error: {error}", EXIT_BAD_INPUT)
    global_step, start_iteration = (checkpoint["global_step"], checkpoint["iteration"] + 1) if checkpoint else (0, 1)
    if start_iteration > args.num_iterations:
        print(f"{run_dir} is finished at global step {global_step}; a larger --total-timesteps continues it")
        sys.exit()
    run_name = os.path.basename(os.path.abspath(run_dir))
    print(f"run folder {run_dir}; watch it with: tensorboard --logdir {shlex.quote(run_dir)}", flush=True)
    video_folder = f"videos/{run_name}" if args.capture_video else None
    if args.track:  # a resumed run continues its wandb run too
        run = dict(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, id=run_name, resume="allow")
        wandb.init(**run, sync_tensorboard=True, config=vars(args), save_code=True)
    # A resumed run continues the same TensorBoard run: points logged after its checkpoint are purged
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint else None)
    if checkpoint is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    if args.evaluate:
        play_eval_episodes(agent, args, device, writer, video_folder, evaluated["global_step"])
        writer.close()
        sys.exit()
    if checkpoint is not None:
        print(f"resumed {checkpoint_file} at iteration {start_iteration}, global step {global_step}; the envs start anew")
        del checkpoint  # its copy of the weights

    # ENVS, in two halves (one if there is a single env): while one half's workers step, the other half's actions are
    # computed (the rollout below)
    print(f"starting {args.num_envs} envs of {args.env_id} (Ctrl-C stops at once until training starts)", flush=True)
    split = args.num_envs // 2
    halves = [slice(0, split), slice(split, args.num_envs)] if split else [slice(0, args.num_envs)]
    videos = [(video_folder, "train", args.video_interval), (None,)]  # env 0, in the first half, may be filmed
    env_halves = [make_vector_env(args.env_id, h.stop - h.start, args.max_episode_steps, *v) for h, v in zip(halves, videos)]
    obs_shape = env_halves[0].single_observation_space.shape
    room_address = ROOM_RAM_ADDRESS.get(args.env_id)

    # STORAGE, on the device, frames uint8. A rollout's intrinsic rewards are computed after it, in passes of this many
    # frames: large ones on a GPU (few kernel launches), 128 on a CPU, whose caches favour small ones (README)
    reward_chunk_frames = 4096 if device.type == "cuda" else 128
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_shape, dtype=torch.uint8, device=device)
    # The newest frame of s_{t+1}, which the rewards score: next_obs's, or the final observation's where an episode
    # ended at t (next_obs is then the next episode's first)
    next_frames = torch.zeros((args.num_steps, args.num_envs, 96, 96), dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    terminations, truncations = torch.zeros((2, args.num_steps, args.num_envs), dtype=torch.bool, device=device)
    # final_*_values: of the final observation where an episode was truncated, bootstrapped from (0 elsewhere)
    logprobs, ext_rewards, ext_values, int_values, final_ext_values, final_int_values = torch.zeros(
        (6, args.num_steps, args.num_envs), device=device
    )

    # TRY NOT TO MODIFY: start the game
    # Env seeds differ per env and per resume, so a resumed run does not replay the episodes it started with
    env_seeds = np.random.SeedSequence([args.seed, start_iteration]).generate_state(args.num_envs).tolist()
    next_obs = torch.cat([to_device(envs.reset(seed=env_seeds[h])[0], device) for envs, h in zip(env_halves, halves)])
    stepping = []  # the halves whose step has started and not been waited for
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    start_time = last_checkpoint_time = time.time()
    start_global_step = global_step

    try:
        for iteration in range(start_iteration, args.num_iterations + 1):
            # What a stop before the end of this iteration saves; the resumed run redoes the iteration
            iteration_start = copy.deepcopy(checkpoint_state(args, stateful, iteration - 1, global_step))
            timings = defaultdict(float)
            episode_returns = []
            final_ext_values.zero_()
            final_int_values.zero_()
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / args.num_iterations) * args.learning_rate

            # ROLLOUT, pipelined over the halves: a half's turn waits for the step it started in its previous turn and
            # records it, then computes its next actions and starts that step, while the other half's workers step.
            # Each env's transitions are those of stepping all envs at once. The turns past the last step only wait
            for step, (h, envs) in itertools.product(range(args.num_steps + 1), zip(halves, env_halves)):
                if step > 0:
                    t = step - 1  # the step this turn waits for
                    # TRY NOT TO MODIFY: execute the game and log data.
                    tic = time.perf_counter()
                    next_obs_np, reward, terminated, truncated, infos = envs.step_wait()
                    stepping.remove(envs)
                    timings["env"] += time.perf_counter() - tic

                    tic = time.perf_counter()
                    global_step += len(reward)
                    ext_rewards[t, h] = to_device(reward, device)  # already max(0, sign r)
                    terminations[t, h] = to_device(terminated, device)
                    truncations[t, h] = to_device(truncated, device)
                    next_obs[h] = to_device(next_obs_np, device)
                    next_frames[t, h] = next_obs[h, -1]
                    if room_address is not None:
                        rooms_seen[infos["room_id"]] = True
                    ended = terminated | truncated
                    if ended.any():
                        final_obs = to_device(np.stack(infos["final_obs"][ended]), device)
                        next_frames[t, h][to_device(np.flatnonzero(ended), device)] = final_obs[:, -1]
                        if truncated.any():  # bootstrapped from the final observation's values
                            truncated_final_obs = final_obs[to_device(np.flatnonzero(truncated[ended]), device)]
                            with torch.no_grad():
                                final_ext, final_int = agent.get_value(truncated_final_obs)
                            truncated_envs = to_device(np.flatnonzero(truncated), device)
                            final_ext_values[t, h][truncated_envs] = final_ext
                            final_int_values[t, h][truncated_envs] = final_int
                        final = infos["final_info"]
                        if room_address is not None:
                            rooms_seen[final["room_id"][ended]] = True
                        for i in np.flatnonzero(final["_episode"]):
                            writer.add_scalar("charts/episodic_return", final["episode"]["r"][i], global_step)
                            writer.add_scalar("charts/episodic_length", final["episode"]["l"][i], global_step)
                            writer.add_scalar("charts/episodic_reward_events", final["reward_events"]["r"][i], global_step)
                            if room_address is not None:
                                writer.add_scalar("charts/episodic_rooms", final["rooms"][i], global_step)
                            episode_returns.append(final["episode"]["r"][i])
                    timings["policy"] += time.perf_counter() - tic

                if step < args.num_steps:
                    stop_point()
                    tic = time.perf_counter()
                    obs[step, h] = next_obs[h]
                    with torch.no_grad():
                        action, logprob, _, ext_value, int_value = agent.get_action_and_value(next_obs[h])
                    actions[step, h], logprobs[step, h] = action, logprob
                    ext_values[step, h], int_values[step, h] = ext_value, int_value
                    envs.step_async(action.cpu().numpy())
                    stepping.append(envs)
                    timings["policy"] += time.perf_counter() - tic

            # INTRINSIC REWARD of each s_{t+1}, after the rollout in batched passes: the motivation model did not change
            # during it, so these are the errors of scoring each step as it came
            # (the authors' loop scores s_t, which the action cannot change: a departure, listed in the README)
            tic = phase_clock(device)
            with torch.no_grad():
                distillation_errors = rollout_distillation_errors(motivation, next_frames, reward_chunk_frames)
            int_rewards = intrinsic_reward(distillation_errors, args.eta)
            timings["intrinsic_reward"] = phase_clock(device) - tic

            # ADVANTAGES, each stream with its own discount (the intrinsic one episodic unless --no-int-episodic)
            tic = phase_clock(device)
            with torch.no_grad():
                next_ext_value, next_int_value = agent.get_value(next_obs)
            episode_ends = (terminations, truncations)
            ext_advantages, ext_returns = compute_gae(
                ext_rewards, ext_values, next_ext_value, final_ext_values, *episode_ends, args.gamma, args.gae_lambda
            )
            int_advantages, int_returns = compute_gae(
                int_rewards,
                int_values,
                next_int_value,
                final_int_values,
                *episode_ends,
                args.int_gamma,
                args.gae_lambda,
                args.int_episodic,
            )

            # flatten the batch (step-major: a contiguous slice is consecutive time steps of all envs)
            b_obs = obs.reshape((-1,) + obs_shape)
            b_frames = obs[:, :, -1].reshape((-1,) + next_frames.shape[2:])  # a view: the newest frame of each s_t
            b_next_frames = next_frames.reshape((-1,) + next_frames.shape[2:])
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape(-1)
            b_ext_returns = ext_returns.reshape(-1)
            b_int_returns = int_returns.reshape(-1)
            b_advantages = (args.ext_coef * ext_advantages + args.int_coef * int_advantages).reshape(-1)  # not normalised

            # PPO UPDATE; a fresh shuffle each epoch (the authors' reuses one); statistics stay on the device until logged
            ppo_stats = defaultdict(float)
            for epoch in range(args.update_epochs):
                b_inds = torch.randperm(args.batch_size, device=device)
                for start in range(0, args.batch_size, args.minibatch_size):
                    stop_point()
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

                    # Value loss: unclipped, the sum of both heads' MSE
                    ext_v_loss = ((new_ext_values - b_ext_returns[mb_inds]) ** 2).mean()
                    int_v_loss = ((new_int_values - b_int_returns[mb_inds]) ** 2).mean()
                    v_loss = ext_v_loss + int_v_loss

                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                    optimizer.zero_grad()
                    loss.backward()
                    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                    stats = dict(policy_loss=pg_loss, value_loss=v_loss, ext_value_loss=ext_v_loss, int_value_loss=int_v_loss)
                    for key, value in {**stats, "entropy": entropy_loss, "grad_norm": grad_norm}.items():
                        ppo_stats[key] += value.detach()
            timings["ppo_update"] = phase_clock(device) - tic

            # MOTIVATION UPDATE: one pass after the PPO update, minibatches in time order (the authors' sample_batches)
            tic = phase_clock(device)
            motivation_stats = defaultdict(float)
            for start in range(0, args.batch_size, args.minibatch_size):
                stop_point()
                mb = slice(start, start + args.minibatch_size)
                loss, stats, target_features = motivation_loss(motivation, args, b_frames, b_next_frames, mb)
                motivation_optimizer.zero_grad()
                loss.backward()
                motivation_optimizer.step()
                for key, value in {**stats, "target_feature_spread": target_feature_spread(target_features)}.items():
                    motivation_stats[key] += value
            timings["motivation_update"] = phase_clock(device) - tic

            # DIVERGENCE GUARD: one host read for the iteration; a diverged run saves nothing
            watched = {**ppo_stats, **motivation_stats, "values": torch.stack([ext_values, int_values]), "r_int": int_rewards}
            finite = torch.stack([value.isfinite().all() for value in watched.values()])
            if not finite.all():
                name = [name for name, ok in zip(watched, finite.tolist()) if not ok][0]
                exit_with(
                    f"error: diverged at iteration {iteration}: {name} is nan or inf. Nothing was saved; resume the last good "
                    f"checkpoint with other settings, e.g. --resume {shlex.quote(run_dir)} "
                    f"--learning-rate {args.learning_rate / 10:g}",
                    EXIT_DIVERGED,
                )

            # LOGGING (the only host syncs of the update, once per iteration)
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
            writer.add_scalar("motivation/target_effective_rank", effective_rank(target_features).item(), global_step)
            elapsed = time.time() - start_time
            sps = int((global_step - start_global_step) / elapsed)
            writer.add_scalar("charts/SPS", sps, global_step)
            for key, seconds in timings.items():
                writer.add_scalar(f"perf/{key}_seconds", seconds, global_step)
            if device.type == "cuda":  # the run's peak so far, read by benchmark/throughput.py
                writer.add_scalar("perf/cuda_peak_memory_gib", torch.cuda.max_memory_allocated(device) / 2**30, global_step)
            time_left = datetime.timedelta(seconds=int((args.num_iterations * args.batch_size - global_step) / max(sps, 1)))
            mean_return = f"{np.mean(episode_returns):.1f} over {len(episode_returns)} episodes" if episode_returns else "none"
            print(
                f"iteration {iteration}/{args.num_iterations}, global_step={global_step}, SPS={sps}, elapsed "
                f"{datetime.timedelta(seconds=int(elapsed))}, ETA {time_left}, return {mean_return}"
            )

            # CHECKPOINT
            due = time.time() > last_checkpoint_time + 60 * args.checkpoint_interval
            if stop_signals or iteration == args.num_iterations or due:
                writer.flush()  # the events up to the checkpoint are on disk before it is
                save_checkpoint(run_dir, checkpoint_state(args, stateful, iteration, global_step))
                last_checkpoint_time = time.time()
            if stop_signals:
                break
    except StopRequested:  # a stop inside an iteration: it is dropped, and the state it started from saved
        writer.flush()
        save_checkpoint(run_dir, iteration_start)
        global_step = iteration_start["global_step"]

    for envs in stepping:  # a stop during the rollout leaves steps to wait for
        envs.step_wait()
    for envs in env_halves:
        envs.close()
    signal.signal(signal.SIGINT, exit_at_once)  # the checkpoint is saved: nothing is left to save
    signal.signal(signal.SIGTERM, exit_at_once)
    if stop_signals:
        writer.close()
        print(f"stopped at global step {global_step}; continue with --resume {shlex.quote(run_dir)}")
        sys.exit(128 + stop_signals[0])

    if args.save_model:
        model_path = f"{run_dir}/{args.exp_name}.cleanrl_model"
        torch.save({**checkpoint_state(args, {"agent": agent}, args.num_iterations, global_step), "kind": "model"}, model_path)
        print(f"model saved to {model_path}")
    if args.eval_episodes > 0:
        play_eval_episodes(agent, args, device, writer, video_folder, global_step)
    writer.close()
