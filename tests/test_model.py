"""ViT-1D with K named class tokens: sizes, outputs, dtypes, gradient routing, sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mt2_jax import config_defaults
from mt2_jax import model as model_lib
from mt2_jax.train import objective

# Backbone parameters (patch embedding, positional embedding over 646 frames,
# 2 class tokens, 12 or 2 blocks, final LayerNorm; no heads), computed once.
PINNED_BACKBONE_PARAMS = {
    "test": 40_608,
    "tiny": 5_479_488,
    "small": 21_575_808,
    "base": 85_618_944,
}
# Equivariant head Linear(d -> 12) of tiny.
PINNED_TINY_CPSD_HEAD = 2_316


def _config(arg="runlocal,frames=16", tokens=None, **losses):
  config = config_defaults.apply_arg(config_defaults.base_config(), arg)
  if tokens is not None:
    config.model.class_tokens = tokens
  for name, value in losses.items():
    if value is None:
      del config.losses[name]
    else:
      config.losses[name] = value
  return config


def _params(model, frames=16, seed=0):
  """Random float32 parameters of the right shapes, without compiling `init`.

  Compiling the initialisers costs seconds per model on a CPU; the properties
  tested here hold for any weights, so they are drawn here instead.
  """
  abstract = nn.unbox(model_lib.abstract_variables(model, 84, frames)["params"])
  rng = np.random.default_rng(seed)
  def draw(path, leaf):
    if jax.tree_util.keystr(path).endswith("['scale']"):
      return jnp.asarray(1 + 0.1 * rng.standard_normal(leaf.shape), jnp.float32)
    scale = 1 / np.sqrt(leaf.shape[0]) if len(leaf.shape) > 1 else 0.1
    return jnp.asarray(scale * rng.standard_normal(leaf.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(draw, abstract)


def _views(b=3, frames=16, seed=1):
  return np.random.default_rng(seed).random((b, 84, frames), dtype=np.float32)


@pytest.mark.parametrize("variant", sorted(PINNED_BACKBONE_PARAMS))
def test_pinned_parameter_counts(variant):
  config = _config(f"variant={variant},paper")  # 646 frames, K=2, the paper's architecture.
  params = model_lib.abstract_variables(model_lib.build_model(config), 84, 646)["params"]
  count = model_lib.count_params(params["backbone"])
  assert count == PINNED_BACKBONE_PARAMS[variant]
  # Independent arithmetic: timm-style pre-LN ViT blocks.
  v = model_lib.VARIANTS[variant]
  d, m = v["width"], v["mlp_dim"]
  block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
  assert count == (84 * d + d) + 646 * d + 2 * d + v["depth"] * block + 2 * d
  if variant == "tiny":
    assert 5.3e6 < count < 5.6e6  # docs/design.md §1.3: "about 5.4 to 5.5 M" (MERT-95M / 18).
    assert model_lib.count_params(params["head_cpsd"]) == PINNED_TINY_CPSD_HEAD
    assert "head_ntxent" not in params  # projector 'none' has no parameters.


def test_each_extra_class_token_costs_one_vector():
  counts = {}
  for k in (1, 2, 3):
    config = _config("variant=tiny,model.class_blocks=0", tokens=tuple(f"t{i}" for i in range(k)),
                     cpsd=dict(kind="cpsd", token="t0", weight=1.0, omega=7 / 12), ntxent=None)
    params = model_lib.abstract_variables(model_lib.build_model(config), 84, 646)["params"]
    counts[k] = model_lib.count_params(params["backbone"])
  assert counts[2] - counts[1] == 192 and counts[3] - counts[2] == 192


K_CONFIGS = {
    1: ("equivariant",),
    2: ("equivariant", "contrastive"),
    3: ("equivariant", "contrastive", "semitone"),
}


def _k_config(k):
  tokens = K_CONFIGS[k]
  losses = dict(cpsd=dict(kind="cpsd", token="equivariant", weight=1.0, omega=7 / 12))
  losses["ntxent"] = (dict(kind="ntxent", token="contrastive", weight=1.0, temperature=0.1, projector="none")
                      if "contrastive" in tokens else None)
  if "semitone" in tokens:
    losses["cpsd_semitone"] = dict(kind="cpsd", token="semitone", weight=1.0, omega=1 / 12)
  return _config(tokens=tokens, **losses)


def _batch(b=4, frames=16):
  batch = {key: _views(b=b, frames=frames, seed=i) for i, key in enumerate(objective.VIEWS)}
  batch["shift"] = np.array([1, -3, 5, -7, 2, -11, 10, -1][:b], np.int32)
  return batch


@pytest.mark.parametrize("k", sorted(K_CONFIGS))
def test_class_tokens_name_the_outputs_and_the_objective_runs(k):
  tokens = K_CONFIGS[k]
  config = _k_config(k)
  model = model_lib.build_model(config)
  params = _params(model)
  shapes = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params, _views())
  heads = {f"head_{name}" for name in config.losses}
  assert set(shapes) == {f"cls_{t}" for t in tokens} | {"cls_mean", "tokens", "tokens_mean"} | heads
  for name in [*(f"cls_{t}" for t in tokens), "cls_mean", "tokens_mean"]:
    assert shapes[name].shape == (3, 32)
  assert shapes["tokens"].shape == (3, 16, 32)
  total, metrics = jax.jit(objective.make_loss_fn(config, model))(params, _batch(), None)
  assert np.isfinite(float(total)) and set(config.losses) <= set(metrics)


def test_named_outputs_are_what_they_say():
  model = model_lib.build_model(_k_config(3))
  out = jax.jit(model.apply)({"params": _params(model)}, _views())
  tokens = K_CONFIGS[3]
  np.testing.assert_allclose(out["cls_mean"], np.mean([out[f"cls_{t}"] for t in tokens], axis=0), atol=1e-5)
  np.testing.assert_allclose(out["tokens_mean"], out["tokens"].mean(axis=1), atol=1e-5)
  assert not np.allclose(out["cls_equivariant"], out["cls_semitone"], atol=1e-3)
  # After the final LayerNorm (scale ~1, bias ~0): every vector is ~standardised.
  assert np.abs(np.asarray(out["tokens"]).std(-1) - 1).max() < 0.5
  for name in ("head_cpsd", "head_cpsd_semitone"):
    y = out[name]
    assert y.shape == (3, 12) and y.dtype == jnp.float32
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
  # Shorter windows than num_frames reuse the start of the positional table.
  short = jax.jit(lambda p, x: model.apply({"params": p}, x, with_heads=False))(_params(model), _views(frames=5))
  assert short["tokens"].shape == (3, 5, 32) and "head_cpsd" not in short
  with pytest.raises(ValueError, match="num_frames"):
    jax.eval_shape(lambda x: model.apply({"params": _params(model)}, x), _views(frames=17))


def test_bfloat16_forward_is_close_to_float32():
  config = _config()
  params = _params(model_lib.build_model(config))
  x = _views(b=4)
  outs = {}
  for dtype in ("float32", "bfloat16"):
    config.model.dtype = dtype
    model = model_lib.build_model(config)
    outs[dtype] = jax.jit(model.apply)({"params": params}, x)
  assert outs["bfloat16"]["tokens"].dtype == jnp.bfloat16
  assert outs["bfloat16"]["head_cpsd"].dtype == jnp.float32  # Heads run in float32.
  for name in ("cls_equivariant", "cls_contrastive", "tokens", "head_cpsd"):
    ref = np.asarray(outs["float32"][name], np.float32)
    low = np.asarray(outs["bfloat16"][name], np.float32)
    # LayerNorm outputs are O(1); bfloat16 keeps ~3 significant digits.
    assert np.max(np.abs(low - ref)) < 0.15, name
    assert np.mean(np.abs(low - ref)) < 0.03 * max(1.0, np.mean(np.abs(ref))), name
    assert np.mean(np.abs(low - ref)) > 0, name  # The bfloat16 path really ran in bfloat16.


def _loss_grads(attention="full", remat=False, class_blocks=0, detached=()):
  """(model, params, gradients of each loss term (cpsd, ntxent) w.r.t. all parameters).

  class_blocks 0 (default here): the class tokens go through the blocks."""
  config = _config(f"runlocal,frames=16,model.class_blocks={class_blocks}")
  config.model.detached_tokens = detached
  config.model.class_token_attention = attention
  config.model.remat = remat
  config.losses.ntxent.projector = "mlp"
  model = model_lib.build_model(config)
  params = _params(model)
  loss_fn = objective.make_loss_fn(config, model)
  batch = _batch()
  terms = lambda p: jnp.stack([loss_fn(p, batch, None)[1][name] for name in ("cpsd", "ntxent")])
  jac = jax.jit(jax.jacrev(terms))(params)
  return model, params, {name: jax.tree_util.tree_map(lambda g: g[i], jac)
                         for i, name in enumerate(("cpsd", "ntxent"))}


@pytest.fixture(scope="module")
def full_grads():
  return _loss_grads("full")[2]


def _norm(tree):
  return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree)))


@pytest.mark.parametrize("attention", ["full", "isolated"])
def test_gradients_reach_only_the_bound_head(attention, full_grads):
  grads = full_grads if attention == "full" else _loss_grads(attention)[2]
  for loss, other in (("cpsd", "ntxent"), ("ntxent", "cpsd")):
    g = grads[loss]
    assert _norm(g[f"head_{loss}"]) > 0
    assert _norm(g[f"head_{other}"]) == 0.0
    assert _norm(g["backbone"]["block00"]) > 0
  own = {"cpsd": 0, "ntxent": 1}  # Rows of backbone/cls: equivariant, contrastive.
  for loss in ("cpsd", "ntxent"):
    cls_grad = np.asarray(grads[loss]["backbone"]["cls"])
    assert np.abs(cls_grad[own[loss]]).sum() > 0
    other_row = np.abs(cls_grad[1 - own[loss]]).sum()
    if attention == "isolated":
      # Class tokens never see each other, so a loss cannot move the other token.
      assert other_row == 0.0
    else:
      # Full attention (the paper's ViT): the other token is a key/value of this one.
      assert other_row > 0.0


def test_remat_gives_the_same_gradients(full_grads):
  remat = _loss_grads("full", remat=True)[2]
  # Recomputing the forward pass reorders float32 sums: a gradient that is a
  # small sum of many large terms (a bias shared by every bin and frame) moves
  # by ~1e-6, so the absolute tolerance follows the largest gradient of the loss.
  for loss in full_grads:
    scale = max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(full_grads[loss]))
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale),
        full_grads[loss], remat[loss])


def test_isolated_tokens_do_not_depend_on_the_other_tokens():
  x = _views(b=2)
  config = _config("runlocal,frames=16,model.class_blocks=0")
  config.model.class_token_attention = "isolated"
  model2 = model_lib.build_model(config)
  params2 = _params(model2)
  config.model.class_tokens = ("equivariant",)
  del config.losses["ntxent"]
  model1 = model_lib.build_model(config)
  # Same weights, first class token only.
  params1 = dict(params2, backbone=dict(params2["backbone"], cls=params2["backbone"]["cls"][:1]))
  apply = lambda model, p: jax.jit(model.apply)({"params": p}, x)
  out1, out2 = apply(model1, params1), apply(model2, params2)
  for name in ("cls_equivariant", "tokens", "head_cpsd"):
    np.testing.assert_allclose(out1[name], out2[name], atol=1e-5)
  # With full attention the frames do see the class tokens.
  config.model.class_token_attention = "full"
  full = apply(model_lib.build_model(config), params1)
  assert not np.allclose(full["tokens"], out1["tokens"], atol=1e-4)


@pytest.mark.parametrize("masked", [False, True])
def test_einsum_attention_is_dot_product_attention(masked):
  """The 'xla' layout (q, k, v projected straight to [3, B, N, L, H]) computes
  exactly standard multi-head attention over the same parameters."""
  b, length, d, heads = 2, 7, 12, 3
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((b, length, d)), jnp.float32)
  mask = jnp.asarray(rng.random((length, length)) < 0.7) | jnp.eye(length, dtype=bool) if masked else None
  attn = model_lib.SelfAttention(heads, implementation="xla")
  params = nn.unbox(attn.init(jax.random.key(0), x, mask))["params"]
  params = jax.tree.map(lambda p: p + 0.1 * jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
  got = attn.apply({"params": params}, x, mask)

  qkv = jnp.einsum("bld,dsnh->blsnh", x, params["qkv"]["kernel"]) + params["qkv"]["bias"]
  o = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask=mask,
                                   implementation="xla")
  want = jnp.einsum("blnh,nhd->bld", o, params["out"]["kernel"]) + params["out"]["bias"]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_attention_implementation_resolves_and_rejects():
  assert model_lib.attention_implementation("auto", jnp.float32) == "xla"  # Never cuDNN in f32.
  if jax.default_backend() == "cpu":
    assert model_lib.attention_implementation("auto", jnp.bfloat16) == "xla"
  assert model_lib.attention_implementation("xla", jnp.bfloat16) == "xla"
  with pytest.raises(ValueError, match="attention must be one of"):
    model_lib.attention_implementation("flash")


def test_every_parameter_has_logical_axes_and_fsdp_shards_embed():
  model = model_lib.build_model(_config())
  boxed = model_lib.abstract_variables(model, 84, 16)
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned) and len(leaf.names) == len(leaf.value.shape)
    assert leaf.value.dtype == jnp.float32
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  for sharding in ("data", "fsdp"):
    shardings = model_lib.param_shardings(boxed, mesh, sharding)
    specs = {jax.tree_util.keystr(path): s.spec for path, s in jax.tree_util.tree_leaves_with_path(shardings)}
    flat = [axis for spec in specs.values() for axis in spec if axis is not None]
    if sharding == "data":
      assert not flat  # Everything replicated.
    else:
      assert set(flat) == {"fsdp"}
      assert specs["['params']['backbone']['block00']['mlp']['fc1']['kernel']"] == jax.sharding.PartitionSpec(
          "fsdp", None)
      assert specs["['params']['backbone']['pos_embed']"] == jax.sharding.PartitionSpec(None, "fsdp")


def test_fsdp_sharded_forward_matches_unsharded():
  model = model_lib.build_model(_config())
  params = _params(model)
  x = _views(b=8)
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  boxed = model_lib.abstract_variables(model, 84, 16)
  shardings = model_lib.param_shardings(boxed, mesh, "fsdp")["params"]
  sharded = jax.device_put(params, shardings)
  x_sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"))))
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x)["cls_mean"])
  np.testing.assert_allclose(apply(sharded, x_sharded), apply(params, x), atol=1e-5)


# -- Making the equivariant token learnable (docs/experiments.md). ------------

def test_pitch_embed_rolls_with_the_crop():
  """A crop s bins higher rolls the [12 x c] pitch-class layout by s (input periodic in 12 bins)."""
  embed = model_lib.PitchEmbed(channels=3)
  rng = np.random.default_rng(0)
  x = np.tile(rng.random((2, 5, 12), dtype=np.float32), (1, 1, 9))  # [B, T, 108], period 12.
  params = embed.init(jax.random.key(0), x[..., :84])
  base = np.asarray(embed.apply(params, x[..., :84])).reshape(2, 5, 12, 3)
  for s in (1, 5, 11):
    shifted = np.asarray(embed.apply(params, x[..., s:s + 84])).reshape(2, 5, 12, 3)
    np.testing.assert_allclose(shifted, np.roll(base, -s, axis=2), atol=1e-5)
  # The contrast step: every channel has zero mean and (up to the epsilon) unit
  # variance over the 12 classes.
  np.testing.assert_allclose(base.mean(2), 0, atol=1e-5)
  assert 0.9 < base.var(2).min() and base.var(2).max() <= 1 + 1e-5
  assert not np.allclose(base[..., 0, :], base[..., 1, :])  # It still tells pitch classes apart.


def test_shared_equivariant_head_rolls_the_profile():
  head = model_lib.EquivariantHead("shared", pitch_channels=4)
  rng = np.random.default_rng(1)
  pitch, rest = rng.standard_normal((3, 12, 4)), rng.standard_normal((3, 7))
  feature = lambda p: jnp.asarray(np.concatenate([p.reshape(3, 48), rest], 1), jnp.float32)
  params = head.init(jax.random.key(0), feature(pitch))
  y = np.asarray(head.apply(params, feature(pitch)))
  np.testing.assert_allclose(y.sum(1), 1, atol=1e-6)
  for s in (1, 7):
    y_s = np.asarray(head.apply(params, feature(np.roll(pitch, s, axis=1))))
    np.testing.assert_allclose(y_s, np.roll(y, s, axis=1), atol=1e-6)
  assert np.ptp(y, axis=1).min() > 1e-3  # Not uniform: it reads the pitch classes.


def test_layerscale_starts_blocks_near_the_identity():
  x = jnp.asarray(_views(b=2, frames=6).transpose(0, 2, 1)[..., :32])  # [B, L, d=32]
  for scale, close in ((1e-6, True), (0.0, False)):
    block = model_lib.EncoderBlock(num_heads=2, mlp_dim=64, layerscale=scale)
    variables = block.init(jax.random.key(0), x)
    assert ("ls1" in variables["params"]) == bool(scale)
    out = block.apply(variables, x)
    assert np.allclose(out, x, atol=1e-4) == close


def test_layerscale_on_frames_only_leaves_class_tokens_unscaled():
  x = jnp.asarray(_views(b=2, frames=6).transpose(0, 2, 1)[..., :32])  # [B, L=6, d=32]
  block = model_lib.EncoderBlock(num_heads=2, mlp_dim=64, layerscale=1e-6,
                                 layerscale_tokens="frames", num_class_tokens=2)
  out = np.asarray(block.apply(block.init(jax.random.key(0), x), x))
  assert np.allclose(out[:, 2:], x[:, 2:], atol=1e-4)  # Frames: near the identity.
  assert not np.allclose(out[:, :2], x[:, :2], atol=1e-2)  # Class tokens: full updates.


@pytest.mark.parametrize("init, depends_on_input", [("mean", True), ("vector", False)])
def test_class_token_init(init, depends_on_input):
  """With blocks at the identity, a class token is its start: vector (+ the frame mean)."""
  config = _config(f"runlocal,frames=16,model.class_token_init={init},model.layerscale_tokens=all,"
                   "model.class_blocks=0")
  model = model_lib.build_model(config)
  params = jax.tree_util.tree_map_with_path(
      lambda path, v: (np.full_like(v, 1e-7) if jax.tree_util.keystr(path).endswith(("['ls1']", "['ls2']"))
                       else v),
      _params(model))
  outs = [model.apply({"params": params}, _views(b=1, seed=s), with_heads=False)["cls_equivariant"]
          for s in (1, 2)]
  assert (not np.allclose(outs[0], outs[1], atol=1e-3)) == depends_on_input


@pytest.mark.parametrize("patch_embed", ["pitch", "hybrid"])
def test_pitch_structured_models_count_their_parameters(patch_embed):
  """tiny: the dense part shrinks by the pitch part's 12c dims; LayerScale adds 2d per block."""
  config = _config(f"variant=tiny,model.patch_embed={patch_embed},model.layerscale=0.01,"
                   "model.class_blocks=0")
  params = model_lib.abstract_variables(model_lib.build_model(config), 84, 646)["params"]
  d, depth = 192, 12
  c = model_lib.pitch_embed_channels(patch_embed, d)
  assert c == {"pitch": 16, "hybrid": 8}[patch_embed]
  dense = d - 12 * c
  expected = (PINNED_BACKBONE_PARAMS["tiny"] - (84 * d + d) + (84 * dense + dense if dense else 0)
              + 2 * c + depth * 2 * d)
  assert model_lib.count_params(params["backbone"]) == expected


