"""The PyTorch peers are imgen's networks: as many parameters, layer for layer.

A ratio against a peer means something only if the peer is the same network,
so the peer benchmarks check the counts before they time anything and refuse a
peer that differs (`check_*` raise `PeerMismatch`). They need torch, which CI
does not install, so the check lives where the ratios are made.
"""

import jax

from benchmarks import torch_cnn
from benchmarks import torch_dcgan
from benchmarks import torch_reader
from benchmarks import torch_segunet
from benchmarks import torch_unet
from benchmarks import torch_vae
from imgen import families


class PeerMismatch(AssertionError):
  """A PyTorch peer whose parameter count differs from imgen's network."""


def _count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def _shapes(config, spec):
  return jax.eval_shape(
    families.FAMILIES[config.family](config, spec).init_state, jax.random.key(0)
  )


def check_family(torch, config, spec) -> int:
  """The GAN (G and D), VAE (its Gaussian log-scale aside, unused by the
  Bernoulli default), CNN, segmentation U-Net (with its deep-supervision heads)
  or judge's layout reader of `config` against its peer; returns the count."""
  family, m, size = config.family, config.model, config.model.image_size
  channels = spec.image.shape[-1]
  state = _shapes(config, spec)
  if family == "gan":
    ours = _count(state.g.params) + _count(state.d.params)
    g, d = torch_dcgan._build_models(torch, size, channels, m.g_width, m.d_width)
    theirs = sum(p.numel() for net in (g, d) for p in net.parameters())
  elif family == "vae":
    ours = _count({k: v for k, v in state.net.params.items() if k != "log_scale"})
    theirs = torch_vae.parameter_count(size, channels, m.latent_dim, m.width)
  elif family == "cnn":
    ours = _count(state.net.params)
    theirs = torch_cnn.parameter_count(size, channels, m.num_classes, m.width)
  elif family == "segment":
    ours = _count(state.net.params)
    unet = families.FAMILIES[family](config, spec).model  # Its heads as the family chose them.
    net = torch_segunet.build_unet(
      torch, channels, m.num_classes, unet.depth, unet.width, unet.mults, unet.aux_heads
    )
    theirs = sum(p.numel() for p in net.parameters())
  elif family == "judge":
    ours = _count(state.net.params)
    reader = families.FAMILIES[family](config, spec).model  # The reader as the family built it.
    theirs = torch_reader.parameter_count(**reader_shape(reader))
  else:
    raise ValueError(f"no peer for family {family!r}")
  if ours != theirs:
    raise PeerMismatch(
      f"{family} {size}x{size}: imgen has {ours:,} parameters, its peer {theirs:,}"
    )
  return ours


def reader_shape(reader) -> dict:
  """The judge family's LayoutReader as benchmarks/torch_reader.py's arguments."""
  return dict(
    backgrounds=reader.num_backgrounds,
    colours=reader.num_colours,
    sizes=reader.num_sizes,
    digits=reader.num_digits,
    width=reader.width,
    levels=reader.levels,
    hidden=reader.hidden,
    dropout=reader.dropout,
  )


def check_conditioned(torch, config, spec) -> int:
  """A text_to_image or speech_to_image config's encoder, null context and
  U-Net with cross-attention against benchmarks/torch_unet.py's peer."""
  params = _shapes(config, spec).net.params
  peer = torch_unet.build_conditioned(torch, config, spec.image.shape[-1])
  for name, module in {"encoder": peer.encoder, "unet": peer.unet}.items():
    ours, theirs = _count(params[name]), sum(p.numel() for p in module.parameters())
    if ours != theirs:
      raise PeerMismatch(
        f"{config.family} {name}: imgen has {ours:,} parameters, its peer {theirs:,}"
      )
  ours, theirs = _count(params), sum(p.numel() for p in peer.parameters())
  if ours != theirs:
    raise PeerMismatch(f"{config.family}: imgen has {ours:,} parameters, its peer {theirs:,}")
  return ours
