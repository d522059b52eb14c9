"""The one evaluation path, shared by training and `--mode=eval`.

`Evaluator(experiment)(replicated_state)` computes what a checkpoint is judged
by: the held-out metrics of families that evaluate (sums of their eval step
over the whole split, padded and masked so that each example counts once on
any number of devices) and the sample-quality metrics of families that
generate, keyed '<split>/<metric>'.

`SampleQuality` scores a family's samples (generated on all devices, in
global batches drawn from one key, so any device count gives the same
samples) against a real split, through a feature network: FID, KID, IS and
precision/recall from `imgen.methods.metrics`. The features of real splits are
computed once per (dataset, split, image format, feature weights) and cached
under `eval.stats_dir` (default: beside the TFDS data).
"""

from collections.abc import Callable, Iterator
import dataclasses

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from imgen import data
from imgen.core import files
from imgen.core import images as image_lib
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.errors import UserError
from imgen.data import VALID
from imgen.data import sources
from imgen.evaluation import features
from imgen.evaluation.experiment import Experiment
from imgen.evaluation.experiment import metric_names
from imgen.evaluation.features import FeatureNetwork
from imgen.families import Evaluates
from imgen.families import Family
from imgen.families import Generates
from imgen.methods import metrics


@dataclasses.dataclass(frozen=True)
class Features:
  features: np.ndarray  # (n, d)
  logits: np.ndarray  # (n, classes)
  classes: np.ndarray | None = None  # (n,): the class each sample was drawn for.

  def __len__(self) -> int:
    return len(self.features)


def held_out_sums(eval_step: Callable, replicated, batches: Iterator, key: jax.Array) -> dict:
  """Sums of the pmap'd `eval_step` over every batch (replica 0's copy, on host)."""
  sums = None
  for i, batch in enumerate(batches):
    out = eval_step(replicated, batch, jax.random.fold_in(key, i))
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  return jax.device_get(parallel.unreplicate(sums))


