"""Equivariance diagnostics, the collapse warning and the periodic zero-shot eval."""

import csv
import json
import logging

import numpy as np
import pytest
import soundfile as sf

from mt2_jax import config_defaults
from mt2_jax.data import dataset
from mt2_jax.train import diagnostics
from mt2_jax import losses
from mt2_jax.data import prepare
from mt2_jax.eval import probe
from mt2_jax.train import loop as train
from mt2_jax.train import step as train_step

SR = 22050
SEGMENT = 32  # Frames per window in the training runs here.


def _shifts(rng, b):
  """d = t - o as the pipeline draws it: d mod 12 uniform on 1..11."""
  o = rng.integers(1, 13, size=b)
  return ((o + rng.integers(1, 12, size=b)) % 12 - o).astype(np.int32)


def _mix(q, a, n=12):
  """a * one_hot(q) + (1 - a) * uniform: a profile with |z| = a, peaked at q. -> [B, n]."""
  return (a * np.eye(n)[np.asarray(q) % n] + (1 - a) / n).astype(np.float32)


def _shifted(y, d):
  """y_A'[q] = y_A[(q + d) mod 12]: what CPSD asks of A transposed by d."""
  return np.stack([np.roll(row, -s) for row, s in zip(y, d)])


def _z(y, omega=7 / 12):
  return y @ np.exp(2j * np.pi * omega * np.arange(12))


# -- Diagnostics in the loss. ----------------------------------------------------


def test_argmax_moves_is_one_exactly_when_cpsd_sees_equivariance():
  rng = np.random.default_rng(0)
  d = _shifts(rng, 256)
  one_hot = _mix(rng.integers(0, 12, 256), 1.0)
  loss, aux = losses.cpsd(one_hot, one_hot, _shifted(one_hot, d), d)
  assert float(aux["cpsd_argmax_moves"]) == 1.0
  assert float(aux["cpsd_eq_a"]) < 1e-5 and float(aux["cpsd_eq_b"]) < 1e-5 and float(loss) < 1e-5

  # Soft profiles moved the same way: the phase is right, only |z| < 1 costs.
  logits = rng.normal(size=(256, 12)) * 2
  soft = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
  _, aux = losses.cpsd(soft, soft, _shifted(soft, d), d)
  assert float(aux["cpsd_argmax_moves"]) == 1.0
  np.testing.assert_allclose(float(aux["cpsd_eq_a"]), np.mean((1 - np.abs(_z(soft)) ** 2) ** 2), rtol=1e-4)

  # The other direction: only d = 6 mod 12 (where -d = d) still moves right.
  _, aux = losses.cpsd(one_hot, one_hot, _shifted(one_hot, -d), d)
  assert float(aux["cpsd_argmax_moves"]) == pytest.approx(np.mean(d % 12 == 6))
  assert float(aux["cpsd_argmax_moves"]) < 0.2
  assert float(aux["cpsd_eq_a"]) > 0.5 and float(aux["cpsd_eq_b"]) > 0.5


def test_abs_z_and_spread_tell_a_constant_head_from_a_working_one():
  rng = np.random.default_rng(1)
  d = _shifts(rng, 64)
  constant = _mix(np.zeros(64, int), np.sqrt(3 / 11))
  _, aux = losses.cpsd(constant, constant, constant, d)
  assert float(aux["cpsd_abs_z"]) == pytest.approx(np.sqrt(3 / 11), rel=1e-5)
  assert float(aux["cpsd_spread"]) < 1e-6
  assert float(aux["cpsd_argmax_moves"]) == 0.0  # d is never 0 mod 12.

  y_a = _mix(rng.integers(0, 12, 64), 0.9)
  y_b = _mix(rng.integers(0, 12, 64), 0.5)
  y_s = _shifted(y_a, d)
  _, aux = losses.cpsd(y_a, y_b, y_s, d)
  assert float(aux["cpsd_abs_z"]) == pytest.approx((0.9 + 0.5 + 0.9) / 3, rel=1e-5)
  spread = np.concatenate([y_a, y_b, y_s]).std(0).mean()
  assert float(aux["cpsd_spread"]) == pytest.approx(spread, rel=1e-5) and spread > 0.1


