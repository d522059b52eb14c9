"""`--mode=compose`: scenes assembled from what the other families make, each with its layout.

A scene is a 64x64 background texture from a trained spatial GAN
(`compose.texture_workdirs`, one picked per scene), with one to four digits
drawn by a class-conditional generator (`compose.digits_workdir`, e.g. the
GAN of configs/gan_conditional.py) at random sizes and places, in random
colours that stand out from the background under them, as `digit_scenes`
draws them (`imgen.data.scenes`). A digit's matte is its generated intensity.
Every scene is made with each blend of `BLENDS`:
- `paste`: the hard matte (intensity > 1/2) replaces the background;
- `alpha`: the soft matte blends colour and background (digit_scenes' rule);
- `poisson`: gradient-domain blending (Perez, Gangnet & Blake 2003) of the
  coloured digit into the background over the ink dilated by two pixels,
  with their mixed gradients (Sec. 3.2: the stronger of the digit's and the
  background's at each pixel pair), solved exactly by conjugate gradients.
- `sdedit` (with `compose.scene_workdir`): the alpha blends noised to level
  `compose.sdedit_sigma` and denoised by a diffusion model of the real scenes
  (SDEdit, Meng et al. 2022; `configs/diffusion_scenes.py`), which redraws
  what the noise hides in the manner of real scenes and keeps the layout.
The layout (class, box, colour of each digit; the background's source) and
the mask (0, or 1 + class where the matte exceeds 1/2, later digits on top)
come with every scene.

Measured here (`scores.json`): the segmenter trained on real digit_scenes
(`compose.segment_workdir`) segments each blend's scenes, scored against the
layouts' masks (mIoU and per-class IoU, beside its score on the real test
split), and the FID of each blend's scenes against the real test scenes in
the segmenter's features (the spatial means of its U-Net blocks' outputs),
beside the FID of real train scenes against the same reference.
`retextured.png` maps generated textures into the digits the segmenter finds
in real test scenes (`imgen.methods.texture_map`).
"""

import dataclasses
import functools

from absl import logging
import jax
import jax.numpy as jnp
from jax.scipy.sparse import linalg as sparse_linalg
import ml_collections
import numpy as np

from imgen.core import files
from imgen.core import images as image_lib
from imgen.core.errors import ConfigError
from imgen.data import scenes
from imgen.evaluation.evaluate import draw
from imgen.evaluation.evaluate import over_rows
from imgen.evaluation.experiment import Experiment
from imgen.families import Segments
from imgen.methods import masks as mask_lib
from imgen.methods import metrics
from imgen.methods import samplers
from imgen.methods import texture_map

BLENDS = ("paste", "alpha", "poisson")
SIZE = scenes.SIZE


def _shift(x: jax.Array, axis: int, step: int) -> jax.Array:
  """y[p] = x[p + step] along `axis`, 0 past the edge."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, 1) if step > 0 else (1, 0)
  window = [slice(None)] * x.ndim
  window[axis] = slice(1, None) if step > 0 else slice(None, -1)
  return jnp.pad(x, pad)[tuple(window)]


_STEPS = ((0, 1), (0, -1), (1, 1), (1, -1))  # The four neighbours: (axis, step).


@functools.partial(jax.jit, static_argnames=("mixed",))
def poisson_blend(
  target: jax.Array, source: jax.Array, region: jax.Array, mixed: bool = True, tol: float = 1e-6
) -> jax.Array:
  """`target` (H, W, C) with the pixels of boolean `region` (H, W) solving
  Perez et al.'s discrete Poisson equation (their Eq. 7): for p in the region,
  |N_p| f_p - sum_{q in N_p, in region} f_q = sum_{q in N_p, outside} target_q + sum_q v_pq,
  N_p the 4-neighbours inside the image, v_pq = source_p - source_q (or, with
  `mixed`, whichever of that and target_p - target_q is larger in magnitude).
  Solved by conjugate gradients; outside the region the target is kept."""
  r = region[..., None].astype(target.dtype)
  inside = jnp.ones_like(r)
  count, rhs = 0.0, 0.0
  for axis, step in _STEPS:
    valid, tq, rq = (_shift(x, axis, step) for x in (inside, target, r))
    v = source - _shift(source, axis, step)
    if mixed:
      v = jnp.where(jnp.abs(target - tq) > jnp.abs(v), target - tq, v)
    count = count + valid
    rhs = rhs + valid * (v + (1.0 - rq) * tq)
  rhs = r * rhs

  def operator(x):
    return r * (count * x - sum(_shift(x, axis, step) for axis, step in _STEPS))

  solution, _ = sparse_linalg.cg(operator, rhs, x0=r * target, tol=tol, maxiter=2000)
  return jnp.where(r > 0, solution, target)


@dataclasses.dataclass
class Layout:
  """Every scene's parts, as digit_scenes stores them (-1 / 0 where fewer than four digits)."""

  background: np.ndarray  # (N,) index into compose.texture_workdirs.
  digits: np.ndarray  # (N, 4) classes.
  boxes: np.ndarray  # (N, 4, 4) top, left, height, width.
  colours: np.ndarray  # (N, 4, 3) uint8.


