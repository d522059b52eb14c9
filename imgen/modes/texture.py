"""`--mode=texture`: a texture by optimisation and by a trained spatial GAN, scored and timed.

For the exemplar of `texture.exemplar` (at `textures.EXEMPLAR_SCALE`, the
size the GAN's crops were cut at) it writes to `workdir/texture/<exemplar>/`:
- `optimised.png`: `texture.size` pixels a side by Gram matching
  (`imgen.methods.texture.synthesize`), with its time (compilation included);
- `generated.png`: the same size from the spatial GAN's checkpoint in one
  call, and `tiling.png`, its 2x2 tiling at full size;
- `grid.png`: exemplar | optimised | generated | the 2x2 tiling (at half size);
- `mapping.png`: the generated texture mapped into the `horse` silhouette and
  a real digit by each warp of `imgen.methods.texture_map` (identity, smooth,
  outline), shaded;
- `scores.json`: per image, the relative Gram distance and SIFID to the
  exemplar in the held-out random network (`texture.held_out`), and the seam
  ratio (also over `GENERATED` generated textures, and over as many real
  crops of the exemplar: the ratio of images that do not tile); beside them,
  floors and ceilings on the same scale (each half of the exemplar against
  the whole, and noise of the exemplar's mean and spread); and the
  generator's images/s at `texture.timed_sizes` (batch 1 and 8).
"""

import functools
import os
import time

from absl import logging
import jax
import numpy as np
from PIL import Image

from imgen.core import files
from imgen.core import images as image_lib
from imgen.core.errors import ConfigError
from imgen.data import embedded
from imgen.data import textures
from imgen.evaluation import features as features_lib
from imgen.evaluation.experiment import Experiment
from imgen.families.gan import GANFamily
from imgen.methods import texture
from imgen.methods import texture_map
from imgen.models import sgan
from imgen.modes.base import Restore

GENERATED = 16  # Generated textures the seam ratio is averaged over.


def exemplar_name(exemplar: str) -> str:
  return (
    exemplar if exemplar in textures.BUNDLED else os.path.splitext(os.path.basename(exemplar))[0]
  )


def load(exemplar: str) -> np.ndarray:
  """The exemplar as float32 (H, W, C) in [-1, 1], at the crops' scale."""
  return textures.load_exemplar(exemplar, textures.EXEMPLAR_SCALE).astype(np.float32) / 127.5 - 1


def texture_generator(experiment: Experiment, state):
  """`generate(key, n, side)`: n textures side x side (N, side, side, C) from the
  spatial GAN's state in one call (side rounded up to G's factor, then cropped:
  such a crop no longer tiles)."""
  family = experiment.family
  generator = family.generator if isinstance(family, GANFamily) else None
  if not isinstance(generator, sgan.Generator):
    raise ConfigError(
      f"--mode=texture needs a spatial GAN (family 'gan', model.name 'sgan'); this config "
      f"trains {experiment.config.family!r} {experiment.config.model.get('name')!r}."
    )
  if state.g.optimizer.uses_ema:
    raise ConfigError(
      "--mode=texture draws from G's trained weights; a spatial GAN trained with "
      "optim.g.ema_decay > 0 would need standing BatchNorm statistics for its EMA weights."
    )
  variables = state.g.variables()
  factor = 2**generator.num_up
  apply = jax.jit(lambda variables, z: generator.apply(variables, z, train=False))

  def generate(key: jax.Array, n: int, side: int) -> jax.Array:
    cells = -(-side // factor)
    z = jax.random.normal(key, (n, cells, cells, generator.noise_channels))
    return apply(variables, z)[:, :side, :side]

  return generate


def images_per_second(generate, side: int, batch: int, repeats: int) -> float:
  key = jax.random.key(0)
  generate(key, batch, side).block_until_ready()  # Compiles.
  start = time.perf_counter()
  for i in range(repeats):
    generate(jax.random.fold_in(key, i), batch, side).block_until_ready()
  return batch * repeats / (time.perf_counter() - start)


def _panel(image: np.ndarray, side: int) -> np.ndarray:
  pixels = image_lib.to_uint8(image)
  if pixels.shape[:2] != (side, side):
    resized = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).resize(
      (side, side), Image.Resampling.LANCZOS
    )
    pixels = np.asarray(resized).reshape(side, side, -1)
  return pixels


