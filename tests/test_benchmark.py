"""benchmark/throughput.py's memory sampler; its rows of real runs are checked by tests/test_device_check.py, whose dry run
runs it on four scripts."""

import os
import signal
import subprocess
import sys
import time


from conftest import load_script


def test_the_memory_sample_covers_the_process_and_its_descendants():
    """The env workers' memory counts: a process started by a child of the measured process is found, and read."""
    throughput = load_script("benchmark/throughput.py")
    grandchild = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", grandchild])
    try:
        for _ in range(100):  # until the grandchild has started
            tree = throughput.process_tree(child.pid)
            if len(tree) == 2:
                break
            time.sleep(0.05)
        assert tree[0] == child.pid and len(tree) == 2, tree
        assert all(throughput.memory_kib(pid, "smaps_rollup", "Pss") > 0 for pid in tree)
    finally:
        for pid in reversed(tree):
            os.kill(pid, signal.SIGKILL)
        child.wait()
    assert throughput.memory_kib(child.pid, "status", "VmRSS") == 0  # gone: nothing to add
