"""What the target learns: the target network's features of the states a trained agent visits, per run.

SND's explanation of why it explores better than RND (arXiv 2302.11563) is that a self-supervised target spreads the
states apart where a random target clumps them: the paper projects the 512-d target features of Montezuma's Revenge
states to 2-D, coloured by room (a random target gives tight islands, one per room; a trained one spreads the states
within a room too), and the authors compare the spectrum of those features (their `analysis.py`,
`analytic/FeatureAnalysis.py` and `analytic/StateCollector.py`: PCA eigenvalues, rank, L2 distances between the
features of consecutive states). This tool does the same for the runs of these scripts:

    python benchmark/features.py runs/MontezumaRevenge-v5__ppo_rnd_atari__1__1700000000 \\
        runs/MontezumaRevenge-v5__ppo_snd_vic_atari__1__1700000000 --out benchmark/features
    python benchmark/features.py runs/*/ --frames 4000 --projection tsne

Each RUN is a run folder (`runs/<run_name>/`, read as the scripts resume it: `checkpoint.pt.tmp` if complete, else
`checkpoint.pt`, else `checkpoint.prev.pt`) or a checkpoint file, of any script or method. Per run, the tool

- plays `--frames` frames with the run's saved policy (the checkpoint's agent, its stochastic policy, `--seed`), one
  env built by the script's own env code, and records each state's newest frame and, on Montezuma's Revenge and
  Pitfall, its room (`info["room_id"]`);
- feeds those frames to the run's motivation model as the script does (RND: the frame minus the checkpoint's running
  mean; SND: raw pixels) and keeps the target's features and the predictor's distillation error;
- computes the effective rank of the features with the script's own `effective_rank` (the function behind the training
  log's `motivation/target_effective_rank`; that one is of the last motivation minibatch of an iteration, this one of
  all the frames played), their mean std with its `target_feature_spread` (`motivation/target_feature_spread`), the
  share of the variance in the top 1 and top 10 principal directions, and the mean L2 distance between the features of
  consecutive states (pairs across an episode end left out) and of random pairs of states, and their ratio.

It writes to `--out`: `projection.png` (each run's 2-D projection, PCA or t-SNE, coloured by room where the frames visit
more than one; else by episode, or by time step where they hold one episode; the runs side by side), `spectrum.png` (the normalised
PCA eigenvalues of each run, log scale) and `features.md` (a table of the numbers, one row per run). Bad input (a
folder without a checkpoint, a checkpoint of an unknown script or without a motivation model) is refused with one line
and exit code 2, before anything is played.
"""

import contextlib
import importlib.util
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
# The scripts' own checkpoint rotation (`CHECKPOINT_FILES` in each script), newest first
CHECKPOINT_FILES = ("checkpoint.pt.tmp", "checkpoint.pt", "checkpoint.prev.pt")
ATARI_METHODS = {
    "ppo_rnd_atari.py": "rnd",
    "ppo_snd_v_atari.py": "snd-v",
    "ppo_snd_std_atari.py": "snd-std",
    "ppo_snd_vic_atari.py": "snd-vic",
}
PROCGEN_SCRIPT = "ppo_snd_procgen.py"  # its method is in the checkpoint's args
BASELINE_SCRIPTS = ("ppo_atari.py", "ppo_procgen.py")  # PPO without exploration bonus: no motivation model
METHOD_NAMES = {"rnd": "RND", "snd-v": "SND-V", "snd-std": "SND-STD", "snd-vic": "SND-VIC"}
EXIT_BAD_INPUT = 2
MIN_FRAMES = 10
PANEL_PIXELS = (400, 440)  # each run's panel of projection.png, width x height
SPECTRUM_PIXELS = (640, 420)
DPI = 100
NUM_RANDOM_PAIRS = 4096


