"""Blocks the scripts share stay byte-identical, so a fix in one is a fix in all: module-level definitions by
name, and sections of the main block between two marker lines. A failure names the block and the scripts that
drifted from the first script listed, with the diff."""

import ast
import difflib
import functools
import re

import pytest

from conftest import (
    ATARI,
    BASELINE,
    EVERY_SCRIPT,
    PROCGEN,
    PROCGEN_BASELINE,
    RND,
    ROOT,
    SCRIPTS,
    SND_ATARI,
    SND_STD,
    SND_V,
    SND_VIC,
)

ALL = SCRIPTS  # with an exploration bonus
EVERY = EVERY_SCRIPT
ATARI_AND_BASELINE = ATARI + (BASELINE,)

# Module-level definitions (functions, classes, constants), by name, and the scripts that share each one
SHARED_DEFINITIONS = {
    EVERY: [
        *("layer_init", "compute_gae", "explained_variance", "to_device", "RESUME_MAY_CHANGE", "check_args"),
        *("CHECKPOINT_FILES", "phase_clock"),
        *("SCRIPT", "EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_WRITE_FAILED, EXIT_RUN_LOCKED", "CheckpointError"),
        *("DamagedCheckpoint", "exit_with", "describe", "tensors_of", "nonfinite_entries", "checkpoint_state"),
        *("save_checkpoint", "read_checkpoint", "load_checkpoint", "lock_run_folder"),
        *("stop_signals", "StopRequested", "kill_env_workers", "exit_at_once", "request_stop", "stop_point"),
    ],
    ALL: ["intrinsic_reward", "target_feature_spread", "effective_rank"],
    ATARI
    + (BASELINE,): [
        *("resolve_env_id", "ROOM_RAM_ADDRESS", "RoomsVisited", "RecordEpisodeVideo", "make_env", "make_vector_env"),
        "play_eval_episodes",
    ],
    ATARI: ["Agent"],
    (PROCGEN, PROCGEN_BASELINE): ["resolve_env_id", "procgen_seed", "ProcgenVectorEnv", "play_eval_episodes"],
    (RND, SND_V, PROCGEN): ["masked_mse"],  # the predictor's 25% mask (the authors' RNDModelAtari, SNDVModelAtari)
    (RND, PROCGEN): ["RunningMean"],  # RND's input normalisation
    SND_ATARI: ["snd_input", "rollout_distillation_errors"],  # raw pixels, no running mean
    (SND_STD, SND_VIC): ["snd_conv_encoder", "distillation_error"],
    (SND_V, PROCGEN): ["contrastive_loss", "augment", "sample_pairs"],  # SND-V's target loss
    (SND_STD, PROCGEN): ["st_dim_loss"],
    (SND_VIC, PROCGEN): ["vicreg_loss"],
}

# The envs' close: the Atari scripts first wait for the steps a stop during the rollout left pending
ENVS_CLOSE, AFTER_ENVS_CLOSE = (
    r"^    (envs.close\(\)|for envs in stepping)",
    r"^    signal.signal\(signal.SIGINT, exit_at_once\)  # the checkpoint",
)

# Sections of the file: from the first line matching `start` up to the next line matching `end` (not included)
SHARED_SECTIONS = {
    ATARI_AND_BASELINE: {
        "imports": (r"^import ", r"^@dataclass"),
        "Args: the env and the rollout": (r"^    # Algorithm specific arguments", r"^    gamma: "),
        "Args: the clip and the episode cap": (r"^    update_epochs: int", r"^    vf_coef: "),
        "main: the rollout's turns and the env's step": (r"^            # ROLLOUT", r"^                    global_step \+= "),
        "main: the episodes' statistics": (
            r"^                        final = infos\[\"final_info\"\]",
            r"^                    timings\[",
        ),
    },
    ATARI: {
        "PPO flags of Args": (r"^    # Algorithm specific arguments", r"^    # \S+ arguments$"),
        "main: from the stateful objects to the env step": (
            r"^    rooms_seen = torch.zeros",
            r"^                    next_obs_np",
        ),
        "main: the rest of the rollout step": (
            r"^                    next_obs_np, reward",
            r"^            # INTRINSIC REWARD",
        ),
        "main: flattening and PPO update": (r"^            b_frames = ", r"^            # MOTIVATION UPDATE"),
        "main: logging": (r"^            # LOGGING", r"^            num_updates = "),
    },
    EVERY: {
        "common flags of Args": (r"^class Args:", r"^    # Algorithm specific arguments"),
        "runtime fields of Args": (r"^    # to be filled in runtime", r"^$"),
        "main: bad input": (r'^if __name__ == "__main__":', r"^    if args.cuda and not"),
        "main: device and seeding": (r"^    if args.cuda and not torch.cuda.is_available", r"^    # AGENT"),
        "main: run folder, up to its name": (r"^    # RUN FOLDER", r"^            kind = "),
        "main: from the finished run's check to the envs": (r"^    global_step, start_iteration = ", r"^    # ENVS"),
        "main: the PPO update's policy loss": (
            r"^                    logratio = newlogprob",
            r"^                    # Value loss",
        ),
        "main: the PPO update's step": (
            r"^                    entropy_loss = entropy.mean",
            r"^                    (stats = |for key)",
        ),
        "main: the divergence guard's exit": (r"^            if not finite.all\(\):", r"^            # LOGGING"),
        "main: checkpoint": (r"^            # CHECKPOINT", ENVS_CLOSE),
        "main: the end of the run": (AFTER_ENVS_CLOSE, r"^\Z"),
    },
    (BASELINE, PROCGEN_BASELINE): {
        "PPO flags of Args": (r"^    gae_lambda: float", r"^(    max_episode_steps: int .*)?$"),
        "main: run folder, from its lock": (r"^        run_lock = lock_run_folder", r"^    # ENVS"),
        "main: the update": (r"^            # ADVANTAGES", r"^            # LOGGING"),
        "main: logging": (r"^            num_updates = ", ENVS_CLOSE),
    },
    ALL: {
        "PPO flags of Args": (r"^    learning_rate: float", r"^(    max_episode_steps: int .*)?$"),
        "main: run folder, from its lock": (r"^        run_lock = lock_run_folder", r"^    # ENVS"),
        "main: storage": (r"^    # STORAGE", r"^    # The newest frame of s_"),
        "main: the rest of the storage": (r"^    actions = torch.zeros", r"^    # TRY NOT TO MODIFY: start the game"),
        "main: the training loop, up to the env step": (
            r"^    signal.signal\(signal.SIGINT, request_stop",
            r"^            # ROLLOUT",
        ),
        "main: from the intrinsic reward to the flattening": (r"^            # INTRINSIC REWARD", r"^            b_frames = "),
        "main: updates and divergence guard": (r"^            b_next_frames = ", r"^            # LOGGING"),
        "main: logging and checkpoint": (r"^            num_updates = ", ENVS_CLOSE),
    },
}


