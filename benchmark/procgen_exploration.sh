#!/bin/bash
# The paper's Procgen table: four games on their exploration level x the baseline and four methods x seeds 1 2 3, 64M agent steps per run.
# Flags given to this file are passed on (a later --seeds replaces these):
#   benchmark/procgen_exploration.sh --dry-run                # the runs, each new, to resume or finished
#   benchmark/procgen_exploration.sh --workers 4              # on this machine, four at a time
#   benchmark/procgen_exploration.sh --slurm --slurm-gpus 1   # one Slurm array task per run
python "$(dirname "$0")/launch.py" \
    --games caveflyer coinrun jumper climber \
    --methods baseline rnd snd-v snd-std snd-vic \
    --seeds 1 2 3 \
    "$@"
