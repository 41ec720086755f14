# PPO + SND (SND-VIC, SND-V, SND-STD) or RND on Procgen's hard-exploration levels; docs: README.md#ppo_snd_procgenpy
import difflib
import os
import random
import signal
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import cv2
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

try:
    from procgen import ProcgenGym3Env
    from procgen.env import ENV_NAMES, EXPLORATION_LEVEL_SEEDS
except ImportError:  # refused in main, before anything starts, with the command that installs it
    ProcgenGym3Env = None


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
    env_id: str = "jumper"
    """the procgen game, on its one exploration level: coinrun, caveflyer, leaper, jumper, maze, heist, climber or ninja"""
    method: Literal["snd-vic", "snd-v", "snd-std", "rnd"] = "snd-vic"
    """how the target is trained: VICReg (snd-vic), a contrastive loss (snd-v), ST-DIM (snd-std), or never (rnd)"""
    total_timesteps: int = 64_000_000
    """total agent steps of the experiment"""
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

    # Motivation arguments
    eta: Optional[float] = None
    """intrinsic reward scale: r_int = clip(eta * error, 0, 1); default: the paper's value for the method and game (§7)"""
    motivation_learning_rate: float = 1e-4
    """the learning rate of the motivation optimizer (RND: the predictor's; SND: target and predictor together)"""
    update_proportion: float = 0.25
    """rnd and snd-v: proportion of the predictor-loss elements kept by the random mask"""
    num_pairs: int = 64
    """snd-v: pairs of states per motivation step for the target's contrastive loss, drawn from the whole rollout (§4.2)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


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
    "video_interval",
    "learning_rate",
    "motivation_learning_rate",
    "clip_coef",
    "num_pairs",
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


def procgen_game(env_id: str) -> str:
    """'jumper' (or gym's 'procgen-jumper-v0') -> 'jumper'. Raises a ValueError, saying what to do, for a game without
    an exploration level, an unknown name, or procgen missing."""
    if ProcgenGym3Env is None:
        raise ValueError("this script needs procgen: pip install procgen2==0.10.7 gym3==0.3.3 gym==0.23.1")
    game = env_id.lower().removeprefix("procgen-").removesuffix("-v0")
    if game in EXPLORATION_LEVEL_SEEDS:
        return game
    games = ", ".join(EXPLORATION_LEVEL_SEEDS)
    if game in ENV_NAMES:
        raise ValueError(f"procgen's {game} has no exploration level; these games have one: {games}")
    close = difflib.get_close_matches(game, EXPLORATION_LEVEL_SEEDS, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"unknown procgen game {env_id!r}: {hint}the games with an exploration level are {games}")


# §7: the paper's eta per method; SND-STD's per game (1 for the games the paper did not run); `--eta` overrides
PAPER_ETA = {"rnd": 1.0, "snd-v": 0.5, "snd-vic": 0.5}
PAPER_SND_STD_ETA = {"caveflyer": 0.5, "coinrun": 0.25, "jumper": 1.0, "climber": 1.0}


def paper_eta(method: str, game: str) -> float:
    return PAPER_SND_STD_ETA.get(game, 1.0) if method == "snd-std" else PAPER_ETA[method]


def procgen_seed(seed: int, stream: int) -> int:
    """procgen's rand_seed, which also seeds the random actions, for stream 0 (evaluation) or i >= 1 (training started
    or resumed at iteration i), so no two of them replay each other; below 2**31, as procgen requires."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0] % 2**31)