@pytest.mark.parametrize("arg, key", [
    ("model.patch_embed=pitch", "model.pitch_channels"),  # 12 x 2 != width 32.
    ("model.patch_embed=bogus", "model.patch_embed"),
    ("model.patch_embed=hybrid,model.pitch_channels=3", "model.pitch_channels"),  # 36 > 32.
    ("model.layerscale=-1", "model.layerscale"),
    ("model.layerscale_tokens=cls", "model.layerscale_tokens"),
    ("model.class_token_init=zeros", "model.class_token_init"),
    ("model.patch_embed=dense,model.token_reads=all,losses.cpsd.head=shared", "losses.cpsd.head"),
    ("losses.cpsd.spread_weight=-1", "losses.cpsd.spread_weight"),
    ("model.class_blocks=-1", "model.class_blocks"),
    ("model.class_blocks=1,model.class_token_attention=isolated", "model.class_token_attention"),
    ("model.token_reads=pitch", "model.token_reads"),  # 'all', 'split' or 'dense'.
    ("model.token_reads=split,model.class_blocks=0", "model.token_reads"),
    ("model.token_reads=split,model.patch_embed=dense", "model.token_reads"),
])
def test_learnability_knobs_are_validated(arg, key):
  from mt2_jax import config_validation
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    config_validation.validate(_config(f"runlocal,{arg}"))