@dataclass
class Args:
    runs: tyro.conf.Positional[list[str]]
    """run folders (`runs/<run_name>/`) or checkpoint files, of any of the scripts"""
    out: str = "benchmark/features"
    """where `features.md`, `projection.png` and `spectrum.png` are written"""
    frames: int = 2000
    """frames to play with each run's policy (one env; an ended episode is followed by a new one)"""
    seed: int = 1
    """seed of the play (the env and the policy's sampling) and of the random pairs and the t-SNE"""
    projection: Literal["pca", "tsne"] = "pca"
    """the 2-D projection: PCA, or t-SNE (scikit-learn's, as the authors used) of the top 50 principal components"""


class BadInput(ValueError): ...


def load_script(name: str):
    """The training script `ROOT/name` imported as a module without running its main block, registered in `sys.modules`
    under its own name (tyro and inspect look classes up by their module); one that is already imported from the same
    file is reused. What the import prints (gym's deprecation banner, from procgen's import) is shown only if it fails."""
    module_name, path = name[: -len(".py")], ROOT / name
    loaded = sys.modules.get(module_name)
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == path.resolve():
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        sys.stderr.write(printed.getvalue())
        raise
    return module


@dataclass
class Run:
    """One run's checkpoint, loaded: who wrote it, and its agent and motivation model."""

    label: str  # the run folder's name (and the file's, where a file was given)
    file: str  # the checkpoint read
    script_name: str  # "ppo_snd_vic_atari.py"
    method: str  # "rnd", "snd-v", "snd-std" or "snd-vic"
    env_id: str  # as the run records it: "ALE/MontezumaRevenge-v5" or "jumper"
    global_step: int  # agent steps the checkpoint was trained for
    settings: dict  # the checkpoint's args
    script: object  # the script's module
    agent: torch.nn.Module
    motivation: torch.nn.Module

    @property
    def atari(self) -> bool:
        return self.script_name != PROCGEN_SCRIPT

    @property
    def game(self) -> str:
        return self.env_id.removeprefix("ALE/")


def checkpoint_files(path: str) -> list:
    """The checkpoint files to try, newest first: those of the run folder `path`, or the file `path`."""
    if os.path.isdir(path):
        files = [os.path.join(path, name) for name in CHECKPOINT_FILES if os.path.isfile(os.path.join(path, name))]
        if not files:
            raise BadInput(f"{path} has no checkpoint ({', '.join(CHECKPOINT_FILES)}): pass a run folder of the scripts")
        return files
    if not os.path.isfile(path):
        raise BadInput(f"{path}: no such run folder or checkpoint file")
    return [path]


def open_run(path: str) -> Run:
    """The newest readable checkpoint of `path` (a run folder or a file), its networks built by its script and loaded;
    raises BadInput, saying what is wrong, where there is none or it is not one this tool can read."""
    damaged = []
    for file in checkpoint_files(path):
        try:
            saved = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:  # a partial `checkpoint.pt.tmp`, a truncated or foreign file
            damaged.append(f"{file} is unreadable ({type(error).__name__})")
            continue
        if not isinstance(saved, dict) or not {"kind", "script", "args", "state"} <= saved.keys():
            damaged.append(f"{file} is not a checkpoint of these scripts")
            continue
        script_name, state = saved["script"], saved["state"]
        if "motivation" not in state:
            if script_name in BASELINE_SCRIPTS:
                reason = "a run of the PPO baseline, which has no exploration bonus and so no target network"
            elif saved["kind"] == "model":
                reason = "a `--save-model` model, which holds the agent alone: pass its run folder or checkpoint.pt"
            else:
                reason = "without it there is no target network"
            raise BadInput(f"{file} ({saved['kind']} of {script_name}) has no motivation model: {reason}")
        if script_name not in ATARI_METHODS and script_name != PROCGEN_SCRIPT:
            known = ", ".join([*ATARI_METHODS, PROCGEN_SCRIPT])
            raise BadInput(f"{file} was written by {script_name}, a script this tool does not know (it reads {known})")
        script = load_script(script_name)
        env_id = saved["args"]["env_id"]
        if script_name == PROCGEN_SCRIPT:
            if script.ProcgenGym3Env is None:
                raise BadInput(
                    f"{file} is a Procgen run: install procgen (pip install procgen2==0.10.7 gym3==0.3.3 gym==0.23.1)"
                )
            method = saved["args"]["method"]
            agent = script.Agent(script.ProcgenVectorEnv.single_action_space.n)
            motivation = script.MOTIVATION_MODELS[method]()
        else:
            method = ATARI_METHODS[script_name]
            agent = script.Agent(script.gym.make(env_id).action_space.n)
            motivation = script.RNDModel() if method == "rnd" else script.SNDModel()
        try:  # the script's own reader: checks the networks' names and shapes, refuses nan or inf
            script.read_checkpoint(file, {"agent": agent, "motivation": motivation}, env_id)
        except script.DamagedCheckpoint as error:
            damaged.append(str(error))
            continue
        except script.CheckpointError as error:
            raise BadInput(str(error)) from None
        folder = os.path.basename(os.path.dirname(os.path.abspath(file)))
        label = (
            folder
            if os.path.isdir(path) or os.path.basename(file) == "checkpoint.pt"
            else f"{folder}/{os.path.basename(file)}"
        )
        agent.eval()
        motivation.eval()
        return Run(
            label, file, script_name, method, env_id, int(saved["global_step"]), saved["args"], script, agent, motivation
        )
    raise BadInput("; ".join(damaged))


