"""benchmark/device_check.sh, the one command prepared for a GPU machine: its dry run runs every step on the CPU at tiny
sizes and writes the files the GPU run writes; a deadline skips steps and says so in the exit code; its wheel list pins
what requirements.txt pins."""

import os
import re
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "benchmark" / "device_check.sh"
MEASURED = ["ppo_snd_vic_atari.py", "ppo_rnd_atari.py", "ppo_snd_procgen.py --method snd-vic", "ppo_snd_vic_atari.py --bf16"]
THROUGHPUT_HEADER = (
    "| script | agent steps/s | s/iteration | env | policy | intrinsic_reward | ppo_update | motivation_update | other "
    "| host RSS GiB | host PSS GiB | GPU GiB |"
)


def run_check(*flags, cwd):
    # PYTHON: the interpreter running the tests, so the dry run uses the same packages
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *flags], capture_output=True, text=True, timeout=420, env=env, cwd=cwd)


def test_dry_run_runs_every_step_and_writes_the_tables(tmp_path):
    out = tmp_path / "out"
    result = run_check("--dry-run", "--out", "out", cwd=tmp_path)  # a relative --out: from where it is called
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    files = sorted(path.name for path in out.iterdir())
    assert files == [
        *("learning-rnd.log", "learning-snd-vic.log", "learning.md", "log.txt", "rollout.md", "throughput.md", "versions.txt")
    ]

    versions = (out / "versions.txt").read_text()
    for line in ["python 3.", "torch ", "numpy ", "gymnasium ", "ale_py ", "tyro ", "procgen ", "nproc "]:
        assert line in versions, (line, versions)
    assert "not importable" not in versions, versions

    # benchmark/throughput.py's rows of real runs: 2 x 16 agent steps an iteration
    throughput = (out / "throughput.md").read_text().splitlines()
    assert THROUGHPUT_HEADER in throughput and "envs x steps: 2 x 16, 1 minibatches" in throughput
    assert any(line.startswith("machine: ") and " cores" in line for line in throughput), throughput
    for script in MEASURED:
        (row,) = [line for line in throughput if line.startswith(f"| {script} |")]
        sps, seconds, *phases, rss, pss, gpu = [cell.strip() for cell in row.strip("|").split("|")][1:]
        # the row rounds the steps/s to a whole number, the seconds to 0.01
        assert float(sps) > 0 and abs(float(sps) * float(seconds) - 32) <= 0.5 * float(seconds) + 0.005 * float(sps) + 0.01
        shares = [re.fullmatch(r"([\d.]+) \((\d+)%\)", phase) for phase in phases]
        assert len(shares) == 6 and all(shares), row  # env, policy, intrinsic reward, PPO, motivation, other
        assert 90 <= sum(int(share.group(2)) for share in shares) <= 110, row
        assert 0.1 < float(rss) < 8 and 0.1 < float(pss) < 8 and gpu == "-", row  # a torch process: a few hundred MB

    rollout = (out / "rollout.md").read_text().splitlines()
    for envs in (2, 4):
        rows = [line for line in rollout if line.startswith(f"| {envs} |")]
        assert [row.split("|")[2].strip() for row in rows] == [
            "sequential",
            "two-halves",
            "two-halves-per-step",
            "learner-1-thread",
        ], rollout
        assert all(float(row.split("|")[3]) > 0 for row in rows), rows

    learning = (out / "learning.md").read_text().splitlines()
    assert "| agent steps | snd-vic | rnd |" in learning, learning
    for method in ("snd-vic", "rnd"):
        (row,) = [line for line in learning if line.startswith(f"| {method} |")]
        steps = [cell.strip() for cell in row.strip("|").split("|")][1]
        assert 0 < int(steps.replace(",", "")) <= 512, row  # 512 steps, or fewer where the time limit stopped it
        assert "starting 8 envs of jumper" in (out / f"learning-{method}.log").read_text()
    curve = learning[learning.index("| agent steps | snd-vic | rnd |") + 2 :]
    assert curve and all(re.fullmatch(r"\| [\d.]+k?-[\d.]+k? \| .+ \| .+ \|", line) for line in curve if line), curve

    log = (out / "log.txt").read_text()
    steps_run = re.findall(r"^\[\+\d+s\] (.+): ok \(\d+s\)$", log, re.MULTILINE)
    assert steps_run[0].startswith("wheels (dry run") and steps_run[1:] == [
        "versions",
        "procgen",
        *(f"throughput {s}" for s in MEASURED),
        "rollout",
        "learning check (jumper snd-vic rnd)",
    ]
    assert re.search(r"device check done: 9 steps ok, 0 failed, 0 skipped", log), log[-2000:]
    assert log.rstrip().endswith(result.stdout.rstrip().splitlines()[-1]), "log.txt holds everything printed"


def test_steps_past_the_deadline_are_skipped_and_the_exit_code_says_so(tmp_path):
    result = run_check("--dry-run", "--budget", "0", "--out", str(tmp_path), cwd=ROOT)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "9 skipped" in result.stdout and "0 steps ok, 0 failed" in result.stdout
    assert result.stdout.count("SKIPPED: past the deadline (0s after the start)") == 9
    assert sorted(path.name for path in tmp_path.iterdir()) == ["learning.md", "log.txt", "throughput.md"]


def test_bad_arguments_are_refused():
    for flags in (["--bogus"], ["--budget", "ten"], ["--out"]):
        result = run_check(*flags, cwd=ROOT)
        assert result.returncode == 2 and result.stderr.startswith("error: "), (flags, result.stderr)


def test_the_wheel_list_pins_what_requirements_pins():
    normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # PEP 503
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[normal(name)] = version
    listed = {}
    for line in (ROOT / "benchmark" / "device_wheels.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, requirement, file = line.split()
            assert kind in ("wheel", "build", "cp311", "lib"), line
            if kind == "lib":
                assert file == "lib.tar.gz" and re.fullmatch(r"lib[\w.+-]+\.so\.\d+", requirement), line
                continue
            name, version = requirement.split("==")
            listed[normal(name)] = version
            # the file as pip names it: NAME-VERSION-TAGS.whl, the name's runs of -_. written as one _
            file_name, file_version = os.path.basename(file).split("-")[:2]
            assert normal(file_name) == normal(name) and file_version == version, line
            assert file.endswith(".whl") and (file.startswith("cp311/") == (kind == "cp311")), line
    # the packages the GPU machine lacks, each at requirements.txt's version
    for name in ("gymnasium", "ale-py", "stable-baselines3", "tyro", "procgen2", "gym3", "gym"):
        assert listed.get(name) == pins[name], (name, listed.get(name), pins[name])
    # and no package the image has (torch, numpy...) shadowed by a carried one
    assert not {"torch", "numpy", "tensorboard", "opencv-python", "matplotlib", "scikit-learn"} & set(listed)
    paths = [".whl/x.whl", "benchmark/device_check_out/log.txt"]
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == paths, "the wheels and the default --out folder are gitignored"
