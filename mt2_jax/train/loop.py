"""Sharded, multi-host, preemption-safe pretraining with exact resume: `train(config, workdir)`.

`mt2 train` (mt2_jax/cli/train.py) is its command line:

  mt2 train --config=configs/mt2.py:runlocal --workdir=/tmp/mt2 --config.data_dir=DATA
  # several hosts (automatic on SLURM and Cloud TPU; explicit elsewhere):
  mt2 train ... --coordinator_address=host0:1234 --num_processes=2 --process_id=$I

The config is validated before anything compiles. State (params, optimizer,
step, rng) and the data-iterator position are checkpointed together with
Orbax every `checkpoint_every` steps and on SIGTERM; starting again with the
same workdir resumes exactly where the run stopped. Only process 0 writes
`metrics.jsonl`, TensorBoard events and the progress bar.

Besides the losses it watches the equivariant head (mt2_jax.train.diagnostics): each
CPSD loss's diagnostics are logged with it, a CPSD loss stuck at the
constant-head score (2.777) for a long stretch logs one warning, and with
`config.eval.data_dir` set the zero-shot key-signature accuracy of each CPSD
head on that labelled split is logged every `config.eval.every` steps.
"""

import json
import os
import signal
import time
from typing import Any

from absl import logging

from mt2_jax import storage  # No JAX: mt2_jax/cli/train.py imports this module first.


class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN or infinite; the last good checkpoint is kept."""


def init_distributed(coordinator_address=None, num_processes=None, process_id=None) -> None:
  """Joins a multi-process JAX job: explicit arguments, else SLURM / Cloud TPU auto-detection."""
  import jax
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    jax.distributed.initialize()  # JAX reads the cluster's environment.


def check_runnable(config) -> None:
  """Checks that need the devices and the data directory; errors name the key."""
  import jax
  from mt2_jax import config_validation, sharding
  from mt2_jax.train import diagnostics
  config_validation.validate(config)  # Also every size key (config_validation.check_sizes).
  sharding.check_batch_divides(config.batch_size, jax.device_count(), "devices")
  sharding.check_batch_divides(config.batch_size, jax.process_count(), "processes")
  if not config.data_dir:
    raise ValueError("config.data_dir: not set (a dataset made by `mt2 prepare`)")
  try:
    storage.require_dir(config.data_dir, "config.data_dir")  # Asks the bucket, for a URL.
  except OSError as e:
    raise ValueError(str(e)) from e
  diagnostics.check_eval_data(config)


class MetricsWriter:
  """metrics.jsonl (one JSON object per logged step) and TensorBoard events, without TF.

  In a bucket workdir (an object cannot be appended to) metrics.jsonl is
  uploaded whole, and the TensorBoard events are written on this machine
  and copied to WORKDIR/tensorboard, at each `sync` (every checkpoint) and
  at `close`: rows logged after the last checkpoint would be dropped on
  resume anyway.
  """

  def __init__(self, workdir, resume_step: int):
    self.path = workdir / "metrics.jsonl"
    self.rows = []  # Oldest first: earlier runs' up to resume_step, then this run's.
    # Lines logged after the checkpoint we resume from are replayed by this run.
    if self.path.exists():
      self.rows = [json.loads(l) for l in self.path.read_text().splitlines() if l.strip()]
      self.rows = [r for r in self.rows if r["step"] <= resume_step]
      storage.write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
    from tensorboardX import SummaryWriter
    self.tb_dir = workdir / "tensorboard"
    self._tb_local = storage.local_dir(self.tb_dir)
    self.tb = SummaryWriter(os.fspath(self._tb_local))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    row = {"step": step, **metrics}
    self.rows.append(row)
    if storage.is_local(self.path):
      with self.path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    for k, v in metrics.items():
      self.tb.add_scalar(k, v, step)

  def sync(self) -> None:
    """Uploads metrics.jsonl and the TensorBoard events to a bucket workdir
    (nothing to do locally)."""
    self.tb.flush()
    if not storage.is_local(self.tb_dir):
      storage.write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
      for f in sorted(self._tb_local.iterdir()):
        storage.copy_file(f, self.tb_dir / f.name)

  def close(self) -> None:
    self.tb.close()
    self.sync()
    storage.drop_local_dir(self._tb_local, self.tb_dir)


class _Preemption:
  """Turns SIGTERM into a flag checked between steps (agreed on by all processes)."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    logging.warning("SIGTERM: saving a checkpoint and stopping after this step.")
    self.requested = True

  def should_stop(self) -> bool:
    import jax
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils
    return bool(multihost_utils.process_allgather(self.requested).any())

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def _check_finite(step: int, metrics: dict[str, float]) -> None:
  import math
  bad = [k for k, v in metrics.items() if not math.isfinite(v)]
  if bad:
    terms = [k for k in bad if k != "loss"] or bad
    raise NonFiniteLossError(
        f"step {step}: non-finite {', '.join(terms)} ({', '.join(f'{k}={metrics[k]}' for k in bad)}); "
        f"stopping. The last good checkpoint is kept.")


