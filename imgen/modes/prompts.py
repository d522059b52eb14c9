"""`--mode=prompts`: how well a text- or speech-conditioned model follows
held-out prompts, measured by trained networks rather than by eye.

Text (`text_to_image` on `layout_scenes`): one sample per test scene, from
its first caption, in three groups: seen combinations in training
phrasings, held-out combinations (scenes with a digit-colour-position triple
no training caption has), and the seen scenes again in held-out phrasings.
The judge of `prompts.judge_workdir` (configs/judge.py, a layout reader
trained on real scenes at the model's size) reads every sample, and GenEval's
checks (`imgen.methods.layouts`) score it against its prompt per attribute
(count, digit, colour, position, size, background) and all at once. The same
reading of the real test scene behind each prompt is the judge's ceiling,
reported beside every sample score, with the samples' share of it. FID
against the real test scenes uses the judge's features.

Speech (`speech_to_image`): one sample per test clip of `spoken_mnist` (held-
out voices), classified by the in-domain CNN of `eval.cnn_workdir`:
accuracy against the spoken digit, overall and per voice; FID in the CNN's
features against the real test digits.
"""

import json

from absl import logging
import jax
import numpy as np

from imgen.core import files
from imgen.core import images as image_lib
from imgen.core.errors import ConfigError
from imgen.data import captions
from imgen.data import layouts as layout_data
from imgen.evaluation import features as features_lib
from imgen.evaluation.evaluate import draw
from imgen.evaluation.experiment import Experiment
from imgen.families import Generates
from imgen.families import judge as judge_lib
from imgen.methods import layouts
from imgen.methods import metrics
from imgen.modes.base import Restore

GROUPS = ("seen", "held_out_combinations", "held_out_phrasings")


def _text_prompts(held: dict) -> tuple[np.ndarray, np.ndarray]:
  """(token rows, group index) of the held-out scenes' prompts."""
  novel = held["held_out"] == 1
  rows = [
    held["captions"][~novel, 0],
    held["captions"][novel, 0],
    held["novel_captions"][~novel, 0],
  ]
  if not np.any(rows[2]):  # A train split: no held-out phrasings.
    raise ConfigError("--mode=prompts scores the test split of layout_scenes (data.eval_split).")
  groups = np.concatenate([np.full(len(r), g) for g, r in enumerate(rows)])
  return np.concatenate(rows), groups


def _judge(experiment: Experiment, workdir: str):
  """The judge run of `prompts.judge_workdir`, checked against the model's size."""
  size = experiment.spec.size
  train_it = (
    f"train it: python main.py --config=configs/judge.py --workdir={workdir} "
    f"--config.model.image_size={size}"
  )
  judge, state, _ = Experiment.of_run(workdir, "prompts.judge_workdir", train_it)
  if judge.spec.size != size or not isinstance(judge.family, judge_lib.JudgeFamily):
    raise ConfigError(
      f"prompts.judge_workdir={workdir} must hold a judge (configs/judge.py) of "
      f"{size}x{size} scenes; {train_it}"
    )
  return judge.family, state


