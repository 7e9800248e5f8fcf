"""The two pretext losses of MT2, each returning `(loss, aux)` in float32.

- `cpsd`: STONE's cross-power spectral density loss on key-signature profiles
  (docs/design.md §1.4), equivariant to transposition on a circle (fifths: omega=7/12;
  semitones: omega=1/12).
- `nt_xent`: SimCLR's normalised-temperature cross-entropy. Called under
  `jit` on a globally sharded batch it contrasts against the whole global
  batch: XLA inserts the gathers, nothing is written per device.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _circle(y, omega):
  """y: [B, Q] profile -> (re, im) of z = sum_q y[q] exp(2j*pi*omega*q), [B] each."""
  angle = 2 * jnp.pi * omega * jnp.arange(y.shape[-1], dtype=jnp.float32)
  y = y.astype(jnp.float32)
  return y @ jnp.cos(angle), y @ jnp.sin(angle)


def _cross(z1, z2):
  """z1 * conj(z2) for (re, im) pairs."""
  (a, b), (c, d) = z1, z2
  return a * c + b * d, b * c - a * d


def _sq_dist(target, z):
  """|target - z|^2 for (re, im) pairs, [B]."""
  return (target[0] - z[0]) ** 2 + (target[1] - z[1]) ** 2


def _abs(z):
  """|z| for an (re, im) pair, [B]."""
  return jnp.sqrt(z[0] ** 2 + z[1] ** 2)


def argmax_moves(y_a, y_a_shift, shift):
  """Fraction of tracks whose profile peak moves by the shift, as CPSD asks.

  CPSD is 0 for y_A'[q] = y_A[(q + d) mod Q] (then z_A' = z_A exp(-2j pi omega
  d)), whose peak is argmax(y_A) - d mod Q; a head that ignores its input
  scores 0 (d is never 0 mod 12), chance is 1/12.

  Args:
    y_a, y_a_shift: [B, Q] profiles of A and A'.
    shift: int [B], d as in `cpsd`.

  Returns:
    float32 scalar in [0, 1].
  """
  q = y_a.shape[-1]
  want = (jnp.argmax(y_a, axis=-1) - jnp.asarray(shift, jnp.int32)) % q
  return jnp.mean((jnp.argmax(y_a_shift, axis=-1) == want).astype(jnp.float32))


def profile_spread(y):
  """y: [N, Q] profiles -> mean over the Q classes of the std over the N rows.

  0 exactly when the head gives every input the same profile (collapse).
  """
  return jnp.mean(jnp.std(y.astype(jnp.float32), axis=0))


def all_views(*views):
  """[B, Q] each -> [V*B, Q], a track's views side by side (as `nt_xent` orders them).

  Concatenating along a batch sharded over devices would move rows between
  devices (an all-to-all); stacking on a new axis keeps each device's rows.
  """
  return jnp.stack(views, axis=1).reshape((-1,) + views[0].shape[1:])


def circle_spread_hinge(y, omega: float = 7 / 12, target: float = 0.5, eps: float = 1e-4):
  """max(0, target - std of z over the batch): keeps the head off CPSD's constant saddle.

  A head that gives every input the same profile has z's std 0, and there
  CPSD's gradient vanishes to first order (docs/design.md §1.4); this hinge's
  does not (VICReg's variance term, on the circle). It is 0 once the profiles
  spread, as they do when they follow the transpositions of a batch.

  Args:
    y: [N, 12] profiles (all views of the batch).
    omega: CPSD's frequency on the circle.
    target: the std of z below which the hinge acts.
    eps: keeps the gradient of the std finite at a collapse.

  Returns:
    float32 scalar >= 0.
  """
  re, im = _circle(y, omega)
  var = jnp.var(re) + jnp.var(im)  # E|z - E z|^2.
  return jax.nn.relu(target - jnp.sqrt(var + eps))


def cpsd(y_a, y_b, y_a_shift, shift, omega: float = 7 / 12, shift_b=None):
  """STONE's CPSD loss.

  Args:
    y_a, y_b, y_a_shift: [B, 12] key-signature profiles (softmax outputs) of
      segment A, segment B (same key as A) and A transposed.
    shift: int [B], d = t - o in [-11, 10]: pitch class q of A appears as q - d
      in A'.
    omega: frequency on the circle; 7/12 circle of fifths, 1/12 of semitones.
    shift_b: optional int [B], B's own transposition u - o (`data.b_offset=
      'own'`): pitch class q of A appears as q - shift_b in B, so the A-B
      term asks for exp(2j pi omega shift_b) and the B-A' term for the shift
      d - shift_b between them. None: B shares A's (the terms below).

  Returns:
    (loss, aux): loss = cpsd_pos + cpsd_eq_a + cpsd_eq_b, float32 scalars:
      cpsd_pos  = mean |1 - z_A conj(z_B)|^2                  (A, B invariance)
      cpsd_eq_a = mean |exp(2j pi omega d) - z_A conj(z_A')|^2 (equivariance)
      cpsd_eq_b = mean |exp(2j pi omega d) - z_B conj(z_A')|^2
    with z = sum_q y[q] exp(2j pi omega q). Each term lies in [0, 4].
    aux also holds diagnostics, not part of the loss (a collapsed head, one
    whose output ignores its input, shows as spread 0 and argmax_moves 0):
      cpsd_abs_z        mean |z| over the 3B profiles
      cpsd_spread       `profile_spread` of the 3B profiles
      cpsd_argmax_moves `argmax_moves(y_a, y_a_shift, shift)`
  """
  z_a, z_b, z_s = (_circle(y, omega) for y in (y_a, y_b, y_a_shift))
  phase = 2 * jnp.pi * omega * jnp.asarray(shift, jnp.float32)
  target = (jnp.cos(phase), jnp.sin(phase))
  if shift_b is None:
    one, target_b = (jnp.ones_like(phase), jnp.zeros_like(phase)), target
  else:
    phase_b = 2 * jnp.pi * omega * jnp.asarray(shift_b, jnp.float32)
    one = (jnp.cos(phase_b), jnp.sin(phase_b))
    target_b = (jnp.cos(phase - phase_b), jnp.sin(phase - phase_b))
  aux = {
      "cpsd_pos": jnp.mean(_sq_dist(one, _cross(z_a, z_b))),
      "cpsd_eq_a": jnp.mean(_sq_dist(target, _cross(z_a, z_s))),
      "cpsd_eq_b": jnp.mean(_sq_dist(target_b, _cross(z_b, z_s))),
  }
  loss = aux["cpsd_pos"] + aux["cpsd_eq_a"] + aux["cpsd_eq_b"]
  aux.update({
      "cpsd_abs_z": jnp.mean(jnp.stack([_abs(z) for z in (z_a, z_b, z_s)])),
      "cpsd_spread": profile_spread(all_views(y_a, y_b, y_a_shift)),
      "cpsd_argmax_moves": argmax_moves(y_a, y_a_shift, shift),
  })
  return loss, aux


# losses.ntxent.pairs -> (which of the views (A, B, A') NT-Xent reads, None: all it
# has; its positive pairs among those, None: every pair). A-B share the crop's
# transposition, A-A' their frames, B-A' neither (docs/design.md §1.4).
NTXENT_PAIRS = {
    "all": (None, None),
    "shift": (None, ((0, 2), (1, 2))),     # Never A-B.
    "time": (None, ((0, 1), (1, 2))),      # Never A-A'.
    "disjoint": ((1, 2), None),            # B and A' only, a two-view loss.
}


def nt_xent(z_a, z_b, temperature: float = 0.1, extra_views: Sequence[jax.Array] = (),
            pairs: Sequence[tuple[int, int]] | None = None):
  """NT-Xent (SimCLR) over all views of the batch.

  With two views: the 2B embeddings are L2-normalised; anchor i's positive is
  the other view of its track and the remaining 2B - 2 views are negatives;
  the loss is the cross-entropy of finding the positive among the 2B - 1
  others (cosine similarity / temperature), averaged over the 2B anchors.
  Each array in `extra_views` adds B more views (e.g. A'): every anchor then
  has V - 1 positives and the loss averages -log p(positive) over them
  (SupCon's L_out, which is SimCLR's loss when V = 2).

  Args:
    z_a, z_b: [B, p] embeddings of two views of the same B tracks.
    temperature: softmax temperature.
    extra_views: further [B, p] views of the same tracks.
    pairs: the positive pairs, as (i, j) indices into [z_a, z_b, *extra_views];
      None: every pair. Views of a track that are not paired are left out of
      each other's softmax (neither positive nor negative); every view is
      still a negative of the other tracks' views.

  Returns:
    (loss, aux), float32. aux:
      ntxent_acc      fraction of anchors whose most similar other view is a positive
      ntxent_pos_cos  mean cosine similarity of positive pairs
  """
  views = [z_a, z_b, *extra_views]
  num_views, batch = len(views), z_a.shape[0]
  # [B*V, p], the views of a track side by side: keeps a device's tracks on it.
  z = all_views(*views).astype(jnp.float32)
  z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))
  cos = z @ z.T  # [N, N]
  n = num_views * batch
  self_mask = jnp.eye(n, dtype=bool)
  track = jnp.arange(n) // num_views
  same_track = track[:, None] == track[None, :]
  if pairs is None:  # Every pair (kept as written first: runs repeat bit for bit).
    positive, num_positives, anchors = same_track & ~self_mask, num_views - 1, slice(None)
  else:
    view = np.arange(n) % num_views
    paired = np.zeros((num_views, num_views), bool)
    for i, j in pairs:
      paired[i, j] = paired[j, i] = True
    positive = same_track & paired[view[:, None], view[None, :]]
    num_positives = np.maximum(paired.sum(axis=1), 1)[view]
    anchors = np.flatnonzero(paired.any(axis=1)[view])  # Views with no pair are negatives only.
  # A finite "minus infinity" keeps gradients free of inf * 0.
  logits = jnp.where(same_track & ~positive, -1e9, cos / temperature)
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  per_anchor = -jnp.sum(jnp.where(positive, log_prob, 0.0), axis=-1) / num_positives
  nearest = jnp.argmax(logits, axis=-1)
  aux = {
      "ntxent_acc": jnp.mean((track[nearest] == track)[anchors]),
      "ntxent_pos_cos": jnp.sum(jnp.where(positive, cos, 0.0)) / jnp.sum(positive),
  }
  return jnp.mean(per_anchor[anchors]), aux
