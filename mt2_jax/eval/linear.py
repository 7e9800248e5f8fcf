"""The linear probe: softmax regression on frozen features, early-stopped (docs/design.md §1.6).

The same for every feature: features standardised with the training split's
mean and deviation, one linear layer trained full-batch with Adam (lr 1e-3)
on cross-entropy, validation loss checked every `eval_every` steps, the
parameters of the best check kept, stopped after `patience` checks without
improvement. Plain numpy in float64, zero init, full batch: the same
features give the same probe.
"""

from typing import Any

import numpy as np

from mt2_jax.eval.tasks import SPLITS, TaskData, score


def _log_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fit_linear_probe(x_train, y_train, x_val, y_val, num_classes: int, lr: float = 1e-3,
                     max_steps: int = 10000, eval_every: int = 10, patience: int = 50):
  """Softmax regression, full-batch Adam, early stopping on validation loss.

  x_*: float [n, d]; y_*: int [n]. Returns predict(x [m, d]) -> logits [m, C]
  and info {steps, best_step, val_loss}. Deterministic (zero init).
  """
  x_train = np.asarray(x_train, np.float64)
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  norm = lambda x: (np.asarray(x, np.float64) - mean) / std
  xt, xv = norm(x_train), norm(x_val)
  onehot = np.eye(num_classes)[y_train]
  params = [np.zeros((xt.shape[1], num_classes)), np.zeros(num_classes)]
  m = [np.zeros_like(p) for p in params]
  v = [np.zeros_like(p) for p in params]
  b1, b2, eps = 0.9, 0.999, 1e-8

  def val_loss(w, b):
    if len(y_val) == 0:
      return 0.0
    return float(-_log_softmax(xv @ w + b)[np.arange(len(y_val)), y_val].mean())

  best = (val_loss(*params), 0, [p.copy() for p in params])
  bad = 0
  step = 0
  for step in range(1, max_steps + 1):
    w, b = params
    probs = np.exp(_log_softmax(xt @ w + b))
    g = (probs - onehot) / len(xt)
    grads = [xt.T @ g, g.sum(0)]
    for i, (p, gr) in enumerate(zip(params, grads)):
      m[i] = b1 * m[i] + (1 - b1) * gr
      v[i] = b2 * v[i] + (1 - b2) * gr * gr
      p -= lr * (m[i] / (1 - b1 ** step)) / (np.sqrt(v[i] / (1 - b2 ** step)) + eps)
    if step % eval_every == 0:
      loss = val_loss(*params)
      if loss < best[0] - 1e-6:
        best, bad = (loss, step, [p.copy() for p in params]), 0
      else:
        bad += 1
        if bad >= patience:
          break
  w, b = best[2]
  predict = lambda x: norm(x) @ w + b
  return predict, {"steps": step, "best_step": best[1], "val_loss": best[0]}


def linear_r2(x_fit, y_fit, x_held, y_held) -> float:
  """R^2 on (x_held, y_held) of the least-squares linear map x -> y fitted on (x_fit, y_fit).

  x_*: [n, d], y_*: [n, p]. Used on two class tokens of one model: near 1,
  one token is a linear function of the other, so a linear probe cannot tell
  them apart (docs/experiments.md, "are the two tokens two features?").
  """
  x_fit, y_fit, x_held, y_held = (np.asarray(a, np.float64) for a in (x_fit, y_fit, x_held, y_held))
  x_mean, y_mean = x_fit.mean(0), y_fit.mean(0)
  w, *_ = np.linalg.lstsq(x_fit - x_mean, y_fit - y_mean, rcond=None)
  err = y_held - y_mean - (x_held - x_mean) @ w
  return float(1 - (err ** 2).sum() / ((y_held - y_held.mean(0)) ** 2).sum())


def probe_feature(task: TaskData, features: np.ndarray, **fit_kwargs) -> dict[str, Any]:
  """Fits the probe on task.split == train, stops on validation, scores test.

  features: [n_rows, d], indexed like the rows the task was made of (NaN rows
  already dropped: tasks.valid_rows). Returns the test scores (tasks.score)
  with the fit's info, n_train and n_test.
  """
  x = features[task.index]
  parts = {s: task.split == s for s in SPLITS}
  if not parts["train"].any() or not parts["test"].any():
    raise ValueError(f"task {task.name}: needs train and test examples "
                     f"(got {dict((s, int(p.sum())) for s, p in parts.items())})")
  predict, info = fit_linear_probe(
      x[parts["train"]], task.y[parts["train"]], x[parts["validation"]], task.y[parts["validation"]],
      len(task.classes), **fit_kwargs)
  pred = predict(x[parts["test"]]).argmax(1)
  return {**score(task.name, task.y[parts["test"]], pred, task.index[parts["test"]]), **info,
          "n_train": int(parts["train"].sum()), "n_test": int(parts["test"].sum())}


__all__ = ["fit_linear_probe", "linear_r2", "probe_feature"]
