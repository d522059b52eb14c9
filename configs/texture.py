"""Texture synthesis from one exemplar: a spatial GAN trained on its crops,
and Gatys-style optimisation, compared in `--mode=texture`.

  python main.py --config=configs/texture.py --workdir=runs/texture_brick
  python main.py --config=configs/texture.py --workdir=runs/texture_grass \\
    --config.texture.exemplar=grass                # or gravel, or an image file
  python main.py --config=configs/texture.py --workdir=runs/texture_brick --mode=texture
  python main.py --config=configs/texture.py:smoke   # seconds, for tests

Training (`--mode=train`) is the feed-forward synthesiser: the spatial GAN of
Jetchev et al. 2016 (`imgen/models/sgan.py`), generator on a torus
(`model.padding='wrap'`: its outputs tile without a seam), trained by the
shared GAN trainer on `texture_crops/<exemplar>`, 4,096 random 64x64 crops of
the exemplar at half size (256x256 for the bundled 512x512 textures).
`--mode=texture` then synthesises `texture.size` pixels a side by optimising
the pixels to match the exemplar's Gram matrices in a random multi-scale
network (Gatys et al. 2015 with Ustyuzhaninov et al. 2017's random filters),
generates the same size with the trained generator, times the generator at
`texture.timed_sizes`, scores everything in a second random network neither
method saw, and writes the grid (exemplar, optimised, generated, 2x2 tiling).
`--config.eval.checkpoint_step=0` there runs the optimiser without a trained
generator.
"""

import ml_collections

from configs import common
from configs import gan


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = gan.get_config()
  config.modes = "train,eval,sample,texture"
  config.texture = texture_group()
  config.data = common.data("texture_crops/" + config.texture.get_ref("exemplar"))

  m = config.model
  m.name = "sgan"
  m.image_size = 64  # The crops' size: D's view, and G's output in training.
  m.noise_channels = 16  # Per position of G's noise, 1/16 of the image's side.
  m.padding = "wrap"  # G on a torus: tileable at any size. 'zero': the paper's.
  m.upsample = "nearest"  # Repeat + 3x3 conv; 'subpixel' (4x4 transposed) left a grain.
  m.g_channels = (128, 64, 32)  # G's widths after each upsampling but the last.
  m.d_channels = (32, 64, 128)  # D's widths after each downsampling: an 8x8 map of logits,
  # each seeing 22 px (4 layers and a 4x4 map let D win by step 1,500 on brick).
  m.d_norm = "batch"

  config.optim.g = common.optimizer(2e-4, b1=0.5)
  config.optim.d = common.optimizer(2e-4, b1=0.5)
  config.train = common.train(num_steps=3000, checkpoint_every=500, batch_size=32)
  config.eval = common.evaluation(every_steps=500, sample_every=500, batch_size=64, metrics="")
  config.eval.grid_samples = 16

  if arg == "smoke":
    common.shrink_for_smoke(config)
    m.g_channels, m.d_channels, m.noise_channels = (8, 8, 8), (8, 8, 8), 4
    config.eval.batch_size = 8
    t = config.texture
    t.update(size=64, timed_sizes="64", steps_per_scale=5, scales=2, repeats=1)
    t.features.update(channels=8, levels=2)
    t.held_out.update(channels=8, levels=2)
  elif arg:
    raise common.unknown_variant(arg, "configs/texture.py")
  return config


def random_features(seed: int, kernel_sizes: str, channels: int, levels: int):
  """A random multi-scale feature network (`imgen.methods.texture.RandomFeatures`)."""
  return ml_collections.ConfigDict(
    dict(seed=seed, kernel_sizes=kernel_sizes, channels=channels, levels=levels)
  )


def texture_group() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      exemplar="brick",  # 'brick', 'grass', 'gravel' (skimage.data) or an image file.
      size=256,  # Side of the synthesised textures.
      # Optimisation (Gatys et al. 2015): L-BFGS or Adam on the pixels, coarse
      # to fine over `scales` (each half the side of the next).
      optimizer="lbfgs",  # Or 'adam'.
      learning_rate=0.02,  # adam only.
      steps_per_scale=50,
      scales=3,
      periodic=True,  # Optimise the image as a torus: no free edges, and it tiles.
      network="random",  # Or 'cnn': the trained classifier in eval.cnn_workdir.
      features=random_features(seed=1, kernel_sizes="3,5,7,11", channels=64, levels=4),
      # Held-out statistics: a second random network with other filters.
      held_out=random_features(seed=2, kernel_sizes="5,9", channels=96, levels=4),
      timed_sizes="256,512",  # Generator images/s at these sides.
      repeats=5,  # Timed calls per size.
      seed=0,
    )
  )
