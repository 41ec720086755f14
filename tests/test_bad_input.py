"""Bad input is refused before any file or env exists, with one line that says what to do and exit code 2: every
numeric flag out of its range or not finite, names that are not plain, empty or missing paths, sizes that do not
split, the sizes computed at runtime given as flags, unknown games, a missing package; and checkpoints of another script
or other settings, which are left as they were.

Each refusal is checked in-process (`tyro.cli` and `check_args`, as the main block runs them, for every script that
has the flag), and a sample of them through the command line, where nothing may be written."""

import os
from typing import Optional

import pytest
import tyro

from conftest import (
    ATARI,
    BASELINE,
    EVERY_SCRIPT,
    PROCGEN,
    PROCGEN_BASELINE,
    RND,
    SND_V,
    SND_VIC,
    copy_run,
    load_script,
    run_script,
    short,
    tiny_run,
    tree,
)

SCRIPTS = EVERY_SCRIPT  # the baselines too
RANGE_CASES = [  # (flag, value, the range in the message); each for every script that has the flag
    *[("--num-envs", "0", "[1, inf)"), ("--num-steps", "-4", "[1, inf)"), ("--update-epochs", "0", "[1, inf)")],
    *[("--total-timesteps", "0", "[1, inf)"), ("--video-interval", "0", "[1, inf)"), ("--eval-episodes", "-1", "[0, inf)")],
    *[("--learning-rate", "nan", "(0, inf)"), ("--learning-rate", "0", "(0, inf)"), ("--learning-rate", "inf", "(0, inf)")],
    *[("--motivation-learning-rate", "nan", "(0, inf)"), ("--max-grad-norm", "0", "(0, inf)")],
    *[("--checkpoint-interval", "nan", "[0, inf)"), ("--checkpoint-interval", "-1", "[0, inf)")],
    *[("--gamma", "1.5", "(0, 1]"), ("--int-gamma", "0", "(0, 1]"), ("--gae-lambda", "nan", "(0, 1]")],
    *[("--clip-coef", "1", "(0, 1)"), ("--clip-coef", "0", "(0, 1)"), ("--ent-coef", "-1", "[0, inf)")],
    *[("--vf-coef", "nan", "[0, inf)"), ("--ext-coef", "-5", "[0, inf)"), ("--int-coef", "inf", "[0, inf)")],
    *[("--eta", "inf", "[0, inf)"), ("--eta", "nan", "[0, inf)"), ("--eta", "-1", "[0, inf)")],
    *[("--seed", "-1", "[0, 4294967295]"), ("--seed", "99999999999", "[0, 4294967295]")],
    *[("--max-episode-steps", "0", "[1, inf)"), ("--update-proportion", "0", "(0, 1]"), ("--num-pairs", "0", "[1, inf)")],
]
OTHER_CASES = [  # (scripts, flags, message)
    (SCRIPTS, ["--exp-name", "../../escaped"], "--exp-name '../../escaped': give a plain name"),
    (SCRIPTS, ["--exp-name", "a/b"], "--exp-name 'a/b': give a plain name"),
    (SCRIPTS, ["--exp-name", ".."], "give a plain name"),
    (SCRIPTS, ["--exp-name", "a__b"], "give a plain name"),
    (SCRIPTS, ["--resume", ""], "--resume got an empty path"),
    (SCRIPTS, ["--evaluate", ""], "--evaluate got an empty path"),
    (SCRIPTS, ["--resume", "runs/nowhere"], "--resume 'runs/nowhere': no such file or folder"),
    (SCRIPTS, ["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"], "use one of [1, 3, 5, 15]"),
    (SCRIPTS, ["--num-envs", "2", "--num-steps", "16", "--total-timesteps", "31"], "below one rollout, 32 agent steps"),
    (ATARI + (BASELINE,), ["--env-id", "MontezumasRevenge-v5"], "Did you mean: `MontezumaRevenge`?"),
    (ATARI + (BASELINE,), ["--env-id", "Foo"], "any ALE game works, e.g. MontezumaRevenge-v5"),
    ((PROCGEN, PROCGEN_BASELINE), ["--env-id", "starpilot"], "procgen's starpilot has no exploration level; these games"),
    ((PROCGEN, PROCGEN_BASELINE), ["--env-id", "jumpr"], "unknown procgen game 'jumpr'"),
]
TYRO_CASES = [["--batch-size", "7"], ["--num-iterations", "2"], ["--minibatch-size", "3"], ["--seed", "one"]]


def flags_of(script_name: str) -> set:
    return {f"--{name.replace('_', '-')}" for name in load_script(script_name).Args.__dataclass_fields__}


def refusal(script_name: str, flags: list) -> str:
    """The message the main block's check refuses `flags` with; fails if they are accepted."""
    script = load_script(script_name)
    args = tyro.cli(script.Args, args=flags)
    with pytest.raises(ValueError) as error:
        script.check_args(args)
    return str(error.value)


