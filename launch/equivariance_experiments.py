"""Experiments on making MT2's equivariant half learn, at the demo's size (docs/experiments.md).

  .venv/bin/python launch/equivariance_experiments.py --demo=mt2_demo --out=experiments \
      [--only=NAME,...] [--seed=0]

`--demo` is a folder where `mt2 demo` has rendered the corpus and prepared the
training data (OUT/corpus, OUT/data); the runs train with the demo's settings
(`demo.run_config`: runlocal model, 128 frames, batch 16, 1200 steps, lr 1e-3)
plus each experiment's overrides. Each experiment is scored on held-out
chorales without touching the test split: its pieces are dropped, the
validation pieces are scored, and a fifth of the training pieces stop the
probes early; single notes likewise, by pitch. Per run:
  cpsd_last10, ntxent_last10   the loss averaged over the last 10% of logged steps
  cpsd_q1..q4                  CPSD averaged over each quarter of the run
  keysig_zeroshot              zero-shot key-signature accuracy of the head
  key_<feature>, inst_<feature> key MIREX / chorale-instrument accuracy of a probe
  inst_mfcc                    the same instrument probe on MFCC stats (the reference)
  inst_cqt_stats               ... on CQT stats: the model's input, mean and deviation
                               of each bin over the track (what the input holds)
  notes_<feature>, notes_mfcc, notes_cqt_stats
                               instrument accuracy on single notes of validation pitches
                               (the corpus splits notes by pitch)
  token_r2                     how much of the contrastive token a linear map of the
                               equivariant one explains on the scored pieces, fitted on
                               the training pieces (probe.token_similarity; 1: the two
                               tokens are one feature)
Rows are appended to OUT/results.jsonl (a finished run is not trained again;
one trained with other settings, e.g. before a default moved, stops the script)
and OUT/results.md and OUT/cpsd_curves.png are rewritten from all rows.
"""

import argparse
import hashlib
import json
import os
import pathlib
import sys

# name -> (config file, overrides of config keys). Every knob is spelt out, so a
# row means the same whatever the defaults are; keys of a loss the config does
# not have are skipped.
PAPER = {"model.width": 48, "model.patch_embed": "dense", "model.layerscale": 0.0,
         "model.layerscale_tokens": "all", "model.class_token_init": "mean",
         "losses.cpsd.head": "dense", "losses.cpsd.spread_weight": 0.0,
         "losses.ntxent.projector": "none", "model.class_blocks": 0, "optim.lr": 1e-3,
         "model.detached_tokens": (), "optim.lr_scale": "", "losses.cpsd.lr_scale": 1.0,
         "losses.ntxent.include_shift_view": False, "losses.ntxent.temperature": 0.1,
         "data.group_pattern": "", "losses.ntxent.pairs": "all", "data.b_offset": "shared",
         "model.pitch_channels": None, "model.token_reads": "all"}
PITCH = {**PAPER, "model.patch_embed": "pitch", "model.layerscale": 0.01}
HYBRID = {**PAPER, "model.patch_embed": "hybrid", "model.layerscale": 0.01}
HINGE = {**HYBRID, "losses.cpsd.spread_weight": 1.0}
# The defaults of sessions 5 and 6, spelt out.
DEFAULT = {**HINGE, "model.width": 96, "losses.ntxent.projector": "mlp",
           "model.layerscale_tokens": "frames"}