class ProcgenVectorEnv:
    """procgen's native vectorised env (one C++ object steps every env, on its own threads) behind a gymnasium-style
    vector interface, as the paper plays it (§1.2): the one fixed level of `distribution_mode="exploration"`,
    15 actions, rewards unclipped, observations uint8 (num_envs, 6, 64, 64): two RGB frames, the newest last, the older
    one zeroed when an episode starts. With probability `random_action_probability` an env executes a uniformly random
    action instead of the agent's, and the agent is not told (§9 item 20).
    Procgen starts the next episode itself: the step that ends one returns the new episode's first observation with
    `terminated` set, and the ended episode's return `r` and length `l` in `info["episode"]` where `info["_episode"]`.
    Procgen signals only that an episode ended, its time limit included, so nothing is reported truncated (as the
    reference). With `video_folder`, every `video_interval`-th episode of env 0 is written as the agent sees it."""

    single_observation_space = gym.spaces.Box(0, 255, (6, 64, 64), np.uint8)
    single_action_space = gym.spaces.Discrete(15)

    def __init__(
        self,
        game: str,
        num_envs: int,
        video_folder: Optional[str] = None,
        video_prefix: str = "train",
        video_interval: int = 1,
        random_action_probability: float = 0.01,
    ):
        self.game, self.num_envs, self.random_action_probability = game, num_envs, random_action_probability
        self.video_folder, self.video_prefix, self.video_interval = video_folder, video_prefix, video_interval
        self.video_writer = None

    def reset(self, seed: int) -> tuple:
        """Starts every env on a new episode; `seed` is procgen's rand_seed and seeds the random actions."""
        self.close()
        self.env = ProcgenGym3Env(num=self.num_envs, env_name=self.game, distribution_mode="exploration", rand_seed=seed)
        self.rng = np.random.default_rng(seed)
        self.obs = np.zeros((self.num_envs,) + self.single_observation_space.shape, dtype=np.uint8)
        self.episode_returns = np.zeros(self.num_envs)
        self.episode_lengths = np.zeros(self.num_envs, dtype=np.int64)
        self.video_episode = -1
        self.obs[:, 3:] = self.env.observe()[1]["rgb"].transpose(0, 3, 1, 2)
        self._record_video(episode_started=True)
        return self.obs.copy(), {}

    def step(self, actions: np.ndarray) -> tuple:
        random_actions = self.rng.integers(self.single_action_space.n, size=self.num_envs)
        replaced = self.rng.random(self.num_envs) < self.random_action_probability
        self.env.act(np.where(replaced, random_actions, actions))
        reward, frames, episode_started = self.env.observe()
        self.episode_returns += reward
        self.episode_lengths += 1
        info = {}
        if episode_started.any():
            info["episode"] = {"r": self.episode_returns.copy(), "l": self.episode_lengths.copy()}
            info["_episode"] = episode_started.copy()
            self.episode_returns[episode_started] = 0.0
            self.episode_lengths[episode_started] = 0
        self.obs[:, :3] = np.where(episode_started[:, None, None, None], 0, self.obs[:, 3:])  # §1.2: zeroed at reset
        self.obs[:, 3:] = frames["rgb"].transpose(0, 3, 1, 2)
        self._record_video(episode_started[0])
        return self.obs.copy(), reward.astype(np.float32), episode_started.copy(), np.zeros(self.num_envs, dtype=bool), info

    def close(self) -> None:
        if self.video_writer is not None:
            self.video_writer.release()
            self.video_writer = None

    def _record_video(self, episode_started: bool) -> None:
        """Env 0's newest frame, scaled up 4x, into every `video_interval`-th episode's mp4 (OpenCV)."""
        if self.video_folder is None:
            return
        if episode_started:
            self.close()
            self.video_episode += 1
            if self.video_episode % self.video_interval == 0:
                os.makedirs(self.video_folder, exist_ok=True)
                path = os.path.join(self.video_folder, f"{self.video_prefix}-episode-{self.video_episode}.mp4")
                self.video_writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 15, (256, 256))
        if self.video_writer is not None:
            frame = cv2.resize(self.obs[0, 3:].transpose(1, 2, 0), (256, 256), interpolation=cv2.INTER_NEAREST)
            self.video_writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Actor-critic of §2.2 with an extrinsic and an intrinsic value head; reads uint8 (B, 6, 64, 64) stacks."""

    def __init__(self, num_actions: int):
        super().__init__()
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(6, 32, 3, stride=2, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 3, stride=2, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=2, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1, padding=1)),
            nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 8 * 8, 512)),  # no activation: each head brings its own (§2.1)
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


def predictor_head(gain: float) -> list:
    """The predictor's two extra layers of 512 after its encoder (§2.3-2.6)."""
    return [nn.ELU(), layer_init(nn.Linear(512, 512), std=gain), nn.ELU(), layer_init(nn.Linear(512, 512), std=gain)]


