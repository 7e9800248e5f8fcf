"""The pre-sharded CQT dataset: a standard TFDS ArrayRecord dataset.

Layout of `DATA/` (what `tfds.builder_from_directory(DATA)` opens, with neither
this package nor TensorFlow):

  dataset_info.json, features.json, metadata.json   TFDS metadata (metadata.json
                                                    holds the CQT parameters)
  mt2_cqt-{split}.array_record-{i:05d}-of-{n:05d}   one shard per group of files
  rejected.csv                                      files skipped, with reasons
  _parts/{split}-{i:05d}.json                       per-shard completion records

Each record: `cqt` float16 [n_bins, frames], `track_id`, `source` (path
relative to the audio folder), `start` and `duration` (seconds of this excerpt
within the source), `num_frames`, plus every column of the `labels.csv` found
beside the audio.
"""

import json
import os
from typing import Any, Mapping, Sequence

from etils import epath
import numpy as np

from mt2_jax import storage
from mt2_jax.data.cqt import CQTConfig

DATASET_NAME = "mt2_cqt"
VERSION = "1.0.0"
FILE_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
SPLITS = ("train", "validation", "test")
# Columns we write ourselves; a labels.csv column with one of these names is renamed.
RESERVED = ("cqt", "track_id", "source", "start", "duration", "num_frames")


class CQTMismatchError(ValueError):
  """The dataset was built with CQT parameters other than the config's."""


def shard_path(data_dir, split: str, index: int, count: int) -> epath.Path:
  return storage.path(data_dir) / f"{DATASET_NAME}-{split}.array_record-{index:05d}-of-{count:05d}"


def infer_label_types(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> dict[str, str]:
  """Per labels.csv column: 'int', 'float' or 'str', from all of its values."""
  def kind(values):
    values = [v for v in values if v != ""]
    for name, cast in (("int", int), ("float", float)):
      try:
        for v in values:
          cast(v)
        return name if values else "str"
      except ValueError:
        continue
    return "str"
  return {c: kind([r.get(c, "") for r in rows]) for c in columns}


def label_feature_name(column: str) -> str:
  return f"label_{column}" if column in RESERVED else column


def features(n_bins: int, label_types: Mapping[str, str]):
  """The TFDS FeaturesDict of one record."""
  import tensorflow_datasets as tfds
  f = tfds.features
  spec = {
      # BYTES: float16 spectra barely compress, and raw bytes decode fastest.
      "cqt": f.Tensor(shape=(n_bins, None), dtype=np.float16, encoding=f.Encoding.BYTES),
      "track_id": f.Text(),
      "source": f.Text(),
      "start": f.Scalar(dtype=np.float32),
      "duration": f.Scalar(dtype=np.float32),
      "num_frames": f.Scalar(dtype=np.int64),
  }
  types = {"int": f.Scalar(dtype=np.int64), "float": f.Scalar(dtype=np.float32), "str": f.Text()}
  for column, t in label_types.items():
    spec[label_feature_name(column)] = types[t]
  return f.FeaturesDict(spec)


def serialize(features_dict, example: Mapping[str, Any]) -> bytes:
  """One record -> tf.train.Example bytes, identical in every process.

  `FeaturesDict.serialize_example` leaves the proto's map order to the hash
  seed of the process, so the same record from another worker would differ in
  bytes; deterministic serialization makes shards reproducible.
  """
  from tensorflow_datasets.core import example_serializer
  serializer = example_serializer.ExampleSerializer(features_dict.get_serialized_info())
  proto = serializer.get_tf_example(features_dict.encode_example(example))
  return proto.SerializeToString(deterministic=True)


def encode_labels(row: Mapping[str, str], label_types: Mapping[str, str]) -> dict[str, Any]:
  """labels.csv strings -> typed feature values (missing numbers become -1 / nan)."""
  out = {}
  for column, t in label_types.items():
    v = row.get(column, "")
    if t == "int":
      v = int(v) if v != "" else -1
    elif t == "float":
      v = float(v) if v != "" else float("nan")
    out[label_feature_name(column)] = v
  return out


def write_metadata(data_dir, features_dict, shard_lengths: Mapping[str, list[int]],
                   num_bytes: Mapping[str, int], cqt: CQTConfig, extra: Mapping[str, Any]):
  """Writes dataset_info.json, features.json and metadata.json for all splits."""
  import tensorflow_datasets as tfds
  data_dir = os.fspath(data_dir)
  split_infos = []
  for split, lengths in shard_lengths.items():
    template = tfds.core.ShardedFileTemplate(
        data_dir=data_dir, template=FILE_TEMPLATE, dataset_name=DATASET_NAME,
        split=split, filetype_suffix="array_record")
    split_infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=list(lengths), num_bytes=int(num_bytes[split]),
        filename_template=template))
  metadata = tfds.core.MetadataDict(
      cqt=cqt.to_dict(), cqt_fingerprint=cqt.fingerprint(), **dict(extra))
  tfds.folder_dataset.write_metadata(
      data_dir=data_dir, features=features_dict, split_infos=split_infos,
      filename_template=FILE_TEMPLATE, description=(
          "Log-compressed CQT spectra (float16 [n_bins, frames]) made by `mt2 prepare`."),
      metadata=metadata, check_data=False)
  # TFDS names the dataset after the folder; pin the name the shards use.
  info_path = storage.path(data_dir) / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["name"], info["version"] = DATASET_NAME, VERSION
  info["fileFormat"] = "array_record"
  storage.write_text(info_path, json.dumps(info, indent=2))