# The defaults since session 7: + a class-attention block per class token.
CAIT = {**DEFAULT, "model.class_blocks": 1}
# The defaults since session 12: CPSD's parts at 3x, A' as an NT-Xent positive.
S12 = {**CAIT, "losses.cpsd.lr_scale": 3.0, "losses.ntxent.include_shift_view": True}
EXPERIMENTS = {
    # The paper's reading, as landed: the equivariant head collapses.
    "eq_paper": ("equivariant_only", PAPER),
    "mt2_paper": ("mt2", PAPER),
    "con_paper": ("contrastive_only", PAPER),
    # One change at a time from the paper's reading.
    "eq_pitch_nols": ("equivariant_only", {**PITCH, "model.layerscale": 0.0}),
    "eq_dense_ls": ("equivariant_only", {**PAPER, "model.layerscale": 0.01}),
    "eq_paper_hinge": ("equivariant_only", {**PAPER, "losses.cpsd.spread_weight": 1.0}),
    # Pitch-structured tokens + LayerScale (the lead).
    "eq_pitch": ("equivariant_only", PITCH),
    "eq_hybrid": ("equivariant_only", HYBRID),
    "mt2_pitch": ("mt2", PITCH),
    "mt2_hybrid": ("mt2", HYBRID),
    "con_hybrid": ("contrastive_only", HYBRID),
    "eq_hybrid_shared": ("equivariant_only", {**HYBRID, "losses.cpsd.head": "shared"}),
    "mt2_hybrid_shared": ("mt2", {**HYBRID, "losses.cpsd.head": "shared"}),
    # A' as a third NT-Xent positive: the contrastive token is made invariant to
    # transposition, so key is left to the equivariant token.
    "mt2_hybrid_shiftpos": ("mt2", {**HYBRID, "losses.ntxent.include_shift_view": True}),
    "con_hybrid_shiftpos": ("contrastive_only", {**HYBRID, "losses.ntxent.include_shift_view": True}),
    "mt2_hybrid_iso": ("mt2", {**HYBRID, "model.class_token_attention": "isolated"}),
    "mt2_hybrid_w96": ("mt2", {**HYBRID, "model.width": 96}),
    "con_hybrid_w96": ("contrastive_only", {**HYBRID, "model.width": 96}),
    # + the anti-collapse hinge on the spread of z (losses.circle_spread_hinge).
    "eq_hybrid_hinge": ("equivariant_only", HINGE),
    "mt2_hybrid_hinge": ("mt2", HINGE),
    # On top of the hinge: what closes MT2's NT-Xent gap to contrastive_only?
    "mt2_hinge_mlp": ("mt2", {**HINGE, "losses.ntxent.projector": "mlp"}),
    "con_hybrid_mlp": ("contrastive_only", {**HYBRID, "losses.ntxent.projector": "mlp"}),
    "mt2_hinge_w96": ("mt2", {**HINGE, "model.width": 96}),
    "mt2_hinge_shared": ("mt2", {**HINGE, "losses.cpsd.head": "shared"}),
    "mt2_hinge_shiftpos": ("mt2", {**HINGE, "losses.ntxent.include_shift_view": True}),
    # Both of the above.
    "mt2_hinge_w96_mlp": ("mt2", {**HINGE, "model.width": 96, "losses.ntxent.projector": "mlp"}),
    "con_hybrid_w96_mlp": ("contrastive_only",
                           {**HYBRID, "model.width": 96, "losses.ntxent.projector": "mlp"}),
    "eq_hinge_w96": ("equivariant_only", {**HINGE, "model.width": 96}),
    # Session 5. Class tokens outside LayerScale ('frames'), or no LayerScale at
    # all, on top of the hinge; and do the two class tokens become two features
    # (token_r2) when they start as their vectors alone?
    "mt2_ls_frames": ("mt2", {**HINGE, "model.width": 96, "losses.ntxent.projector": "mlp",
                              "model.layerscale_tokens": "frames"}),
    "eq_ls_frames": ("equivariant_only", {**HINGE, "model.width": 96, "model.layerscale_tokens": "frames"}),
    "con_ls_frames": ("contrastive_only", {**HYBRID, "model.width": 96, "losses.ntxent.projector": "mlp",
                                           "model.layerscale_tokens": "frames"}),
    "mt2_ls_frames_vec": ("mt2", {**HINGE, "model.width": 96, "losses.ntxent.projector": "mlp",
                                  "model.layerscale_tokens": "frames", "model.class_token_init": "vector"}),
    "mt2_nols": ("mt2", {**HINGE, "model.width": 96, "losses.ntxent.projector": "mlp",
                         "model.layerscale": 0.0}),
    "eq_nols": ("equivariant_only", {**HINGE, "model.width": 96, "model.layerscale": 0.0}),
    "con_nols": ("contrastive_only", {**HYBRID, "model.width": 96, "losses.ntxent.projector": "mlp",
                                      "model.layerscale": 0.0}),
    # Session 6. What closes MT2's NT-Xent gap to contrastive_only (+26% with the
    # defaults)? One knob each from the defaults (DEFAULT, = mt2_ls_frames).
    "mt2_cpsd_w05": ("mt2", {**DEFAULT, "losses.cpsd.weight": 0.5}),
    "mt2_iso": ("mt2", {**DEFAULT, "model.class_token_attention": "isolated"}),
    "mt2_depth4": ("mt2", {**DEFAULT, "model.depth": 4}),
    "con_depth4": ("contrastive_only", {**DEFAULT, "model.depth": 4}),
    "eq_depth4": ("equivariant_only", {**DEFAULT, "model.depth": 4}),
    "mt2_cpsd_w025": ("mt2", {**DEFAULT, "losses.cpsd.weight": 0.25}),
    "mt2_nohinge": ("mt2", {**DEFAULT, "losses.cpsd.spread_weight": 0.0}),
    "mt2_depth4_w05": ("mt2", {**DEFAULT, "model.depth": 4, "losses.cpsd.weight": 0.5}),
    # Session 7. The two class tokens are one feature in every run above
    # (token_r2 0.997-1.000): they share every weight but their start vector.
    # Give each its own class-attention block after frames-only blocks (CaiT).
    "mt2_cait": ("mt2", CAIT),
    "con_cait": ("contrastive_only", CAIT),
    "eq_cait": ("equivariant_only", CAIT),
    "mt2_cait_vec": ("mt2", {**CAIT, "model.class_token_init": "vector"}),
    # Session 8. CPSD still falls at step 1200 in every run: does the
    # equivariant token's key (and the zero-shot readout) keep improving?
    "mt2_cait_2x": ("mt2", {**CAIT, "total_steps": 2400}),
    # Two class-attention blocks per token: does more per-token capacity make
    # the tokens specialise further?
    "mt2_cait2": ("mt2", {**CAIT, "model.class_blocks": 2}),
    # Session 9, run on a corpus made with `mt2 corpus --room 1` (every
    # rendition through its own EQ, reverb and noise): the two crops of a
    # track share its recording's colour, which NT-Xent can match them by.
    # Does a random EQ of each segment (data.colour_db) make the contrastive
    # token name the instrument rather than the room?
    "con_cait_colour": ("contrastive_only", {**CAIT, "data.colour_db": 12.0}),
    "mt2_cait_colour": ("mt2", {**CAIT, "data.colour_db": 12.0}),
    # Session 9, on the dry corpus: the learning rate (1e-3 in every row above,
    # never measured). Twice the steps halved both losses and raised the
    # zero-shot readout (session 8); does a larger step do the same in 1200?
    "mt2_cait_lr2x": ("mt2", {**CAIT, "optim.lr": 2e-3}),
    "mt2_cait_lr05x": ("mt2", {**CAIT, "optim.lr": 5e-4}),
    "con_cait_lr2x": ("contrastive_only", {**CAIT, "optim.lr": 2e-3}),
    "eq_cait_lr2x": ("equivariant_only", {**CAIT, "optim.lr": 2e-3}),
    # Session 10, on the GM corpus (`mt2 demo --preset gm`: several programs per
    # instrument), where the contrastive token reads instruments worse than an
    # untrained model: A and B share their key, which NT-Xent can match them by.
    # Does A' (A transposed) as a further positive make the token name the timbre?
    "con_cait_shiftpos": ("contrastive_only", {**CAIT, "losses.ntxent.include_shift_view": True}),
    "mt2_cait_shiftpos": ("mt2", {**CAIT, "losses.ntxent.include_shift_view": True}),
    # In MT2 that collapses CPSD: the shared blocks become transposition
    # invariant. With the contrastive token's class block reading the frames
    # through a stop-gradient (model.detached_tokens), NT-Xent trains only its
    # own class block and head; the shared blocks learn from CPSD alone.
    "mt2_cait_det": ("mt2", {**CAIT, "model.detached_tokens": ("contrastive",)}),
    "mt2_cait_shiftpos_det": ("mt2", {**CAIT, "losses.ntxent.include_shift_view": True,
                                      "model.detached_tokens": ("contrastive",)}),
    # Detached, the contrastive token learns no timbre. Detach A' only: A and B
    # train the shared blocks through NT-Xent as before, and the invariance A'
    # asks for is learnt by the token's own class block.
    "mt2_cait_shiftdet": ("mt2", {**CAIT, "losses.ntxent.include_shift_view": True,
                                  "losses.ntxent.detach_shift_view": True}),
    # Session 10, dry corpus: a learning rate per part (the list). The
    # equivariant head and its token's class block at 3x the rate of the rest
    # (the default since session 11; measured with optim.lr_scale
    # 'head_cpsd=3,backbone/cls_equivariant_block00=3', the same parts).
    "mt2_cait_eqlr3x": ("mt2", {**CAIT, "losses.cpsd.lr_scale": 3.0}),
    "eq_cait_eqlr3x": ("equivariant_only", {**CAIT, "losses.cpsd.lr_scale": 3.0}),
    # Session 11: is 3 the right factor? 5x and 10x, the same parts.
    "mt2_cait_eqlr5x": ("mt2", {**CAIT, "losses.cpsd.lr_scale": 5.0}),
    "mt2_cait_eqlr10x": ("mt2", {**CAIT, "losses.cpsd.lr_scale": 10.0}),
    # Session 12: A' as a further NT-Xent positive collapsed CPSD with one rate
    # (session 10). Does the equivariant head at 3x hold against it? It does:
    # the default since session 12 (with con_cait_shiftpos and eq_cait_eqlr3x).
    "mt2_cait_eqlr3x_shiftpos": ("mt2", S12),
    # Session 13: MT2's best feature trails the single-token models' on single
    # notes (its contrastive token 0.746 vs the contrastive-only frame mean
    # 0.873 on the test split). One knob each from today's defaults (S12).
    # The contrastive head and class block at 3x, as CPSD's are:
    "mt2_s12_conlr3x": ("mt2", {**S12, "optim.lr_scale": "head_ntxent=3,backbone/cls_contrastive_block00=3"}),
    # NT-Xent weighs twice CPSD in the shared blocks:
    "mt2_s12_ntxent_w2": ("mt2", {**S12, "losses.ntxent.weight": 2.0}),
    # A third shared block: more room for both tasks.
    "mt2_s12_depth3": ("mt2", {**S12, "model.depth": 3}),
    # The head shared across the 12 rotations (the lead; untried since
    # session 4) with today's defaults.
    "mt2_s12_shared": ("mt2", {**S12, "losses.cpsd.head": "shared"}),
    "eq_s12_shared": ("equivariant_only", {**S12, "losses.cpsd.head": "shared"}),
    # MT2's equivariant token reads less key than the equivariant-only model's
    # (0.848 vs 0.898). Does A' press the shared blocks towards transposition
    # invariance? A' through the contrastive token's own class block only:
    "mt2_s12_shiftdet": ("mt2", {**S12, "losses.ntxent.detach_shift_view": True}),
    # K=3's fifths head reads key signatures worse than K=2's with three seeds.
    # Does the semitone head at 3x pull the shared blocks its way too early?
    # Its head and class block at the base rate (configs/mt2_k3.py's since):
    "k3_semitone_lr1": ("mt2_k3", {"losses.cpsd_semitone.lr_scale": 1.0}),
    # Session 15: the contrastive token trails MFCC stats on gm chorales. A low
    # NT-Xent temperature weighs the hardest negatives most, and with 16 tracks
    # a batch those are renditions by the same instrument: it pays the token to
    # tell them apart by anything but timbre. A warmer softmax tolerates them
    # (Wang & Liu, CVPR 2021). 0.5 is CLMR's; the default is SimCLR's 0.1.
    # Refuted: 0.5 reads fewer instruments, 0.05 a few more (docs/experiments.md).
    "con_s12_t05": ("contrastive_only", {**S12, "losses.ntxent.temperature": 0.5}),
    "mt2_s12_t05": ("mt2", {**S12, "losses.ntxent.temperature": 0.5}),
    # The other way: a colder softmax, the hard negatives weighed more still.
    "con_s12_t005": ("contrastive_only", {**S12, "losses.ntxent.temperature": 0.05}),
    "mt2_s12_t005": ("mt2", {**S12, "losses.ntxent.temperature": 0.05}),
    # Segments twice as long (6 s) at half the batch, the same frames a step:
    # more notes for each class token to read key and timbre from, fewer
    # negatives for NT-Xent (the "segment length"; untried until now).
    # Refuted: both tokens read less key and fewer instruments (docs/experiments.md).
    "con_s12_seg256": ("contrastive_only", {**S12, "data.segment_frames": 256, "batch_size": 8}),
    "mt2_s12_seg256": ("mt2", {**S12, "data.segment_frames": 256, "batch_size": 8}),
    # Session 16: NT-Xent's negatives are 15 random renditions of 420, so two
    # renditions of one piece rarely meet in a batch, and the contrastive token
    # can tell its negatives apart by the music alone. Batches of whole pieces
    # (both renditions of 8 pieces: the same music in another instrument, key
    # and tempo) make the piece useless for that; with A' a positive the key is
    # too, which leaves the instrument (and the tempo).
    "con_s12_pieces": ("contrastive_only", {**S12, "data.group_pattern": "^[^_]+"}),
    "mt2_s12_pieces": ("mt2", {**S12, "data.group_pattern": "^[^_]+"}),
    # Refuted on gm validation (seed 0): both contrastive tokens read fewer
    # instruments (docs/experiments.md).

    # The demo's blocks have an MLP narrower than their width (the `test`
    # variant's 64 at width 96), so the frame tokens' only non-linear step is
    # a bottleneck. ViT's ratio (4x the width) gives it room to pull the
    # spectral envelope apart from the pitches, which a linear read of the
    # CQT (CQT statistics: 0.68 on gm validation) cannot.
    "con_s12_mlp384": ("contrastive_only", {**S12, "model.mlp_dim": 384}),
    "mt2_s12_mlp384": ("mt2", {**S12, "model.mlp_dim": 384}),
    # Refuted on gm validation (seed 0): fewer instruments again.

    # MT2's contrastive token reads fewer gm instruments than the
    # contrastive-only model's with all three seeds (0.60 / 0.52 / 0.66 vs
    # 0.70 / 0.62 / 0.72). Is it CPSD's gradient in the shared blocks? The
    # equivariant token's class block reads the frames through a stop-gradient:
    # the shared blocks learn from NT-Xent alone, CPSD trains only its class
    # block and head (its 3x rate stays on them).
    "mt2_s12_eqdet": ("mt2", {**S12, "model.detached_tokens": ("equivariant",)}),
    # NT-Xent then matches the contrastive-only model's, but the zero-shot
    # readout falls and the instrument reading hardly moves: not adopted.

    # Half the batch with twice the segment (session 15) read fewer
    # instruments. The batch side alone, the other way: 32 tracks a step,
    # 31 negatives each (SimCLR gains most from a larger batch when training
    # is short). Twice the views a step, so also twice the training.
    "con_s12_b32": ("contrastive_only", {**S12, "batch_size": 32}),
    "mt2_s12_b32": ("mt2", {**S12, "batch_size": 32}),
    # Refuted for timbre (seed 0: fewer chorale instruments); CPSD ends lower
    # with seeds 0 and 1, the rest moves with the seed (docs/experiments.md).

    # Session 17: of NT-Xent's three positive pairs, A-B share the crop's
    # transposition (the same bins were cut from both) and A-A' the very same
    # frames (the rhythm, the notes' onsets), two ways to match a track's views
    # that say nothing of its instrument. B-A' share neither: the track alone.
    "con_s12_disjoint": ("contrastive_only", {**S12, "losses.ntxent.pairs": "disjoint"}),
    "mt2_s12_disjoint": ("mt2", {**S12, "losses.ntxent.pairs": "disjoint"}),
    # Refuted on gm validation (seed 0): fewer instruments, more key in the
    # token. A-A' (the same frames, transposed) teaches the invariance to
    # transposition; A-B, the one pair whose key agrees, rewards the key.
    # Without A-B the key is never worth encoding:
    "con_s12_shiftpairs": ("contrastive_only", {**S12, "losses.ntxent.pairs": "shift"}),
    "mt2_s12_shiftpairs": ("mt2", {**S12, "losses.ntxent.pairs": "shift"}),
    # Refuted (gm, seed 0): fewer instruments and more key again. The pair of
    # two times, A-B, is what teaches the track; A-A' shares the very frames
    # (their onsets, their rhythm), a match that needs nothing of the track.
    # Positives across time only:
    "con_s12_timepairs": ("contrastive_only", {**S12, "losses.ntxent.pairs": "time"}),
    "mt2_s12_timepairs": ("mt2", {**S12, "losses.ntxent.pairs": "time"}),
    # The contrastive-only token reads more gm instruments; in MT2 CPSD
    # collapsed with seed 0 and the zero-shot readout fell with seed 1: with
    # only hard positives NT-Xent pushes the shared blocks harder towards
    # invariance to transposition. Half its weight there:
    "mt2_s12_timepairs_w05": ("mt2", {**S12, "losses.ntxent.pairs": "time",
                                      "losses.ntxent.weight": 0.5}),
    # CPSD leaves its plateau (seed 0), the instrument reading does not rise;
    # over three seeds the contrastive-only token read fewer gm instruments
    # with 'time' than with 'all' (0.640 vs 0.680): 'all' stays.

    # Session 18: A and B are cut from the same 84 of the 99 bins, so every
    # track's A-B pair shares a crop offset of 12 values that the other
    # tracks' views mostly do not: a cue NT-Xent can match them by that says
    # nothing of the instrument. B cut at a transposition of its own
    # (data.b_offset='own') takes it away; CPSD's A-B term then asks for the
    # shift between them, one more equivariance term.
    "con_s12_ownb": ("contrastive_only", {**S12, "data.b_offset": "own"}),
    "mt2_s12_ownb": ("mt2", {**S12, "data.b_offset": "own"}),
    "eq_s12_ownb": ("equivariant_only", {**S12, "data.b_offset": "own"}),
    # Refuted on gm validation (seed 0): both contrastive tokens read fewer
    # instruments (0.62, 0.54) and more key, and MT2's zero-shot readout fell.

    # The frame token is half pitch-folded channels (12 x 4 at width 96), which
    # drop register and spectral envelope by design, and half a dense
    # Linear(84 -> 48): does the instrument reading lack dense channels?
    "con_s12_dense": ("contrastive_only", {**S12, "model.patch_embed": "dense"}),
    "mt2_s12_pc2": ("mt2", {**S12, "model.pitch_channels": 2}),
    "mt2_s12_pc1": ("mt2", {**S12, "model.pitch_channels": 1}),
    "eq_s12_pc1": ("equivariant_only", {**S12, "model.pitch_channels": 1}),
    "con_s12_pc1": ("contrastive_only", {**S12, "model.pitch_channels": 1}),
    "con_s12_pc2": ("contrastive_only", {**S12, "model.pitch_channels": 2}),
    "eq_s12_pc2": ("equivariant_only", {**S12, "model.pitch_channels": 2}),
    # c=2 (24 / 72): with seed 0 everything moved the right way on both corpora;
    # with seed 1 MT2's CPSD left its plateau late on the dry corpus (zero-shot
    # 0.24): not the default (docs/experiments.md, session 18).
    # The contrastive-only model with the dense embedding reads 0.86 of the
    # gm validation renditions' instruments (0.70 hybrid; MFCC 0.74), and no
    # key. Does the rest of today's recipe (class blocks, CPSD's 3x rate, the
    # hinge, LayerScale) keep CPSD learning without the pitch-folded half?
    "mt2_s12_dense": ("mt2", {**S12, "model.patch_embed": "dense"}),
    "eq_s12_dense": ("equivariant_only", {**S12, "model.patch_embed": "dense"}),

    # Session 19: the frame token's dense channels carry the timbre and its
    # pitch-folded ones the key (session 18). Each class token reads only its
    # own part of the blocks' output frames (model.token_reads='split'): the
    # equivariant token the pitch-folded channels, the contrastive token the
    # dense ones. Does that keep CPSD's escape reliable at c=2 and give the
    # contrastive token the instrument reading of the dense embedding?
    "mt2_s12_split": ("mt2", {**S12, "model.token_reads": "split"}),
    "con_s12_split": ("contrastive_only", {**S12, "model.token_reads": "split"}),
    "eq_s12_split": ("equivariant_only", {**S12, "model.token_reads": "split"}),
    "mt2_s12_pc2_split": ("mt2", {**S12, "model.pitch_channels": 2, "model.token_reads": "split"}),
    "con_s12_pc2_split": ("contrastive_only", {**S12, "model.pitch_channels": 2,
                                               "model.token_reads": "split"}),
    "eq_s12_pc2_split": ("equivariant_only", {**S12, "model.pitch_channels": 2,
                                              "model.token_reads": "split"}),
    # Only the contrastive token restricted (to the dense channels): the
    # equivariant one reads every channel, as with 'all'.
    "mt2_s12_conread": ("mt2", {**S12, "model.token_reads": "dense"}),
    "con_s12_conread": ("contrastive_only", {**S12, "model.token_reads": "dense"}),
    "eq_s12_conread": ("equivariant_only", {**S12, "model.token_reads": "dense"}),
    "mt2_s12_pc2_conread": ("mt2", {**S12, "model.pitch_channels": 2,
                                    "model.token_reads": "dense"}),
    # With the split, CPSD learned late on gm with seed 0: do its parts at 5x
    # (head and class block) leave the plateau sooner there?
    "mt2_s12_split_eqlr5x": ("mt2", {**S12, "model.token_reads": "split",
                                     "losses.cpsd.lr_scale": 5.0}),
    # No: CPSD 1.409 over the last 10% (1.156 at 3x), zero-shot 0.36 (gm, seed 0).
    # 'split' became the default (dry validation, three seeds: the contrastive
    # token's key 0.73-0.77 -> 0.08-0.26, instruments up, CPSD as low; on gm
    # CPSD learned late with seed 0).

    # Session 20. On gm the zero-shot readout is weak even where CPSD learned
    # (0.48 at CPSD 0.669): equivariance fixes the profile's shifts within a
    # track, not which phase a key gets, and a dense head may give each timbre
    # its own phase. With the split the equivariant token's first 12c channels
    # keep the pitch-class layout; the head shared across the 12 rotations
    # reads them so, and ties each key's phase to its pitch classes.
    "mt2_s12_split_shared": ("mt2", {**S12, "model.token_reads": "split",
                                     "losses.cpsd.head": "shared"}),
    # No: gm seed 0 CPSD 1.400 (1.156 with the dense head), zero-shot 0.30;
    # seed 1 as the dense head (0.697 vs 0.693).
    # 'dense' (mt2_s12_conread) became the default: on gm, three seeds, CPSD
    # 0.54-0.77 (split 0.67-1.16) and zero-shot 0.54-0.74 (0.46-0.68).

    # Session 21. The phase readout now turns z by a real angle (keys.fit_rotation):
    # with the 12 class rotations it read 0.57 -> 0.83 for CPSD's parts at 3x
    # (sessions 10-11). Does the rate still matter when the readout cannot lose
    # half a step?
    "mt2_s21_cpsdlr1": ("mt2", {**S12, "model.token_reads": "dense", "losses.cpsd.lr_scale": 1.0}),
    "eq_s21_cpsdlr1": ("equivariant_only", {**S12, "model.token_reads": "dense",
                                            "losses.cpsd.lr_scale": 1.0}),
    # Yes and no: at 1x (dry validation, seeds 0-2) MT2's zero-shot phase readout is as high
    # (0.74 / 0.78 / 0.74 vs 0.74 / 0.76 / 0.76), CPSD a little higher (0.618 / 0.565 / 0.546
    # vs 0.581 / 0.526 / 0.489), NT-Xent level with the contrastive-only model's (-0.2% /
    # +0.2% / -1.1% vs +3.6% / +1.8% / +0.6%) and the contrastive token holds less key
    # (0.17 / 0.12 / 0.24 vs 0.31 / 0.35 / 0.34). 1x became the default.
}
# The curves of docs/experiments_cpsd.png (OUT/cpsd_curves.png); all rows when none ran.
PLOTTED = ("eq_paper", "eq_hybrid", "eq_hybrid_hinge", "mt2_hybrid", "mt2_hybrid_shiftpos",
           "mt2_hinge_w96_mlp", "eq_hinge_w96", "mt2_ls_frames", "eq_ls_frames", "mt2_nols",
           "mt2_cait", "eq_cait", "mt2_cait_eqlr3x", "eq_cait_eqlr3x", "mt2_cait_eqlr3x_shiftpos")
