r"""A plain-PyTorch MT2 train step: the peer the JAX step is timed against.

  python benchmarks/torch_reference.py --variant=tiny --frames=173 --tracks=16

Same architecture and objective as `mt2_jax` (docs/design.md §1.3-1.5), written with
`torch.nn` only (timm/torchvision do not import against the CPU torch build):

  x [3B, 84, T] -> frames [3B, T, 84] -> Linear(84 -> d) -> + pos-emb [T, d]
  K class tokens = learnable vector + mean of the projected frames (taken
  before the position embedding), prepended -> [3B, K + T, d]
  depth x pre-LN block: x + out(SDPA(qkv(LN(x)))), x + fc2(GELU(fc1(LN(x))))
  final LN -> cls_<name> [3B, d]; equivariant head Linear(d -> 12) + softmax;
  contrastive head = the token; CPSD + NT-Xent in float32; AdamW (b1 0.9,
  b2 0.98, decay 0.05 on matrices only) after global-norm clipping at 1.

GELU is the tanh approximation, as `flax.linen.gelu`, so both sides do the
same arithmetic. On CUDA, activations run under bf16 autocast (parameters
stay float32), which is what the JAX config's `model.dtype='bfloat16'` does.

`measure(...)` times eager and `torch.compile` steps; a compile failure is
caught and its reason recorded, never raised.
"""

import argparse
import json
import math
import time
import traceback

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

# Same table as mt2_jax.model.VARIANTS; duplicated so this file needs no JAX.
VARIANTS = {
    "test": dict(width=32, depth=2, num_heads=2, mlp_dim=64),
    "tiny": dict(width=192, depth=12, num_heads=3, mlp_dim=768),
    "small": dict(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "base": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
}
NUM_BINS = 84
NUM_PITCH_CLASSES = 12


class Block(nn.Module):
  """Pre-LN transformer block with a fused qkv projection and SDPA."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int):
    super().__init__()
    self.num_heads = num_heads
    self.ln1 = nn.LayerNorm(width, eps=1e-6)
    self.qkv = nn.Linear(width, 3 * width)
    self.out = nn.Linear(width, width)
    self.ln2 = nn.LayerNorm(width, eps=1e-6)
    self.fc1 = nn.Linear(width, mlp_dim)
    self.fc2 = nn.Linear(mlp_dim, width)

  def forward(self, x):
    """x: [B, L, d] -> [B, L, d]."""
    b, length, d = x.shape
    h = self.ln1(x)
    # [B, L, 3, N, H] -> 3 x [B, N, L, H], the layout SDPA wants.
    q, k, v = self.qkv(h).view(b, length, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
    h = F.scaled_dot_product_attention(q, k, v)
    x = x + self.out(h.transpose(1, 2).reshape(b, length, d))
    return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class ViT1D(nn.Module):
  """[B, 84, T] -> dict of cls_<name> [B, d] (after the final LN)."""

  def __init__(self, width, depth, num_heads, mlp_dim, num_frames, class_tokens):
    super().__init__()
    self.class_tokens = tuple(class_tokens)
    self.patch_embed = nn.Linear(NUM_BINS, width)
    self.pos_embed = nn.Parameter(0.02 * torch.randn(num_frames, width))
    self.cls = nn.Parameter(0.02 * torch.randn(len(self.class_tokens), width))
    self.blocks = nn.ModuleList(Block(width, num_heads, mlp_dim) for _ in range(depth))
    self.final_norm = nn.LayerNorm(width, eps=1e-6)

  def forward(self, x):
    frames = self.patch_embed(x.transpose(1, 2))  # [B, T, d]
    cls = self.cls[None] + frames.mean(dim=1, keepdim=True)  # [B, K, d]
    frames = frames + self.pos_embed[: frames.shape[1]][None]
    h = torch.cat([cls, frames], dim=1)
    for block in self.blocks:
      h = block(h)
    h = self.final_norm(h)
    return {f"cls_{name}": h[:, i] for i, name in enumerate(self.class_tokens)}


class MT2(nn.Module):
  """Backbone + one head per loss; `losses` maps name -> (kind, token, omega or temperature)."""

  def __init__(self, backbone: ViT1D, losses: dict):
    super().__init__()
    self.backbone = backbone
    self.losses = dict(losses)
    width = backbone.cls.shape[-1]
    self.heads = nn.ModuleDict({
        name: nn.Linear(width, NUM_PITCH_CLASSES)
        for name, (kind, _, _) in self.losses.items() if kind == "cpsd"})

  def forward(self, x):
    out = self.backbone(x)
    heads = {}
    for name, (kind, token, _) in self.losses.items():
      feature = out[f"cls_{token}"].float()
      heads[name] = torch.softmax(self.heads[name](feature), -1) if kind == "cpsd" else feature
    return heads


def cpsd(y_a, y_b, y_s, shift, omega):
  """STONE's CPSD loss on [B, 12] profiles, float32 (as mt2_jax.losses.cpsd).

  Complex numbers as (re, im) pairs: inductor has no complex codegen.
  """
  angle = 2 * math.pi * omega * torch.arange(NUM_PITCH_CLASSES, device=y_a.device, dtype=torch.float32)
  cos, sin = torch.cos(angle), torch.sin(angle)
  (ar, ai), (br, bi), (sr, si) = ((y.float() @ cos, y.float() @ sin) for y in (y_a, y_b, y_s))
  phase = 2 * math.pi * omega * shift.float()
  tr, ti = torch.cos(phase), torch.sin(phase)

  def sq_dist(t_re, t_im, z1r, z1i, z2r, z2i):  # mean |t - z1 conj(z2)|^2
    return ((t_re - (z1r * z2r + z1i * z2i)).square() + (t_im - (z1i * z2r - z1r * z2i)).square()).mean()

  return (sq_dist(1.0, 0.0, ar, ai, br, bi) + sq_dist(tr, ti, ar, ai, sr, si)
          + sq_dist(tr, ti, br, bi, sr, si))


def nt_xent(z_a, z_b, temperature):
  """SimCLR's NT-Xent over the 2B views (as mt2_jax.losses.nt_xent, two views)."""
  z = F.normalize(torch.cat([z_a, z_b]).float(), dim=-1)
  n, b = z.shape[0], z_a.shape[0]
  logits = (z @ z.T / temperature).masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), -1e9)
  targets = (torch.arange(n, device=z.device) + b) % n
  return F.cross_entropy(logits, targets)