class DistillationModel(nn.Module):
    """A target network and a predictor that imitates it; `forward` gives the features of both, (N, 512) each."""

    def forward(self, x):
        return self.target(x), self.predictor(x)


class RNDModel(DistillationModel):
    """§2.3: a frozen random target and a predictor trained to imitate it; the error is high on unfamiliar frames.
    Both are three ELU convolutions (8x8 stride 4, 3x3 stride 2, 3x3 stride 1) and a linear layer to 512."""

    def __init__(self):
        super().__init__()

        def encoder():
            return [
                layer_init(nn.Conv2d(3, 32, 8, stride=4, padding=2)),
                nn.ELU(),
                layer_init(nn.Conv2d(32, 64, 3, stride=2, padding=1)),
                nn.ELU(),
                layer_init(nn.Conv2d(64, 64, 3, stride=1, padding=1)),
                nn.ELU(),
                nn.Flatten(),
                layer_init(nn.Linear(64 * 8 * 8, 512)),
            ]

        self.target = nn.Sequential(*encoder())
        self.predictor = nn.Sequential(*encoder(), *predictor_head(np.sqrt(2)))
        self.target.requires_grad_(False)


class SNDVModel(DistillationModel):
    """§2.4: a target trained with a contrastive loss to map two augmentations of a state close and different states
    apart, and a predictor trained to imitate it. Both are four ELU 3x3 convolutions (16, 32, 64, 64 channels, strides
    2, 2, 2, 1) and a linear layer to 512."""

    def __init__(self):
        super().__init__()

        def encoder():
            return [
                layer_init(nn.Conv2d(3, 16, 3, stride=2, padding=1)),
                nn.ELU(),
                layer_init(nn.Conv2d(16, 32, 3, stride=2, padding=1)),
                nn.ELU(),
                layer_init(nn.Conv2d(32, 64, 3, stride=2, padding=1)),
                nn.ELU(),
                layer_init(nn.Conv2d(64, 64, 3, stride=1, padding=1)),
                nn.ELU(),
                nn.Flatten(),
                layer_init(nn.Linear(64 * 8 * 8, 512)),
            ]

        self.target = nn.Sequential(*encoder())
        self.predictor = nn.Sequential(*encoder(), *predictor_head(np.sqrt(2)))


def snd_conv_encoder(gain: float, last_channels: int = 64) -> list:
    """§2.5-2.6: the ST-DIM encoder's conv stack (its last conv has 64 channels on Procgen; SND-VIC's predictor
    widens it to 128) and 512-d projection, orthogonal gain `gain` (3 x 64 x 64 input)."""
    return [
        layer_init(nn.Conv2d(3, 32, 3, stride=2, padding=1), std=gain),
        nn.ReLU(),
        layer_init(nn.Conv2d(32, 64, 3, stride=2, padding=1), std=gain),
        nn.ReLU(),
        layer_init(nn.Conv2d(64, 64, 3, stride=2, padding=1), std=gain),
        nn.ReLU(),
        layer_init(nn.Conv2d(64, last_channels, 3, stride=1, padding=1), std=gain),
        nn.ReLU(),
        nn.Flatten(),
        layer_init(nn.Linear(last_channels * 8 * 8, 512), std=gain),
    ]


class STDIMTarget(nn.Module):
    """§2.5: the ST-DIM encoder: 512-d global features, the 64-channel map after its third conv ("f5") as local
    features, and the two bilinear classifiers of its loss (default init, as the reference)."""

    def __init__(self):
        super().__init__()
        layers = snd_conv_encoder(gain=0.5)
        self.local_encoder = nn.Sequential(*layers[:6])  # up to the third conv's ReLU: (N, 64, 8, 8)
        self.global_encoder = nn.Sequential(*layers[6:])
        self.classifier1 = nn.Linear(512, 64)  # global features -> local depth
        self.classifier2 = nn.Linear(64, 64)  # local -> local

    def forward(self, x):
        """Returns the global features (N, 512) and the local ones (N, 64, 64): a 64-d vector per position."""
        local_maps = self.local_encoder(x)
        return self.global_encoder(local_maps), local_maps.flatten(2).transpose(1, 2)