def _classes(spec: str) -> tuple[int, ...] | None:
  if not spec.strip():
    return None
  try:
    classes = tuple(int(c) for c in spec.split(","))
  except ValueError:
    classes = (-1,)
  if not 1 <= len(classes) <= scenes.MAX_DIGITS or not all(0 <= c < 10 for c in classes):
    raise ConfigError(
      f"compose.classes={spec!r}; use 1 to {scenes.MAX_DIGITS} comma-separated digits, e.g. '3,7'."
    )
  return classes


def draw_layout(rng: np.random.Generator, n: int, num_backgrounds: int, classes) -> Layout:
  """Backgrounds, classes and boxes of `n` scenes (colours are chosen when drawn)."""
  layout = Layout(
    rng.integers(num_backgrounds, size=n).astype(np.int32),
    np.full((n, scenes.MAX_DIGITS), -1, np.int32),
    np.zeros((n, scenes.MAX_DIGITS, 4), np.int32),
    np.zeros((n, scenes.MAX_DIGITS, 3), np.uint8),
  )
  for i in range(n):
    chosen = classes or rng.integers(0, 10, int(rng.integers(1, scenes.MAX_DIGITS + 1)))
    for k, c in enumerate(chosen):
      side = int(rng.integers(scenes.DIGIT_SIDES[0], scenes.DIGIT_SIDES[1] + 1))
      top, left = (int(v) for v in rng.integers(0, SIZE - side + 1, 2))
      layout.digits[i, k], layout.boxes[i, k] = c, (top, left, side, side)
  return layout


def _resize(alpha: np.ndarray, side: int) -> np.ndarray:
  """A [0, 1] matte (28, 28) resized by Pillow's bilinear filter, as digit_scenes does."""
  pixels = np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8)
  return scenes.resize(pixels, side, side) / 255.0