def _watch_collapse(detectors, step: int, metrics: dict[str, float]) -> None:
  """Feeds each CPSD loss's logged value to its detector; logs its one warning."""
  for detector in detectors:
    if detector.name in metrics:
      warning = detector.update(step, metrics[detector.name])
      if warning:
        logging.warning("step %d: %s", step, warning)


def train(config, workdir, progress: bool = True) -> dict[str, Any]:
  """Pretrains (or resumes) in `workdir`; returns the last step's metrics."""
  import jax
  from mt2_jax import model as model_lib
  from mt2_jax import sharding
  from mt2_jax.data import pipeline
  from mt2_jax.train import checkpoint, diagnostics
  from mt2_jax.train import step as train_step

  check_runnable(config)
  workdir = storage.path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    storage.output_dir(workdir, "--workdir")
    if (workdir / "config.json").exists():  # Resuming, or starting over in a used folder.
      changes = checkpoint.config_changes(checkpoint.load_config(workdir), config)
      if changes:
        logging.warning("%s was started with another config; now: %s", workdir, "; ".join(changes))
    checkpoint.save_config(workdir, config)

  mesh = sharding.make_mesh(config)
  model = model_lib.build_model(config)
  evaluate = diagnostics.make_eval(config, model, mesh)  # Loads its split now: errors come early.
  tx = train_step.make_optimizer(config)
  data = pipeline.make_iterator(config, mesh)  # Reports too-short records, checks the CQT.
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  start = ckpt.latest_step() or 0
  if start:
    logging.info("Resuming %s from step %d.", workdir, start)
    state = ckpt.restore(start, train_step.abstract_train_state(config, model, tx, mesh), data)
  else:
    state = train_step.create_train_state(config, model, tx, mesh)
  step_fn = train_step.make_train_step(config, model, tx, mesh)

  writer = MetricsWriter(workdir, start) if is_main else None
  cpsd_names = diagnostics.cpsd_losses(config)
  detectors = diagnostics.collapse_detectors(config) if is_main else []
  for row in (writer.rows if writer else ()):  # A resumed run judges its whole history.
    _watch_collapse(detectors, row["step"], row)
  bar = None
  if is_main and progress:
    from tqdm import tqdm
    bar = tqdm(total=config.total_steps, initial=start, unit="step", desc="train", dynamic_ncols=True)
  preemption = _Preemption()
  views_per_step = 3 * config.batch_size
  last: dict[str, float] = {}
  pending = []  # (step, device metrics) not yet checked for finiteness.
  t_log, steps_since_log = time.time(), 0

  def flush(extra: dict[str, float] | None = None) -> None:
    """Fetches pending metrics, stops on a non-finite loss, logs the last one
    (with `extra`, the eval's metrics of that step, logged whatever the step)."""
    nonlocal last, t_log, steps_since_log
    for s, m in pending:
      last = {k: float(v) for k, v in jax.device_get(m).items()}
      _check_finite(s, last)
    if pending:
      s = pending[-1][0]
      dt = max(time.time() - t_log, 1e-9)
      last["views_per_sec"] = views_per_step * steps_since_log / dt
      last["steps_per_sec"] = steps_since_log / dt
      last.update(extra or {})
      if writer is not None and (s % config.log_every == 0 or s == config.total_steps or extra):
        writer.write(s, last)
        _watch_collapse(detectors, s, last)
      if bar is not None:
        bar.set_postfix(**diagnostics.progress_postfix(last, cpsd_names),
                        views_s=f"{last['views_per_sec']:.0f}")
      pending.clear()
      t_log, steps_since_log = time.time(), 0

  step = start
  try:
    while step < config.total_steps:
      state, metrics = step_fn(state, next(data))
      step += 1
      steps_since_log += 1
      pending.append((step, metrics))
      if bar is not None:
        bar.update(1)
      stop = preemption.should_stop()
      save = step % config.checkpoint_every == 0 or step == config.total_steps or stop
      extra = None
      if evaluate is not None and step % config.eval.every == 0:
        jax.block_until_ready(state.params)  # The step's time stays the step's.
        t_eval = time.time()
        extra = evaluate(state.params)
        t_log += time.time() - t_eval  # Not counted in the training speed.
      if step % config.log_every == 0 or save or extra:
        flush(extra)  # Never checkpoint a state whose loss went non-finite.
      if save:
        ckpt.save(step, state, data)
        if writer is not None:
          writer.sync()
      if stop:
        logging.warning("Stopped at step %d on SIGTERM; checkpoint saved in %s.", step, workdir)
        break
  finally:
    preemption.restore()
    data.close()
    ckpt.close()
    if bar is not None:
      bar.close()
    if writer is not None:
      writer.close()
  if not last and start:
    last = {"step": start}  # Already finished earlier: nothing was run.
  last["step"] = step
  return last