class SNDSTDModel(DistillationModel):
    """§2.5: a target trained with ST-DIM to tell each next state's features from the batch's others, and a
    predictor trained to imitate it; all gains 0.5."""

    def __init__(self):
        super().__init__()
        self.target = STDIMTarget()
        self.predictor = nn.Sequential(*snd_conv_encoder(gain=0.5), *predictor_head(0.5))

    def forward(self, x):
        return self.target(x)[0], self.predictor(x)  # the target's global features


class SNDVICModel(DistillationModel):
    """§2.6: a target (the ST-DIM encoder, gain 0.5) trained with VICReg to map consecutive states close and keep its
    features spread, and a predictor (gain sqrt(2), its last conv 128 channels wide) trained to imitate it."""

    def __init__(self):
        super().__init__()
        self.target = nn.Sequential(*snd_conv_encoder(gain=0.5))
        self.predictor = nn.Sequential(*snd_conv_encoder(gain=np.sqrt(2), last_channels=128), *predictor_head(np.sqrt(2)))


MOTIVATION_MODELS = {"rnd": RNDModel, "snd-v": SNDVModel, "snd-std": SNDSTDModel, "snd-vic": SNDVICModel}


def motivation_input(frames: torch.Tensor, frame_mean: Optional[torch.Tensor]) -> torch.Tensor:
    """SPEC §3: the newest RGB frame (..., 3, 64, 64) in [0, 1] units; RND subtracts its running mean (no division by
    a std), SND reads raw pixels (`frame_mean` None)."""
    if frame_mean is None:
        return frames.float() / 255.0
    return (frames.float() - frame_mean.float()) / 255.0


def distillation_error(target_features: torch.Tensor, predicted_features: torch.Tensor, method: str) -> torch.Tensor:
    """§3, per sample: RND e = 1/2 * sum_k (T_k - P_k)^2; SND-V e = 1/512 * sum_k (T_k - P_k)^2;
    SND-STD and SND-VIC e = 1/512 * sum_k (|T_k - P_k| + 1e-8)^2."""
    difference = target_features - predicted_features
    if method == "rnd":
        return 0.5 * difference.pow(2).sum(1)
    if method == "snd-v":
        return difference.pow(2).mean(1)
    return (difference.abs() + 1e-8).pow(2).mean(1)


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


def contrastive_loss(features: torch.Tensor, other_features: torch.Tensor, labels: torch.Tensor) -> tuple:
    """§4.2: the target's loss on pairs of states, features (N, D) each, label 0 for two views of one state and 1 for
    two different states. Returns (total, terms): similarity = mean over pairs of (y - d)^2 with the distance
    d = mean_k (z_k - z'_k)^2; magnitude = max(0, mean(z^2) + mean(z'^2) - 200); total = similarity + magnitude."""
    distance = (features - other_features).pow(2).mean(1)
    similarity = (labels - distance).pow(2).mean()
    magnitude = (features.pow(2).mean() + other_features.pow(2).mean() - 200.0).clamp(min=0.0)
    return similarity + magnitude, {"similarity": similarity, "magnitude": magnitude}