def test_paper_preset_is_the_papers_architecture():
  config = _config("runlocal,paper")
  assert config.model.patch_embed == "dense" and config.model.layerscale == 0
  assert config.losses.cpsd.head == "dense" and config.losses.cpsd.spread_weight == 0
  # NT-Xent's positives: A and B only (ours adds A').
  assert not config.losses.ntxent.include_shift_view
  assert _config("runlocal").losses.ntxent.include_shift_view
  params = _params(model_lib.build_model(config))
  assert "pitch_embed" not in params["backbone"] and "ls1" not in params["backbone"]["block00"]


def test_a_config_saved_before_the_learnability_knobs_builds_the_papers_model():
  """Runs written before these knobs existed have no such keys in config.json: they load dense."""
  import json
  import ml_collections
  config = json.loads(_config("runlocal,paper").to_json())
  for key in ("patch_embed", "pitch_channels", "layerscale"):
    del config["model"][key]
  for key in ("head", "spread_weight", "spread_target"):
    del config["losses"]["cpsd"][key]
  old = ml_collections.ConfigDict(config)
  old.model.class_tokens = tuple(old.model.class_tokens)
  params = _params(model_lib.build_model(old))
  assert params["backbone"]["patch_embed"]["kernel"].shape == (84, 32)
  assert "pitch_embed" not in params["backbone"] and "ls1" not in params["backbone"]["block00"]
  assert params["head_cpsd"]["dense"]["kernel"].shape == (32, 12)