def check_cqt(stored: Mapping[str, Any], expected: CQTConfig, data_dir="") -> None:
  """Raises CQTMismatchError naming each parameter that differs."""
  want = expected.to_dict()
  diffs = [f"{k}: dataset has {stored.get(k)!r}, config has {v!r}"
           for k, v in want.items() if stored.get(k) != v]
  if diffs:
    raise CQTMismatchError(
        f"The dataset {data_dir} was prepared with other CQT parameters than the config "
        f"asks for ({'; '.join(diffs)}). Re-run `mt2 prepare` with the config's CQT, "
        f"or set --config.cqt.* to match the dataset.")


def open_builder(data_dir, cqt: CQTConfig | None = None):
  """The TFDS builder of a prepared dataset, checked against `cqt` when given.

  `data_dir` must be local (ArrayRecord reads local files only): callers pass
  a bucket dataset through `storage.local_copy` first.
  """
  import tensorflow_datasets as tfds
  data_dir = storage.path(data_dir)
  if not storage.is_local(data_dir):
    raise ValueError(f"{data_dir}: ArrayRecord reads local files only; "
                     f"pass storage.local_copy({data_dir!r}) (docs/design.md §2.4)")
  if not (data_dir / "dataset_info.json").exists():
    parts = data_dir / "_parts"
    hint = (" It is incomplete: some shards are still missing (see _parts/)."
            if parts.is_dir() else " Build one with `mt2 prepare --audio DIR --out DATA`.")
    raise FileNotFoundError(f"No prepared dataset at {data_dir}.{hint}")
  builder = tfds.builder_from_directory(os.fspath(data_dir))
  if cqt is not None:
    stored = dict(builder.info.metadata or {}).get("cqt")
    if stored is None:
      raise CQTMismatchError(f"The dataset {data_dir} has no CQT parameters in metadata.json.")
    check_cqt(stored, cqt, data_dir)
  return builder


def open_split(data_dir, split: str = "train", cqt: CQTConfig | None = None):
  """A random-access TFDS data source over one split (what Grain reads)."""
  builder = open_builder(data_dir, cqt)
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} not in {data_dir}; it has {list(builder.info.splits)}")
  return builder.as_data_source(split=split)
