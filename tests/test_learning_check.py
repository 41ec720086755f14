"""benchmark/learning_check.py: the pass/fail rules of its checks, and one check run end to end on a tiny budget."""

import math
import subprocess
import sys

from conftest import ROOT, load_script

learning_check = load_script("benchmark/learning_check.py")


def test_a_bound_or_a_comparison_decides_a_check():
    at_least = learning_check.Check("a", ("x",), "final", "", at_least=5.0)
    at_most = learning_check.Check("b", ("x",), "final", "", at_most=1.0)
    comparison = learning_check.Check("c", ("x", "y"), "rooms", "")
    assert at_least.passes([5.0]) and not at_least.passes([4.9]) and not at_least.passes([math.nan])
    assert at_most.passes([1.0]) and not at_most.passes([1.1])
    assert comparison.passes([3.0, 2.0]) and not comparison.passes([2.0, 2.0]) and not comparison.passes([math.nan, 1.0])
    assert (at_least.condition(), at_most.condition(), comparison.condition()) == (">= 5", "<= 1", "x > y")


def test_every_check_reads_runs_that_exist_with_a_metric_the_report_computes():
    for check in learning_check.CHECKS:
        assert check.metric in ("final", "rooms") and all(name in learning_check.RUNS for name in check.runs)
        assert (len(check.runs) == 2) == (check.at_least is None and check.at_most is None), check.name


def test_a_run_without_episodes_has_no_figure():
    assert math.isnan(learning_check.metric_value("no finished training episode", "final"))  # read_run's reason


def test_a_tiny_check_runs_end_to_end_and_prints_its_line(tmp_path):
    command = [sys.executable, str(ROOT / "benchmark" / "learning_check.py"), "--only", "jumper-rnd"]
    command += ["--total-timesteps", "512", "--script-args=--num-envs 4 --num-minibatches 2 --no-cuda"]
    command += ["--runs-root", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    (line,) = [line for line in result.stdout.splitlines() if "jumper-rnd:" in line]
    assert line.startswith(("PASS jumper-rnd: final jumper-rnd ", "FAIL jumper-rnd: final jumper-rnd ")), line
    assert "at 512 agent steps" in line and "needs <= 1" in line and "paper: RND stays near 0 on jumper" in line
    assert result.returncode == line.startswith("FAIL")  # the exit code counts the failed checks
    assert (tmp_path / "jumper-rnd" / "output.log").exists()


def test_a_run_that_fails_is_a_failed_check_with_its_log(tmp_path):
    command = [sys.executable, str(ROOT / "benchmark" / "learning_check.py"), "--only", "jumper-rnd"]
    command += ["--script-args=--num-envs 0", "--runs-root", str(tmp_path)]  # refused by the script at once
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    (line,) = [line for line in result.stdout.splitlines() if "jumper-rnd:" in line]
    # the scripts' exit code for bad input is 2
    assert line.startswith("FAIL jumper-rnd: final jumper-rnd: the run exited with 2, see ") and result.returncode == 1