def score_text(experiment: Experiment, state, workdir: str) -> tuple[dict, np.ndarray, list]:
  c = experiment.config.prompts
  if experiment.config.data.name.split("/")[0] != "layout_scenes":
    raise ConfigError(
      f"--mode=prompts scores runs trained on layout_scenes, the scenes its judge reads; "
      f"this run used data.name={experiment.config.data.name!r}."
    )
  judge, judge_state = _judge(experiment, c.judge_workdir)
  held = experiment.held_out(c.num_prompts)
  tokens, groups = _text_prompts(held)
  logging.info("Drawing %d samples, one per held-out prompt", len(tokens))
  samples = draw(experiment, state, experiment.keys.quality_samples, len(tokens), tokens)
  novel = held["held_out"] == 1  # The real scene of each prompt, in the order of _text_prompts.
  real = image_lib.to_uint8(np.concatenate([held["image"][i] for i in (~novel, novel, ~novel)]))
  asked, unsaid = layout_data.reading_of_layouts(
    [captions.parse(captions.decode(t)) for t in tokens]
  )
  read = lambda images: judge.read(judge_state, image_lib.from_uint8(images))
  found, found_real = read(samples), read(real)
  pick = lambda r, rows: layouts.Reading(*(np.asarray(x)[rows] for x in r))
  record = {}
  for g, name in enumerate(GROUPS):
    rows = np.flatnonzero(groups == g)
    if not len(rows):
      continue
    samples_score, ceiling = (
      layouts.scores(pick(asked, rows), pick(r, rows), **judge_lib.SIZES, unsaid=unsaid[rows])
      for r in (found, found_real)
    )
    record[name] = {
      "num_prompts": len(rows),
      "samples": samples_score,
      "real_scenes": ceiling,
      "share_of_ceiling": {
        k: samples_score[k] / ceiling[k] if ceiling[k] else 0.0 for k in layouts.ATTRIBUTES
      },
    }
  if c.fid:
    first = groups < 2  # One sample per test scene.
    reference = judge.features(judge_state, image_lib.from_uint8(real[first]))
    fake = judge.features(judge_state, image_lib.from_uint8(samples[first]))
    record["fid_judge_features"] = metrics.fid_from_features(reference, fake)
  texts = [captions.decode(t) for t in tokens]
  return record, samples, texts


def score_speech(experiment: Experiment, state, workdir: str) -> tuple[dict, np.ndarray, list]:
  c = experiment.config
  network = features_lib.cnn_network(c.eval.cnn_workdir)  # Before minutes of sampling.
  held = experiment.held_out(c.prompts.num_prompts)
  samples = draw(
    experiment, state, experiment.keys.quality_samples, len(held["audio"]), held["audio"]
  )
  apply = jax.jit(network.apply)

  def run(images):
    parts = [
      apply(network.variables, image_lib.from_uint8(images[i : i + 250]))
      for i in range(0, len(images), 250)
    ]
    return [np.concatenate([np.asarray(p[j]) for p in parts]) for j in (0, 1)]

  fake_features, logits = run(samples)
  real_features, _ = run(image_lib.to_uint8(held["image"]))
  right = logits.argmax(-1) == held["label"]
  record = {
    "num_clips": len(right),
    "accuracy": float(right.mean()),
    "accuracy_by_voice": {
      int(v): float(right[held["voice"] == v].mean()) for v in np.unique(held["voice"])
    },
    "fid_cnn_features": metrics.fid_from_features(real_features, fake_features),
    "classifier": network.description,
  }
  texts = [f"digit {d} (voice {v})" for d, v in zip(held["label"], held["voice"], strict=True)]
  return record, samples, texts


def run(experiment: Experiment, restore: Restore) -> tuple[dict, str]:
  """Scores (JSON), samples (.npz) and a grid of the first prompts in workdir/prompts."""
  config = experiment.config
  family = experiment.family
  if not isinstance(family, Generates) or family.condition_kind not in ("text", "speech"):
    raise ConfigError(
      f"--mode=prompts scores text_to_image and speech_to_image runs, not {config.family}."
    )
  trained = restore()
  score = score_text if family.condition_kind == "text" else score_speech
  record, samples, texts = score(experiment, trained.state, trained.workdir)
  record.update(step=trained.step, checkpoint=trained.description)
  out = files.join(trained.workdir, "prompts")
  name = f"step{trained.step:07d}"
  if jax.process_index() == 0:
    files.save_npz(files.join(out, f"{name}.npz"), images=samples, prompts=np.array(texts))
    image_lib.save_png(files.join(out, f"{name}.png"), image_lib.make_grid(samples[:64], 8))
    files.write(files.join(out, f"{name}.txt"), "\n".join(texts[:64]) + "\n")
  logging.info("%s", json.dumps(record))
  return record, files.join(out, f"{name}.json")
