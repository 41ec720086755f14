#!/usr/bin/env bash
# One prepared command for a lent GPU machine (x86-64, Python 3.12 with CUDA torch, no internet), ending by itself
# inside a 10-minute command: it installs the carried wheels, records the versions, measures the throughput of three
# scripts at the paper's 128 envs x 128 steps, and of SND-VIC with --bf16 (benchmark/throughput.py's table: agent steps/s,
# the time split per phase, peak host and GPU memory), the rollout alone at 32 and 128 envs (benchmark/rollout.py), then,
# with the time left before its deadline, trains jumper with SND-VIC and with RND side by side and prints their learning
# curves (agent steps against the mean episodic return).
#
#   bash benchmark/device_check.sh [--out DIR] [--budget SECONDS]   # on the GPU machine, from the repository root
#   bash benchmark/device_check.sh --dry-run [--out DIR]             # here, on the CPU, tiny sizes, in a minute or two
#   bash benchmark/device_check.sh --download-wheels                  # here: recreate .whl/ (benchmark/device_wheels.txt)
#
# On the GPU machine it needs .whl/ (made here by --download-wheels, gitignored) carried along with the working tree, and
# --out pointing at the folder that comes back; give the command 10 minutes: it ends by itself at about --budget.
#
# --out DIR       where the files go (default benchmark/device_check_out), 7 of them: versions.txt, throughput.md,
#                 rollout.md, learning.md, log.txt (everything printed, with the elapsed time of each step), learning-snd-vic.log and
#                 learning-rnd.log (the two training runs' own output)
# --budget S      seconds after the start past which no step starts (default 540 on the GPU machine, 300 in a dry run);
#                 the learning runs get a stop signal 60 s before it (each saves a checkpoint and flushes its log at the
#                 end of its iteration, and is killed 45 s later if still running), so the command ends at about S
# --dry-run       no wheel install, no GPU (--no-cuda): throughput at 2 envs x 16 steps, 2 iterations; the rollout at 2
#                 and 4 envs; the learning check
#                 at 8 envs x 16 steps for 512 agent steps (90 seconds at most); one OpenMP thread per process unless
#                 OMP_NUM_THREADS says otherwise. If .whl/ is here, it also installs the wheels for Python 3.12 into a
#                 scratch folder (pip's --platform options) and checks them against benchmark/device_wheels.txt
# PYTHON          the interpreter (default python3; in a dry run .venv/bin/python where it exists; with
#                 --download-wheels python, the active venv's)
#
# The wheels: .whl/*.whl are installed with pip into /tmp/site (PYTHONPATH); procgen2, which has only a cp311 wheel on
# PyPI, is unzipped there from .whl/cp311/ (its native code is a library opened with cffi, not a CPython extension); the
# system libraries it needs and the machine lacks are taken from .whl/lib.tar.gz (LD_LIBRARY_PATH). If procgen still
# cannot make an env, the procgen steps are skipped with a line that says why.
#
# Exit code: 0 when every step ran and passed; 1 when a step failed (the steps after it still run); 2 when none failed
# but one was skipped (procgen not usable, or the deadline passed).
set -u

CALLER_DIR=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
OUT_DIR=$ROOT/benchmark/device_check_out
DRY_RUN=0
DOWNLOAD=0
BUDGET=
usage() { sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --out) [ $# -ge 2 ] || { echo "error: --out needs a folder" >&2; exit 2; }; OUT_DIR=$2; shift 2 ;;
        --out=*) OUT_DIR=${1#--out=}; shift ;;
        --budget) [ $# -ge 2 ] || { echo "error: --budget needs seconds" >&2; exit 2; }; BUDGET=$2; shift 2 ;;
        --budget=*) BUDGET=${1#--budget=}; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --download-wheels) DOWNLOAD=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1' (--help lists the options)" >&2; exit 2 ;;
    esac
done
case $BUDGET in
    '') [ $DRY_RUN = 1 ] && BUDGET=300 || BUDGET=540 ;;
    *[!0-9]*) echo "error: --budget takes whole seconds, not '$BUDGET'" >&2; exit 2 ;;
