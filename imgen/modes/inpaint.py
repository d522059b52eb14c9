"""`--mode=inpaint`: complete held-out images under masks, and score the completions.

The first `inpaint.num_images` images of `data.eval_split` each get a mask
(`inpaint.mask`, 1 = known pixel), drawn on the host from `inpaint.mask_seed`
so every run and machine sees the same holes:
- `centre`: a square of half the side: a quarter of the image unknown;
- `boxes`: one to three rectangles, sides 1/8 to 1/3 of the image;
- `strokes`: one to three free-form brush strokes (random walks, 2-4 px wide);
- `blobs`: smoothed Gaussian noise thresholded to ~30% of the image.
The family (one that `Inpaints`) fills the holes with the sampler of the
`inpaint` group. Beside it, on the same images and masks, the classic
baseline: `skimage.restoration.inpaint_biharmonic`. Both are scored against
the truth: PSNR and SSIM inside the hole (images in [0, 1]; SSIM's map from
`skimage.metrics.structural_similarity`, averaged over the hole), and, with
the feature network of the metrics, the FID (and KID, IS, PR) of the
completed images against the reference split and the in-domain classifier's
accuracy on them (does the completion still read as the right digit?).
Grids of masked input / completion / biharmonic / truth, the completions in
an .npz and the scores as JSON go to `workdir/inpaint/`.
"""

import datetime

from absl import logging
import jax
import numpy as np
import scipy.ndimage
import skimage.metrics
import skimage.restoration

from imgen.core import files
from imgen.core import images as image_lib
from imgen.core.errors import ConfigError
from imgen.evaluation.evaluate import make_sampler
from imgen.evaluation.evaluate import over_rows
from imgen.evaluation.evaluate import sample_quality
from imgen.evaluation.experiment import GRID_COLUMNS
from imgen.evaluation.experiment import Experiment
from imgen.families import Inpaints
from imgen.modes.base import Restore

MASKS = ("centre", "boxes", "strokes", "blobs")


def _strokes(rng: np.random.Generator, size: int) -> np.ndarray:
  hole = np.zeros((size, size), bool)
  yy, xx = np.mgrid[:size, :size]
  for _ in range(rng.integers(1, 4)):
    y, x = rng.uniform(0, size, 2)
    radius = rng.uniform(1.0, 2.0)
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(rng.integers(4, 10)):
      angle += rng.normal(0, 0.8)
      length = rng.uniform(size / 10, size / 4)
      for f in np.linspace(0, 1, 12):
        cy, cx = y + f * length * np.sin(angle), x + f * length * np.cos(angle)
        hole |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
      y = np.clip(y + length * np.sin(angle), 0, size - 1)
      x = np.clip(x + length * np.cos(angle), 0, size - 1)
  return hole


def check_mask(kind: str) -> None:
  if kind not in MASKS:
    raise ConfigError(f"inpaint.mask {kind!r}; use one of {MASKS}.")