@pytest.mark.parametrize("omega", [7 / 12, 1 / 12])
def test_constant_head_cpsd_is_the_best_constant_score(omega):
  assert diagnostics.constant_head_cpsd(omega) == pytest.approx(3 - 27 / 121)
  assert f"{diagnostics.COLLAPSE_CPSD:.3f}" == "2.777"
  rng = np.random.default_rng(2)
  d = _shifts(rng, 200_000)
  expected = {}
  for r in (0.15, 3 / 11, 0.4):  # r = |z|^2 of the constant profile.
    y = _mix(np.zeros(d.size, int), np.sqrt(r))
    expected[r] = float(losses.cpsd(y, y, y, d, omega=omega)[0])
  assert expected[3 / 11] == pytest.approx(diagnostics.constant_head_cpsd(omega), abs=0.01)
  assert expected[3 / 11] < min(expected[0.15], expected[0.4])
  # B at its own transposition (data.b_offset='own'): shift_b = u - o, u and o
  # uniform on 1..12; the best constant is the uniform profile, 3.0.
  shift_b = rng.integers(1, 13, d.size) - rng.integers(1, 13, d.size)
  own = {r: float(losses.cpsd(y, y, y, d, omega=omega, shift_b=shift_b)[0])
         for r in (0.0, 0.05, 3 / 11) for y in [_mix(np.zeros(d.size, int), np.sqrt(r))]}
  assert diagnostics.constant_head_cpsd(omega, "own") == 3.0
  assert own[0.0] == pytest.approx(3.0, abs=1e-4) and own[0.0] < min(own[0.05], own[3 / 11])


def test_collapse_detector_watches_the_views_collapse_value():
  config = config_defaults.base_config()
  assert [d.collapse_value for d in diagnostics.collapse_detectors(config)] == [
      pytest.approx(3 - 27 / 121)]
  config.data.b_offset = "own"
  assert [d.collapse_value for d in diagnostics.collapse_detectors(config)] == [3.0]


# -- The collapse warning. -------------------------------------------------------


def _constant_head_series(steps, batch=16, seed=3):
  """(step, CPSD) of a head stuck at the best constant output, on fresh random shifts each step."""
  rng = np.random.default_rng(seed)
  y = _mix(np.zeros(batch, int), np.sqrt(3 / 11))
  return [(s, float(losses.cpsd(y, y, y, _shifts(rng, batch))[0])) for s in steps]


def _learning_series(steps, total, batch=16, seed=4):
  """(step, CPSD) of a head growing equivariant: the loss falls from 3 to 1 over `total` steps."""
  rng = np.random.default_rng(seed)
  out = []
  for s in steps:
    a = np.sqrt(1 - np.sqrt((3 - 2 * s / total) / 3))  # Every term is (1 - a^2)^2.
    q, d = rng.integers(0, 12, batch), _shifts(rng, batch)
    out.append((s, float(losses.cpsd(_mix(q, a), _mix(q, a), _mix(q - d, a), d)[0])))
  return out


def _warnings(detector, series):
  return [(s, w) for s, v in series if (w := detector.update(s, v))]


def test_collapse_detector_fires_once_on_a_constant_head():
  steps = range(5, 1001, 5)
  detector = diagnostics.CollapseDetector("cpsd", total_steps=1000, warmup_steps=50)
  assert detector.span == 300  # max(300, 25% of 950)
  fired = _warnings(detector, _constant_head_series(steps))
  assert len(fired) == 1
  step, message = fired[0]
  assert 350 <= step <= 500  # As soon as 300 steps after warm-up are in.
  for part in ("cpsd ", "2.777", f"from step {step - 300} to {step}", "docs/experiments.md"):
    assert part in message, message