# The token-count ablation at the demo's size with the defaults (launch/sweep_tokens.py --demo).
SWEEP = {
    "k1_equivariant": ("equivariant_only", {}),
    "k1_contrastive": ("contrastive_only", {}),
    "k2_mt2": ("mt2", {}),
    "k3_mt2_k3": ("mt2_k3", {}),
}
EXPERIMENTS.update(SWEEP)
# With 'dense' (session 20) K=3's fifths head read key signatures zero-shot at
# 0.46 on the test split (K=2 0.76), with 'split' at 0.70 (one seed each).
EXPERIMENTS["k3_split"] = ("mt2_k3", {"model.token_reads": "split"})
# Seed 1: 'dense' 0.56, 'split' 0.52: neither protects it.


def _set(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  if parents[:1] == ["losses"] and parents[1] not in config.losses:
    return
  node = config
  for p in parents:
    node = node[p]
  if leaf not in node:  # A misspelt knob would otherwise be a new, unread key.
    raise KeyError(f"{dotted}: no such config key")
  node[leaf] = value


def experiment_config(name: str, data_dir):
  """The config of experiment `name`: the demo's run config plus its overrides."""
  from mt2_jax import demo
  config_name, overrides = EXPERIMENTS[name]
  config = demo.run_config(config_name, demo.PRESETS["default"], data_dir)
  for key, value in overrides.items():
    _set(config, key, value)
  return config


def stale_runs(runs_dir: pathlib.Path, configs: dict, seed: int) -> list[str]:
  """'NAME: key: old -> new; ...' for each experiment whose run folder was
  trained with other settings (a default that moved since, another --steps).
  Such a run would otherwise be taken as finished and its row kept. The
  periodic evaluation, the data folder and the loader's workers do not change
  what a run learns and are not compared (a linked `mt2 demo` run has them)."""
  from mt2_jax.train import checkpoint
  out = []
  for name, config in configs.items():
    workdir = runs_dir / f"{name}_s{seed}"
    if (workdir / "config.json").exists():
      changes = [c for c in checkpoint.config_changes(checkpoint.load_config(workdir), config,
                                                      ignore=("data_dir", "data.num_workers"))
                 if not c.startswith("eval.")]
      if changes:
        out.append(f"{name}: {'; '.join(changes)}")
  return out


def tuning_rows(rows):
  """Test pieces (chorales) and pitches (notes) dropped, validation scored as
  'test', 1/5 of the training pieces or pitches stop the probe early."""
  out = []
  for r in rows:
    if r.get("set") not in ("chorale", "note") or r["split"] == "test":
      continue
    r = dict(r)
    group = r["piece"] if r["set"] == "chorale" else r["pitch"]  # What the corpus splits by.
    if r["split"] == "validation":
      r["split"] = "test"
    elif int(hashlib.sha1(group.encode()).hexdigest(), 16) % 5 == 0:
      r["split"] = "validation"
    out.append(r)
  return out


def curve(workdir: pathlib.Path, key: str) -> list[tuple[int, float]]:
  path = workdir / "metrics.jsonl"
  lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []
  return [(l["step"], l[key]) for l in lines if key in l and "step" in l]


def _mean(points) -> float | None:
  return float(sum(v for _, v in points) / len(points)) if points else None


def summarise(workdir: pathlib.Path, total_steps: int) -> dict:
  """Loss averages over the last 10% and over each quarter of the run."""
  out = {}
  for key in ("cpsd", "ntxent", "ntxent_acc"):
    pts = curve(workdir, key)
    if not pts:
      continue
    out[f"{key}_last10"] = _mean([p for p in pts if p[0] > 0.9 * total_steps])
    if key == "cpsd":
      for q in range(4):
        out[f"cpsd_q{q + 1}"] = _mean(
            [p for p in pts if q * total_steps / 4 < p[0] <= (q + 1) * total_steps / 4])
  return out


def trained(workdir: pathlib.Path, total_steps: int) -> bool:
  from mt2_jax.train import checkpoint
  if not (workdir / "config.json").exists():
    return False
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    return (ckpt.latest_step() or 0) >= total_steps
  finally:
    ckpt.close()


def score_run(workdir: pathlib.Path, corpus_dir: pathlib.Path, rows) -> dict:
  from mt2_jax.eval import embed
  from mt2_jax.eval import probe
  embedder = embed.Embedder.from_run(workdir)
  fp = probe.data_fingerprint(corpus_dir, rows)
  feats = probe.extract_features(embedder, corpus_dir, rows,
                                 workdir / "probe_cache" / f"tuning_{embedder.step}_{fp}.npz", False)
  out = {}
  for res in probe.probe_features("run", feats, rows, ("key",), embedder.feature_names,
                                  probe.head_omegas(embedder.config)):
    name = res["feature"].replace("cls_", "")
    if res["task"] == "tokens":  # probe.token_similarity: the first pair of class tokens.
      out.setdefault("token_r2", res["token_r2"])
    elif name.startswith("zero-shot"):  # 'zero-shot (head_cpsd)', 'zero-shot phase (head_x)'.
      head = name.split("(head_")[1].rstrip(")")
      suffix = "" if head == "cpsd" else f"_{head}"
      out[("keysig_phase" if "phase" in name else "keysig_zeroshot") + suffix] = res["key_signature"]
    else:
      out[f"key_{name}"] = res["key"]  # MIREX weighted score
      out[f"ksprobe_{name}"] = res["key_signature"]  # Key-signature accuracy of that probe.
  # The references, the same for every run on this corpus (cached beside it).
  cache = corpus_dir.parent / "tuning_cache"
  feats["mfcc"] = probe.extract_mfcc(corpus_dir, rows, embedder.cqt.sample_rate,
                                     cache / f"mfcc_{fp}.npz", False)
  feats["cqt_stats"] = probe.extract_cqt_stats(corpus_dir, rows, embedder.cqt,
                                               cache / f"cqt_stats_{fp}.npz", False)
  # inst_: the instrument of chorale renditions; notes_: of single notes at unheard pitches.
  for prefix, task in (("inst", "chorale_instrument"), ("notes", "instrument")):
    base = probe.task_data(task, rows)
    for name in (*embedder.feature_names, "mfcc", "cqt_stats"):
      t = probe.valid_rows(base, [feats[name]])
      if probe.usable(t):
        out[f"{prefix}_{name.replace('cls_', '')}"] = probe.probe_feature(t, feats[name])[task]
  return out


def write_report(out: pathlib.Path, results: list[dict]) -> None:
  cols = ["cpsd_q1", "cpsd_q2", "cpsd_q3", "cpsd_q4", "cpsd_last10", "ntxent_last10",
          "ntxent_acc_last10", "keysig_zeroshot", "keysig_phase", "key_equivariant", "key_contrastive",
          "key_mean", "inst_equivariant", "inst_contrastive", "inst_mean", "token_r2"]
  cols += sorted({k for r in results for k in r if k.startswith(("keysig", "key_", "inst_", "ksprobe_"))}
                 - set(cols))
  cols = [c for c in cols if any(c in r for r in results)]
  lines = ["| experiment | seed | scored on | " + " | ".join(cols) + " |",
           "|---|--:|---|" + "--:|" * len(cols)]
  for r in results:
    cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else "" for c in cols]
    lines.append(f"| {r['name']} | {r['seed']} | {r.get('split', 'validation')} | "
                 + " | ".join(cells) + " |")
  (out / "results.md").write_text("\n".join(lines) + "\n")
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(8, 4.2))
  plotted = [r for r in results if r["name"] in PLOTTED and r["seed"] == 0] or results
  for i, r in enumerate(plotted):
    pts = curve(pathlib.Path(r["workdir"]), "cpsd")
    if pts:  # A running mean over 8 logged steps, for readability.
      ys = [_mean(pts[max(0, j - 7):j + 1]) for j in range(len(pts))]
      ax.plot([p[0] for p in pts], ys, label=f"{r['name']} s{r['seed']}", color=plt.cm.tab20(i % 20), lw=1.3)
  ax.axhline(2.777, color="k", ls="--", lw=0.8, label="collapse (2.777)")
  ax.set_xlabel("step")
  ax.set_ylabel("CPSD (running mean of 8 logs)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(out / "cpsd_curves.png", dpi=110)
  plt.close(fig)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--demo", required=True, help="folder with corpus/ and data/ from `mt2 demo`")
  p.add_argument("--out", required=True)
  p.add_argument("--only", default="", help="comma-separated experiment names (default: all)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--rescore", action="store_true",
                 help="only score the finished runs again (features are cached), rewrite the report")
  p.add_argument("--split", choices=("validation", "test"), default="validation",
                 help="score on the validation pieces (choosing) or the test pieces (reporting)")
  a = p.parse_args(argv)
  sys.path.insert(0, os.fspath(pathlib.Path(__file__).resolve().parent.parent))
  from mt2_jax import demo
  from mt2_jax import host
  from mt2_jax.eval import probe
  from mt2_jax.train import step as train_step
  names = [n for n in a.only.split(",") if n] or list(EXPERIMENTS)
  unknown = sorted(set(names) - set(EXPERIMENTS))
  if unknown:
    p.error(f"unknown experiments {unknown}; known: {sorted(EXPERIMENTS)}")
  demo_dir, out = pathlib.Path(a.demo).absolute(), pathlib.Path(a.out).absolute()
  out.mkdir(parents=True, exist_ok=True)
  preset = demo.PRESETS["default"]
  configs = {}
  for name in names:
    config = experiment_config(name, demo_dir / "data")
    config.seed = a.seed
    if a.steps:
      config.total_steps = a.steps
    configs[name] = config
  host.use_cpu_cores(preset.batch_size, train_step.tokens_per_track(next(iter(configs.values()))))
  from mt2_jax import config_validation
  from mt2_jax.train import loop as train
  for config in configs.values():
    config_validation.validate(config)  # Every experiment's config, before any compute.
  stale = [] if a.rescore else stale_runs(out / "runs", configs, a.seed)
  if stale:
    p.error("runs in " + os.fspath(out / "runs") + " were trained with other settings; remove "
            "them or use another --out:\n  " + "\n  ".join(stale))
  corpus_dir = demo_dir / "corpus"
  rows = probe.read_examples(corpus_dir)
  if a.split == "validation":
    rows = tuning_rows(rows)
  else:
    rows = [r for r in rows if r.get("set") in ("chorale", "note")]
  log = out / "results.jsonl"
  done = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
  if a.rescore:
    done = [{**r, **score_run(pathlib.Path(r["workdir"]), corpus_dir, rows)}
            for r in done if r.get("split", "validation") == a.split and pathlib.Path(r["workdir"]).exists()]
    log.write_text("".join(json.dumps(r) + "\n" for r in done))
    write_report(out, done)
    return
  for name, config in configs.items():
    workdir = out / "runs" / f"{name}_s{a.seed}"
    if any(r["name"] == name and r["seed"] == a.seed and r.get("split", "validation") == a.split
           for r in done):
      continue
    print(f"== {name} (seed {a.seed}) -> {workdir}", flush=True)
    if not trained(workdir, config.total_steps):  # E.g. a `mt2 demo` run linked in.
      train.train(config, os.fspath(workdir), progress=False)
    row = {"name": name, "seed": a.seed, "split": a.split, "workdir": os.fspath(workdir),
           **summarise(workdir, config.total_steps), **score_run(workdir, corpus_dir, rows)}
    print(json.dumps(row), flush=True)
    done.append(row)
    with open(log, "a") as f:
      f.write(json.dumps(row) + "\n")
    write_report(out, done)
  write_report(out, done)


if __name__ == "__main__":
  main()
