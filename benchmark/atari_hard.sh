#!/bin/bash
# The paper's Atari table: six hard-exploration games x the baseline and four methods x seeds 1 2 3, 128M agent steps per run.
# Flags given to this file are passed on (a later --seeds replaces these):
#   benchmark/atari_hard.sh --dry-run                # the runs, each new, to resume or finished
#   benchmark/atari_hard.sh --workers 4              # on this machine, four at a time
#   benchmark/atari_hard.sh --slurm --slurm-gpus 1   # one Slurm array task per run
python "$(dirname "$0")/launch.py" \
    --games MontezumaRevenge-v5 Gravitar-v5 Venture-v5 PrivateEye-v5 Pitfall-v5 Solaris-v5 \
    --methods baseline rnd snd-v snd-std snd-vic \
    --seeds 1 2 3 \
    "$@"