def make_masks(kind: str, num: int, size: int, seed: int) -> np.ndarray:
  """(num, size, size) float32 masks, 1 where the pixel is known."""
  check_mask(kind)
  rng = np.random.default_rng(seed)
  holes = np.zeros((num, size, size), bool)
  for i in range(num):
    if kind == "centre":
      side = size // 2
      start = (size - side) // 2
      holes[i, start : start + side, start : start + side] = True
    elif kind == "boxes":
      for _ in range(rng.integers(1, 4)):
        h, w = rng.integers(max(1, size // 8), size // 3 + 1, 2)
        y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        holes[i, y : y + h, x : x + w] = True
    elif kind == "strokes":
      holes[i] = _strokes(rng, size)
    else:  # blobs
      field = scipy.ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 10)
      holes[i] = field > np.quantile(field, 0.7)
  return (~holes).astype(np.float32)


def biharmonic(images: np.ndarray, known: np.ndarray) -> np.ndarray:
  """scikit-image's biharmonic inpainting of [-1, 1] images (N, H, W, C) under (N, H, W) masks."""
  out = np.empty_like(images)
  for i, (image, mask) in enumerate(zip(images, known, strict=True)):
    filled = skimage.restoration.inpaint_biharmonic(
      (image + 1.0) / 2.0, mask < 0.5, channel_axis=-1
    )
    out[i] = np.where(mask[..., None] > 0.5, image, 2.0 * np.clip(filled, 0.0, 1.0) - 1.0)
  return out


def hole_scores(truth: np.ndarray, completed: np.ndarray, known: np.ndarray) -> dict[str, float]:
  """Mean over images of PSNR (dB) and SSIM inside each image's hole, on [0, 1] pixels."""
  psnr, ssim = [], []
  for x, y, mask in zip((truth + 1) / 2, (completed + 1) / 2, known, strict=True):
    hole = mask < 0.5
    if not hole.any():
      continue
    mse = np.mean((x - y)[hole] ** 2)
    psnr.append(10 * np.log10(1.0 / max(mse, 1e-10)))
    _, ssim_map = skimage.metrics.structural_similarity(
      x, y, data_range=1.0, channel_axis=-1, full=True
    )
    ssim.append(float(np.mean(ssim_map.mean(axis=-1)[hole])))
  return {"hole_psnr": float(np.mean(psnr)), "hole_ssim": float(np.mean(ssim))}


def _complete(experiment: Experiment, state, images, known, labels) -> np.ndarray:
  """The family's completions of every image (`over_rows`)."""
  c, family = experiment.config, experiment.family
  fn = lambda s, k, x, m, y: family.inpaint(s, k, x, m, y, c.inpaint)
  key = jax.random.fold_in(experiment.keys.eval, 7)
  return over_rows(experiment, state, key, fn, images, known, labels)


def run(experiment: Experiment, restore: Restore) -> tuple[dict, str]:
  """Completes and scores held-out images (see the module docstring)."""
  config, workdir = experiment.config, restore.workdir
  family = experiment.family
  if not isinstance(family, Inpaints):
    raise ConfigError(f"The {config.family} family cannot inpaint; the diffusion family can.")
  c = config.inpaint
  if c.num_images < 1:
    raise ConfigError(f"inpaint.num_images={c.num_images}; it must be a positive integer.")
  check_mask(c.mask)  # Before the checkpoint is read.
  trained = restore()
  state, step, described = trained.state, trained.step, trained.description
  held = experiment.held_out(c.num_images)
  images = held["image"]
  num = len(images)
  masks = make_masks(c.mask, num, images.shape[1], c.mask_seed)
  known = np.broadcast_to(masks[..., None], images.shape).astype(np.float32)
  conditional = family.num_classes is not None
  labels = held["label"].astype(np.int32) if conditional else None
  logging.info("Inpainting %d images under %s masks with %s", num, c.mask, described)
  methods = {
    config.family: _complete(experiment, state, images, known, labels),
    "biharmonic": biharmonic(images, masks),
  }

  sampler = make_sampler(family, config.family, config.eval.batch_size, experiment.condition_rows)
  quality = sample_quality(experiment, sampler, required=False)
  reference = quality and quality.real(experiment.reference_split)
  true_labels = held.get("label")
  results = {}
  for method, completed in {**methods, "truth": images}.items():
    results[method] = {} if method == "truth" else hole_scores(images, completed, masks)
    if quality is not None:
      scores = quality.scores(
        quality.image_features(completed, true_labels), reference, experiment.keys.kid_subsets
      )
      if method == "truth":  # The real images are the reference's own: only their accuracy.
        scores = {k: v for k, v in scores.items() if k == "cond_accuracy"}
      results[method].update({k: v for k, v in scores.items() if k != "num_samples"})
  if not results["truth"]:
    del results["truth"]

  name = f"{trained.name}_{c.mask}"
  out = files.join(workdir, "inpaint")
  record = {
    "mode": "inpaint",
    "workdir": workdir,
    "candidates": described,
    "step": step,
    "mask": c.mask,
    "num_images": num,
    "hole_fraction": float(1.0 - masks.mean()),
    "inpaint": c.to_dict(),
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "results": results,
  }
  if quality is not None:
    record["feature_network"] = quality.network.description
  if jax.process_index() == 0:
    _write(out, name, images, masks, methods[config.family], methods["biharmonic"])
  for method, scores in results.items():
    logging.info("%s | %s", method, " | ".join(f"{k} {v:.4g}" for k, v in scores.items()))
  logging.info(
    "Wrote %s/%s.json, .npz and grids (rows: masked input, %s, biharmonic, truth)",
    out,
    name,
    config.family,
  )
  return record, files.join(out, f"{name}.json")


def _write(out, name, images, masks, completed, baseline) -> None:
  files.save_npz(
    files.join(out, f"{name}.npz"),
    images=image_lib.to_uint8(images),
    known=masks.astype(np.uint8),
    completed=image_lib.to_uint8(completed),
    biharmonic=image_lib.to_uint8(baseline),
  )
  masked = np.where(masks[..., None] > 0.5, images, 0.0)  # Holes in mid-grey.
  for g in range(min(4, -(-len(images) // GRID_COLUMNS))):
    rows = slice(GRID_COLUMNS * g, GRID_COLUMNS * (g + 1))
    block = np.concatenate([masked[rows], completed[rows], baseline[rows], images[rows]])
    grid = image_lib.make_grid(image_lib.to_uint8(block), len(images[rows]))
    image_lib.save_png(files.join(out, f"{name}_{g:03d}.png"), grid)
