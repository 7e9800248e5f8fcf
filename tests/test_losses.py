"""CPSD and NT-Xent against their definitions; the objective's metrics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mt2_jax import config_defaults
from mt2_jax import config_validation
from mt2_jax import losses
from mt2_jax.train import objective


def _one_hot(q, n=12):
  return np.eye(n, dtype=np.float32)[np.asarray(q) % n]


def _random_profiles(rng, b, n=12):
  logits = rng.normal(size=(b, n)) * 2
  return (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)


def _random_shifts(rng, b):
  # d = t - o with o in 1..12, t = (o + U{1..11}) mod 12, as the data pipeline draws it.
  o = rng.integers(1, 13, size=b)
  t = (o + rng.integers(1, 12, size=b)) % 12
  return (t - o).astype(np.int32)


def _cpsd_numpy(y_a, y_b, y_s, d, omega):
  """Independent reference: complex arithmetic, as STONE writes it."""
  w = np.exp(2j * np.pi * omega * np.arange(y_a.shape[-1]))
  z_a, z_b, z_s = y_a @ w, y_b @ w, y_s @ w
  target = np.exp(2j * np.pi * omega * d)
  terms = (np.abs(1 - z_a * np.conj(z_b)) ** 2, np.abs(target - z_a * np.conj(z_s)) ** 2,
           np.abs(target - z_b * np.conj(z_s)) ** 2)
  return [t.mean() for t in terms]


def test_shifts_cover_every_nonzero_pitch_class():
  d = _random_shifts(np.random.default_rng(0), 5000)
  # d = 11 would need o = 0; what matters is that every class d mod 12 occurs.
  assert set(d.tolist()) == set(range(-11, 11)) - {0}
  assert set((d % 12).tolist()) == set(range(1, 12))


@pytest.mark.parametrize("omega", [7 / 12, 1 / 12])
def test_cpsd_is_zero_for_exactly_equivariant_outputs(omega):
  rng = np.random.default_rng(1)
  q = rng.integers(0, 12, size=64)
  d = _random_shifts(rng, 64)
  # Pitch class q of A appears as q - d in A'.
  loss, aux = losses.cpsd(_one_hot(q), _one_hot(q), _one_hot(q - d), d, omega=omega)
  assert float(loss) == pytest.approx(0.0, abs=1e-5)
  assert set(aux) == {"cpsd_pos", "cpsd_eq_a", "cpsd_eq_b", "cpsd_abs_z", "cpsd_spread",
                      "cpsd_argmax_moves"}


def test_cpsd_is_positive_for_the_wrong_direction_or_a_key_change():
  rng = np.random.default_rng(2)
  q = rng.integers(0, 12, size=64)
  d = _random_shifts(rng, 64)
  wrong_sign, aux = losses.cpsd(_one_hot(q), _one_hot(q), _one_hot(q + d), d)
  assert float(aux["cpsd_pos"]) == pytest.approx(0.0, abs=1e-5)
  assert float(aux["cpsd_eq_a"]) > 0.5 and float(aux["cpsd_eq_b"]) > 0.5
  key_change, aux = losses.cpsd(_one_hot(q), _one_hot(q + 1), _one_hot(q - d), d)
  assert float(aux["cpsd_pos"]) > 0.5 and float(key_change) > 0.5
  assert float(wrong_sign) > 1.0


def test_cpsd_matches_complex_reference_and_bounds():
  rng = np.random.default_rng(3)
  y_a, y_b, y_s = (_random_profiles(rng, 32) for _ in range(3))
  d = _random_shifts(rng, 32)
  for omega in (7 / 12, 1 / 12, 0.3):
    loss, aux = losses.cpsd(y_a, y_b, y_s, d, omega=omega)
    expected = _cpsd_numpy(y_a, y_b, y_s, d, omega)
    np.testing.assert_allclose([aux["cpsd_pos"], aux["cpsd_eq_a"], aux["cpsd_eq_b"]], expected, rtol=1e-5)
    assert float(loss) == pytest.approx(sum(expected), rel=1e-5)
    assert 0 < float(loss) <= 12
  assert loss.dtype == jnp.float32


def test_cpsd_with_b_at_its_own_transposition():
  """data.b_offset='own': A-B asks for shift_b, B-A' for d - shift_b; 0 is the paper's."""
  rng = np.random.default_rng(5)
  q, d = rng.integers(0, 12, size=64), _random_shifts(rng, 64)
  shift_b = (rng.integers(1, 13, size=64) - rng.integers(1, 13, size=64)).astype(np.int32)
  exact, _ = losses.cpsd(_one_hot(q), _one_hot(q - shift_b), _one_hot(q - d), d, shift_b=shift_b)
  assert float(exact) == pytest.approx(0.0, abs=1e-5)
  # Read as if B shared A's transposition, the same views are far from it.
  assert float(losses.cpsd(_one_hot(q), _one_hot(q - shift_b), _one_hot(q - d), d)[0]) > 1.0
  y_a, y_b, y_s = (_random_profiles(rng, 64) for _ in range(3))
  w = np.exp(2j * np.pi * 7 / 12 * np.arange(12))
  z_a, z_b, z_s = y_a @ w, y_b @ w, y_s @ w
  expected = [np.mean(np.abs(np.exp(2j * np.pi * 7 / 12 * s) - u * np.conj(v)) ** 2)
              for s, u, v in ((shift_b, z_a, z_b), (d, z_a, z_s), (d - shift_b, z_b, z_s))]
  _, aux = losses.cpsd(y_a, y_b, y_s, d, shift_b=shift_b)
  np.testing.assert_allclose([aux["cpsd_pos"], aux["cpsd_eq_a"], aux["cpsd_eq_b"]], expected,
                             rtol=1e-5)
  zero = losses.cpsd(y_a, y_b, y_s, d, shift_b=np.zeros(64, np.int32))[0]
  assert float(zero) == pytest.approx(float(losses.cpsd(y_a, y_b, y_s, d)[0]), rel=1e-6)


def test_cpsd_unchanged_when_all_three_outputs_rotate_together():
  rng = np.random.default_rng(4)
  y_a, y_b, y_s = (_random_profiles(rng, 16) for _ in range(3))
  d = _random_shifts(rng, 16)
  base, base_aux = losses.cpsd(y_a, y_b, y_s, d)
  for r in (1, 5, 7, 11):
    rot = [np.roll(y, r, axis=-1) for y in (y_a, y_b, y_s)]
    loss, aux = losses.cpsd(*rot, d)
    assert float(loss) == pytest.approx(float(base), rel=1e-5, abs=1e-6)
    for k in base_aux:
      assert float(aux[k]) == pytest.approx(float(base_aux[k]), rel=1e-5, abs=1e-6)
  # Rotating one view alone does change it (the property above is not vacuous).
  moved, _ = losses.cpsd(y_a, y_b, np.roll(y_s, 3, axis=-1), d)
  assert abs(float(moved) - float(base)) > 1e-3


def test_cpsd_in_bfloat16_is_computed_in_float32():
  rng = np.random.default_rng(5)
  y = [jnp.asarray(_random_profiles(rng, 8), jnp.bfloat16) for _ in range(3)]
  loss, aux = losses.cpsd(*y, _random_shifts(rng, 8))
  assert loss.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in aux.values())


def _nt_xent_numpy(views, temperature, pairs=None):
  """Plain loops: SimCLR (V=2) / SupCon L_out (V>2), and top-1 accuracy; with
  `pairs`, a track's unpaired views are out of each other's softmax and a view
  with no pair is no anchor."""
  z = np.concatenate(views).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n, b = len(z), len(views[0])
  paired = lambda u, v: pairs is None or (u, v) in pairs or (v, u) in pairs
  total, correct, anchors = 0.0, 0, 0
  for i in range(n):
    others = [j for j in range(n) if j != i and (j % b != i % b or paired(i // b, j // b))]
    sims = {j: float(z[i] @ z[j]) / temperature for j in others}
    log_denominator = math.log(sum(math.exp(s) for s in sims.values()))
    positives = [j for j in others if j % b == i % b]
    if positives:
      total += sum(log_denominator - sims[j] for j in positives) / len(positives)
      correct += max(others, key=lambda j: sims[j]) % b == i % b
      anchors += 1
  return total / anchors, correct / anchors


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_a_direct_computation(temperature):
  rng = np.random.default_rng(6)
  z_a = rng.normal(size=(6, 5)).astype(np.float32)
  z_b = (z_a + rng.normal(size=(6, 5))).astype(np.float32)
  loss, aux = losses.nt_xent(z_a, z_b, temperature=temperature)
  expected_loss, expected_acc = _nt_xent_numpy([z_a, z_b], temperature)
  assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
  assert float(aux["ntxent_acc"]) == pytest.approx(expected_acc)
  assert loss.dtype == jnp.float32


def test_nt_xent_with_a_third_view_matches_a_direct_computation():
  rng = np.random.default_rng(7)
  views = [rng.normal(size=(5, 4)).astype(np.float32) for _ in range(3)]
  loss, aux = losses.nt_xent(views[0], views[1], temperature=0.2, extra_views=(views[2],))
  expected_loss, expected_acc = _nt_xent_numpy(views, 0.2)
  assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
  assert float(aux["ntxent_acc"]) == pytest.approx(expected_acc)


@pytest.mark.parametrize("pairs", [((0, 2), (1, 2)), ((1, 2),)])
def test_nt_xent_with_chosen_pairs_matches_a_direct_computation(pairs):
  rng = np.random.default_rng(8)
  views = [rng.normal(size=(5, 4)).astype(np.float32) for _ in range(3)]
  loss, aux = losses.nt_xent(views[0], views[1], temperature=0.2, extra_views=(views[2],),
                             pairs=pairs)
  expected_loss, expected_acc = _nt_xent_numpy(views, 0.2, pairs)
  assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
  assert float(aux["ntxent_acc"]) == pytest.approx(expected_acc)
  assert expected_loss != pytest.approx(_nt_xent_numpy(views, 0.2)[0], rel=1e-3)


def test_nt_xent_identical_views_small_temperature():
  rng = np.random.default_rng(8)
  z = rng.normal(size=(8, 64)).astype(np.float32)
  loss, aux = losses.nt_xent(z, 3.0 * z, temperature=0.01)  # Scale must not matter.
  assert float(loss) < 1e-3
  assert float(aux["ntxent_acc"]) == 1.0
  assert float(aux["ntxent_pos_cos"]) == pytest.approx(1.0, abs=1e-5)
  # Shuffled partners: the positive is no longer the nearest view.
  shuffled, aux = losses.nt_xent(z, np.roll(z, 1, axis=0), temperature=0.01)
  assert float(shuffled) > 10 and float(aux["ntxent_acc"]) == 0.0


def test_nt_xent_on_a_sharded_batch_uses_the_global_batch():
  rng = np.random.default_rng(9)
  z_a = rng.normal(size=(16, 8)).astype(np.float32)
  z_b = (z_a + 0.5 * rng.normal(size=(16, 8))).astype(np.float32)
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  sharded = [jax.device_put(z, sharding) for z in (z_a, z_b)]
  loss, _ = jax.jit(losses.nt_xent)(*sharded)
  expected, _ = _nt_xent_numpy([z_a, z_b], 0.1)
  assert float(loss) == pytest.approx(expected, rel=1e-5)


def _batch(rng, b, frames):
  batch = {key: rng.random((b, 84, frames), dtype=np.float32) for key in objective.VIEWS}
  batch["shift"] = _random_shifts(rng, b)
  return batch


def test_objective_metrics_and_weighted_total():
  config = config_defaults.apply_arg(config_defaults.base_config(), "runlocal,frames=16")
  config.losses.ntxent.weight = 0.5
  config.losses.ntxent.include_shift_view = True
  config.losses.cpsd.spread_weight = 2.0
  config.losses.cpsd.spread_target = 10.0  # Above any spread of z: the hinge is always on.
  model = objective.build_model(config)
  batch = _batch(np.random.default_rng(10), 4, 16)
  params = jax.jit(model.init)(jax.random.key(0), batch["x_a"][:1])["params"]
  total, metrics = jax.jit(objective.make_loss_fn(config, model))(params, batch, jax.random.key(1))
  assert set(metrics) == {"loss", "cpsd", "cpsd_pos", "cpsd_eq_a", "cpsd_eq_b", "cpsd_abs_z",
                          "cpsd_spread", "cpsd_argmax_moves", "cpsd_hinge", "ntxent", "ntxent_acc",
                          "ntxent_pos_cos"}
  # The hinge counts in the total, weighted, but not in `cpsd` (the three STONE terms).
  assert float(metrics["cpsd_hinge"]) > 9
  assert float(total) == pytest.approx(float(metrics["cpsd"]) + 2.0 * float(metrics["cpsd_hinge"])
                                       + 0.5 * float(metrics["ntxent"]), rel=1e-6)
  assert float(metrics["loss"]) == float(total)
  # The losses read the heads of the three views in order [A; B; A'].
  out = jax.jit(model.apply)({"params": params}, np.concatenate([batch[k] for k in objective.VIEWS]))
  y = out["head_cpsd"]
  expected, _ = losses.cpsd(y[:4], y[4:8], y[8:], batch["shift"], omega=7 / 12)
  assert float(metrics["cpsd"]) == pytest.approx(float(expected), rel=1e-4)
  z = out["head_ntxent"]
  expected, _ = losses.nt_xent(z[:4], z[4:8], 0.1, extra_views=(z[8:],))
  assert float(metrics["ntxent"]) == pytest.approx(float(expected), rel=1e-4)
  # A batch with B's own transposition (data.b_offset='own') passes it to CPSD.
  batch["shift_b"] = np.array([3, 0, -5, 7], np.int32)
  _, metrics = jax.jit(objective.make_loss_fn(config, model))(params, batch, jax.random.key(1))
  expected, _ = losses.cpsd(y[:4], y[4:8], y[8:], batch["shift"], shift_b=batch["shift_b"])
  assert float(metrics["cpsd"]) == pytest.approx(float(expected), rel=1e-4)


def test_ntxent_pairs_choose_the_positive_views():
  """losses.ntxent.pairs='disjoint' is NT-Xent on B and A': A then has no part in
  a contrastive-only model's loss, which 'all' (A, B and A') does read; 'shift'
  and 'time' read all three views and pair A' with A and with B, or A with B
  and B with A'."""
  config = config_defaults.apply_arg(config_defaults.base_config(), "runlocal,frames=16")
  config.model.class_tokens = ("contrastive",)
  del config.losses["cpsd"]
  model = objective.build_model(config)
  batch = _batch(np.random.default_rng(11), 4, 16)
  other_a = dict(batch, x_a=np.random.default_rng(12).random(batch["x_a"].shape, dtype=np.float32))
  params = jax.jit(model.init)(jax.random.key(0), batch["x_a"][:1])["params"]
  loss = {}
  for pairs in ("all", "shift", "time", "disjoint"):
    config.losses.ntxent.pairs = pairs
    loss_fn = jax.jit(objective.make_loss_fn(config, model))
    loss[pairs] = [float(loss_fn(params, b, None)[0]) for b in (batch, other_a)]
  assert loss["disjoint"][0] == loss["disjoint"][1]
  assert abs(loss["all"][0] - loss["all"][1]) > 1e-3
  z = jax.jit(model.apply)({"params": params}, np.concatenate([batch[k] for k in objective.VIEWS]))
  z = z["head_ntxent"]
  assert loss["disjoint"][0] == pytest.approx(float(losses.nt_xent(z[4:8], z[8:], 0.1)[0]), rel=1e-4)
  shift = losses.nt_xent(z[:4], z[4:8], 0.1, extra_views=(z[8:],), pairs=((0, 2), (1, 2)))[0]
  assert loss["shift"][0] == pytest.approx(float(shift), rel=1e-4)
  time = losses.nt_xent(z[:4], z[4:8], 0.1, extra_views=(z[8:],), pairs=((0, 1), (1, 2)))[0]
  assert loss["time"][0] == pytest.approx(float(time), rel=1e-4)
  assert len({round(v[0], 4) for v in loss.values()}) == 4
  config.losses.ntxent.include_shift_view = False  # No A' to pair B with.
  with pytest.raises(ValueError, match=r"losses\.ntxent\.pairs.*include_shift_view"):
    config_validation.validate(config)


def test_circle_spread_hinge_acts_at_collapse_only():
  """Large with a gradient at a constant head, 0 for profiles spread around the circle."""
  from mt2_jax import losses
  rng = np.random.default_rng(0)
  constant = jax.nn.softmax(jnp.asarray(np.tile(rng.standard_normal(12), (48, 1))
                                        + 1e-3 * rng.standard_normal((48, 12)), jnp.float32))
  assert float(losses.circle_spread_hinge(constant)) > 0.45
  grad = jax.grad(losses.circle_spread_hinge)(constant)
  assert float(jnp.abs(grad).max()) > 0
  spread = jnp.asarray(np.eye(12)[rng.integers(0, 12, 48)] * 0.9 + 0.1 / 12, jnp.float32)
  assert float(losses.circle_spread_hinge(spread)) == 0.0