def default_losses(class_tokens):
  """Alternating CPSD (circle of fifths) / NT-Xent over the tokens, as bench configs do."""
  losses = {}
  for i, token in enumerate(class_tokens):
    losses[f"loss{i}"] = ("cpsd", token, 7 / 12) if i % 2 == 0 else ("ntxent", token, 0.1)
  return losses


def build(variant: str, frames: int, class_tokens=("equivariant", "contrastive"), losses=None,
          device="cpu", seed=0):
  """The model and its AdamW, on `device`."""
  torch.manual_seed(seed)
  dims = VARIANTS[variant]
  backbone = ViT1D(**dims, num_frames=frames, class_tokens=class_tokens)
  model = MT2(backbone, losses or default_losses(class_tokens)).to(device)
  decay = [p for p in model.parameters() if p.ndim >= 2 and p is not backbone.pos_embed and p is not backbone.cls]
  ids = {id(p) for p in decay}
  rest = [p for p in model.parameters() if id(p) not in ids]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                          lr=5e-4, betas=(0.9, 0.98), foreach=True)
  return model, opt


def make_step(model, opt, autocast_dtype=None, compile_loss=False):
  """`step(x_a, x_b, x_s, shift) -> loss`: forward on [A; B; A'], losses, backward, clip, AdamW.

  compile_loss: torch.compile the forward + loss (+ backward graph); the
  optimizer runs eagerly (foreach kernels), the usual way to compile a step.
  """
  device_type = next(model.parameters()).device.type

  def loss_fn(x_a, x_b, x_s, shift):
    b = x_a.shape[0]
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
      heads = model(torch.cat([x_a, x_b, x_s]))
    total = 0.0
    for name, (kind, _, arg) in model.losses.items():
      h = heads[name]
      if kind == "cpsd":
        total = total + cpsd(h[:b], h[b:2 * b], h[2 * b:], shift, arg)
      else:
        total = total + nt_xent(h[:b], h[b:2 * b], arg)
    return total

  if compile_loss:
    loss_fn = torch.compile(loss_fn)

  def step(x_a, x_b, x_s, shift):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(x_a, x_b, x_s, shift)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
    opt.step()
    return loss.detach()

  return step


def synthetic_batch(tracks: int, frames: int, device="cpu", seed=0):
  rng = np.random.default_rng(seed)
  views = [torch.from_numpy(rng.random((tracks, NUM_BINS, frames), np.float32)).to(device) for _ in range(3)]
  shift = torch.from_numpy(rng.choice(np.r_[-11:0, 1:12], size=tracks).astype(np.int64)).to(device)
  return (*views, shift)