def render(
  backgrounds: np.ndarray, mattes: np.ndarray, layout: Layout, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Scenes (N, 64, 64, 3) uint8 by each blend, and their masks (N, 64, 64).

  `backgrounds` (N, 64, 64, 3) uint8; `mattes` (N, 4, S, S) in [0, 1], the
  generated digits of the layout's slots. Fills `layout.colours`.
  """
  n = len(backgrounds)
  out = {b: backgrounds.astype(np.float32).copy() for b in BLENDS}
  masks = np.zeros((n, SIZE, SIZE), np.uint8)
  for i in range(n):
    for k in np.flatnonzero(layout.digits[i] >= 0):
      top, left, side, _ = layout.boxes[i, k]
      alpha = _resize(mattes[i, k], side)[..., None]
      ink = alpha[..., 0] > 0.5
      window = (slice(top, top + side), slice(left, left + side))
      under = out["alpha"][i][window]
      lum = scenes.luminance(under[ink]).mean() if ink.any() else 128.0
      colour = scenes.contrasting_colour(rng, float(lum)).astype(np.float32)
      layout.colours[i, k] = colour
      out["paste"][i][window] = np.where(ink[..., None], colour, out["paste"][i][window])
      out["alpha"][i][window] = under * (1 - alpha) + colour * alpha
      masks[i][window][ink] = 1 + layout.digits[i, k]
      full = np.zeros((SIZE, SIZE, 1), np.float32)
      full[window] = alpha
      region = _dilate(full[..., 0] > 0.5, 2)
      source = out["poisson"][i].mean(axis=(0, 1)) * (1 - full) + colour * full
      blended = poisson_blend(
        jnp.asarray(out["poisson"][i] / 127.5 - 1), jnp.asarray(source / 127.5 - 1), region
      )
      out["poisson"][i] = (np.asarray(blended) + 1) * 127.5
  scenes_by_blend = {b: np.clip(np.rint(x), 0, 255).astype(np.uint8) for b, x in out.items()}
  return scenes_by_blend, masks


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
  out = mask.copy()
  for _ in range(pixels):
    grown = out.copy()
    grown[1:] |= out[:-1]
    grown[:-1] |= out[1:]
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    out = grown
  return out


def _segmentation_scores(experiment, state, images: np.ndarray, masks: np.ndarray) -> dict:
  family = experiment.family
  k = family.num_mask_classes
  predicted = np.concatenate(
    [
      family.segment(state, image_lib.from_uint8(images[i : i + 250]))
      for i in range(0, len(images), 250)
    ]
  )
  confusion = mask_lib.confusion(
    jnp.asarray(masks), jnp.asarray(predicted), k, jnp.ones(masks.shape)
  )
  return mask_lib.scores(np.asarray(confusion), family.class_names), predicted


def compose_scenes(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs `--mode=compose` (see the module docstring); returns the scores' record."""
  c = config.compose
  classes = _classes(c.classes)
  texture_dirs = [d for d in c.texture_workdirs.split(",") if d.strip()]
  if not texture_dirs:
    raise ConfigError("compose.texture_workdirs is empty: name trained configs/texture.py runs.")
  scene_model = _scene_model(c)
  rng = np.random.default_rng(c.seed)
  key = jax.random.key(c.seed)
  layout = draw_layout(rng, c.num_scenes, len(texture_dirs), classes)

  backgrounds = np.zeros((c.num_scenes, SIZE, SIZE, 3), np.uint8)
  for j, folder in enumerate(texture_dirs):
    experiment, state, _ = Experiment.of_run(folder, "compose.texture_workdirs")
    if experiment.spec.image.size != SIZE or experiment.family.num_classes is not None:
      raise ConfigError(
        f"compose.texture_workdirs: {folder} must hold an unconditional generator of {SIZE}x{SIZE} "
        "textures (configs/texture.py)."
      )
    rows = np.flatnonzero(layout.background == j)
    images = draw(experiment, state, jax.random.fold_in(key, j), len(rows), None)
    backgrounds[rows] = np.repeat(images, 3, -1) if images.shape[-1] == 1 else images

  experiment, state, _ = Experiment.of_run(c.digits_workdir, "compose.digits_workdir")
  if experiment.family.num_classes != 10:
    raise ConfigError(
      f"compose.digits_workdir={c.digits_workdir} must hold a class-conditional generator of "
      "the ten digits (configs/gan_conditional.py)."
    )
  slots = np.argwhere(layout.digits >= 0)
  drawn = draw(
    experiment, state, jax.random.fold_in(key, 100), len(slots), layout.digits[tuple(slots.T)]
  )
  side = experiment.spec.image.size
  mattes = np.zeros((c.num_scenes, scenes.MAX_DIGITS, side, side), np.float32)
  mattes[tuple(slots.T)] = drawn[..., 0].astype(np.float32) / 255.0
  composed, masks = render(backgrounds, mattes, layout, rng)
  if scene_model is not None:
    key_edit = jax.random.fold_in(key, 200)
    composed["sdedit"] = sdedit(scene_model, c.sdedit_sigma, composed["alpha"], key_edit)

  record = {"mode": "compose", "num_scenes": c.num_scenes, "classes": c.classes or "random"}
  segment_experiment, segment_state, _ = Experiment.of_run(
    c.segment_workdir, "compose.segment_workdir"
  )
  judge = segment_experiment.family
  if (
    not isinstance(judge, Segments)
    or judge.num_mask_classes != 11
    or judge.mask_field not in segment_experiment.spec.fields
  ):
    raise ConfigError(
      f"compose.segment_workdir={c.segment_workdir} must hold a segmenter of digit_scenes' 11 "
      "classes (configs/segment.py)."
    )
  real = {
    split: _real_scenes(segment_experiment, split, c.num_scenes) for split in ("train", "test")
  }
  reference = judge.features(segment_state, image_lib.from_uint8(real["test"][0]))
  fid = lambda images: metrics.fid_from_features(
    reference, judge.features(segment_state, image_lib.from_uint8(images))
  )
  results, predictions = {}, {}
  real_scores, real_predicted = _segmentation_scores(
    segment_experiment, segment_state, *real["test"]
  )
  results["real_test"] = {"miou": real_scores["miou"], "fid": 0.0}
  results["real_train"] = {"fid": fid(real["train"][0])}
  for blend, images in composed.items():
    s, predictions[blend] = _segmentation_scores(segment_experiment, segment_state, images, masks)
    results[blend] = {"miou": s["miou"], "pixel_accuracy": s["pixel_accuracy"], "fid": fid(images)}
    results[blend]["iou"] = {n: s[f"iou/{n}"] for n in segment_experiment.family.class_names}
  record["results"] = results
  out = files.join(workdir, "compose")
  _write(out, record, composed, masks, predictions, layout)
  shown = min(8, c.num_scenes, len(real["test"][0]))
  retexture(real["test"][0][:shown], real_predicted[:shown], backgrounds[:shown], out)
  logging.info(
    "Composed %d scenes | %s",
    c.num_scenes,
    " | ".join(
      f"{b}: " + " ".join(f"{k} {r[k]:.3f}" for k in ("miou", "fid") if k in r)
      for b, r in results.items()
    ),
  )
  return record


def _scene_model(c: ml_collections.ConfigDict):
  """(experiment, state) of compose.scene_workdir, checked with compose.sdedit_sigma before
  any scene is drawn; None without one."""
  if not c.get("scene_workdir", "").strip():
    return None
  experiment, state, _ = Experiment.of_run(c.scene_workdir, "compose.scene_workdir")
  family = experiment.family
  if (
    not hasattr(family, "edit")
    or family.conditional
    or tuple(experiment.spec.image.shape) != (SIZE, SIZE, 3)
  ):
    raise ConfigError(
      f"compose.scene_workdir={c.scene_workdir} must hold an unconditional diffusion model of "
      f"{SIZE}x{SIZE} colour scenes (configs/diffusion_scenes.py)."
    )
  sigmas = samplers.group_sigmas(family.sample_config, family.objective)
  samplers.levels_below(sigmas, c.sdedit_sigma, "compose.sdedit_sigma")
  return experiment, state


def sdedit(scene_model, sigma: float, images: np.ndarray, key: jax.Array) -> np.ndarray:
  """`images` (N, 64, 64, 3) uint8 edited by the scene model (`_scene_model`) from level `sigma`."""
  experiment, state = scene_model
  fn = lambda s, k, x: experiment.family.edit(s, k, x, sigma)
  return image_lib.to_uint8(over_rows(experiment, state, key, fn, image_lib.from_uint8(images)))


def _real_scenes(experiment: Experiment, split: str, num: int) -> tuple[np.ndarray, np.ndarray]:
  """The first `num` scenes (uint8) and masks of a digit_scenes split."""
  source = experiment.builder.as_data_source(split=split)
  examples = source.__getitems__(list(range(min(num, len(source)))))
  return np.stack([e["image"] for e in examples]), np.stack([e["mask"] for e in examples])


def retexture(images: np.ndarray, predicted: np.ndarray, fills: np.ndarray, out: str) -> None:
  """Texture mapping into the segmenter's masks: real scenes whose `predicted`
  digits are filled with generated textures (smooth warp, shaded); rows of
  scenes, predicted masks and the retextured scenes, in retextured.png."""
  x = image_lib.from_uint8(images)
  mapped = texture_map.map_texture(
    image_lib.from_uint8(fills), predicted > 0, x, jax.random.key(0), kind="smooth", amplitude=2.0
  )
  rows = np.concatenate([x, mask_lib.colour(predicted), np.asarray(mapped)])
  if jax.process_index() == 0:
    grid = image_lib.make_grid(image_lib.to_uint8(rows), len(images))
    image_lib.save_png(files.join(out, "retextured.png"), grid)


def _write(out, record, composed, masks, predictions, layout: Layout) -> None:
  if jax.process_index() != 0:
    return
  files.write_json(files.join(out, "scores.json"), record)
  files.save_npz(
    files.join(out, "scenes.npz"),
    masks=masks,
    **{f"images_{b}": x for b, x in composed.items()},
    **{f"predicted_{b}": x for b, x in predictions.items()},
    **dataclasses.asdict(layout),
  )
  rows = [image_lib.from_uint8(x[:8]) for x in composed.values()]
  rows.append(mask_lib.colour(masks[:8]))
  rows.append(mask_lib.colour(predictions["poisson"][:8]))
  grid = image_lib.make_grid(image_lib.to_uint8(np.concatenate(rows)), 8)
  image_lib.save_png(files.join(out, "blends.png"), grid)
  for b in composed:
    grid = image_lib.make_grid(composed[b][:64], 8)
    image_lib.save_png(files.join(out, f"scenes_{b}.png"), grid)
  logging.info("Wrote %s", out)
