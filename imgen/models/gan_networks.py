"""The GAN family's networks by `model.name`: (generator, discriminator) made
from the config, the image spec, the class count and the compute dtype."""

import ml_collections

from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.models import dcgan
from imgen.models import resnet_gan
from imgen.models import sgan
from imgen.models.layers import IMPLEMENTATIONS as UPSAMPLE_IMPLEMENTATIONS


def _dcgan(config: ml_collections.ConfigDict, image, num_classes, dtype):
  m = config.model
  if m.upsample not in UPSAMPLE_IMPLEMENTATIONS:
    raise ConfigError(
      f"model.upsample {m.upsample!r} is unknown; known: {sorted(UPSAMPLE_IMPLEMENTATIONS)}."
    )
  dcgan.geometry(image.size)
  common = dict(
    image_size=image.size, axis_name=parallel.AXIS, dtype=dtype, num_classes=num_classes
  )
  g = dcgan.Generator(**common, width=m.g_width, channels=image.channels, upsample=m.upsample)
  d = dcgan.Discriminator(
    **common, width=m.d_width, downsample=m.upsample, norm=m.d_norm, spectral_norm=m.spectral_norm
  )
  return g, d, m.d_norm == "batch", m.latent_dim


def _sgan(config: ml_collections.ConfigDict, image, num_classes, dtype):
  m = config.model
  o = config.objective
  if num_classes is not None:
    raise ConfigError("The spatial GAN (model.name='sgan') is unconditional.")
  if "noise_channels" not in m or "padding" not in m:
    raise ConfigError("model.name='sgan' needs its fields: start from configs/texture.py.")
  if o.loss == "wgan_gp" or o.r1_gamma > 0 or o.topk_min < 1:
    raise ConfigError(
      "The spatial GAN's D scores a map of positions: gradient penalties and top-k, which "
      "treat one logit per image, are not supported with it."
    )
  if m.d_norm not in dcgan.D_NORMS:
    raise ConfigError(f"model.d_norm {m.d_norm!r}; use one of {dcgan.D_NORMS}.")
  g = sgan.Generator(
    image.size,
    image.channels,
    tuple(m.g_channels),
    m.noise_channels,
    m.padding,
    m.upsample,
    parallel.AXIS,
    dtype,
  )
  downsample = "transpose" if m.upsample == "transpose" else "subpixel"
  d = sgan.Discriminator(tuple(m.d_channels), m.d_norm, downsample, parallel.AXIS, dtype)
  return g, d, m.d_norm == "batch", g.latent_dim


def _resnet(config: ml_collections.ConfigDict, image, num_classes, dtype):
  m = config.model
  g_channels, d_channels = tuple(m.g_channels), tuple(m.d_channels)
  g = resnet_gan.Generator(
    image.size, image.channels, g_channels, num_classes, parallel.AXIS, dtype=dtype
  )
  d = resnet_gan.Discriminator(
    image.size,
    d_channels,
    tuple(bool(x) for x in m.d_downsample),
    num_classes,
    m.spectral_norm,
    m.d_pool,
    dtype=dtype,
  )
  return g, d, False, m.latent_dim


# model.name -> (G, D, D has BatchNorm, the size of G's flat noise).
NETWORKS = {"dcgan": _dcgan, "resnet": _resnet, "sgan": _sgan}