def _sync(device):
  if torch.device(device).type == "cuda":
    torch.cuda.synchronize()


def _time(step, batch, device, steps, warmup):
  """(first call seconds, per-step seconds list) after `warmup` extra untimed calls."""
  t0 = time.perf_counter()
  step(*batch)
  _sync(device)
  first = time.perf_counter() - t0
  for _ in range(warmup):
    step(*batch)
  _sync(device)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    step(*batch)
    _sync(device)
    times.append(time.perf_counter() - t0)
  return first, times


def eager_runner(variant: str, frames: int, tracks: int, class_tokens=("equivariant", "contrastive"),
                 device="cpu"):
  """A no-argument function that runs one eager step on its own batch, synchronised.

  For timing interleaved with another framework's step in the same process:
  the two then see the same machine state, round by round.
  """
  model, opt = build(variant, frames, class_tokens, device=device)
  step, batch = make_step(model, opt), synthetic_batch(tracks, frames, device)

  def run():
    step(*batch)
    _sync(device)
  return run


def measure(variant: str, frames: int, tracks: int, class_tokens=("equivariant", "contrastive"),
            steps: int = 3, warmup: int = 1, compile_: bool = True, device=None, autocast=None,
            compile_timeout_note: str = "", eager: bool = True) -> dict:
  """Times the eager step (unless `eager=False`) and, if asked, the `torch.compile`d one.

  Returns a JSON-able dict: device, torch version, threads, dtype and per mode
  ('eager', 'compile') either {step_s (median), step_s_all, first_call_s} or
  {error}.
  """
  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  if autocast is None:
    autocast = "bfloat16" if torch.device(device).type == "cuda" else None
  autocast_dtype = getattr(torch, autocast) if autocast else None
  batch = synthetic_batch(tracks, frames, device)
  result = {
      "torch_version": torch.__version__,
      "device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
      "threads": torch.get_num_threads(),
      "activations": autocast or "float32",
      "variant": variant, "frames": frames, "tracks": tracks, "class_tokens": list(class_tokens),
  }
  if torch.device(device).type == "cuda":
    # TF32 matmuls for float32 parts, as XLA's default precision on GPU does.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

  try:
    model, opt = build(variant, frames, class_tokens, device=device)
    result["params"] = sum(p.numel() for p in model.parameters())
    if eager:
      first, times = _time(make_step(model, opt, autocast_dtype), batch, device, steps, warmup)
      result["eager"] = {"step_s": float(np.median(times)), "step_s_all": times, "first_call_s": first}
    else:
      result["eager"] = {"error": "not measured here (eager=False)"}
  except Exception as e:  # noqa: BLE001 -- out of memory on a GPU, for instance.
    result["eager"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
  finally:
    model = opt = None
    if torch.device(device).type == "cuda":
      torch.cuda.empty_cache()

  if compile_:
    try:
      model, opt = build(variant, frames, class_tokens, device=device)
      compiled_step = make_step(model, opt, autocast_dtype, compile_loss=True)
      first, times = _time(compiled_step, batch, device, steps, warmup)
      result["compile"] = {"step_s": float(np.median(times)), "step_s_all": times, "first_call_s": first}
    except Exception as e:  # noqa: BLE001 -- any compiler failure is a result, not a crash.
      last = traceback.format_exception_only(type(e), e)[-1].strip()
      result["compile"] = {"error": f"{type(e).__name__}: {last[:500]}{compile_timeout_note}"}
  else:
    result["compile"] = {"error": "skipped (--no-compile)"}
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="tiny", choices=sorted(VARIANTS))
  parser.add_argument("--frames", type=int, default=173)
  parser.add_argument("--tracks", type=int, default=16)
  parser.add_argument("--tokens", type=int, default=2, help="number of class tokens K")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--no-compile", action="store_true")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  names = tuple(("equivariant" if i % 2 == 0 else "contrastive") + (str(i // 2) if i >= 2 else "")
                for i in range(args.tokens))  # As benchmarks/train_step.token_names.
  result = measure(args.variant, args.frames, args.tracks, names, steps=args.steps, warmup=args.warmup,
                   compile_=not args.no_compile)
  for mode in ("eager", "compile"):
    r = result[mode]
    print(f"{mode:8s} " + (f"{r['step_s']:.3f} s/step, first call {r['first_call_s']:.1f} s"
                           if "step_s" in r else r["error"]))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