def _crops(exemplar: np.ndarray, seed: int, num: int = GENERATED) -> np.ndarray:
  """`num` random square crops of half the exemplar's side: real, not tileable."""
  rng = np.random.default_rng(seed)
  side = min(exemplar.shape[:2]) // 2
  corners = rng.integers(0, np.array(exemplar.shape[:2]) - side + 1, (num, 2))
  return np.stack([exemplar[i : i + side, j : j + side] for i, j in corners])


def shapes(side: int) -> dict[str, np.ndarray]:
  """Boolean (side, side) masks to map textures onto: scikit-image's horse
  silhouette and a real MNIST digit (embedded_mnist's first test 3), scaled to fit."""
  import skimage.data  # pylint: disable=g-import-not-at-top

  horse = np.where(np.asarray(skimage.data.horse()), 0, 255).astype(np.uint8)  # 255 on the horse.
  digits, labels = embedded.EmbeddedMnist.load()
  _, test = embedded.mnist_split(labels)
  three = digits[test[labels[test] == 3][0], ..., 0]
  out = {}
  for name, grey in (("horse", horse), ("digit", three)):
    h, w = grey.shape
    scale = side * 0.9 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BICUBIC)) > 127
    canvas = np.zeros((side, side), bool)
    top, left = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    out[name] = canvas
  return out


def mapping_grid(fill: np.ndarray, side: int, key: jax.Array) -> np.ndarray:
  """Rows per shape: the mask, then `fill` (H, W, C) mapped into it by each
  warp, shaded, over grey (one batched call per warp)."""
  masks = np.stack(list(shapes(side).values()))
  n, c = len(masks), fill.shape[-1]
  fills, backgrounds = np.repeat(fill[None], n, 0), np.full((n, side, side, c), 0.6, np.float32)
  mapped = [
    np.asarray(texture_map.map_texture(fills, masks, backgrounds, key, kind=kind))
    for kind in texture_map.WARPS
  ]
  shown = np.repeat(masks[..., None].astype(np.float32) * 2 - 1, c, -1)
  return np.stack([x[i] for i in range(n) for x in (shown, *mapped)])


def scores(held: texture.Features, image: np.ndarray, exemplar: np.ndarray) -> dict[str, float]:
  return {
    "gram_distance": texture.gram_distance(held, image, exemplar),
    "sifid": texture.sifid(held, image, exemplar),
    "seam_ratio": texture.seam_ratio(image),
  }


