"""Checks imgen's FID Inception-v3 against pytorch-fid's, on shared random weights.

The real FID weights cannot be downloaded here, so this gives both networks
the same random weights (through `torch_state_from_variables`, the layout the
real .pth file has) and compares their pool3 features and logits on the same
images, preprocessing included (pytorch-fid's resize to 299 and scaling).
A development check, not a test: it needs PyTorch, torchvision and
pytorch-fid, which imgen never depends on.

  pip install torch==2.13.0 && pip install --no-deps torchvision==0.28.0 pytorch-fid
  python benchmarks/inception_reference.py
"""

import os
import sys
import types

import flax
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from imgen.models import inception  # noqa: E402

# A CPU-only PyTorch cannot register torchvision's compiled operators (unused here).
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("unused"))
import pytorch_fid.inception as pytorch_fid_inception  # noqa: E402
import torch  # noqa: E402

BLOCKS = [
  "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
  "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
  "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
]  # fmt: skip


def random_variables(rng: np.random.Generator):
  """He-scaled kernels and BatchNorm statistics away from the identity."""
  out = {}
  for path, s in flax.traverse_util.flatten_dict(inception.variable_shapes()).items():
    if path[-1] in ("var", "scale"):
      out[path] = rng.uniform(0.5, 1.5, s.shape)
    elif path[-1] in ("mean", "bias"):
      out[path] = rng.normal(0, 0.1, s.shape)
    else:
      out[path] = rng.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))
  return flax.traverse_util.unflatten_dict({k: v.astype(np.float32) for k, v in out.items()})


def main():
  rng = np.random.default_rng(0)
  variables = random_variables(rng)
  state = {
    k: torch.from_numpy(np.ascontiguousarray(v))
    for k, v in inception.torch_state_from_variables(variables).items()
  }
  pytorch_fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state
  reference = pytorch_fid_inception.fid_inception_v3().eval()
  wrapper = pytorch_fid_inception.InceptionV3([3], resize_input=True, normalize_input=True).eval()
  ours = jax.jit(lambda v, x: inception.InceptionV3().apply(v, inception.preprocess(x)))

  for channels in (3, 1):
    images = rng.uniform(0, 1, (4, channels, 64, 64)).astype(np.float32)
    rgb = torch.from_numpy(np.repeat(images, 3 // channels, axis=1))
    with torch.no_grad():
      pool3 = wrapper(rgb)[0][:, :, 0, 0]
      x = torch.nn.functional.interpolate(rgb, (299, 299), mode="bilinear", align_corners=False)
      x = 2 * x - 1
      for name in BLOCKS:
        x = getattr(reference, name)(x)
      logits = x.mean((2, 3)) @ reference.fc.weight.T  # The IS code's logits: no bias.
    features, our_logits = ours(variables, jnp.asarray(images.transpose(0, 2, 3, 1) * 2 - 1))
    feature_diff = np.abs(np.asarray(features) - pool3.numpy()).max()
    logit_diff = np.abs(np.asarray(our_logits) - logits.numpy()).max()
    print(
      f"{channels}-channel 64x64 inputs: pool3 max |diff| {feature_diff:.2e} (values up to "
      f"{pool3.abs().max():.1f}); logits max |diff| {logit_diff:.2e} (up to "
      f"{logits.abs().max():.1f})"
    )
  count = sum(p.numel() for p in reference.parameters())
  print(f"pytorch-fid parameters: {count:,}")


if __name__ == "__main__":
  main()