def test_collapse_detector_ignores_learning_and_short_plateaus():
  steps = range(5, 1001, 5)
  learning = _learning_series(steps, 1000)
  assert learning[0][1] > 2.9 and learning[-1][1] == pytest.approx(1.0, abs=0.05)
  detector = diagnostics.CollapseDetector("cpsd", total_steps=1000, warmup_steps=50)
  assert not _warnings(detector, learning)
  # 250 steps at 2.777 after warm-up, then learning: shorter than the span.
  plateau = _constant_head_series(range(5, 301, 5)) + _learning_series(range(305, 1001, 5), 1400)
  detector = diagnostics.CollapseDetector("cpsd", total_steps=1000, warmup_steps=50)
  assert not _warnings(detector, plateau)


# -- The zero-shot readout. --------------------------------------------------------


def test_centre_windows():
  np.testing.assert_array_equal(diagnostics.centre_windows(861, 128, 4), [174, 302, 430, 558])
  np.testing.assert_array_equal(diagnostics.centre_windows(300, 128, 4), [22, 150])
  assert diagnostics.centre_windows(100, 128, 4).size == 0


def test_cross_fit_accuracy_is_honest_about_the_rotation():
  rng = np.random.default_rng(5)
  sig = rng.integers(0, 12, 40)
  onehot = np.eye(12)
  for readout in ("argmax", "phase"):
    assert diagnostics.cross_fit_accuracy(onehot[(sig - 5) % 12], sig, readout) == 1.0
    # Each half needs its own rotation: fitted in-sample that would score 1.0,
    # cross-fitted it scores 0.
    peak = np.where(np.arange(40) < 20, sig - 3, sig - 7) % 12
    assert diagnostics.cross_fit_accuracy(onehot[peak], sig, readout) == 0.0
    assert diagnostics.cross_fit_accuracy(onehot[rng.integers(0, 12, 40)], sig, readout) < 0.4


KEYS = ("C major", "A minor", "G major", "E minor", "F# minor", "Bb major", "D major")