def make_sampler(
  family: Family,
  name: str,
  global_batch: int,
  class_rows: Callable[[int], np.ndarray | None] = lambda num: None,
) -> Callable[..., Iterator[jax.Array]]:
  """`sample_batches(replicated_state, key, num, condition=None)`: device
  batches of the family's samples.

  Batch i holds `global_batch` samples drawn from fold_in(key, i), split over
  the devices (devices, global_batch / devices, H, W, C), so the samples do
  not depend on the device count; the last batch may overshoot `num`. A
  `condition` of `num` rows (class labels) gives row j of the samples
  condition[j]; without one, conditional families draw `class_rows(num)`
  (`Experiment.class_rows`).
  """
  if not isinstance(family, Generates):
    raise ConfigError(f"The {name} family makes no images.")
  local_batch = global_batch // jax.device_count()
  pmapped = parallel.pmap(
    lambda state, key, condition: family.generate(state, key, local_batch, condition),
    axis_name=parallel.AXIS,
    in_axes=(0, None, 0),
  )

  def sample_batches(replicated_state, key: jax.Array, num: int, condition=None):
    if condition is None:
      condition = class_rows(num)
    for i in range(-(-num // global_batch)):
      rows = None
      if condition is not None:
        index = _process_rows(i, global_batch, len(condition))
        rows = parallel.shard_rows(np.asarray(condition)[index])
      yield pmapped(replicated_state, jax.random.fold_in(key, i), rows)

  return sample_batches


def _process_rows(i: int, global_batch: int, num: int) -> np.ndarray:
  """This process's row indices of global batch i over `num` rows, wrapping past the last."""
  per_process = global_batch // jax.process_count()
  return (i * global_batch + jax.process_index() * per_process + np.arange(per_process)) % num


def over_rows(experiment: Experiment, state, key: jax.Array, fn: Callable, *arrays) -> np.ndarray:
  """`fn(replicated_state, key, *rows)` (this replica's rows of each array, or None for
  an array that is None) over every row of the host `arrays` (N, ...), in global batches
  of eval.batch_size (the last one wraps around to the first rows), batch i with
  fold_in(key, i), gathered from every process: its outputs (N, ...)."""
  global_batch, num = experiment.config.eval.batch_size, len(arrays[0])
  call = parallel.pmap(
    fn, axis_name=parallel.AXIS, in_axes=(0, None, *(None if a is None else 0 for a in arrays))
  )
  replicated, parts = parallel.replicate(state), []
  for i in range(-(-num // global_batch)):
    index = _process_rows(i, global_batch, num)
    rows = [None if a is None else parallel.shard_rows(a[index]) for a in arrays]
    out = np.asarray(jax.device_get(call(replicated, jax.random.fold_in(key, i), *rows)))
    parts.append(parallel.gather(out.reshape(-1, *out.shape[2:])))
  return np.concatenate(parts)[:num]


def host_samples(batches: Iterator[jax.Array], num: int) -> np.ndarray:
  """The first `num` samples of device batches, gathered from every process (N, H, W, C)."""
  parts = [np.asarray(jax.device_get(b)) for b in batches]
  return np.concatenate([parallel.gather(p.reshape(-1, *p.shape[2:])) for p in parts])[:num]


def draw(experiment: Experiment, state, key: jax.Array, num: int, condition=None) -> np.ndarray:
  """`num` uint8 samples (N, H, W, C) of a trained run's generator, from an
  unreplicated `state`, given `condition` (classes, token ids or clips) if any."""
  if num == 0:
    return np.zeros((0, *experiment.spec.image.shape), np.uint8)
  batch = experiment.config.eval.batch_size
  sample_batches = make_sampler(experiment.family, experiment.config.family, batch)
  batches = sample_batches(parallel.replicate(state), key, num, condition)
  return image_lib.to_uint8(host_samples(batches, num))


class SampleQuality:
  """FID/KID/IS/precision/recall of a family's samples against a real split."""

  def __init__(self, experiment: Experiment, network: FeatureNetwork, sampler: Callable):
    self.experiment = experiment
    self.config = experiment.config.eval
    self.names = metric_names(self.config.metrics)
    self.network = network
    self._apply = parallel.pmap(network.apply, axis_name=parallel.AXIS)
    self._variables = parallel.replicate(network.variables)
    self._sample_batches = sampler

  def _features(self, images: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    features, logits = jax.device_get(self._apply(self._variables, images))
    return features.reshape(-1, features.shape[-1]), logits.reshape(-1, logits.shape[-1])

  def _cache_path(self, split: str) -> str:
    e = self.experiment
    stats_dir = self.config.stats_dir or files.join(
      e.config.data.data_dir or sources.default_data_dir(), "imgen_features"
    )
    name = (
      f"{e.builder.name}-{e.builder.version}-{split}-{e.spec.size}px{e.spec.image.channels}c-"
      f"{e.config.data.resize}-{self.network.name}-{self.network.fingerprint[:16]}.npz"
    )
    return files.join(stats_dir, name)

  def real(self, split: str) -> Features:
    """Features of every image of `split`, from the cache when it has them."""
    path, cached = self._cache_path(split), None
    if files.path(path).is_file():
      try:
        arrays = files.load_npz(path)
        cached = Features(arrays["features"], arrays["logits"])
      except (OSError, ValueError, KeyError) as e:
        logging.warning("Recomputing the unreadable feature cache %s (%s)", path, e)
    if parallel.every_process(cached is not None):  # Else they all compute it, together.
      return cached
    parts = []
    for batch in self.experiment.eval_batches(split):
      # Every process has as many (padded) rows: gather them, then drop the padding.
      parts.append(
        [parallel.gather(x) for x in (*self._features(batch["image"]), batch[VALID].reshape(-1))]
      )
    features, logits, mask = (np.concatenate(p) for p in zip(*parts, strict=True))
    features, logits = features[mask > 0], logits[mask > 0]
    if jax.process_index() == 0:
      files.save_npz(path, compressed=False, features=features, logits=logits)  # Whole.
      logging.info("Cached %d %s features of %s/%s in %s", len(features), *self._what(split), path)
    return Features(features, logits)

  def _what(self, split: str) -> tuple[str, str, str]:
    return self.network.name, self.experiment.builder.name, split

  def sample_features(
    self, replicated_state, key: jax.Array, num: int, classes: np.ndarray | None = None
  ) -> Features:
    """Features of `num` samples drawn from `key` (for `classes`, when the
    family is conditional), gathered from every process."""
    features, logits = [], []
    for batch in self._sample_batches(replicated_state, key, num, classes):
      f, lg = self._features(batch)
      features.append(parallel.gather(f))
      logits.append(parallel.gather(lg))
    return Features(*(np.concatenate(x)[:num] for x in (features, logits)), classes)

  def image_features(self, images: np.ndarray, classes: np.ndarray | None = None) -> Features:
    """Features of host images (N, H, W, C) in [-1, 1], the same on every
    process; `classes`: the class each should show, for conditional accuracy."""
    batch = self.experiment.config.eval.batch_size // jax.process_count()
    features, logits = [], []
    for i in range(0, len(images), batch):
      part = images[i : i + batch]
      padded = np.concatenate([part, np.zeros((batch - len(part), *part.shape[1:]), part.dtype)])
      f, lg = self._features(parallel.shard_rows(padded))
      features.append(f[: len(part)])
      logits.append(lg[: len(part)])
    return Features(np.concatenate(features), np.concatenate(logits), classes)

  def scores(self, candidate: Features, reference: Features, key: jax.Array) -> dict[str, float]:
    """The chosen metrics of `candidate` against `reference`."""
    c, out = self.config, {}
    if "fid" in self.names:
      out["fid"] = metrics.fid_from_features(reference.features, candidate.features)
    if "kid" in self.names:
      out["kid"], out["kid_std"] = metrics.kernel_inception_distance(
        reference.features, candidate.features, key, c.kid_subsets, c.kid_subset_size
      )
    if "is" in self.names:
      out["is"], out["is_std"] = metrics.inception_score(candidate.logits, c.is_splits)
    if "pr" in self.names:
      out["precision"], out["recall"] = metrics.precision_recall(
        reference.features, candidate.features, c.pr_k
      )
    if (
      candidate.classes is not None and self.network.classifies == self.experiment.config.data.name
    ):
      # Controllability: how often the in-domain classifier sees the class asked for.
      predicted = np.argmax(candidate.logits, axis=1)
      out["cond_accuracy"] = float(np.mean(predicted == candidate.classes[: len(predicted)]))
    out["num_samples"] = float(len(candidate))
    return out


def sample_quality(
  experiment: Experiment, sampler: Callable | None, required: bool
) -> SampleQuality | None:
  """The metrics' evaluator; None if no metrics are asked for or the family makes no images.

  With `required=False` (training) a feature network that cannot be loaded is
  a warning, not an error: the metrics of any checkpoint can be computed
  afterwards with --mode=eval.
  """
  config = experiment.config
  names = metric_names(config.eval.metrics)
  if not names or sampler is None:
    return None
  try:
    network = features.create(config.eval)
  except UserError as e:
    if required:
      raise
    logging.warning("Sample-quality metrics (%s) are off for this run: %s", ",".join(names), e)
    return None
  logging.info("Sample-quality metrics %s with %s", ",".join(names), network.description)
  return SampleQuality(experiment, network, sampler)


class Evaluator:
  """Held-out and sample-quality metrics of a replicated state: what training
  logs every `eval.every_steps` and `--mode=eval` writes.

  With `required=False` (training) a feature network that cannot be loaded
  turns the sample-quality metrics off with a warning instead of an error.
  `sampler` (families that generate) is the one the metrics draw from.
  """

  def __init__(self, experiment: Experiment, *, required: bool):
    self.experiment = experiment
    family, c = experiment.family, experiment.config
    self._eval_step = None
    if isinstance(family, Evaluates):
      self._eval_step = parallel.pmap_step(family.make_eval_step(), donate=False)
    self.sampler = None
    if isinstance(family, Generates):
      self.sampler = make_sampler(family, c.family, c.eval.batch_size, experiment.condition_rows)
    self.quality = sample_quality(experiment, self.sampler, required=required)
    self.reference = self.quality and self.quality.real(experiment.reference_split)

  @property
  def active(self) -> bool:
    """Whether there is anything to evaluate."""
    return self._eval_step is not None or self.quality is not None

  def __call__(self, replicated_state) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(scalars keyed '<split>/<metric>', images) of the state."""
    e, results, images = self.experiment, {}, {}
    if self._eval_step is not None:
      batches = data.prefetch_to_device(e.eval_batches())
      sums = held_out_sums(self._eval_step, replicated_state, batches, e.keys.eval)
      scalars, images = e.family.summarize_eval(sums)
      results.update({f"{e.config.data.eval_split}/{k}": v for k, v in scalars.items()})
    if self.quality is not None:
      num = e.config.eval.num_samples
      samples = self.quality.sample_features(
        replicated_state, e.keys.quality_samples, num, e.class_rows(num)
      )
      results.update(self.scores(samples))
    return results, images

  def scores(self, candidates: Features) -> dict[str, float]:
    """Sample-quality metrics of `candidates` against the reference split."""
    scores = self.quality.scores(candidates, self.reference, self.experiment.keys.kid_subsets)
    return {f"{self.experiment.reference_split}/{k}": v for k, v in scores.items()}