def collect_states(run: Run, num_frames: int, seed: int) -> dict:
    """Plays `num_frames` frames with the run's stochastic policy in one env built by its script (an ended episode is
    followed by a new one). Returns the newest frame of each state, uint8 (N, 96, 96) on Atari or (N, 3, 64, 64) on
    Procgen; `starts`, True where a state starts an episode; `episodes`, each state's episode number; and `rooms`, each
    state's room id (None on a game without rooms)."""
    torch.manual_seed(seed)
    frames, starts, episodes, rooms = [], [], [], []
    episode = 0

    def act(obs) -> np.ndarray:
        with torch.no_grad():
            return run.agent.get_action_and_value(torch.as_tensor(np.asarray(obs)))[0].numpy()

    if run.atari:
        max_episode_steps = run.settings.get("max_episode_steps", run.script.Args.max_episode_steps)  # older runs lack it
        env = run.script.make_env(run.env_id, max_episode_steps)()
        obs, info = env.reset(seed=seed)
        frames.append(obs[-1]), starts.append(True), episodes.append(episode), rooms.append(info.get("room_id"))
        while len(frames) < num_frames:
            obs, _, terminated, truncated, info = env.step(int(act(obs[None])[0]))
            frames.append(obs[-1]), starts.append(False), episodes.append(episode), rooms.append(info.get("room_id"))
            if (terminated or truncated) and len(frames) < num_frames:  # the final frame kept, the next episode starts
                episode += 1
                obs, info = env.reset()
                frames.append(obs[-1]), starts.append(True), episodes.append(episode), rooms.append(info.get("room_id"))
        env.close()
        frames = frames[:num_frames]
    else:  # procgen starts the next episode itself: the step that ends one returns the new one's first frame
        env = run.script.ProcgenVectorEnv(run.env_id, 1)
        obs, _ = env.reset(seed=run.script.procgen_seed(seed, 0))
        frames.append(obs[0, 3:]), starts.append(True), episodes.append(episode)
        while len(frames) < num_frames:
            obs, _, terminated, _, _ = env.step(act(obs))
            episode += bool(terminated[0])
            frames.append(obs[0, 3:]), starts.append(bool(terminated[0])), episodes.append(episode)
        env.close()
    has_rooms = run.atari and rooms[0] is not None
    return {
        "frames": torch.as_tensor(np.stack(frames)),
        "starts": np.array(starts[:num_frames]),
        "episodes": np.array(episodes[:num_frames]),
        "rooms": np.array(rooms[:num_frames]) if has_rooms else None,
    }