def _write_chords(folder, rows, seconds=2.5):
  """Tonic triads of each row's key, with labels.csv beside them."""
  folder.mkdir(parents=True, exist_ok=True)
  t = np.arange(int(SR * seconds)) / SR
  for row in rows:
    tonic = probe.key_class(row["key"]) // 2
    third = 3 if row["key"].endswith("minor") else 4
    notes = [220 * 2 ** ((tonic + k) / 12) for k in (0, third, 7)]
    sf.write(folder / row["file"], sum(np.sin(2 * np.pi * f * t) for f in notes) / 3, SR)
  with open(folder / "labels.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


@pytest.fixture(scope="module")
def keyed_data(tmp_path_factory):
  """8 train and 6 validation tracks of chords, labelled with their key."""
  rows = [{"file": f"t{i:02d}.wav", "key": KEYS[i % len(KEYS)], "split": "train" if i < 8 else "validation"}
          for i in range(14)]
  audio = tmp_path_factory.mktemp("keyed_audio")
  _write_chords(audio, rows)
  out = tmp_path_factory.mktemp("keyed_data")
  prepare.prepare(audio, out, progress=False)
  return str(out), rows


@pytest.fixture(scope="module")
def unlabelled_data(tmp_path_factory):
  audio = tmp_path_factory.mktemp("plain_audio")
  sf.write(audio / "a.wav", np.sin(2 * np.pi * 220 * np.arange(SR * 2) / SR), SR)
  out = tmp_path_factory.mktemp("plain_data")
  prepare.prepare(audio, out, progress=False)
  return str(out)


def _config(data_dir):
  """A runlocal MT2 config on `data_dir`, evaluated on its validation split every 3 steps."""
  config = config_defaults.apply_arg(config_defaults.base_config(), "runlocal")
  config.data_dir = data_dir
  config.data.segment_frames = SEGMENT
  config.total_steps, config.checkpoint_every, config.log_every = 6, 6, 2
  config.optim.warmup_steps = 1
  config.eval.data_dir, config.eval.every = data_dir, 3
  return config


def test_eval_windows_are_the_untransposed_centre_of_each_validation_track(keyed_data):
  data_dir, rows = keyed_data
  windows, track, signature = diagnostics.load_eval_windows(data_dir, "validation", 84, SEGMENT)
  val = [r for r in rows if r["split"] == "validation"]
  assert signature.tolist() == [probe.key_signature(probe.key_class(r["key"])) for r in val]
  source = dataset.open_split(data_dir, "validation")
  cqt = source[0]["cqt"]
  starts = diagnostics.centre_windows(cqt.shape[1], SEGMENT)
  assert starts.size == 3 and windows.shape == (3 * len(val), 84, SEGMENT)
  np.testing.assert_array_equal(track, np.repeat(np.arange(len(val)), 3))
  np.testing.assert_array_equal(windows[1], cqt[:84, starts[1]:starts[1] + SEGMENT])


def test_training_logs_zero_shot_accuracy_progress_and_the_collapse_warning(
    keyed_data, tmp_path, monkeypatch, capsys, caplog):
  data_dir, _ = keyed_data
  # A detector that judges after 2 steps with a wide tolerance: the wiring, not the rule.
  monkeypatch.setattr(diagnostics, "collapse_detectors", lambda config: [
      diagnostics.CollapseDetector("cpsd", config.total_steps, 1, tolerance=10.0, min_steps=4)])
  with caplog.at_level(logging.WARNING):
    train.train(_config(data_dir), tmp_path, progress=True)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [2, 3, 4, 6]  # Step 3: an eval step between logs.
  for r in rows:
    assert ("cpsd_zeroshot_keysig" in r) == (r["step"] % 3 == 0)
    assert ("cpsd_zeroshot_keysig_phase" in r) == (r["step"] % 3 == 0)
    for key in ("cpsd_abs_z", "cpsd_spread", "cpsd_argmax_moves"):
      assert 0.0 <= r[key] <= 1.0, (key, r)
  accuracy = [r["cpsd_zeroshot_keysig"] for r in rows if r["step"] % 3 == 0]
  assert all(0.0 <= a <= 1.0 for a in accuracy) and all(a * 6 == round(a * 6) for a in accuracy)
  assert any(p.name.startswith("events.out") for p in (tmp_path / "tensorboard").iterdir())
  assert "cpsd_moves=" in capsys.readouterr().err
  warned = [r.getMessage() for r in caplog.records if "docs/experiments.md" in r.getMessage()]
  assert len(warned) == 1 and "cpsd" in warned[0]


def _without_cpsd(config, unlabelled):
  del unlabelled
  del config.losses["cpsd"]
  config.model.class_tokens = ("contrastive",)


@pytest.mark.parametrize("change, message", [
    (lambda c, u: c.eval.update(data_dir="/does/not/exist"),
     "config.eval.data_dir: /does/not/exist does not exist"),
    (lambda c, u: c.eval.update(data_dir=u), "config.eval.data_dir: .* no `key` column"),
    (lambda c, u: c.eval.update(split="test"), "config.eval.split: 'test' is not in"),
    (lambda c, u: c.eval.update(every=-1), "config.eval.every: must be an integer >= 0"),
    (_without_cpsd, "config.eval.data_dir: .* cpsd loss"),
], ids=["missing", "unlabelled", "split", "every", "no_cpsd_head"])
def test_bad_eval_configs_fail_before_compiling(keyed_data, unlabelled_data, tmp_path, monkeypatch,
                                                change, message):
  compiled = []
  monkeypatch.setattr(train_step, "make_train_step", lambda *a: compiled.append(1))
  monkeypatch.setattr(train_step, "create_train_state", lambda *a: compiled.append(1))
  config = _config(keyed_data[0])
  change(config, unlabelled_data)
  with pytest.raises(ValueError, match=message):
    train.train(config, tmp_path, progress=False)
  assert not compiled