def test_class_attention_is_the_class_rows_of_self_attention():
  """ClassAttentionBlock's attention = row 0 of SelfAttention over [cls; frames]
  with the same q, k, v weights (only the class token is a query)."""
  d, heads = 12, 3
  rng = np.random.default_rng(0)
  cls, frames = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((2, 1, d), (2, 5, d)))
  block = model_lib.ClassAttentionBlock(heads, mlp_dim=8)
  params = nn.unbox(block.init(jax.random.key(0), cls, frames))["params"]
  params = jax.tree.map(lambda p: p + 0.1 * jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
  # The block with its MLP switched off: x + attention(LN(.)).
  no_mlp = dict(params, mlp=jax.tree.map(jnp.zeros_like, params["mlp"]))
  got = block.apply({"params": no_mlp}, cls, frames) - cls

  u = nn.LayerNorm().apply({"params": params["ln1"]}, jnp.concatenate([cls, frames], axis=1))
  qkv = {"kernel": jnp.concatenate([params["q"]["kernel"][:, None], params["kv"]["kernel"]], axis=1),
         "bias": jnp.concatenate([params["q"]["bias"][None], params["kv"]["bias"]], axis=0)}
  attn = model_lib.SelfAttention(heads, implementation="xla")
  want = attn.apply({"params": {"qkv": qkv, "out": params["out"]}}, u)[:, :1]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_class_blocks_give_each_token_its_own_weights():
  """With model.class_blocks each loss trains its own token's class block and the
  shared frame blocks, never the other token's class block; frames do not see
  the class tokens."""
  model, params, grads = _loss_grads(class_blocks=1)
  own = {"cpsd": "equivariant", "ntxent": "contrastive"}
  for loss, token in own.items():
    other = own["ntxent" if loss == "cpsd" else "cpsd"]
    backbone = grads[loss]["backbone"]
    assert _norm(backbone[f"cls_{token}_block00"]) > 0
    assert _norm(backbone[f"cls_{other}_block00"]) == 0.0
    assert _norm(backbone["block00"]) > 0
  x = _views(b=2)
  out = model.apply({"params": params}, x, with_heads=False)
  # (Not a constant shift: every LayerNorm on the way removes one.)
  nudge = jnp.asarray(np.random.default_rng(3).standard_normal(params["backbone"]["cls"].shape))
  moved = dict(params, backbone=dict(params["backbone"], cls=params["backbone"]["cls"] + nudge))
  out2 = model.apply({"params": moved}, x, with_heads=False)
  np.testing.assert_allclose(out["tokens"], out2["tokens"], atol=1e-6)
  assert not np.allclose(out["cls_equivariant"], out2["cls_equivariant"], atol=1e-3)


def test_a_detached_token_trains_its_own_class_block_and_not_the_shared_blocks():
  model, params, grads = _loss_grads(class_blocks=1, detached=("contrastive",))
  _, _, attached = _loss_grads(class_blocks=1)
  ntxent = grads["ntxent"]["backbone"]
  own = ntxent.pop("cls_contrastive_block00")
  assert _norm(own) > 0
  # Its own class block and head learn exactly as before (same forward pass).
  jax.tree.map(np.testing.assert_array_equal, own,
               attached["ntxent"]["backbone"]["cls_contrastive_block00"])
  jax.tree.map(np.testing.assert_array_equal, grads["ntxent"]["head_ntxent"],
               attached["ntxent"]["head_ntxent"])
  cls = np.asarray(ntxent.pop("cls"))
  assert np.abs(cls[1]).sum() > 0 and np.abs(cls[0]).sum() == 0  # Its own vector only.
  # The final LayerNorm's scale and bias, shared by every output, still learn
  # from both losses; nothing else does: frame blocks, embeddings, the other
  # token's class block.
  assert _norm(ntxent.pop("final_norm")) > 0
  assert _norm(ntxent) == 0.0
  assert _norm(attached["ntxent"]["backbone"]["block00"]) > 0
  jax.tree.map(np.testing.assert_array_equal, grads["cpsd"], attached["cpsd"])
  for tokens, key in ((("contrastive",), "class_blocks > 0"), (("tonal",), "not class tokens")):
    config = _config("runlocal,model.class_blocks=0" if key.startswith("class") else "runlocal")
    config.model.detached_tokens = tokens
    from mt2_jax import config_validation
    with pytest.raises(ValueError, match=r"model\.detached_tokens.*" + key):
      config_validation.validate(config)


@pytest.mark.parametrize("reads", ["all", "split", "dense"])
def test_split_reads_give_each_token_its_own_part_of_the_frame_token(reads):
  """model.token_reads='split': with no block to mix the channels (depth 0), the
  equivariant token depends on the pitch-structured embedding only and the
  contrastive token on the dense one; 'dense' restricts the contrastive token
  only; with 'all' each depends on both."""
  config = _config(f"runlocal,frames=16,model.class_blocks=1,model.depth=0,"
                   f"model.token_reads={reads}")
  model = model_lib.build_model(config)
  params = _params(model)
  x = _views(b=2)
  for token in ("equivariant", "contrastive"):
    grads = jax.grad(lambda p: jnp.sum(jnp.sin(model.apply(
        {"params": p}, x, with_heads=False)[f"cls_{token}"])))(params)["backbone"]
    pitch, dense = _norm(grads["pitch_embed"]), _norm(grads["patch_embed"])
    if reads == "all" or (reads == "dense" and token == "equivariant"):
      assert pitch > 0 and dense > 0
    elif token == "equivariant":
      assert pitch > 0 and dense == 0.0
    else:
      assert dense > 0 and pitch == 0.0


def test_split_reads_bind_the_pitch_channels_to_every_cpsd_token():
  # The default, 'dense': only the contrastive token restricted.
  assert model_lib.token_reads(_config("runlocal")) == ("all", "dense")
  config = _config("runlocal,model.token_reads=split")
  assert model_lib.token_reads(config) == ("pitch", "dense")
  config.model.class_tokens = ("equivariant", "contrastive", "semitone")
  config.losses.cpsd_semitone = dict(config.losses.cpsd.to_dict(), token="semitone", omega=1 / 12)
  assert model_lib.token_reads(config) == ("pitch", "dense", "pitch")
  config.model.token_reads = "dense"  # Only the tokens of no CPSD loss restricted.
  assert model_lib.token_reads(config) == ("all", "dense", "all")
  del config.losses.cpsd, config.losses.cpsd_semitone  # Contrastive only: no pitch reader.
  assert model_lib.token_reads(config) == ("dense", "dense", "dense")
  assert model_lib.token_reads(_config("runlocal,paper")) == ()
  # A run saved before the knob existed (no key in its config.json) read every channel.
  del config.model["token_reads"]
  assert model_lib.token_reads(config) == ()


def test_detach_shift_view_keeps_a_prime_out_of_the_shared_blocks():
  """With losses.ntxent.detach_shift_view, NT-Xent's gradient is the one of a
  loss whose A' embedding sees the shared parameters as constants (only the
  contrastive token's vector, class block, the final LayerNorm and its head
  learn from A'), while A and B train everything as before."""
  from mt2_jax import losses
  config = _config("runlocal,frames=16,model.class_blocks=1")
  config.losses.ntxent.include_shift_view = True
  config.losses.ntxent.detach_shift_view = True
  model = model_lib.build_model(config)
  params, batch = _params(model), _batch()
  loss_fn = objective.make_loss_fn(config, model)
  got = jax.grad(lambda p: loss_fn(p, batch, None)[1]["ntxent"])(params)

  config_plain = _config("runlocal,frames=16,model.class_blocks=1",
                         ntxent=dict(config.losses.ntxent, detach_shift_view=False))
  plain = model_lib.build_model(config_plain)  # The same parameters, nothing detached.
  own = ("cls", "cls_contrastive_block00", "final_norm")
  def reference(p):
    const = dict(p, backbone={k: v if k in own else jax.lax.stop_gradient(v)
                              for k, v in p["backbone"].items()})
    head = lambda q, key: plain.apply({"params": q}, batch[key])["head_ntxent"]
    return losses.nt_xent(head(p, "x_a"), head(p, "x_b"), extra_views=(head(const, "x_a_shift"),))[0]
  want = jax.grad(reference)(params)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(want))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5 * scale), got, want)
  # And A' did train the shared blocks without the knob.
  undetached = objective.make_loss_fn(config_plain, plain)
  full = jax.grad(lambda p: undetached(p, batch, None)[1]["ntxent"])(params)
  assert _norm(jax.tree.map(jnp.subtract, got["backbone"]["block00"],
                            full["backbone"]["block00"])) > 1e-3
  for key, value in (("include_shift_view", False), ("detach_shift_view", True)):
    bad = _config("runlocal,frames=16,model.class_blocks=0,model.token_reads=all" if value
                  else "runlocal,frames=16")
    bad.losses.ntxent.detach_shift_view = True
    bad.losses.ntxent.include_shift_view = key != "include_shift_view"
    from mt2_jax import config_validation
    with pytest.raises(ValueError, match="detach_shift_view"):
      config_validation.validate(bad)


def test_each_class_block_costs_one_block_per_token():
  """A class-attention block has a plain block's parameters (q + kv = qkv), one per token."""
  counts = {}
  for n in (0, 1, 2):
    config = _config(f"variant=tiny,paper,model.class_blocks={n}")
    params = model_lib.abstract_variables(model_lib.build_model(config), 84, 646)["params"]
    counts[n] = model_lib.count_params(params["backbone"])
  d, m = 192, 768
  block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
  assert counts[0] == PINNED_BACKBONE_PARAMS["tiny"]
  assert counts[1] - counts[0] == 2 * block
  assert counts[2] - counts[1] == 2 * block