@pytest.mark.parametrize("flag, value, bounds", RANGE_CASES, ids=[f"{flag}={value}" for flag, value, _ in RANGE_CASES])
def test_a_value_out_of_range_or_not_finite_is_refused(flag, value, bounds):
    scripts = [script for script in SCRIPTS if flag in flags_of(script)]
    assert scripts
    for script in scripts:
        parsed = getattr(tyro.cli(load_script(script).Args, args=[flag, value]), flag[2:].replace("-", "_"))
        assert refusal(script, [flag, value]) == f"{flag} must be a number in {bounds}, got {parsed}", script


def test_every_numeric_flag_has_a_range():
    for script_name in SCRIPTS:
        script = load_script(script_name)
        numeric_types = (int, float, Optional[float])  # None: the paper's value, filled in by check_args
        numeric = {name for name, field in script.Args.__dataclass_fields__.items() if field.type in numeric_types}
        assert numeric == set(script.ARG_RANGES), script_name  # the runtime sizes are no flags (tyro.conf.Suppress)


@pytest.mark.parametrize("scripts, flags, message", OTHER_CASES, ids=[" ".join(flags) for _, flags, _ in OTHER_CASES])
def test_names_paths_sizes_and_games_are_refused_with_what_to_do(scripts, flags, message):
    for script in scripts:
        assert message in refusal(script, flags), script


@pytest.mark.parametrize("flags", TYRO_CASES, ids=" ".join)
def test_the_sizes_computed_at_runtime_and_malformed_values_are_not_flags(flags, capsys):
    for script in SCRIPTS:
        with pytest.raises(SystemExit) as exit:
            tyro.cli(load_script(script).Args, args=flags)
        assert exit.value.code == 2
    assert "Unrecognized options" in capsys.readouterr().err or flags[0] == "--seed"


def test_evaluation_and_resume_exclude_each_other_and_evaluation_needs_episodes(tmp_path):
    (tmp_path / "model").touch()
    for script in SCRIPTS:
        exclusive = refusal(script, ["--resume", str(tmp_path), "--evaluate", str(tmp_path / "model")])
        assert "--resume and --evaluate exclude each other" in exclusive
        assert "--evaluate needs --eval-episodes of at least 1" in refusal(
            script, ["--evaluate", str(tmp_path), "--eval-episodes", "0"]
        )


# Through the command line: exit code 2, one line, no env built, nothing written

CLI_CASES = [
    (RND, ["--learning-rate", "nan"], "error: --learning-rate must be a number in (0, inf), got nan"),
    (SND_VIC, ["--exp-name", "../../escaped"], "error: --exp-name '../../escaped': give a plain name"),
    ("ppo_snd_std_atari.py", ["--seed", "-1"], "error: --seed must be a number in [0, 4294967295], got -1"),
    (SND_V, ["--resume", ""], "error: --resume got an empty path"),
    (PROCGEN, ["--env-id", "starpilot"], "error: procgen's starpilot has no exploration level"),
    (RND, ["--batch-size", "7"], "Unrecognized options: --batch-size"),
    (RND, ["--track"], "error: --track needs Weights & Biases: pip install wandb"),
]


@pytest.mark.parametrize("script, flags, message", CLI_CASES, ids=[f"{short(s)} {' '.join(f)}" for s, f, _ in CLI_CASES])
def test_the_command_line_refuses_before_any_file_or_env_exists(script, flags, message, tmp_path):
    before = tree(tmp_path)
    result = run_script(script, [*tiny_run(script), *flags], tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "A.L.E: Arcade Learning Environment" not in result.stderr  # no env was built
    assert tree(tmp_path) == before


def test_without_procgen_the_procgen_script_says_how_to_install_it(tmp_path):
    no_procgen = "import sys\nsys.modules['procgen'] = None\nsys.modules['procgen.env'] = None\n"
    result = run_script(PROCGEN, tiny_run(PROCGEN), tmp_path, check=False, patch=no_procgen)
    assert result.returncode == 2 and "this script needs procgen: pip install procgen2==0.10.7" in result.stderr
    assert not os.path.exists(tmp_path / "runs")


@pytest.fixture
def rnd_run(finished_rnd_run, tmp_path) -> str:
    return copy_run(finished_rnd_run, tmp_path)


@pytest.mark.parametrize(
    "script, flags, message",
    [
        (SND_VIC, [], "was written by ppo_rnd_atari.py, not ppo_snd_vic_atari.py: use that script"),
        (RND, ["--clip-coef", "0.2"], "was written with other settings: --clip-coef 0.1 (now 0.2); pass the run's flags"),
        (RND, ["--env-id", "Pitfall-v5"], "was trained on ALE/MontezumaRevenge-v5: pass --env-id ALE/MontezumaRevenge-v5"),
        (PROCGEN, [], "was written by ppo_rnd_atari.py, not ppo_snd_procgen.py"),
    ],
    ids=["another-script", "other-settings", "another-game", "procgen"],
)
def test_a_checkpoint_of_another_script_game_or_settings_is_refused_and_left_alone(rnd_run, script, flags, message):
    before = tree(rnd_run)
    cwd = os.path.dirname(os.path.dirname(rnd_run))
    result = run_script(script, [*tiny_run(script), *flags, "--resume", rnd_run], cwd, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    lock = os.path.join(rnd_run, "run.lock")  # it names the last process that held the folder
    assert {k: v for k, v in tree(rnd_run).items() if k != lock} == {k: v for k, v in before.items() if k != lock}
