"""Linear probes, the zero-shot key readout and the KK chroma template (mt2_jax.eval.probe)."""

import numpy as np
import pytest
import soundfile as sf

from mt2_jax.eval import probe
from mt2_jax.eval import references
from mt2_jax.data.cqt import CQTConfig

from conftest import load_repo_file

SR = 22050


def note_rows(n_per_class=60, classes=("organ", "piano", "flute", "brass", "guitar"), seed=0):
  """Rows like the corpus's note set: 70% train, 15% validation, 15% test."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n_per_class * len(classes)):
    split = rng.choice(["train", "validation", "test"], p=[0.7, 0.15, 0.15])
    rows.append({"file": f"notes/{i}.flac", "set": "note", "split": str(split),
                 "instrument": classes[i % len(classes)], "pitch": str(48 + i % 7)})
  # A chorale row that the instrument task must leave out.
  rows.append({"file": "chorales/x.flac", "set": "chorale", "split": "test", "instrument": "organ",
               "key": "C major"})
  return rows


def test_probe_reads_labels_it_should_and_not_noise():
  rows = note_rows()
  task = probe.task_data("instrument", rows)
  assert task.index.size == len(rows) - 1 and len(task.classes) == 5
  rng = np.random.default_rng(1)
  y = np.full(len(rows), -1)
  y[task.index] = task.y
  informative = np.eye(5)[np.maximum(y, 0)] + 0.3 * rng.standard_normal((len(rows), 5))
  informative = np.concatenate([informative, rng.standard_normal((len(rows), 27))], 1)
  noise = rng.standard_normal((len(rows), 32))
  good = probe.probe_feature(task, informative)
  bad = probe.probe_feature(task, noise)
  assert good["instrument"] > 0.75, good  # 27 pure-noise dimensions cost a few points.
  assert bad["instrument"] < 0.45, bad  # Chance is 0.2.
  assert good["best_step"] > 0 and good["n_test"] == int((task.split == "test").sum())


def test_early_stopping_keeps_the_best_validation_loss():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((40, 200))  # Far more dimensions than examples: it overfits.
  y = rng.integers(0, 2, 40)
  _, info = probe.fit_linear_probe(x[:20], y[:20], x[20:], y[20:], 2, max_steps=20000, patience=10)
  assert info["steps"] < 20000  # Stopped early.
  assert info["best_step"] < info["steps"]


def test_key_labels_metrics_and_signatures():
  assert probe.key_name(probe.key_class("F# minor")) == "F# minor"
  assert probe.key_name(probe.key_class("Bb major")) == "Bb major"
  assert probe.key_signature(probe.key_class("C major")) == probe.key_signature(probe.key_class("A minor"))
  assert probe.key_signature(probe.key_class("C major")) != probe.key_signature(probe.key_class("C minor"))
  c, g, am = (probe.key_class(k) for k in ("C major", "G major", "A minor"))
  s = probe.score("key", np.array([c, c, c]), np.array([c, g, am]))
  assert s["key"] == pytest.approx((1.0 + 0.5 + 0.3) / 3)  # MIREX: fifth 0.5, relative 0.3.
  assert s["key_signature"] == pytest.approx(2 / 3)


def key_rows(n=300, seed=0):
  rng = np.random.default_rng(seed)
  keys = [probe.key_name(int(k)) for k in rng.integers(0, 24, n)]
  splits = rng.choice(["train", "validation", "test"], n, p=[0.7, 0.15, 0.15])
  return [{"file": f"c/{i}.flac", "set": "chorale", "split": str(s), "key": k}
          for i, (k, s) in enumerate(zip(keys, splits))]


def test_key_probe_and_zero_shot_readout():
  rows = key_rows()
  task = probe.task_data("key", rows)
  rng = np.random.default_rng(2)
  feats = np.eye(24)[task.y] + 0.2 * rng.standard_normal((len(rows), 24))
  result = probe.probe_feature(task, feats)
  assert result["key"] > 0.9 and result["key_signature"] > 0.9
  # A head whose argmax is the signature shifted by 5: one rotation fixes it.
  sig = np.array([probe.key_signature(int(c)) for c in task.y])
  profiles = np.eye(12)[(sig - 5) % 12] + 0.1 * rng.random((len(rows), 12))
  zs = probe.zero_shot_key(task, profiles)
  assert zs["rotation"] == 5 and zs["key_signature"] == 1.0
  random_head = probe.zero_shot_key(task, rng.random((len(rows), 12)))
  assert random_head["key_signature"] < 0.35  # Chance is 1/12.


def test_pitch_task_holds_out_instruments():
  task = probe.task_data("pitch", note_rows())
  inst = np.array([r["instrument"] for r in note_rows()])[task.index]
  assert set(inst[task.split == "test"]) == {"piano"}  # Last in sorted order.
  assert set(inst[task.split == "validation"]) == {"organ"}
  train_pitches = set(task.y[task.split == "train"])
  assert set(task.y[task.split == "test"]) <= train_pitches


def progression(tonic: int, minor: bool, seconds_per_chord: float = 0.8, repeats: int = 2) -> np.ndarray:
  """I-IV-V-I (or i-iv-V-i) in harmonic tones: [n] float32."""
  third = 3 if minor else 4
  chords = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]
  n = int(seconds_per_chord * SR)
  t = np.arange(n) / SR
  out = []
  for _ in range(repeats):
    for chord in chords:
      x = np.zeros(n)
      for interval in chord:
        f = 440.0 * 2 ** ((48 + tonic + interval - 69) / 12)
        x += sum(np.sin(2 * np.pi * h * f * t) / h ** 1.5 for h in range(1, 5))
      out.append(x * np.hanning(n) ** 0.1)
  return np.concatenate(out).astype(np.float32)


def test_kk_templates_recover_keys_of_chord_progressions():
  # The template itself maps to its key.
  for k in range(24):
    tonic, minor = k // 2, k % 2
    profile = np.roll(probe.KK_MINOR if minor else probe.KK_MAJOR, tonic)
    assert probe.kk_key_scores(profile[None]).argmax() == k
  cqt = CQTConfig()
  keys = list(range(0, 24, 2))[:6] + list(range(1, 24, 2))[:6]
  chroma = np.stack([probe.track_chroma(progression(k // 2, k % 2 == 1), cqt) for k in keys])
  task = probe.TaskData("key", np.arange(len(keys)), np.array(keys), np.array(["test"] * len(keys)),
                        [probe.key_name(k) for k in range(24)])
  result = probe.kk_key(task, chroma)
  assert result["key"] > 0.7, result  # Chance is about 0.05.


def test_features_are_cached(tmp_path, monkeypatch):
  from mt2_jax.eval import embed
  module = load_repo_file("configs/equivariant_only.py")
  embedder = embed.Embedder.untrained(module.get_config("runlocal"))
  (tmp_path / "data").mkdir()
  rows = []
  for i in range(3):
    sf.write(tmp_path / "data" / f"{i}.wav", progression(i, False, 0.3, 1), SR)
    rows.append({"file": f"{i}.wav"})
  (tmp_path / "data" / "bad.wav").write_bytes(b"nope")
  rows.append({"file": "bad.wav"})
  cache = tmp_path / "cache.npz"
  feats = probe.extract_features(embedder, tmp_path / "data", rows, cache, progress=False)
  assert set(feats) == {"cls_equivariant", "cls_mean", "tokens_mean", "head_cpsd"}
  assert feats["cls_mean"].shape == (4, 32) and feats["head_cpsd"].shape == (4, 12)
  assert np.all(np.isfinite(feats["cls_mean"][:3])) and np.all(np.isnan(feats["cls_mean"][3]))
  monkeypatch.setattr(embed, "embed_many", lambda *a, **k: 1 / 0)  # Must not be called.
  again = probe.extract_features(embedder, tmp_path / "data", rows, cache, progress=False)
  np.testing.assert_array_equal(again["cls_mean"], feats["cls_mean"])


def test_several_models_share_one_cqt_per_file(tmp_path, monkeypatch):
  """extract_features_many = extract_features of each model alone, with the CQT
  of each file computed once for all of them (the cost of a probe over runs)."""
  from mt2_jax import config_defaults
  from mt2_jax.eval import embed
  config = config_defaults.apply_arg(config_defaults.base_config(), "runlocal")
  models = [embed.Embedder.untrained(config, seed=s) for s in (1, 2)]
  (tmp_path / "data").mkdir()
  rows = []
  for i in range(2):
    sf.write(tmp_path / "data" / f"{i}.wav", progression(i, False, 0.3, 1), SR)
    rows.append({"file": f"{i}.wav"})
  alone = [probe.extract_features(m, tmp_path / "data", rows, progress=False) for m in models]
  calls = []
  real = embed.cqt_magnitude
  monkeypatch.setattr(embed, "cqt_magnitude", lambda *a, **k: calls.append(1) or real(*a, **k))
  both = probe.extract_features_many([(m, None) for m in models], tmp_path / "data", rows,
                                     progress=False)
  assert len(calls) == len(rows)  # One block per file here: one CQT each, not one per model.
  for a, b in zip(alone, both):
    for name in a:
      np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-6)
  assert not np.allclose(both[0]["cls_mean"], both[1]["cls_mean"])  # Two models indeed.
  other = embed.Embedder.untrained(config_defaults.apply_arg(config, "frames=64"))
  with pytest.raises(ValueError, match="different windows"):
    embed.embed_many([models[0], other], progression(0, False, 0.3, 1), SR)


def test_report_files(tmp_path):
  results = [
      {"model": "mt2", "feature": "cls_mean", "task": "key", "key": 0.5, "key_signature": 0.6},
      {"model": "mt2", "feature": "cls_mean", "task": "instrument", "instrument": 0.9},
      {"model": "KK chroma template", "feature": "chroma", "task": "key", "key": 0.7, "key_signature": 0.8},
      {"model": "MFCC stats", "feature": "mfcc", "task": "chorale_instrument", "chorale_instrument": 0.711,
       "accuracy_ci": [0.6152, 0.8049], "n_test": 40},
  ]
  paths = probe.write_report(results, tmp_path)
  md = open(paths["markdown"]).read().splitlines()
  assert md[0] == ("| model | feature | key (MIREX) | key signature (acc) | instrument (acc) "
                   "| chorale instrument (acc) |")
  assert md[2] == "| mt2 | cls_mean | 0.500 | 0.600 | 0.900 |  |"
  assert md[3] == "| KK chroma template | chroma | 0.700 | 0.800 |  |  |"
  assert md[4] == "| MFCC stats | mfcc |  |  |  | 0.711 [0.62-0.80] |"
  assert "Findings" not in open(paths["markdown"]).read()
  assert open(paths["chart"], "rb").read(4) == b"\x89PNG"
  paths = probe.write_report(results, tmp_path, with_findings=True)
  assert "## Findings" in open(paths["markdown"]).read()


def test_chorale_instrument_task_is_chorales_split_by_the_split_column():
  rows = note_rows(n_per_class=4, classes=("organ", "piano", "guitar"))
  chorale_inst = ("organ", "piano", "flute")  # guitar: notes only; flute: chorales only.
  for piece in range(6):
    for v in range(3):
      rows.append({"file": f"chorales/p{piece}_v{v}.flac", "set": "chorale", "piece": f"p{piece}",
                   "split": ("train", "train", "train", "train", "validation", "test")[piece],
                   "instrument": chorale_inst[v], "key": "C major"})
  task = probe.task_data("chorale_instrument", rows)
  chosen = [rows[i] for i in task.index]
  assert len(chosen) == 18 + 1 and all(r["set"] == "chorale" for r in chosen)  # + note_rows' chorale.
  np.testing.assert_array_equal(task.split, [r["split"] for r in chosen])
  assert task.classes == ["flute", "organ", "piano"]
  assert [task.classes[c] for c in task.y] == [r["instrument"] for r in chosen]
  test_pieces = {r["piece"] for r in chosen if r["split"] == "test" and "piece" in r}
  assert test_pieces == {"p5"}  # Whole pieces held out, as labelled.
  notes = probe.task_data("instrument", rows)  # The note task is unchanged: notes only.
  assert all(rows[i]["set"] == "note" for i in notes.index) and "flute" not in notes.classes


def test_a_task_without_test_examples_is_skipped():
  rows = key_rows(60)
  for r in rows:
    r["instrument"] = "organ" if int(r["file"][2:-5]) % 2 else "piano"
    r["split"] = "train" if r["split"] == "test" else r["split"]
  feats = {"f": np.random.default_rng(0).standard_normal((len(rows), 4)),
           "head_cpsd": np.random.default_rng(1).random((len(rows), 12))}
  assert probe.probe_features("m", feats, rows, ["key", "chorale_instrument"]) == []
  rows[0]["split"] = "test"
  got = probe.probe_features("m", feats, rows, ["key", "chorale_instrument"])
  assert {(r["feature"], r["task"]) for r in got} == {
      ("f", "key"), ("zero-shot (head_cpsd)", "key"), ("zero-shot phase (head_cpsd)", "key"),
      ("f", "chorale_instrument")}


def test_bootstrap_interval():
  rng = np.random.default_rng(0)
  small, large = (rng.random(n) < 0.7 for n in (20, 500))
  for values in (small, large):
    lo, hi = probe.bootstrap_ci(values)
    assert lo < values.mean() < hi
  width = lambda ci: ci[1] - ci[0]
  assert width(probe.bootstrap_ci(large)) < 0.5 * width(probe.bootstrap_ci(small))  # ~ 1 / sqrt(n).
  assert probe.bootstrap_ci(small) == probe.bootstrap_ci(small)  # Seeded.
  assert probe.bootstrap_ci(np.full(7, 0.3)) == pytest.approx([0.3, 0.3])
  # Scores carry the interval of their per-track scores: MIREX 1, 0.5 (fifth), 0.3 (relative).
  c, g, am = (probe.key_class(k) for k in ("C major", "G major", "A minor"))
  s = probe.score("key", np.array([c, c, c, c]), np.array([c, g, am, c]))
  assert 0.3 <= s["mirex_ci"][0] < s["key"] < s["mirex_ci"][1] <= 1.0
  assert s["key_signature_ci"][1] == 1.0 and s["key_signature_ci"][0] < s["key_signature"]
  s = probe.score("chorale_instrument", np.array([0, 1, 2, 0]), np.array([0, 1, 1, 0]))
  assert s["chorale_instrument"] == 0.75 and s["accuracy_ci"][0] < 0.75 <= s["accuracy_ci"][1]
  task = probe.task_data("key", key_rows())
  zs = probe.zero_shot_key(task, rng.random((len(key_rows()), 12)))
  assert zs["key_signature_ci"][0] <= zs["key_signature"] <= zs["key_signature_ci"][1]


def test_frame_stats_are_exact_over_blocks():
  x = np.random.default_rng(0).standard_normal(10000)
  mean, std = references._frame_stats(x, 1000, lambda b: b[None] * [[1.0], [2.0]], block_seconds=0.7)
  np.testing.assert_allclose(mean, [x.mean(), 2 * x.mean()], atol=1e-12)
  np.testing.assert_allclose(std, [x.std(), 2 * x.std()], rtol=1e-9)


def test_mfcc_stats_shape_values_and_cache(tmp_path, monkeypatch):
  import librosa
  from mt2_jax.data import audio
  rows = []
  for i, minor in enumerate((False, True)):
    sf.write(tmp_path / f"{i}.wav", progression(i, minor, 0.3, 1), SR)
    rows.append({"file": f"{i}.wav"})
  (tmp_path / "bad.wav").write_bytes(b"nope")
  rows.append({"file": "bad.wav"})
  cache = tmp_path / "cache" / "mfcc.npz"
  mfcc = probe.extract_mfcc(tmp_path, rows, SR, cache, progress=False)
  assert mfcc.shape == (3, 40) and np.all(np.isnan(mfcc[2]))
  x = audio.load_audio(tmp_path / "0.wav", SR)  # Peak-normalised, as the probes read audio.
  direct = librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20)
  np.testing.assert_allclose(mfcc[0, :20], direct.mean(1), rtol=1e-3, atol=1e-2)
  np.testing.assert_allclose(mfcc[0, 20:], direct.std(1), rtol=1e-3, atol=1e-2)
  assert not np.allclose(mfcc[0], mfcc[1])
  monkeypatch.setattr(references, "track_mfcc", lambda *a, **k: 1 / 0)  # Must not be called.
  np.testing.assert_array_equal(probe.extract_mfcc(tmp_path, rows, SR, cache, progress=False), mfcc)
  cqt = probe.extract_cqt_stats(tmp_path, rows, CQTConfig(), tmp_path / "cache" / "cqt.npz",
                                progress=False)  # The same reader, per bin of the model's CQT.
  assert cqt.shape == (3, 198) and np.all(np.isnan(cqt[2])) and np.isfinite(cqt[:2]).all()


def test_cqt_stats_name_the_bin_and_its_change():
  cqt = CQTConfig()
  t = np.arange(2 * SR) / SR
  tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)  # A4: 27.5 Hz * 2**4, bin 48.
  steady = probe.track_cqt_stats(tone, cqt)
  gated = probe.track_cqt_stats(tone * (t < 1.0), cqt)  # A second of tone, then silence.
  assert steady.shape == (2 * cqt.n_bins,)
  assert np.argmax(steady[:cqt.n_bins]) == 48
  # The deviation over time is what tells a held tone from a gated one.
  assert gated[cqt.n_bins + 48] > 5 * steady[cqt.n_bins + 48]


def demo_results(changes=None):
  """Hand-made results in which every finding holds, but for changes {(model, feature, task): score}
  (and 'token_r2': MT2's token similarity, 0.5 by default)."""
  changes = dict(changes or {})
  token_r2 = changes.pop("token_r2", 0.5)
  scores = {
      ("mt2", "cls_equivariant", "key"): 0.8, ("mt2", "cls_contrastive", "key"): 0.4,
      ("mt2", "cls_mean", "key"): 0.7,
      ("mt2", "cls_equivariant", "chorale_instrument"): 0.5,
      ("mt2", "cls_contrastive", "chorale_instrument"): 0.9,
      ("mt2", "cls_mean", "chorale_instrument"): 0.95,
      ("mt2", "cls_equivariant", "instrument"): 0.6, ("mt2", "cls_contrastive", "instrument"): 0.8,
      ("mt2", "cls_mean", "instrument"): 0.7,
      ("contrastive_only", "cls_contrastive", "key"): 0.3,
      ("contrastive_only", "cls_contrastive", "chorale_instrument"): 0.9,
      ("contrastive_only", "cls_contrastive", "instrument"): 0.8,
      ("equivariant_only", "cls_equivariant", "key"): 0.75,
      ("equivariant_only", "cls_equivariant", "chorale_instrument"): 0.4,
      ("equivariant_only", "cls_equivariant", "instrument"): 0.5,
      ("mt2 (untrained)", "cls_mean", "key"): 0.2,
      ("KK chroma template", "chroma", "key"): 0.6,
      ("MFCC stats", "mfcc", "chorale_instrument"): 0.85,
      **changes}
  tokens = {"model": "mt2", "feature": "cls_equivariant -> cls_contrastive", "task": "tokens",
            "token_r2": token_r2}
  return [{"model": m, "feature": f, "task": t, t: v} for (m, f, t), v in scores.items()] + [tokens]


def test_findings_hold_fail_and_go_missing():
  good = probe.findings(demo_results())
  assert len(good) == 11 and all(f["holds"] is True for f in good), good
  first = good[0]
  assert (first["a"], first["b"]) == (0.8, 0.4) and "cls_equivariant" in first["a_label"]
  # The contrastive token wins key: the first finding fails, and only it.
  bad = probe.findings(demo_results({("mt2", "cls_contrastive", "key"): 0.85}))
  assert [f["holds"] for f in bad] == [False] + [True] * 10
  # equivariant_only beats MT2 on key; cls_mean is nowhere MT2's best.
  worse = probe.findings(demo_results({("equivariant_only", "cls_equivariant", "key"): 0.9,
                                       ("mt2", "cls_mean", "chorale_instrument"): 0.1}))
  assert [f["holds"] for f in worse] == [True] * 4 + [False, True, True, False, True, True, True]
  assert (worse[4]["a"], worse[4]["b"]) == (0.8, 0.9)
  assert "equivariant_only cls_equivariant" in worse[4]["b_label"]
  missing = probe.findings([r for r in demo_results() if r["model"] != "MFCC stats"])
  assert missing[-1]["holds"] is None and all(f["holds"] for f in missing[:-1])
  text = probe.findings_markdown(worse)
  assert text.count("**yes**") == 9 and text.count("**no**") == 2 and "0.800 (mt2" in text
  # Two class tokens that are one feature fail the token finding.
  same = probe.findings(demo_results({"token_r2": 0.999}))
  assert [f["holds"] for f in same] == [True] * 8 + [False, True, True]


def test_token_similarity_tells_one_feature_from_two():
  rows = note_rows()
  rng = np.random.default_rng(0)
  a = rng.standard_normal((len(rows), 8))
  feats = {"cls_x": a, "cls_y": a @ rng.standard_normal((8, 8)) + 1.0,  # A linear map of x.
           "cls_z": rng.standard_normal((len(rows), 8)), "cls_mean": a}  # Independent of x.
  res = {r["feature"]: r["token_r2"] for r in probe.token_similarity("m", feats, rows, list(feats))}
  assert set(res) == {"cls_x -> cls_y", "cls_x -> cls_z", "cls_y -> cls_z"}  # cls_mean left out.
  assert res["cls_x -> cls_y"] > 0.999 and res["cls_x -> cls_z"] < 0.2
  # Not table rows: the report ignores them.
  header, body = probe.table(probe.probe_features("m", feats, rows, ("instrument",), list(feats)))
  assert all("->" not in row[1] for row in body)


def test_phase_readout_inverts_the_circle():
  """A one-hot profile at q reads back q on either circle; a broad profile reads its z's angle."""
  eye = np.eye(12)
  for omega in (7 / 12, 1 / 12, 5 / 12):
    np.testing.assert_array_equal(probe.phase_class(eye, omega), np.arange(12))
  # Peak at 0 but most mass at 7 and 2 (a fifth and a ninth up): on the circle of fifths
  # its z sits nearest to 7's point (one step from 0, one from 2), so phase and argmax differ.
  y = np.full(12, 0.0)
  y[[0, 7, 2]] = [0.4, 0.35, 0.25]
  assert probe.phase_class(y[None])[0] != y.argmax()
  with pytest.raises(ValueError):
    probe.phase_class(eye, 2 / 12)  # No readout: 2 shares a factor with 12.


def test_phase_readout_turns_z_by_a_real_angle():
  """CPSD is blind to any common turn of z. A head whose z sits half a step past each
  signature's point (mass split between the signature and a fifth above it) reads half
  the tracks one class off with any of the 12 class rotations; the phase readout's
  fitted turn (-0.5 step) reads them all, and the argmax readout keeps STONE's rotation."""
  rows = key_rows()
  task = probe.task_data("key", rows)
  sig = np.array([probe.key_signature(int(c)) for c in task.y])
  rng = np.random.default_rng(3)
  share = 0.5 + rng.uniform(-0.05, 0.05, sig.size)  # Which side of the half step: by chance.
  profiles = share[:, None] * np.eye(12)[sig] + (1 - share)[:, None] * np.eye(12)[(sig + 7) % 12]
  phase = probe.zero_shot_key(task, profiles, "phase")
  assert phase["key_signature"] == 1.0 and phase["rotation"] == pytest.approx(-0.5, abs=0.05)
  integer = [np.mean((probe.phase_class(profiles) + r) % 12 == sig) for r in range(12)]
  assert max(integer) < 0.7  # The readout before session 21.
  argmax = probe.zero_shot_key(task, profiles)
  assert argmax["rotation"] == 0 and argmax["key_signature"] < 0.7
  with pytest.raises(ValueError, match="readout"):
    probe.fit_rotation(profiles, sig, "mean")


def test_scores_keep_their_tracks_and_kinds_of_key_error():
  c, g, am, cm, fs = (probe.key_class(k) for k in ("C major", "G major", "A minor", "C minor",
                                                   "F# major"))
  s = probe.score("key", np.array([c] * 5), np.array([c, g, am, cm, fs]), np.arange(10, 15))
  assert s["key_errors"] == {"correct": 1, "fifth": 1, "relative": 1, "parallel": 1, "other": 1}
  assert s["tracks"] == [10, 11, 12, 13, 14]
  np.testing.assert_allclose(s["per_track"]["key"], [1.0, 0.5, 0.3, 0.2, 0.0])
  assert "tracks" not in probe.score("key", np.array([c]), np.array([c]))  # Only when asked.
  # A probe's row names the test rows it scored, as indices into the task's rows.
  task = probe.task_data("key", key_rows())
  feats = np.random.default_rng(0).standard_normal((len(key_rows()), 4))
  row = probe.probe_feature(task, feats, max_steps=50)
  np.testing.assert_array_equal(row["tracks"], task.index[task.split == "test"])
  assert len(row["per_track"]["key_signature"]) == row["n_test"]


def test_paired_difference_is_narrower_than_the_scores_intervals():
  rng = np.random.default_rng(0)
  hard = rng.random(50) < 0.5  # Tracks both features get wrong half the time...
  a = np.where(hard, rng.random(50) < 0.3, 1.0)  # ...a is right on every easy one,
  b = a.copy()
  b[np.flatnonzero(a == 1)[:5]] = 0.0  # b misses 5 of a's hits and nothing else.
  row = lambda v, tracks: {"tracks": list(tracks), "per_track": {"key": list(v)}, "key": v.mean()}
  diff, ci = probe.paired_difference(row(a, range(50)), row(b, range(50)), "key")
  assert diff == pytest.approx(0.1) and 0 < ci[0] < diff < ci[1]
  # The two scores' own intervals overlap: unpaired, the difference would look like noise.
  assert probe.bootstrap_ci(a)[0] < probe.bootstrap_ci(b)[1]
  # Tracks are matched by id, not by position; tracks only one row scored are left out.
  d2, _ = probe.paired_difference(row(a[::-1], range(49, -1, -1)), row(b[:40], range(40)), "key")
  assert d2 == pytest.approx((a[:40] - b[:40]).mean())
  assert probe.paired_difference(row(a, range(50)), {"key": 0.5}, "key") is None


def test_findings_say_whether_a_difference_is_outside_the_noise():
  results = demo_results()
  n = 50
  for r in results:  # Per-track scores: mt2's equivariant token right on 40 tracks, contrastive on 20.
    if r["task"] == "key" and r["feature"] in ("cls_equivariant", "cls_contrastive") and r["model"] == "mt2":
      hits = 40 if r["feature"] == "cls_equivariant" else 20
      r.update(tracks=list(range(n)), per_track={"key": [1.0] * hits + [0.0] * (n - hits)})
  items = probe.findings(results)
  assert items[0]["diff"] == pytest.approx(0.4) and items[0]["sure"] is True
  assert items[1]["diff"] is None and items[1]["sure"] is None  # The untrained row has no tracks.
  text = probe.findings_markdown(items)
  assert "difference +0.400" in text and "outside the noise" in text
  for r in results:  # The same 30 hits each: no difference at all.
    if "per_track" in r:
      r["per_track"] = {"key": [1.0] * 30 + [0.0] * (n - 30)}
  assert probe.findings(results)[0]["sure"] is False


def test_seed_findings_counts_each_finding_over_seeds(capsys):
  seed_findings = load_repo_file("launch/seed_findings.py")
  per_seed = {0: demo_results(), 1: demo_results({("mt2", "cls_contrastive", "key"): 0.85}),
              2: demo_results({("mt2", "cls_equivariant", "key"): 0.7})}
  text, items = seed_findings.report(per_seed)
  assert [f["holds"] for f in items[1]][:1] == [False]
  lines = text.splitlines()
  first = next(l for l in lines if l.startswith("| key: the equivariant token beats the contrastive"))
  assert first.endswith("| 2/3 |") and "| no (0.800 vs 0.850) |" in first
  assert next(l for l in lines if "chorale instrument: the contrastive token beats the "
              "equivariant" in l).endswith("| 3/3 |")
  # Mean over seeds (min-max) of MT2's equivariant token on key: 0.8, 0.8, 0.7.
  assert "| mt2 | cls_equivariant | 0.767 (0.70-0.80) |" in text
  # Runs are named by experiment and seed, and checked before any compute.
  for experiments, message in (("a,b", "one per model"), ("m,c,e", "m_s1")):
    with pytest.raises(SystemExit):
      seed_findings.main(["--demo", "d", "--runs", "r", "--out", "o", "--seeds", "1",
                          "--experiments", experiments])
    assert message in capsys.readouterr().err