@functools.cache
def definitions(script: str) -> dict:
    """{name: source text} of the module-level definitions of `script`."""
    source = (ROOT / script).read_text()
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = ast.get_source_segment(source, node, padded=True)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            found[ast.unparse(target).strip("()")] = ast.get_source_segment(source, node, padded=True)
    return found


def section(script: str, start: str, end: str) -> str:
    lines = (ROOT / script).read_text().splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if re.search(start, line)), None)
    assert first is not None, f"{script}: no line matches the section start {start!r}"
    if end == r"^\Z":
        return "".join(lines[first:])
    last = next((i for i in range(first + 1, len(lines)) if re.search(end, lines[i])), None)
    assert last is not None, f"{script}: no line matches the section end {end!r} after {start!r}"
    return "".join(lines[first:last])


def assert_identical(block: str, texts: dict) -> None:
    """`texts`: {script: text}; every script's text must equal the first one's."""
    (reference, expected), *others = texts.items()
    drifted = {script: text for script, text in others if text != expected}
    report = [
        "".join(difflib.unified_diff(f"{expected}\n".splitlines(True), f"{text}\n".splitlines(True), reference, script, n=1))
        for script, text in drifted.items()
    ]
    assert not drifted, f"{block!r} drifted in {', '.join(drifted)} (compared with {reference}):\n" + "\n".join(report)


def short(scripts: tuple) -> str:
    return "+".join(script.removeprefix("ppo_").removesuffix(".py").removesuffix("_atari") for script in scripts)


@pytest.mark.parametrize(
    "scripts,name",
    [
        pytest.param(scripts, name, id=f"{name}-{short(scripts)}")
        for scripts, names in SHARED_DEFINITIONS.items()
        for name in names
    ],
)
def test_shared_definition_is_byte_identical(scripts, name):
    texts = {}
    for script in scripts:
        found = definitions(script)
        assert name in found, f"{script} has no module-level {name!r}"
        texts[script] = found[name]
    assert_identical(name, texts)


@pytest.mark.parametrize(
    "scripts,block",
    [
        pytest.param(scripts, block, id=f"{block}-{short(scripts)}")
        for scripts, blocks in SHARED_SECTIONS.items()
        for block in blocks
    ],
)
def test_shared_section_is_byte_identical(scripts, block):
    start, end = SHARED_SECTIONS[scripts][block]
    assert_identical(block, {script: section(script, start, end) for script in scripts})


def test_the_shared_blocks_are_most_of_each_script():
    """Guards the lists above: if a refactor renamed the shared blocks away, the tests would check little."""
    for script in EVERY:
        source = (ROOT / script).read_text()
        shared = sum(
            len(definitions(script)[n]) for scripts, names in SHARED_DEFINITIONS.items() if script in scripts for n in names
        )
        shared += sum(
            len(section(script, *bounds))
            for scripts, blocks in SHARED_SECTIONS.items()
            if script in scripts
            for bounds in blocks.values()
        )
        # The procgen script holds four methods' models and its own env adapter: less of it can be shared
        minimum = 0.5 if script == PROCGEN else 0.7  # the procgen script holds four methods
        assert shared > minimum * len(source), f"{script}: only {shared / len(source):.0%} of it is checked as shared"


def test_a_drift_is_reported_with_the_script_and_the_diff():
    with pytest.raises(AssertionError) as failure:
        assert_identical("layer_init", {RND: "a\nb\n", SND_V: "a\nb\n", SND_VIC: "a\nc\n"})
    message = str(failure.value)
    assert f"'layer_init' drifted in {SND_VIC} (compared with {RND})" in message and "-b\n" in message and "+c\n" in message