def motivation_features(run: Run, frames: torch.Tensor, chunk: int = 256) -> tuple:
    """(target features (N, D) float64, distillation errors (N,)) of the newest frames, fed to the motivation model as the
    script feeds it."""
    script, motivation, features, errors = run.script, run.motivation, [], []
    with torch.no_grad():
        for batch in frames.split(chunk):
            if run.atari:
                x = script.rnd_input(batch, motivation.frame_mean.mean) if run.method == "rnd" else script.snd_input(batch)
                target, predicted = motivation(x)
                error = script.distillation_error(target, predicted)
            else:
                x = script.motivation_input(batch, motivation.frame_mean.mean if run.method == "rnd" else None)
                target, predicted = motivation(x)
                error = script.distillation_error(target, predicted, run.method)
            features.append(target.double())
            errors.append(error.double())
    return torch.cat(features).numpy(), torch.cat(errors).numpy()


def spectrum(features: np.ndarray) -> np.ndarray:
    """The eigenvalues of the features' covariance (PCA's), largest first, each as its share of their sum (all 0 where
    the features do not vary)."""
    eigenvalues = torch.linalg.eigvalsh(torch.cov(torch.as_tensor(features, dtype=torch.float64).T)).clamp(min=0)
    eigenvalues = eigenvalues.flip(0).numpy()
    total = eigenvalues.sum()
    return eigenvalues / total if total > 0 else np.zeros_like(eigenvalues)


def pair_distances(features: np.ndarray, starts: np.ndarray, seed: int, num_random: int = NUM_RANDOM_PAIRS) -> tuple:
    """(L2 distances between the features of consecutive states of an episode, between random pairs of distinct states).
    A pair whose second state starts an episode is not consecutive: the episode ended between them."""
    consecutive = np.flatnonzero(~starts[1:])
    near = np.linalg.norm(features[consecutive + 1] - features[consecutive], axis=1)
    rng = np.random.default_rng(seed)
    first = rng.integers(len(features), size=num_random)
    second = (first + rng.integers(1, len(features), size=num_random)) % len(features)  # never the state itself
    return near, np.linalg.norm(features[first] - features[second], axis=1)


def feature_numbers(script, features: np.ndarray, starts: np.ndarray, seed: int) -> dict:
    """The table's numbers of one run's target features (N, D): the effective rank by the script's own `effective_rank`,
    the mean std of a feature by its `target_feature_spread` (both logged in training, `motivation/*`), the variance share of the top 1 and top 10 principal directions, the mean consecutive and random-pair distances and
    their ratio."""
    shares = spectrum(features)
    near, far = pair_distances(features, starts, seed)
    consecutive = float(near.mean()) if len(near) else float("nan")
    random_pairs = float(far.mean())
    return {
        "dimensions": features.shape[1],
        "effective_rank": float(script.effective_rank(torch.as_tensor(features))),
        "feature_std": float(script.target_feature_spread(torch.as_tensor(features))),
        "top1_share": float(shares[:1].sum()) if shares.any() else float("nan"),
        "top10_share": float(shares[:10].sum()) if shares.any() else float("nan"),
        "consecutive_distance": consecutive,
        "random_distance": random_pairs,
        "distance_ratio": consecutive / random_pairs if random_pairs > 0 else float("nan"),
    }


