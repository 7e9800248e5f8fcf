#!/usr/bin/env bash
# A Cloud TPU pod slice: the same command on every worker, started with one
# gcloud call; JAX finds the other hosts from the TPU environment.
#   launch/tpu_pod.sh TPU_NAME ZONE gs://DATA gs://WORKDIR [CONFIG_ARG]
#   each worker runs: mt2 train --config=configs/mt2.py:$ARG --workdir=$WORKDIR --config.data_dir=$DATA
# The repo must be cloned at ~/mt2_jax on every worker, with .venv built by the
# README command plus `pip install 'jax[tpu]'`. Bucket access uses the TPU
# VM's service account (nothing to configure here). Each worker copies DATA
# once into ~/.cache/mt2_jax (MT2_JAX_CACHE); for data larger than a worker's
# disk, mount the bucket with gcsfuse on every worker and pass the mount point.
set -euo pipefail
tpu=${1:?TPU_NAME}; zone=${2:?ZONE}; data=${3:?DATA}; workdir=${4:?WORKDIR}; arg=${5:-}
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="cd ~/mt2_jax && \
  .venv/bin/mt2 train --config=configs/mt2.py${arg:+:$arg} --workdir=$workdir --config.data_dir=$data"