def augment(frames: torch.Tensor) -> torch.Tensor:
    """§5, on a new tensor: each sample of (N, C, H, W) frames, with probability 0.5, has 10% of its tiles zeroed (one
    tile size per call from {1, 2, 4, 8, 12, 16} at 96 px, {1, 2, 4, 8, 16} otherwise; the same tiles in every
    channel); then, with probability 0.5, uniform noise in [-0.2, 0.2] added to each pixel, not clipped. The frames
    are 96 or 64 px, so that every tile size divides them."""
    num_samples, _, height, width = frames.shape
    tile_sizes = (1, 2, 4, 8, 12, 16) if height == 96 else (1, 2, 4, 8, 16)
    tile = tile_sizes[torch.randint(len(tile_sizes), ()).item()]  # a CPU draw: no device sync
    kept_tiles = torch.rand((num_samples, 1, height // tile, width // tile), device=frames.device) >= 0.1
    mask = kept_tiles.repeat_interleave(tile, dim=2).repeat_interleave(tile, dim=3)
    masked = torch.where(torch.rand((num_samples, 1, 1, 1), device=frames.device) < 0.5, frames * mask, frames)
    noise = torch.empty_like(frames).uniform_(-0.2, 0.2)
    return torch.where(torch.rand((num_samples, 1, 1, 1), device=frames.device) < 0.5, masked + noise, masked)


def sample_pairs(num_states: int, num_pairs: int, device: torch.device) -> tuple:
    """§4.2: `num_pairs` pairs of state indices drawn from the whole rollout; label 0 (half of them on average): the
    same state twice, to be augmented into two views; label 1: an independent random state. Returns (first, second,
    labels)."""
    first = torch.randint(num_states, (num_pairs,), device=device)
    labels = (torch.rand(num_pairs, device=device) < 0.5).float()
    second = torch.where(labels.bool(), torch.randint(num_states, (num_pairs,), device=device), first)
    return first, second, labels


def st_dim_loss(next_global_scores, next_local_scores, local_features, target_features) -> tuple:
    """§4.3: ST-DIM between s_t and s_{t+1}. next_global_scores = classifier1(global features of s_{t+1}), (N, 64);
    next_local_scores = classifier2(local features of s_{t+1}), (N, P, 64); local_features of s_t, (N, P, 64);
    target_features = global features of s_t, (N, 512). At each position p, logits[p, i, j] = <score_p(s'_i), l_p(s_j)>
    and a softmax over the next states i must pick i = j (InfoNCE normalised over the batch of next states, §9 item 12).
    Returns (total, terms): global_local and local_local InfoNCE; logit_norm = sum over both logit tensors of
    mean_p ||logits[p]||_F; feature_std = -mean_j std_k g_k(s_j); total = the two InfoNCE + 1e-4 (logit_norm +
    feature_std)."""
    num_samples, num_positions = local_features.shape[:2]
    global_local_logits = torch.einsum("id,jpd->pij", next_global_scores, local_features)
    local_local_logits = torch.einsum("ipd,jpd->pij", next_local_scores, local_features)
    # cross_entropy takes the class axis second: for each (p, j) the classes are the next states i
    labels = torch.arange(num_samples, device=local_features.device).expand(num_positions, num_samples)
    global_local = nn.functional.cross_entropy(global_local_logits, labels)
    local_local = nn.functional.cross_entropy(local_local_logits, labels)
    logit_norm = global_local_logits.flatten(1).norm(dim=1).mean() + local_local_logits.flatten(1).norm(dim=1).mean()
    feature_std = -target_features.std(1).mean()
    total = global_local + local_local + 1e-4 * (logit_norm + feature_std)
    return total, {
        "global_local_infonce": global_local,
        "local_local_infonce": local_local,
        "logit_norm": logit_norm,
        "feature_std": feature_std,
    }


def vicreg_loss(features: torch.Tensor, next_features: torch.Tensor) -> tuple:
    """§4.4: VICReg between the target features of s_t and s_{t+1}, both (N, D). Returns (total, terms):
    invariance = MSE(z, z'); variance = sum over both views of mean_d max(0, 1 - sqrt(Var_d + 1e-4));
    covariance = sum over both views of the squared off-diagonal covariances / D;
    total = invariance + variance + covariance / 25."""
    invariance = (features - next_features).pow(2).mean()
    variance = torch.zeros((), device=features.device)
    covariance = torch.zeros((), device=features.device)
    for z in (features, next_features):
        variance = variance + (1.0 - torch.sqrt(z.var(0) + 1e-4)).clamp(min=0.0).mean()
        centred = z - z.mean(0)
        cov = centred.T @ centred / (z.shape[0] - 1)
        covariance = covariance + (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / z.shape[1]
    total = invariance + variance + covariance / 25.0
    return total, {"invariance": invariance, "variance": variance, "covariance": covariance}


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


def next_state_frames(frames: torch.Tensor, terminations: torch.Tensor, start: int, stop: int, num_envs: int):
    """Newest frames of s_{t+1} for the flat (step-major) rollout indices start..stop-1, read from the rollout storage
    without a copy of it: `frames` holds those of the num_steps + 1 stored states, so s_{t+1} is num_envs rows further
    on. Where an episode ended at t, procgen shows no final frame: s_t's stands in, as in the reference (§1.2, §4.0)."""
    ended = terminations[start:stop, None, None, None]
    return torch.where(ended, frames[start:stop], frames[start + num_envs : stop + num_envs])


def motivation_losses(motivation, args: Args, frames, terminations, start: int, stop: int, frame_mean) -> tuple:
    """One motivation minibatch, the flat rollout steps start..stop-1, of `args.method` (§4.1-4.4). `frames`: the newest
    frames of the num_steps + 1 stored states, flattened; `terminations`: the flat episode ends; `frame_mean`: RND's
    running mean (3, 64, 64), None for SND. Returns
    (predictor_loss, target_loss, target_terms, target_features); RND's target is not trained (target_loss None)."""
    inputs = motivation_input(frames[start:stop], frame_mean)
    if args.method == "snd-std":
        target_features, local_features = motivation.target(inputs)
        next_inputs = motivation_input(next_state_frames(frames, terminations, start, stop, args.num_envs), None)
        next_target_features, next_local_features = motivation.target(next_inputs)
        # §4.3: summed squared error, no mask; the target is trained by its own loss only
        predictor_loss = (motivation.predictor(inputs) - target_features.detach()).pow(2).sum()
        target_loss, target_terms = st_dim_loss(
            motivation.target.classifier1(next_target_features),
            motivation.target.classifier2(next_local_features),
            local_features,
            target_features,
        )
        return predictor_loss, target_loss, target_terms, target_features
    target_features, predicted_features = motivation(inputs)
    if args.method == "rnd":
        return masked_mse(predicted_features, target_features, args.update_proportion), None, {}, target_features
    if args.method == "snd-v":
        # §4.2: fresh pairs from the whole rollout for the target, each side augmented
        first, second, labels = sample_pairs(args.batch_size, args.num_pairs, frames.device)
        target_loss, target_terms = contrastive_loss(
            motivation.target(augment(motivation_input(frames[first], None))),
            motivation.target(augment(motivation_input(frames[second], None))),
            labels,
        )
        predictor_loss = masked_mse(predicted_features, target_features, args.update_proportion)
        return predictor_loss, target_loss, target_terms, target_features
    # SND-VIC, §4.4: VICReg between s_t and s_{t+1}, plain MSE for the predictor, no mask
    next_inputs = motivation_input(next_state_frames(frames, terminations, start, stop, args.num_envs), None)
    target_loss, target_terms = vicreg_loss(target_features, motivation.target(next_inputs))
    predictor_loss = (predicted_features - target_features.detach()).pow(2).mean()
    return predictor_loss, target_loss, target_terms, target_features


def rollout_distillation_errors(motivation, method: str, next_frames, step_means, chunk_frames: int) -> torch.Tensor:
    """SPEC §3: the error of every s_{t+1} of a rollout, from its newest frames (T, N, 3, 64, 64) and, for RND, the
    running mean after each step (T, 3, 64, 64; None for SND), after the rollout in passes of about `chunk_frames`
    frames (whole steps): the networks do not change during a rollout, so the errors are those of scoring each step
    as it came. Returns (T, N)."""
    chunk_steps = max(1, chunk_frames // next_frames.shape[1])
    errors = []
    for start in range(0, len(next_frames), chunk_steps):
        means = None if step_means is None else step_means[start : start + chunk_steps, None]
        inputs = motivation_input(next_frames[start : start + chunk_steps], means).flatten(0, 1)
        errors.append(distillation_error(*motivation(inputs), method))
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
    envs = ProcgenVectorEnv(procgen_game(args.env_id), num_envs, video_folder, "eval", args.video_interval)
    quota = np.full(num_envs, args.eval_episodes // num_envs)
    quota[: args.eval_episodes % num_envs] += 1
    finished = np.zeros(num_envs, dtype=int)
    obs, _ = envs.reset(seed=procgen_seed(args.seed, 0))
    while (finished < quota).any():
        with torch.no_grad():
            action, _, _, _, _ = agent.get_action_and_value(torch.as_tensor(obs, device=device))
        obs, _, _, _, infos = envs.step(action.cpu().numpy())
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"] & (finished < quota)):
                idx = int(finished.sum())
                writer.add_scalar("eval/episodic_return", infos["episode"]["r"][i], idx)
                print(f"eval episode {idx}: return {infos['episode']['r'][i]}")
                finished[i] += 1
    envs.close()


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


def progress_state(iteration: int, global_step: int, frame_mean: Optional[RunningMean]) -> dict:
    """What a rollout changes, copied: counters, RND's running mean and RNG states."""
    return {
        "iteration": iteration,
        "global_step": global_step,
        "frame_mean": frame_mean.state_dict() if frame_mean is not None else None,
        "rng": get_rng_states(),
    }


def restore_checkpoint(checkpoint, agent, optimizer, motivation, motivation_optimizer, frame_mean):
    """Loads everything `learner_state` and `progress_state` saved; returns (iteration, global_step)."""
    agent.load_state_dict(checkpoint["agent"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    motivation.load_state_dict(checkpoint["motivation"])
    motivation_optimizer.load_state_dict(checkpoint["motivation_optimizer"])
    if frame_mean is not None:
        frame_mean.load_state_dict(checkpoint["frame_mean"])
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
    if procgen_game(saved["args"]["env_id"]) != procgen_game(args.env_id):
        raise CheckpointError(
            f"{path} holds an agent trained on {saved['args']['env_id']}: pass --env-id {saved['args']['env_id']}"
        )
    check_architecture(saved, path, {"agent": lambda: Agent(saved["num_actions"])})
    return saved


stop_signals = []


def request_stop(signum, frame):
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, exit. A second signal acts at once."""
    stop_signals.append(signum)
    signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    print(f"{signal.Signals(signum).name}: saving a checkpoint, then stopping (send it again to stop at once)", flush=True)


if __name__ == "__main__":
    args = tyro.cli(Args)
    # Bad input is refused here, before any env is built or file written.
    try:
        game = procgen_game(args.env_id)
        if args.eta is None:
            args.eta = paper_eta(args.method, game)
        check_args(args)
        if args.track:
            try:
                import wandb
            except ImportError:
                raise ValueError("--track needs Weights & Biases: pip install wandb") from None
        checkpoint, checkpoint_file, unreadable = (
            load_checkpoint(args.resume, args, MOTIVATION_MODELS[args.method]) if args.resume else (None, None, [])
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
        kind = f"{args.exp_name}-{args.method}-eval" if args.evaluate else f"{args.exp_name}-{args.method}"
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
    envs = ProcgenVectorEnv(game, args.num_envs, video_folder, "train", args.video_interval)
    num_actions = int(envs.single_action_space.n)
    run_header = {"script": SCRIPT, "args": asdict(args), "run_name": run_name, "num_actions": num_actions}

    # channels_last: the conv layout oneDNN and cuDNN run fastest; fused Adam: one kernel for all the parameters
    agent = Agent(num_actions).to(device, memory_format=torch.channels_last)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, fused=True)  # default eps 1e-8, as the reference (§6)
    motivation = MOTIVATION_MODELS[args.method]().to(device, memory_format=torch.channels_last)
    # SPEC §4.0: RND trains its predictor; SND one Adam for target and predictor, which get disjoint loss terms
    motivation_optimizer = optim.Adam(
        (motivation.predictor if args.method == "rnd" else motivation).parameters(),
        lr=args.motivation_learning_rate,
        fused=True,
    )
    frame_mean = RunningMean((3, 64, 64), device) if args.method == "rnd" else None  # SPEC §3: RND's input only
    start_iteration, global_step = 1, 0
    if checkpoint is not None:
        last_iteration, global_step = restore_checkpoint(
            checkpoint, agent, optimizer, motivation, motivation_optimizer, frame_mean
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
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    ext_rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    terminations = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool, device=device)
    ext_values = torch.zeros((args.num_steps, args.num_envs), device=device)
    int_values = torch.zeros((args.num_steps, args.num_envs), device=device)

    # TRY NOT TO MODIFY: start the game
    # The env seed differs per resume, so a resumed run does not replay the random actions it started with
    next_obs = torch.as_tensor(envs.reset(seed=procgen_seed(args.seed, start_iteration))[0], device=device)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    start_time = last_checkpoint_time = time.time()
    start_global_step = global_step

    for iteration in range(start_iteration, args.num_iterations + 1):
        # What the rollout changes, as it stands now: a stop during the rollout saves this, and the resumed run redoes it
        rollout_start = progress_state(iteration - 1, global_step, frame_mean)
        timings = defaultdict(float)
        episode_returns = []
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
            next_obs_np, reward, terminated, _, infos = envs.step(cpu_action)
            timings["env"] += time.perf_counter() - tic

            tic = time.perf_counter()
            ext_rewards[step] = torch.as_tensor(reward, device=device)  # unclipped (§1.2)
            terminations[step] = torch.as_tensor(terminated, device=device)
            next_obs = torch.as_tensor(next_obs_np, device=device)
            if "episode" in infos:
                for i in np.flatnonzero(infos["_episode"]):
                    writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)
                    episode_returns.append(infos["episode"]["r"][i])
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
        b_frames = obs[:, :, 3:].reshape(-1, 3, 64, 64)  # a view: newest frames of s_0 .. s_T
        b_terminations = terminations.reshape(-1)
        # SPEC: the reward is for s_{t+1}; procgen shows no final frame of an ended episode, so s_t's newest frame
        # stands in for it there (the reference's next state is [o_t, o_t] there, §1.2)
        next_frames = next_state_frames(b_frames, b_terminations, 0, args.batch_size, args.num_envs)
        next_frames = next_frames.view(args.num_steps, args.num_envs, 3, 64, 64)
        with torch.no_grad():
            # RND's running mean moves with the frames it scores, s_{t+1}, step by step (the reference: s_t, whole stack)
            step_means = None if frame_mean is None else frame_mean.update(next_frames)
            distillation_errors = rollout_distillation_errors(
                motivation, args.method, next_frames, step_means, reward_chunk_frames
            )
        int_rewards = intrinsic_reward(distillation_errors, args.eta)
        timings["intrinsic_reward"] = time.perf_counter() - tic

        # bootstrap value if not done
        tic = time.perf_counter()
        with torch.no_grad():
            next_ext_value, next_int_value = agent.get_value(next_obs)
            # §1.2: procgen reports only that an episode ended, its time limit included: every end is a termination (as
            # the reference), nothing is truncated, no final observation is bootstrapped
            not_truncated, no_final_values = torch.zeros_like(terminations), torch.zeros_like(ext_values)
            ext_advantages, ext_returns = compute_gae(
                ext_rewards,
                ext_values,
                next_ext_value,
                no_final_values,
                terminations,
                not_truncated,
                args.gamma,
                args.gae_lambda,
            )
            # SPEC: the intrinsic stream is episodic by default, as in the paper
            int_advantages, int_returns = compute_gae(
                int_rewards,
                int_values,
                next_int_value,
                no_final_values,
                terminations,
                not_truncated,
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

        # Motivation: one pass after the PPO update, 32 minibatches in time order, as the reference (§4.0)
        tic = time.perf_counter()
        motivation_stats = defaultdict(float)
        rnd_mean = None if frame_mean is None else frame_mean.mean
        for start in range(0, args.batch_size, args.minibatch_size):
            predictor_loss, target_loss, target_terms, target_features = motivation_losses(
                motivation, args, b_frames, b_terminations, start, start + args.minibatch_size, rnd_mean
            )
            motivation_optimizer.zero_grad()
            (predictor_loss if target_loss is None else predictor_loss + target_loss).backward()
            motivation_optimizer.step()
            motivation_stats["predictor_loss"] += predictor_loss.detach()
            if target_loss is not None:
                motivation_stats["target_loss"] += target_loss.detach()
            for key, value in target_terms.items():
                motivation_stats[f"target_{key}"] += value.detach()
            motivation_stats["target_feature_spread"] += target_feature_spread(target_features.detach())
        timings["motivation_update"] = time.perf_counter() - tic

        # TRY NOT TO MODIFY: record rewards for plotting purposes (the only host syncs of the update, once per iteration)
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
                    **progress_state(iteration, global_step, frame_mean),
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