def run(experiment: Experiment, restore: Restore) -> tuple[dict, str]:
  """Runs `--mode=texture` (see the module docstring): the scores' record."""
  config = experiment.config
  t = config.texture
  exemplar = load(t.exemplar)
  channels = exemplar.shape[-1]
  load_cnn = functools.partial(features_lib.trained_cnn, config.eval.cnn_workdir)
  features = texture.make_features(t, channels, load_cnn)
  held = texture.RandomFeatures.create(t.held_out, channels, "texture.held_out")
  timed = texture.parse_sizes(t.timed_sizes, "texture.timed_sizes")
  family = experiment.family
  generator = family.generator if isinstance(family, GANFamily) else None
  factor = 2**generator.num_up if isinstance(generator, sgan.Generator) else 1
  if config.model.get("padding") == "wrap" and any(s % factor for s in (t.size, *timed)):
    raise ConfigError(
      f"texture.size={t.size} and texture.timed_sizes={t.timed_sizes!r} must be multiples of "
      f"{factor}: the generator's output tiles only at whole multiples of its upsampling."
    )
  trained = restore()
  generate = texture_generator(experiment, trained.state)
  key = jax.random.key(t.seed)

  start = time.perf_counter()
  optimised, history = texture.synthesize(features, exemplar, t.size, t, jax.random.fold_in(key, 0))
  optimise_seconds = time.perf_counter() - start
  generated = np.asarray(generate(jax.random.fold_in(key, 1), GENERATED, t.size))

  noise_rng = np.random.default_rng(t.seed)
  noise = exemplar.mean() + exemplar.std() * noise_rng.standard_normal((t.size, t.size, channels))
  half = exemplar.shape[1] // 2
  record = {
    "exemplar": t.exemplar,
    "exemplar_shape": list(exemplar.shape),
    "size": t.size,
    "generator": trained.description,
    "optimiser": {
      "network": t.network,
      "optimizer": t.optimizer,
      "scales": t.scales,
      "steps_per_scale": t.steps_per_scale,
      "periodic": t.periodic,
      "seconds": optimise_seconds,
      # Per scale, coarse to fine: the loss at its start and after its last step.
      "losses": [[float(h[0]), float(h[-1])] for h in history],
    },
    "held_out_network": t.held_out.to_dict(),
    "scores": {
      "optimised": scores(held, optimised, exemplar),
      "generated": scores(held, generated[0], exemplar),
      "exemplar_left_half": scores(held, exemplar[:, :half], exemplar),
      "exemplar_right_half": scores(held, exemplar[:, half:], exemplar),
      "noise": scores(held, noise.astype(np.float32), exemplar),
    },
    # Over all GENERATED images, interior pairs in the phase of G's 2**num_up upsampling:
    "generated_seam_ratio": texture.seam_ratio(generated, 2**experiment.family.generator.num_up),
    "exemplar_crops_seam_ratio": texture.seam_ratio(_crops(exemplar, t.seed)),
    "generator_images_per_second": {
      f"{side}x{side}_batch{batch}": images_per_second(generate, side, batch, t.repeats)
      for side in timed
      for batch in (1, 8)
    },
  }
  out = files.join(trained.workdir, "texture", exemplar_name(t.exemplar))
  if jax.process_index() == 0:
    tiling = texture.tile(generated[0])
    panels = [_panel(x, t.size) for x in (exemplar, optimised, generated[0], tiling)]
    image_lib.save_png(files.join(out, "grid.png"), image_lib.make_grid(np.stack(panels), 4))
    mapped = mapping_grid(generated[0], t.size, jax.random.fold_in(key, 2))
    grid = image_lib.make_grid(image_lib.to_uint8(mapped), 1 + len(texture_map.WARPS))
    image_lib.save_png(files.join(out, "mapping.png"), grid)
    for name, image in (("optimised", optimised), ("generated", generated[0]), ("tiling", tiling)):
      image_lib.save_png(files.join(out, f"{name}.png"), image_lib.to_uint8(image))
    files.save_npz(
      files.join(out, "textures.npz"),
      exemplar=image_lib.to_uint8(exemplar),
      optimised=image_lib.to_uint8(optimised),
      generated=image_lib.to_uint8(generated),
      losses=np.stack(history),  # (scales, steps + 1), coarse to fine.
    )
  s = record["scores"]
  logging.info(
    "Optimised in %.1fs: Gram %.4g, SIFID %.4g, seam %.2f | generated: Gram %.4g, SIFID %.4g, "
    "seam %.2f | exemplar halves: Gram %.4g / %.4g | noise: Gram %.4g | G images/s: %s",
    optimise_seconds,
    s["optimised"]["gram_distance"],
    s["optimised"]["sifid"],
    s["optimised"]["seam_ratio"],
    s["generated"]["gram_distance"],
    s["generated"]["sifid"],
    record["generated_seam_ratio"],
    s["exemplar_left_half"]["gram_distance"],
    s["exemplar_right_half"]["gram_distance"],
    s["noise"]["gram_distance"],
    {k: round(v, 1) for k, v in record["generator_images_per_second"].items()},
  )
  return record, files.join(out, "scores.json")