def project(features: np.ndarray, method: str, seed: int) -> tuple:
    """(N, 2) coordinates and the two axis labels: the top two principal components (with their variance shares), or
    t-SNE of the top 50."""
    centred = features - features.mean(0)
    _, singular_values, directions = np.linalg.svd(centred, full_matrices=False)
    variance = singular_values**2
    share = variance / variance.sum() if variance.sum() > 0 else np.zeros_like(variance)
    if method == "pca":
        coordinates = centred @ directions[:2].T
        if coordinates.shape[1] < 2:
            coordinates = np.pad(coordinates, ((0, 0), (0, 2 - coordinates.shape[1])))
        return coordinates, (f"PC 1 ({100 * share[0]:.0f}% of variance)", f"PC 2 ({100 * share[1]:.0f}%)")
    from sklearn.manifold import TSNE

    components = centred @ directions[:50].T
    perplexity = min(30.0, (len(features) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(components), ("t-SNE 1", "t-SNE 2")


def colouring(states: dict) -> tuple:
    """(a value per state, what it is): the room where the frames visit more than one (a game with rooms); else the
    episode where they hold more than one; else the time step."""
    if states["rooms"] is not None and len(np.unique(states["rooms"])) > 1:
        return states["rooms"], "room"
    if states["episodes"][-1] > 0:
        return states["episodes"], "episode"
    return np.arange(len(states["episodes"])), "time step"


def run_title(run: Run) -> str:
    return f"{METHOD_NAMES[run.method]} ({run.script_name}), {run.game}, {steps_text(run.global_step)} steps"


def steps_text(steps: int) -> str:
    return f"{steps / 1e6:.1f}M" if steps >= 1e6 else f"{steps / 1e3:.1f}k" if steps >= 1e4 else str(steps)


def plot_projections(results: list, path: Path, method: str, seed: int) -> None:
    """The runs side by side, each panel PANEL_PIXELS, its states coloured by room (or episode, or time step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = PANEL_PIXELS
    figure, axes = plt.subplots(1, len(results), figsize=(width * len(results) / DPI, height / DPI), dpi=DPI, squeeze=False)
    for ax, result in zip(axes[0], results):
        coordinates, labels = project(result["features"], method, seed)
        values, kind = colouring(result["states"])
        distinct = np.unique(values)
        if len(distinct) <= {"room": 20, "episode": 10, "time step": 0}[kind]:  # a colour each, named in the legend
            palette = plt.get_cmap("tab20" if len(distinct) > 10 else "tab10")
            for i, value in enumerate(distinct):
                chosen = values == value
                ax.scatter(*coordinates[chosen].T, s=4, alpha=0.7, color=palette(i), label=f"{kind} {value}", linewidths=0)
            ax.legend(fontsize=6, markerscale=3, frameon=False, loc="best", ncol=2 if len(distinct) > 6 else 1)
        else:
            points = ax.scatter(*coordinates.T, s=4, alpha=0.7, c=values, cmap="viridis", linewidths=0)
            figure.colorbar(points, ax=ax, fraction=0.046, pad=0.02).set_label(kind, fontsize=7)
        run = result["run"]
        ax.set_title(f"{run_title(run)}\n{run.label}", fontsize=7)
        ax.set_xlabel(labels[0], fontsize=7)
        ax.set_ylabel(labels[1], fontsize=7)
        ax.tick_params(labelsize=6)
        ax.spines[["top", "right"]].set_visible(False)
    kinds = sorted({colouring(result["states"])[1] for result in results})
    title = f"Target features, {'PCA' if method == 'pca' else 't-SNE'}"
    figure.suptitle(title + (f", coloured by {kinds[0]}" if len(kinds) == 1 else ""), fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def plot_spectra(results: list, path: Path) -> None:
    """One line per run: the normalised PCA eigenvalues of its target features against their rank, log scale. Shares
    below 1e-12 are numerical zeros (fewer distinct frames than feature dimensions) and are not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = SPECTRUM_PIXELS
    figure, ax = plt.subplots(figsize=(width / DPI, height / DPI), dpi=DPI)
    styles = ["-", "--", "-.", ":"]
    names = [f"{METHOD_NAMES[r['run'].method]}, {r['run'].game}, {steps_text(r['run'].global_step)} steps" for r in results]
    for i, (result, name) in enumerate(zip(results, names)):
        shares = spectrum(result["features"])
        drawn = shares > 1e-12
        if names.count(name) > 1:  # runs alike but for their folder: name it
            name += f" ({result['run'].label})"
        label = f"{name}: effective rank {result['numbers']['effective_rank']:.1f}"
        ax.plot(np.flatnonzero(drawn) + 1, shares[drawn], styles[i % 4], color=f"C{i % 10}", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("principal direction (largest variance first)")
    ax.set_ylabel("share of the variance")
    ax.set_title("Spectrum of the target features", fontsize=10)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=6, frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def number_text(value: float, spec: str) -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def markdown(results: list, args: Args) -> str:
    projection = "PCA" if args.projection == "pca" else "t-SNE (of the top 50 principal components)"
    lines = [
        "# What the target learns",
        "",
        f"{len(results)} runs; per run {args.frames} frames played with its saved policy (stochastic, seed {args.seed}), "
        "the target's features of each state's newest frame, fed as the script feeds them.",
        "",
        "![projection](projection.png)",
        "",
        f"`projection.png`: {projection} of each run's target features, coloured by room where the frames visit more "
        "than one (else by episode, or by time step where they hold one episode). `spectrum.png`: the normalised PCA "
        "eigenvalues.",
        "",
        "![spectrum](spectrum.png)",
        "",
        "| run | script (method) | game | agent steps | frames | rooms seen | coloured by | effective rank | feature std | "
        "top-1 share | top-10 share | consecutive distance | random-pair distance | ratio | distillation error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        run, numbers, states = result["run"], result["numbers"], result["states"]
        rooms = "-" if states["rooms"] is None else str(len(np.unique(states["rooms"])))
        cells = [
            f"`{run.label}`",
            f"{run.script_name} ({METHOD_NAMES[run.method]})",
            run.game,
            str(run.global_step),
            str(len(states["starts"])),
            rooms,
            colouring(states)[1],
            f"{numbers['effective_rank']:.1f} of {numbers['dimensions']}",
            f"{numbers['feature_std']:.4g}",
            number_text(numbers["top1_share"], ".3f"),
            number_text(numbers["top10_share"], ".3f"),
            number_text(numbers["consecutive_distance"], ".4g"),
            number_text(numbers["random_distance"], ".4g"),
            number_text(numbers["distance_ratio"], ".3f"),
            f"{result['errors'].mean():.4g}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "How to read it. Effective rank: exp of the entropy of the normalised eigenvalues (the scripts' `effective_rank`, "
        "behind the training log's `motivation/target_effective_rank`): how many directions the features spread over, 1 "
        "for a collapsed target, the dimension for an isotropic one. Feature std: the mean over features of their std over the "
        "states (the scripts' `target_feature_spread`), near 0 for a target that maps every state to one point. Top-1 / top-10 share: the variance in the largest 1 "
        "and 10 principal directions. Consecutive distance: the mean L2 distance between the features of consecutive "
        "states of an episode (pairs across an episode end left out); random-pair distance: between random pairs of "
        "states; ratio: consecutive / random, below 1 where the target keeps neighbouring states closer than states far "
        "apart in time. The distances are in the target's own units (RND's and SND's targets differ in scale); compare "
        "runs by the ratio. Distillation error: the mean per-state error of the predictor, the script's "
        "`distillation_error`, the intrinsic reward before its scale eta and clipping.",
    ]
    return "\n".join(lines) + "\n"


def analyse(run: Run, num_frames: int, seed: int) -> dict:
    states = collect_states(run, num_frames, seed)
    features, errors = motivation_features(run, states["frames"])
    numbers = feature_numbers(run.script, features, states["starts"], seed)
    return {"run": run, "states": states, "features": features, "errors": errors, "numbers": numbers}


def main(args: Args) -> list:
    """Refuses bad input (exit code 2, one line), then analyses each run and writes the pictures and `features.md`;
    returns the results, one dict per run."""
    try:
        if not args.runs:
            raise BadInput("pass one or more run folders (runs/<run_name>/) or checkpoint files")
        if args.frames < MIN_FRAMES:
            raise BadInput(f"--frames {args.frames}: play at least {MIN_FRAMES} frames")
        runs = [open_run(path) for path in args.runs]  # every run checked before any is played
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)
    results = []
    for run in runs:
        print(f"{run.label}: {run_title(run)}, checkpoint {run.file}; playing {args.frames} frames", flush=True)
        result = analyse(run, args.frames, args.seed)
        numbers = result["numbers"]
        print(
            f"  effective rank {numbers['effective_rank']:.1f} of {numbers['dimensions']}, consecutive / random distance "
            f"{numbers['distance_ratio']:.3f}, distillation error {result['errors'].mean():.4g}",
            flush=True,
        )
        results.append(result)
    out = Path(args.out)
    plot_projections(results, out / "projection.png", args.projection, args.seed)
    plot_spectra(results, out / "spectrum.png")
    (out / "features.md").write_text(markdown(results, args))
    print(f"wrote {out / 'features.md'}, {out / 'projection.png'} and {out / 'spectrum.png'}")
    return results


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
