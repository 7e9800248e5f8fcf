#!/usr/bin/env bash
# Pretrain on this machine's devices (all local GPUs, or the CPU).
#   launch/local.sh DATA WORKDIR [CONFIG_ARG] [--config.KEY=VALUE ...]
#   runs: mt2 train --config=configs/mt2.py:$CONFIG_ARG --workdir=$WORKDIR --config.data_dir=$DATA
# Run it again with the same WORKDIR to resume.
set -euo pipefail
data=${1:?DATA}; workdir=${2:?WORKDIR}; arg=${3:-}; shift $(( $# < 3 ? $# : 3 ))
exec "$(dirname "$0")/../.venv/bin/mt2" train --config="$(dirname "$0")/../configs/mt2.py${arg:+:$arg}" \
  --workdir="$workdir" --config.data_dir="$data" "$@"
