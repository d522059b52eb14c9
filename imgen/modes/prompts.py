"""`--mode=prompts`: how well a text- or speech-conditioned model follows
held-out prompts, measured by trained networks rather than by eye.

Text (`text_to_image`): one sample per test scene of `scene_captions`, from
its first caption, in three groups: seen combinations in training phrasings,
held-out combinations (scenes with a digit-colour-position triple no
training caption has), and the seen scenes again in held-out phrasings. The
segmenter of `prompts.segmenter_workdir` (configs/segment.py trained at the
model's size) labels every sample. Each connected part of one class
(8-connected; parts of a class within MERGE_GAP of each other merged, a
stroke cut by another digit; at least MIN_AREA pixels, both in pixels of the
64x64 scenes the captions speak of) is one digit: its colour the name of the
median of the third of its pixels farthest from the background around it,
its position the centre of its box, which may lie up to POSITION_MARGIN
outside the asked cell of the 3x3 grid ("rough positions"). A sample's layout
is right when the digits found match the digits asked for one to one, in
class, colour and position (what a prompt leaves out is not checked; sizes
are not checked). The same measurement of the real test scenes is the
ceiling the instrument allows. FID against the real test scenes uses the
segmenter's features (the spatial means of its blocks' outputs, as
`imgen.modes.compose`).

Speech (`speech_to_image`): one sample per test clip of `spoken_mnist` (held-
out voices), classified by the in-domain CNN of `eval.cnn_workdir`:
accuracy against the spoken digit, overall and per voice; FID in the CNN's
features against the real test digits.
"""

import dataclasses
import itertools
import json

from absl import logging
import jax
import numpy as np
import scipy.ndimage

from imgen.core import files
from imgen.core import images as image_lib
from imgen.core.errors import ConfigError
from imgen.data import captions
from imgen.evaluation import features as features_lib
from imgen.evaluation.evaluate import draw
from imgen.evaluation.experiment import Experiment
from imgen.families import Generates
from imgen.families import Segments
from imgen.methods import metrics
from imgen.modes.base import Restore

MIN_AREA = 24  # Pixels (of a 64x64 scene) of the smallest part counted as a digit.
MERGE_GAP = 3  # Pixels (of 64) between parts of one class that make one digit.
POSITION_MARGIN = 4  # Pixels (of 64) a digit's centre may lie outside its cell: "rough".
GROUPS = ("seen", "held_out_combinations", "held_out_phrasings")


@dataclasses.dataclass(frozen=True)
class Found:
  """A digit found in a segmentation: class, colour name, centre (row, col) in 64x64 pixels."""

  digit: int
  colour: str
  centre: tuple[float, float]


def _parts(mask: np.ndarray, k: int) -> list[np.ndarray]:
  """Boolean maps of class k's connected parts (8-connected), merged when
  their boxes lie within MERGE_GAP of each other (a stroke cut by another digit)."""
  scale = 64 / mask.shape[0]
  labels, n = scipy.ndimage.label(mask == k, structure=np.ones((3, 3)))
  parts = [labels == i for i in range(1, n + 1)]
  boxes = [np.array(scipy.ndimage.find_objects(p.astype(int))[0]) for p in parts]
  merged = True
  while merged and len(parts) > 1:
    merged = False
    for i, j in itertools.combinations(range(len(parts)), 2):
      gap = max(
        max(boxes[i][a].start, boxes[j][a].start) - min(boxes[i][a].stop, boxes[j][a].stop)
        for a in (0, 1)
      )
      if gap * scale <= MERGE_GAP:
        parts[i] = parts[i] | parts.pop(j)
        boxes[i] = np.array(scipy.ndimage.find_objects(parts[i].astype(int))[0])
        boxes.pop(j)
        merged = True
        break
  return [p for p in parts if p.sum() * scale**2 >= MIN_AREA]