esac
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ $DRY_RUN = 1 ] && [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python
else PY=python3
fi
WHEELS_LIST=benchmark/device_wheels.txt
PIP_312=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
    --platform manylinux1_x86_64)
PIP_311=(--no-deps --only-binary=:all: --python-version 3.11 --implementation cp --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64)

# Lines of benchmark/device_wheels.txt: "KIND REQUIREMENT FILE"
wheel_lines() { grep -v '^[[:space:]]*\(#\|$\)' "$WHEELS_LIST"; }

# The path of procgen's libenv.so under a site folder (or the interpreter's own procgen, with no argument)
libenv_path() {
    if [ $# -gt 0 ]; then echo "$1/procgen/data/prebuilt/libenv.so"; return; fi
    "$PY" -c 'import os, procgen; print(os.path.join(os.path.dirname(procgen.__file__), "data", "prebuilt", "libenv.so"))' 2>/dev/null
}

download_wheels() {
    local kind spec file libs lib path libenv tmp failed=0
    rm -rf .whl && mkdir -p .whl/cp311 || return 1
    libs=()
    while read -r kind spec file; do
        case $kind in
            wheel) "$PY" -m pip download -q "${PIP_312[@]}" -d .whl "$spec" ;;
            build) "$PY" -m pip wheel -q --no-deps --no-binary "${spec%%==*}" -w .whl "$spec" ;;
            cp311) "$PY" -m pip download -q "${PIP_311[@]}" -d .whl/cp311 "$spec" ;;
            lib) libs+=("$spec"); continue ;;
            *) echo "error: $WHEELS_LIST: unknown kind '$kind'" >&2; failed=1; continue ;;
        esac
        [ -f ".whl/$file" ] || { echo "error: $spec did not give .whl/$file" >&2; failed=1; }
    done < <(wheel_lines)
    libenv=$(libenv_path)
    if [ ${#libs[@]} -gt 0 ]; then
        if [ -z "$libenv" ]; then
            echo "error: $PY has no procgen, whose libenv.so tells where the libraries are" >&2; failed=1
        else
            tmp=$(mktemp -d)
            for lib in "${libs[@]}"; do
                path=$(ldd "$libenv" | awk -v name="$lib" '$1 == name && $2 == "=>" {print $3}')
                if [ -n "$path" ] && cp -L "$path" "$tmp/$lib"; then :; else
                    echo "error: ldd $libenv does not resolve $lib here" >&2; failed=1
                fi
            done
            tar -czf .whl/lib.tar.gz -C "$tmp" . || failed=1
            rm -rf "$tmp"
        fi
    fi
    git check-ignore -q .whl/x.whl || { echo "error: .whl/ is not ignored by git: add /.whl/ to .gitignore" >&2; failed=1; }
    echo ".whl/: $(du -sh .whl | cut -f1); with the working tree that travels:" \
        "$(( ($(git ls-files -z -co --exclude-standard | xargs -0 -r cat 2>/dev/null | wc -c) + $(du -sb .whl | cut -f1)) >> 20 )) MiB" \
        "(the limit: 64 MiB)"
    return $failed
}

if [ $DOWNLOAD = 1 ]; then
    [ -n "${PYTHON:-}" ] || PY=python
    download_wheels
    exit $?
fi

[[ $OUT_DIR == /* ]] || OUT_DIR=$CALLER_DIR/$OUT_DIR # relative to where it was called from
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX") || exit 1
trap 'rm -rf "$SCRATCH"' EXIT
: >"$OUT_DIR/log.txt"
exec > >(tee -a "$OUT_DIR/log.txt") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1

SITE=/tmp/site
if [ $DRY_RUN = 1 ]; then
    CUDA_FLAG=--no-cuda
    TP_ENVS=2 TP_STEPS=16 TP_ITERATIONS=2
    ROLLOUT_ENVS="2 4" ROLLOUT_STEPS=4
    LEARN_FLAGS=(--num-envs 8 --num-steps 16 --num-minibatches 1)
    LEARN_TIMESTEPS=512 # 4 iterations, or what fits in the window
    # one OpenMP thread a process: on 2 cores, shared by the runs side by side, more make the small networks slower
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    LEARN_WINDOW=90 LEARN_MIN_WINDOW=10 # seconds of training: the longest, and the least worth starting
else
    CUDA_FLAG=--cuda
    TP_ENVS=128 TP_STEPS=128 TP_ITERATIONS=3
    ROLLOUT_ENVS="32 128" ROLLOUT_STEPS=64
    LEARN_FLAGS=(--num-envs 128 --num-steps 128 --num-minibatches 32) # the paper's: minibatches of 512
    LEARN_TIMESTEPS=8000000 # the paper's budget for the check; the deadline stops the runs long before
    LEARN_WINDOW=100000 LEARN_MIN_WINDOW=60
fi
LEARN_STOP_RESERVE=60 # the learning runs are told to stop this long before the deadline
LEARN_KILL_AFTER=45   # and killed this long after, if still running
PROCGEN=1
PROCGEN_WHY=
PASSED=0 FAILED=0 SKIPPED=0
FAILED_STEPS=()
SKIPPED_STEPS=()

note() { echo "[+$((SECONDS))s] $*"; }
remaining() { echo $((BUDGET - SECONDS)); }
# A time limit for timeout(1): the smaller of $1 and the time left, at least 1 (timeout 0 would mean none)
at_most() {
    local r
    r=$(remaining)
    [ "$r" -lt "$1" ] || r=$1
    [ "$r" -ge 1 ] || r=1
    echo "$r"
}
skip() {
    SKIPPED=$((SKIPPED + 1))
    SKIPPED_STEPS+=("$1")
    note "$1: SKIPPED: $2"
}

# step NAME FUNCTION ARGS...: runs it unless the deadline has passed; logs its outcome and duration
step() {
    local name=$1 start rc
    shift
    if [ "$(remaining)" -le 0 ]; then
        skip "$name" "past the deadline (${BUDGET}s after the start)"
        return 0
    fi
    start=$SECONDS
    note "$name: start"
    "$@"
    rc=$?
    if [ $rc = 0 ]; then
        PASSED=$((PASSED + 1))
        note "$name: ok ($((SECONDS - start))s)"
    elif [ $rc = 99 ]; then # the function said why it skipped
        skip "$name" "see above ($((SECONDS - start))s)"
    else
        FAILED=$((FAILED + 1))
        FAILED_STEPS+=("$name")
        note "$name: FAILED with exit code $rc ($((SECONDS - start))s)"
    fi
    return 0
}

install_wheels() {
    local wheel missing found lib before
    ls .whl/*.whl >/dev/null 2>&1 || {
        echo "no .whl/*.whl here: run 'bash benchmark/device_check.sh --download-wheels' on the dev machine and carry .whl"
        return 1
    }
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl ||
        return 1
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    for wheel in .whl/cp311/procgen2-*.whl; do
        [ -f "$wheel" ] || { echo "no procgen2 wheel in .whl/cp311/: procgen will not be there"; continue; }
        "$PY" -m zipfile -e "$wheel" "$SITE" || return 1
        echo "unzipped $wheel into $SITE"
    done
    # gym 0.23.1 imports distutils.spawn and distutils.version, gone from Python 3.12: where setuptools' shim does not
    # give them, a stand-in with what gym uses of them (in its video recorder, not called without --capture-video)
    if ! "$PY" -c 'import distutils.spawn, distutils.version' 2>/dev/null; then
        mkdir -p "$SITE/distutils" && : >"$SITE/distutils/__init__.py" &&
            echo 'from shutil import which as find_executable' >"$SITE/distutils/spawn.py" &&
            cat >"$SITE/distutils/version.py" <<'PYTHON' &&
class LooseVersion:
    def __init__(self, version):
        self.version = [int(part) if part.isdigit() else part for part in str(version).replace("-", ".").split(".")]

    def __ge__(self, other):
        return self.version >= other.version
PYTHON
            echo "no distutils here: wrote a stand-in with what gym 0.23.1 uses of it into $SITE/distutils"
    fi
    # libenv.so's system libraries: put on LD_LIBRARY_PATH those of .whl/lib.tar.gz that this machine lacks
    if [ -f "$(libenv_path "$SITE")" ]; then
        missing=$(ldd "$(libenv_path "$SITE")" | awk '/not found/ {print $1}')
        if [ -n "$missing" ] && [ -f .whl/lib.tar.gz ]; then
            mkdir -p "$SITE-lib/all" && tar -xzf .whl/lib.tar.gz -C "$SITE-lib/all" || return 1
            export LD_LIBRARY_PATH=$SITE-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
            before=
            while [ -n "$missing" ] && [ "$missing" != "$before" ]; do # a library found may need others
                for lib in $missing; do
                    [ -f "$SITE-lib/all/$lib" ] && cp "$SITE-lib/all/$lib" "$SITE-lib/"
                done
                before=$missing
                missing=$(ldd "$(libenv_path "$SITE")" | awk '/not found/ {print $1}')
            done
            found=$(find "$SITE-lib" -maxdepth 1 -type f -printf '%f ')
            echo "system libraries this machine lacks, taken from .whl/lib.tar.gz: ${found:-none}"
        fi
        [ -z "$missing" ] || echo "libenv.so still misses: $(echo $missing)"
    fi
    return 0
}

# Dry run: the carried wheels install together for Python 3.12 and match benchmark/device_wheels.txt
check_wheels() {
    local kind spec file failed=0 listed extra lib
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "no .whl/ here: not checked (bash benchmark/device_check.sh --download-wheels makes it)"
        return 0
    fi
    listed=" "
    while read -r kind spec file; do
        listed+="$file "
        if [ "$kind" = lib ]; then
            tar -tzf .whl/lib.tar.gz 2>/dev/null | grep -qx "\./$spec" || { echo "missing from .whl/lib.tar.gz: $spec"; failed=1; }
        else
            [ -f ".whl/$file" ] || { echo "missing: .whl/$file ($spec)"; failed=1; }
        fi
    done < <(wheel_lines)
    extra=$(cd .whl && find . -type f | sed 's|^\./||' | while read -r file; do
        [[ $listed == *" $file "* ]] || echo "$file"; done)
    [ -z "$extra" ] || { echo "in .whl/ but not in $WHEELS_LIST: $(echo $extra)"; failed=1; }
    "$PY" -m pip install -q --no-index "${PIP_312[@]}" --no-compile --no-cache-dir --target "$SCRATCH/site" .whl/*.whl ||
        failed=1
    for file in .whl/cp311/procgen2-*.whl; do
        [ -f "$file" ] && { "$PY" -m zipfile -e "$file" "$SCRATCH/site" || failed=1; }
    done
    echo "the wheels install for Python 3.12: $(find "$SCRATCH/site" -maxdepth 1 -name '*.dist-info' | wc -l) distributions; .whl/ is" \
        "$(du -sh .whl | cut -f1)"
    rm -rf "$SCRATCH/site"
    return $failed
}

versions() {
    local out=$OUT_DIR/versions.txt rc
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(uname -srm); nproc $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc); $(awk '/MemTotal/ {printf "memory %.0f GiB", $2 / 2^20}' /proc/meminfo)"
        if command -v nvidia-smi >/dev/null 2>&1; then
            echo "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>&1 | head -4 | tr '\n' ' ')"
        else
            echo "nvidia-smi: not here"
        fi
        REQUIRE_CUDA=$((1 - DRY_RUN)) "$PY" - <<'EOF'
import importlib, os, platform, sys
print(f"python {platform.python_version()} ({sys.executable}); cpus {os.cpu_count()}, usable {len(os.sched_getaffinity(0))}")
try:
    import torch
    cuda = torch.cuda.is_available()
    line = f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, GPU: "
    if cuda:
        p = torch.cuda.get_device_properties(0)
        line += f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs"
    else:
        line += "none"
    print(line)
except Exception as error:
    cuda = False
    print(f"torch: {type(error).__name__}: {error}")
from importlib import metadata

# (module, distribution): the version is the installed distribution's, the folder the module's
for name, dist in [("numpy", "numpy"), ("gymnasium", "gymnasium"), ("ale_py", "ale-py"), ("stable_baselines3", "stable-baselines3"),
                   ("tyro", "tyro"), ("tensorboard", "tensorboard"), ("cv2", None), ("gym", "gym"), ("gym3", "gym3"),
                   ("procgen", "procgen2")]:
    try:
        module = importlib.import_module(name)
        version = metadata.version(dist) if dist else getattr(module, "__version__", "?")
        print(f"{name} {version} ({os.path.dirname(module.__file__)})")
    except Exception as error:
        print(f"{name}: not importable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
if os.environ["REQUIRE_CUDA"] == "1" and not cuda:
    sys.exit("CUDA IS NOT AVAILABLE: the scripts below fall back to the CPU, so their figures are no GPU's")
EOF
        rc=$?
        echo "PYTHONPATH=${PYTHONPATH:-} LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    } >"$out" 2>&1
    cat "$out"
    return $rc
}

procgen_probe() {
    local out=$SCRATCH/procgen_probe.txt
    timeout -k 10 "$(at_most 120)" "$PY" - >"$out" 2>&1 <<'EOF'
import numpy as np
from procgen import ProcgenGym3Env

env = ProcgenGym3Env(num=2, env_name="jumper", distribution_mode="exploration", rand_seed=1)
for _ in range(10):
    env.act(np.zeros(2, dtype=np.int32))
reward, obs, first = env.observe()
assert obs["rgb"].shape == (2, 64, 64, 3) and obs["rgb"].dtype == np.uint8, obs["rgb"].shape
print("procgen: jumper makes and steps envs; numpy", np.__version__)
EOF
    local rc=$?
    cat "$out"
    if [ $rc != 0 ]; then
        PROCGEN=0
        PROCGEN_WHY="procgen cannot make a jumper env here ($(grep -v '^\s*$' "$out" | tail -1 | cut -c1-200))"
        echo "PROCGEN NOT USABLE: $PROCGEN_WHY; the procgen throughput row and the jumper learning check are skipped"
        return 99
    fi
}

THROUGHPUT_MD=$OUT_DIR/throughput.md
TP_PREAMBLE=  # throughput.py's lines above its table (machine, sizes), from its first run that printed them
TP_HEADER=    # its table's header and rule
TP_ROWS=()
write_throughput_md() {
    {
        echo "# Throughput: benchmark/throughput.py, $TP_ENVS envs x $TP_STEPS steps, $TP_ITERATIONS iterations ($CUDA_FLAG)"
        echo
        echo "One throughput.py run per row; the first iteration of each is left out."
        [ -z "$TP_PREAMBLE" ] || printf '\n%s\n' "$TP_PREAMBLE"
        echo
        [ -z "$TP_HEADER" ] || echo "$TP_HEADER"
        printf '%s\n' "${TP_ROWS[@]}"
    } >"$THROUGHPUT_MD"
}
throughput_row() { # measures SCRIPT (with its flags); its row, or one that says why there is none
    local script=$1 out=$SCRATCH/throughput.txt limit rc why
    if [[ $script == ppo_snd_procgen.py* ]] && [ $PROCGEN = 0 ]; then
        TP_ROWS+=("| $script | skipped: $PROCGEN_WHY |")
        write_throughput_md
        echo "skipped: $PROCGEN_WHY"
        return 99
    fi
    limit=$(at_most 240)
    timeout -k 20 "$limit" "$PY" benchmark/throughput.py --num-envs "$TP_ENVS" --num-steps "$TP_STEPS" \
        --iterations "$TP_ITERATIONS" $CUDA_FLAG --scripts "$script" >"$out"
    rc=$?
    cat "$out"
    if [ -z "$TP_HEADER" ] && grep -q '^| script |' "$out"; then
        TP_PREAMBLE=$(grep -v '^|' "$out" | grep -v '^$')
        TP_HEADER=$(grep '^| script |' "$out"; grep '^|---' "$out" | head -1)
    fi
    if [ $rc = 0 ] && grep -q "^| $script |" "$out"; then
        TP_ROWS+=("$(grep "^| $script |" "$out")")
        write_throughput_md
        return 0
    fi
    why="exit code $rc"
    [ $rc != 124 ] || why="stopped at its ${limit}s time limit"
    TP_ROWS+=("| $script | failed ($why, see log.txt) |")
    write_throughput_md
    [ $rc = 0 ] && return 1 || return $rc
}

rollout_table() { # benchmark/rollout.py: the rollout alone, as the scripts run it and the variants it could take
    timeout -k 10 "$(at_most 120)" "$PY" benchmark/rollout.py --num-envs $ROLLOUT_ENVS --steps "$ROLLOUT_STEPS" $CUDA_FLAG \
        >"$OUT_DIR/rollout.md"
    local rc=$?
    cat "$OUT_DIR/rollout.md"
    return $rc
}

LEARN_METHODS=(snd-vic rnd)
learning() {
    local i method rc stop_at window failed=0 pids=()
    if [ $PROCGEN = 0 ]; then
        printf '# Learning check: jumper, SND-VIC vs RND\n\nskipped: %s\n' "$PROCGEN_WHY" >"$OUT_DIR/learning.md"
        echo "skipped: $PROCGEN_WHY"
        return 99
    fi
    stop_at=$((BUDGET - LEARN_STOP_RESERVE))
    window=$((stop_at - SECONDS))
    [ $window -le $LEARN_WINDOW ] || window=$LEARN_WINDOW
    if [ $window -lt $LEARN_MIN_WINDOW ]; then
        printf '# Learning check: jumper, SND-VIC vs RND\n\nskipped: %ss left, under %ss\n' "$window" "$LEARN_MIN_WINDOW" \
            >"$OUT_DIR/learning.md"
        echo "skipped: only ${window}s left before the stop, under ${LEARN_MIN_WINDOW}s"
        return 99
    fi
    echo "training jumper with ${LEARN_METHODS[*]} side by side (${LEARN_FLAGS[*]}) for $LEARN_TIMESTEPS agent steps" \
        "or ${window}s, whichever comes first"
    for method in "${LEARN_METHODS[@]}"; do
        mkdir -p "$SCRATCH/learn-$method"
        (cd "$SCRATCH/learn-$method" && exec timeout -k "$LEARN_KILL_AFTER" "$window" "$PY" "$ROOT/ppo_snd_procgen.py" \
            --env-id jumper --method "$method" --seed 1 --total-timesteps "$LEARN_TIMESTEPS" "${LEARN_FLAGS[@]}" \
            --eval-episodes 0 --checkpoint-interval 1e9 $CUDA_FLAG) >"$OUT_DIR/learning-$method.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!LEARN_METHODS[@]}"; do
        wait "${pids[$i]}"
        rc=$?
        method=${LEARN_METHODS[$i]}
        case $rc in
            0) echo "$method: finished its $LEARN_TIMESTEPS steps" ;;
            124) echo "$method: stopped at the time limit (it saved a checkpoint and flushed its log)" ;;
            137) echo "$method: killed ${LEARN_KILL_AFTER}s after the stop signal (its log may lack the last minutes)" ;;
            *) echo "$method: FAILED with exit code $rc; the end of learning-$method.log:"
                tail -5 "$OUT_DIR/learning-$method.log"
                failed=1 ;;
        esac
    done
    # the curves: 50 s whatever the deadline, which leaves them that much
    timeout -k 5 50 "$PY" - "$SCRATCH" "$OUT_DIR/learning.md" "${LEARN_METHODS[@]}" <<'EOF' || failed=1
"""Bins each run's charts/episodic_return by agent steps and writes the curves side by side as a markdown table."""
import glob, math, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

scratch, out, methods = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = {}
for method in methods:
    folders = sorted(glob.glob(f"{scratch}/learn-{method}/runs/*"))
    if not folders:
        runs[method] = None
        continue
    events = EventAccumulator(folders[-1], size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    scalars = lambda tag: events.Scalars(tag) if tag in tags else []  # noqa: E731
    returns = [(e.step, e.value) for e in scalars("charts/episodic_return")]
    sps = scalars("charts/SPS")
    steps = max([e.step for tag in tags for e in events.Scalars(tag)], default=0)
    times = [e.wall_time for tag in tags for e in events.Scalars(tag)]
    wall = max(times) - min(times) if times else 0.0
    runs[method] = dict(returns=returns, steps=steps, sps=sps[-1].value if sps else math.nan, wall=wall)

def nice(width):  # 1, 2 or 5 times a power of ten, at least width
    power = 10 ** math.floor(math.log10(width))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= width)

def count(steps):
    return f"{steps / 1e6:.2f}M" if steps >= 1e6 else f"{steps / 1e3:.1f}k" if steps >= 1e3 else f"{steps}"

lines = ["# Learning check: jumper, " + " vs ".join(m.upper() for m in methods), ""]
lines += ["Mean `charts/episodic_return` of the training episodes that ended in each bin of agent steps (episodes in",
          "parentheses). The paper's curves: SND variants reach a return of about 10 by 5M agent steps, RND stays near 0;",
          "a run stopped long before that says little about learning.", ""]
lines += ["| run | agent steps | minutes logged | agent steps/s (last iteration) | episodes | mean return, last 100 episodes |",
          "|---|---|---|---|---|---|"]
for method, run in runs.items():
    if run is None:
        lines.append(f"| {method} | no TensorBoard run | - | - | - | - |")
        continue
    last = [value for _, value in run["returns"][-100:]]
    mean = f"{sum(last) / len(last):.2f}" if last else "-"
    lines.append(f"| {method} | {run['steps']:,} | {run['wall'] / 60:.1f} | {run['sps']:.0f} | {len(run['returns'])} | {mean} |")
max_step = max([run["steps"] for run in runs.values() if run] + [0])
lines += [""]
if max_step > 0:
    width = nice(max_step / 10)
    lines += ["| agent steps | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for start in range(0, max_step, width):
        cells = []
        for method in methods:
            values = [v for s, v in (runs[method] or {}).get("returns", []) if start < s <= start + width]
            cells.append(f"{sum(values) / len(values):.2f} ({len(values)})" if values else "-")
        lines.append(f"| {count(start)}-{count(start + width)} | " + " | ".join(cells) + " |")
else:
    lines.append("No run logged an iteration: no curve.")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
    return $failed
}

note "device check: $([ $DRY_RUN = 1 ] && echo "DRY RUN on the CPU" || echo "GPU machine"); budget ${BUDGET}s; out $OUT_DIR; python $PY"
if [ $DRY_RUN = 1 ]; then
    step "wheels (dry run: install for Python 3.12 into a scratch folder)" check_wheels
else
    step "install the wheels into $SITE" install_wheels
fi
step "versions" versions
step "procgen" procgen_probe
write_throughput_md
for script in ppo_snd_vic_atari.py ppo_rnd_atari.py "ppo_snd_procgen.py --method snd-vic" "ppo_snd_vic_atari.py --bf16"; do
    step "throughput $script" throughput_row "$script"
done
step "rollout" rollout_table
rm -f "$OUT_DIR/learning.md" "$OUT_DIR"/learning-*.log
step "learning check (jumper ${LEARN_METHODS[*]})" learning
[ -f "$OUT_DIR/learning.md" ] || printf '# Learning check\n\nnot run: see log.txt\n' >"$OUT_DIR/learning.md"

echo
cat "$THROUGHPUT_MD"
echo
cat "$OUT_DIR/rollout.md" 2>/dev/null
echo
cat "$OUT_DIR/learning.md"
echo
note "device check done: $PASSED steps ok, $FAILED failed${FAILED_STEPS:+ (${FAILED_STEPS[*]})}," \
    "$SKIPPED skipped${SKIPPED_STEPS:+ (${SKIPPED_STEPS[*]})}; files in $OUT_DIR: $(cd "$OUT_DIR" && ls | tr '\n' ' ')"
if [ $FAILED -gt 0 ]; then code=1; elif [ $SKIPPED -gt 0 ]; then code=2; else code=0; fi
exec >&- 2>&-  # lets tee finish log.txt before the command returns
wait $TEE_PID
exit $code