def _ink_colour(image: np.ndarray, inside: np.ndarray, foreground: np.ndarray) -> str:
  """The colour name of a digit's most saturated ink: the median of the third
  of its pixels farthest from the background just around it (edge pixels
  are blends of ink and background)."""
  ring = scipy.ndimage.binary_dilation(inside, iterations=2) & ~foreground
  pixels = image[inside].astype(np.float64)
  background = np.median(image[ring] if ring.any() else image.reshape(-1, 3), axis=0)
  far = np.argsort(-np.linalg.norm(pixels - background, axis=-1))[: max(1, len(pixels) // 3)]
  return captions.colour_name(np.median(pixels[far], axis=0))


def found_digits(mask: np.ndarray, image: np.ndarray) -> list[Found]:
  """The digits a segmentation `mask` (H, W; 0 background, 1 + class) shows
  in the uint8 `image` (H, W, 3)."""
  scale = 64 / mask.shape[0]
  digits = []
  for k in range(1, int(mask.max(initial=0)) + 1):
    for inside in _parts(mask, k):
      ys, xs = np.nonzero(inside)
      centre = ((ys.min() + ys.max() + 1) / 2 * scale, (xs.min() + xs.max() + 1) / 2 * scale)
      digits.append(Found(k - 1, _ink_colour(image, inside, mask > 0), centre))
  return digits


def _in_cell(position: str, centre: tuple[float, float]) -> bool:
  row, col = next(
    (r, c)
    for r, cells in enumerate(captions.POSITIONS)
    for c, name in enumerate(cells)
    if name == position
  )
  cell = 64 / 3
  return all(
    k * cell - POSITION_MARGIN <= x < (k + 1) * cell + POSITION_MARGIN
    for k, x in ((row, centre[0]), (col, centre[1]))
  )


def _agrees(asked: captions.Digit, found: Found, attributes) -> bool:
  checks = {
    "digit": lambda: asked.digit is None or asked.digit == found.digit,
    "colour": lambda: asked.colour is None or asked.colour == found.colour,
    "position": lambda: asked.position is None or _in_cell(asked.position, found.centre),
  }
  return all(checks[a]() for a in attributes)


def layout_matches(asked, found, attributes=("digit", "colour", "position")) -> bool:
  """Whether the found digits match the asked ones one to one on `attributes`."""
  if len(asked) != len(found):
    return False
  return any(
    all(_agrees(a, f, attributes) for a, f in zip(asked, order, strict=True))
    for order in itertools.permutations(found)
  )


def _layout_scores(asked: list, found: list) -> dict[str, float]:
  """Shares of samples whose layout is right, and of its weaker parts."""
  checks = {
    "layout_accuracy": ("digit", "colour", "position"),
    "digits_and_colours": ("digit", "colour"),
    "digits_and_positions": ("digit", "position"),
    "digits": ("digit",),
    "count": (),
  }
  return {
    name: float(np.mean([layout_matches(a, f, attrs) for a, f in zip(asked, found, strict=True)]))
    for name, attrs in checks.items()
  }


def _segment(experiment: Experiment, state, images: np.ndarray) -> np.ndarray:
  family = experiment.family
  return np.concatenate(
    [
      np.asarray(family.segment(state, image_lib.from_uint8(images[i : i + 250])))
      for i in range(0, len(images), 250)
    ]
  )


def _text_prompts(held: dict) -> tuple[np.ndarray, np.ndarray]:
  """(token rows, group index) of the held-out scenes' prompts."""
  novel = held["held_out"] == 1
  rows = [
    held["captions"][~novel, 0],
    held["captions"][novel, 0],
    held["novel_captions"][~novel, 0],
  ]
  if not np.any(rows[2]):  # A train split: no held-out phrasings.
    raise ConfigError("--mode=prompts scores the test split of scene_captions (data.eval_split).")
  groups = np.concatenate([np.full(len(r), g) for g, r in enumerate(rows)])
  return np.concatenate(rows), groups


def score_text(experiment: Experiment, state, workdir: str) -> tuple[dict, np.ndarray, list]:
  c = experiment.config.prompts
  held = experiment.held_out(c.num_prompts)
  tokens, groups = _text_prompts(held)
  size = experiment.spec.size
  train_it = (
    f"train it: python main.py --config=configs/segment.py --workdir={c.segmenter_workdir} "
    f"--config.model.image_size={size} --config.data.resize=resize"
  )
  judge, judge_state, _ = Experiment.of_run(
    c.segmenter_workdir, "prompts.segmenter_workdir", train_it
  )
  if (
    judge.spec.size != size
    or not isinstance(judge.family, Segments)
    or judge.family.num_mask_classes != 11
  ):
    raise ConfigError(
      f"prompts.segmenter_workdir={c.segmenter_workdir} must hold a segmenter of "
      f"digit_scenes' 11 classes at {size}x{size}; {train_it}"
    )
  logging.info("Drawing %d samples, one per held-out prompt", len(tokens))
  samples = draw(experiment, state, experiment.keys.quality_samples, len(tokens), tokens)
  novel = held["held_out"] == 1  # The real scene of each prompt, in the order of _text_prompts.
  real = image_lib.to_uint8(np.concatenate([held["image"][i] for i in (~novel, novel, ~novel)]))
  asked = [captions.parse(captions.decode(t)).digits for t in tokens]
  read = lambda images: list(map(found_digits, _segment(judge, judge_state, images), images))
  found, found_real = read(samples), read(real)
  record = {}
  for g, name in enumerate(GROUPS):
    rows = np.flatnonzero(groups == g)
    if not len(rows):
      continue
    record[name] = {
      "num_prompts": len(rows),
      "samples": _layout_scores([asked[i] for i in rows], [found[i] for i in rows]),
      "real_scenes": _layout_scores([asked[i] for i in rows], [found_real[i] for i in rows]),
    }
  if c.fid:
    real_scenes = image_lib.from_uint8(image_lib.to_uint8(held["image"]))  # As samples are.
    reference = judge.family.features(judge_state, real_scenes)
    first = groups < 2  # One sample per test scene.
    fake = judge.family.features(judge_state, image_lib.from_uint8(samples[first]))
    record["fid_segmenter_features"] = metrics.fid_from_features(reference, fake)
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
