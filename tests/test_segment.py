"""Segmentation: the scene datasets, the U-Net, its losses and scores, and
--mode=segment. Training, resume and 1-vs-4 devices run for every family in
test_train.py and test_faults.py."""

import json
import os

import flax.linen as nn
from helpers import final_state
from helpers import nothing_compiled
from helpers import smoke_config
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from imgen import data
from imgen import modes
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.errors import DataError
from imgen.data import embedded
from imgen.data import pipeline
from imgen.data import scenes
from imgen.data.spec import MASK
from imgen.data.spec import DataSpec
from imgen.data.spec import Field
from imgen.evaluation.experiment import Experiment
from imgen.families.segment import SegmentationFamily
from imgen.families.segment import cell_cross_entropy
from imgen.families.segment import pixel_cross_entropy
from imgen.families.segment import soft_dice
from imgen.methods import elastic
from imgen.methods import masks as mask_lib
from imgen.models.layers import max_pool_2x2
from imgen.models.seg_unet import SegUNet
from imgen.models.seg_unet import UpConv2x2


def _records(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def test_scores_match_a_direct_numpy_computation():
  rng = np.random.default_rng(0)
  k = 5
  truth = rng.integers(0, k, (6, 9, 7))
  predicted = np.where(rng.uniform(size=truth.shape) < 0.6, truth, rng.integers(0, k, truth.shape))
  predicted[predicted == 4] = 3  # Class 4 occurs in the truth only.
  truth[truth == 2], predicted[predicted == 2] = 1, 1  # Class 2 nowhere: no score.
  valid = np.ones(truth.shape[0])
  valid[-1] = 0  # A padding row counts for nothing.
  weights = np.broadcast_to(valid[:, None, None], truth.shape)
  confusion = mask_lib.confusion(
    jnp.asarray(truth), jnp.asarray(predicted), k, jnp.asarray(weights)
  )
  got = mask_lib.scores(np.asarray(confusion), tuple("abcde"))
  t, p = truth[:-1], predicted[:-1]
  ious, dices = [], []
  for c in range(k):
    inter, union = np.sum((t == c) & (p == c)), np.sum((t == c) | (p == c))
    iou = inter / union if union else np.nan
    dice = 2 * inter / (np.sum(t == c) + np.sum(p == c)) if union else np.nan
    np.testing.assert_allclose(got[f"iou/{'abcde'[c]}"], iou, rtol=1e-6)
    np.testing.assert_allclose(got[f"dice/{'abcde'[c]}"], dice, rtol=1e-6)
    ious.append(iou)
    dices.append(dice)
  assert np.isnan(got["iou/c"]) and got["iou/e"] == 0.0
  np.testing.assert_allclose(got["miou"], np.nanmean(ious), rtol=1e-6)
  np.testing.assert_allclose(got["mean_dice"], np.nanmean(dices), rtol=1e-6)
  np.testing.assert_allclose(got["pixel_accuracy"], np.mean(t == p), rtol=1e-6)


def test_object_scores_on_hand_made_masks():
  truth = np.zeros((2, 14, 14), np.int64)  # Objects 2 pixels from the edges.
  truth[0, 2:6, 2:6] = 3  # Two separate 3s and a 5.
  truth[0, 8:12, 2:6] = 3
  truth[0, 2:7, 8:12] = 5
  truth[1, 3:10, 3:10] = 8
  predicted = truth.copy()
  predicted[0, 8:12, 2:5] = 0  # 12 of the second 3's 16 pixels background: wrong.
  predicted[0, 2:7, 8] = 2  # The 5: 5 pixels 2, 5 pixels 6, 10 pixels 5: right.
  predicted[0, 2:7, 9] = 6
  predicted[1, 3:10, 3:10] = 1  # The 8 read as a 1.
  assert mask_lib.instance_accuracy(truth, predicted) == (2, 4)

  assert mask_lib.boundary_f(truth, truth, 10) == 1.0
  moved = np.roll(truth, 1, axis=2)
  assert mask_lib.boundary_f(truth, moved, 10, tolerance=1) == 1.0
  far = mask_lib.boundary_f(truth, np.roll(truth, 3, axis=2), 10, tolerance=1)
  assert 0.0 < far < 0.8


def test_losses_match_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
  labels = rng.integers(0, 5, (2, 4, 3))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  ce = -np.log(np.take_along_axis(probs, labels[..., None], -1)[..., 0])
  np.testing.assert_allclose(pixel_cross_entropy(logits, labels), ce, rtol=1e-5)
  onehot = np.eye(5)[labels]
  dice = (2 * (probs * onehot).sum((1, 2)) + 1) / (probs.sum((1, 2)) + onehot.sum((1, 2)) + 1)
  np.testing.assert_allclose(soft_dice(jnp.asarray(probs), labels), dice, rtol=1e-5)
  # Deep supervision's cell loss: the mean over a cell's pixels of -log q(their class).
  labels = rng.integers(0, 5, (2, 8, 12))
  q = probs[:, :2, :]  # (2, 2, 3, 5): cells of 4x4 pixels.
  by_hand = [
    np.mean(
      [
        -np.log(q[n, i, j][labels[n, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]]).mean()
        for i in range(2)
        for j in range(3)
      ]
    )
    for n in range(2)
  ]
  np.testing.assert_allclose(cell_cross_entropy(logits[:, :2], labels, 5), by_hand, rtol=1e-5)


def test_elastic_fields_and_warps():
  rng = np.random.default_rng(3)
  images = rng.normal(size=(2, 12, 16, 3)).astype(np.float32)
  labels = rng.integers(0, 11, (2, 12, 16)).astype(np.int32)
  fields = np.zeros((2, 12, 16, 2), np.float32)
  same = elastic.warp(images, labels, fields)
  np.testing.assert_array_equal(same[0], images)
  np.testing.assert_array_equal(same[1], labels)
  fields[0, ..., 1], fields[1, ..., 0] = 1.0, -0.5  # One pixel left; half a pixel down.
  image, label = map(np.asarray, elastic.warp(images, labels, fields))
  np.testing.assert_allclose(image[0, :, :-1], images[0, :, 1:], atol=1e-6)
  np.testing.assert_array_equal(label[0, :, :-1], labels[0, :, 1:])
  half = 0.5 * (images[1, :-1] + images[1, 1:])  # Bilinear: between rows y - 1 and y.
  np.testing.assert_allclose(image[1, 1:], half, atol=1e-6)
  assert set(np.unique(label)) <= set(np.unique(labels))
  # Smoothing rows sum to 1; each field has the asked RMS (replicas: the family's 4-vs-1 test).
  np.testing.assert_allclose(elastic.gaussian_matrix(9, 2.0).sum(1), 1.0, rtol=1e-6)
  draw = lambda k: elastic.displacements(k, 4, 12, 16, 1.5, 3.0)
  one = np.asarray(jax.pmap(draw, axis_name=parallel.AXIS)(jax.random.split(jax.random.key(0), 1)))[
    0
  ]
  np.testing.assert_allclose(np.sqrt(np.mean(one**2, axis=(1, 2, 3))), 1.5, rtol=1e-5)
  assert one[0].std() > 0 and np.abs(one[0] - one[1]).max() > 0.1
  # Confined to a mask: whole within a pixel of it, nothing from 6 pixels on (the
  # Gaussian of sigma 1 spent), so the image there is left as it was.
  mask = np.zeros((1, 12, 16), np.int32)
  mask[0, 5:7, 6:9] = 3
  near = np.asarray(elastic.confine(one[:1], mask))[0]
  rows, cols = np.meshgrid(np.arange(12), np.arange(16), indexing="ij")
  gap = np.maximum(np.maximum(5 - rows, rows - 6), np.maximum(6 - cols, cols - 8))
  np.testing.assert_allclose(near[gap <= 1], one[0][gap <= 1], rtol=1e-6)
  assert np.all(near[gap >= 6] == 0) and np.abs(near[gap == 3]).max() > 0
  warped = np.asarray(elastic.warp(images[:1], labels[:1], near[None])[0])[0]
  np.testing.assert_allclose(warped[gap >= 7], images[0][gap >= 7], atol=1e-6)


def test_nearest_resizing_keeps_the_label_set():
  rng = np.random.default_rng(2)
  masks = rng.integers(0, 11, (3, 20, 20)).astype(np.uint8)
  up = pipeline.resize_masks(masks, 60, "resize")
  assert up.dtype == np.uint8 and up.shape == (3, 60, 60)
  for m, u in zip(masks, up, strict=True):
    assert set(np.unique(u)) == set(np.unique(m))  # 3x: every pixel is copied.
  down = pipeline.resize_masks(masks, 7, "resize")
  assert set(np.unique(down)) <= set(np.unique(masks))
  np.testing.assert_array_equal(up[:, 1::3, 1::3], masks)


def test_upconv_and_pool_equal_their_plain_forms():
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
  up = UpConv2x2(4)
  params = up.init(jax.random.key(1), x)
  plain = nn.ConvTranspose(4, (2, 2), (2, 2))
  np.testing.assert_allclose(up.apply(params, x), plain.apply(params, x), atol=1e-5)
  f = lambda p, x: jnp.sum(jnp.sin(up.apply(p, x)))
  g = lambda p, x: jnp.sum(jnp.sin(plain.apply(p, x)))
  grads = jax.tree.leaves(jax.grad(f, (0, 1))(params, x))
  for a, b in zip(grads, jax.tree.leaves(jax.grad(g, (0, 1))(params, x)), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5)
  x = jax.random.normal(jax.random.key(2), (2, 8, 6, 3))
  np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))
  pool = lambda f: jax.grad(lambda x: jnp.sum(jnp.sin(f(jax.nn.relu(x)))))(x)
  np.testing.assert_allclose(
    pool(max_pool_2x2), pool(lambda x: nn.max_pool(x, (2, 2), (2, 2))), atol=1e-6
  )


def _unet_parameters(c_in, k, depth, width, mults=None, aux=False):
  """By hand: 3x3 convolutions without bias plus BatchNorm scale and offset,
  2x2 transposed convolutions with bias, the 1x1 head with bias (and the
  deep-supervision heads of the expanding levels below the top)."""
  block = lambda a, b: 9 * a * b + 9 * b * b + 4 * b
  widths = [width * (mults[level] if mults else 2**level) for level in range(depth + 1)]
  total = block(c_in, widths[0]) + sum(block(widths[i - 1], widths[i]) for i in range(1, depth + 1))
  for level in range(depth):
    total += 4 * widths[level + 1] * widths[level] + widths[level]
    total += block(2 * widths[level], widths[level])
    total += (widths[level] * k + k) if aux and level > 0 else 0
  return total + width * k + k


@pytest.mark.parametrize(
  "depth,mults,aux", [(1, None, False), (2, None, True), (3, (1, 3, 4, 9), True), (4, None, False)]
)
def test_unet_output_shape_and_size_at_every_depth(depth, mults, aux):
  model = SegUNet(num_classes=6, depth=depth, width=4, mults=mults or (), aux_heads=aux)
  x = jnp.zeros((2, 32, 48, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)  # Shapes: nothing computed.
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 32, 48, 6)
  count = sum(p.size for p in jax.tree.leaves(variables["params"]))
  assert count == _unet_parameters(3, 6, depth, 4, mults, aux)
  _, sown = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, x)
  shapes = {k: v[0].shape for k, v in sown.get("intermediates", {}).items()}
  assert shapes == ({f"aux_{v}": (2, 32 >> v, 48 >> v, 6) for v in range(1, depth)} if aux else {})


def test_datasets_are_deterministic_and_their_splits_are_disjoint(data_dir, tmp_path):
  first = data.get_builder("digit_scenes/tiny", data_dir)
  again = data.get_builder("digit_scenes/tiny", str(tmp_path))
  for split in ("train", "test"):
    for a, b in zip(_records(first, split), _records(again, split), strict=True):
      assert a.keys() == b.keys()
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  _, labels = embedded.EmbeddedMnist.load()
  pools = dict(zip(("train", "test"), embedded.mnist_split(labels), strict=True))
  for split, pool in pools.items():
    for r in _records(first, split):
      ids = r["digit_ids"][r["digit_ids"] >= 0]
      assert np.isin(ids, pool).all() and len(ids) >= 1
      np.testing.assert_array_equal(labels[ids], r["digits"][: len(ids)])
      assert set(np.unique(r["mask"])) <= {0} | set(1 + r["digits"][: len(ids)])
      # The background is the recorded crop of this split's half, wherever no digit lies.
      top, left, side = r["crop"]
      half = scenes.source_half(scenes.BACKGROUNDS[r["background"]], split)
      background = scenes.resize(half[top : top + side, left : left + side], 64, 64)
      free = np.ones((64, 64), bool)
      for y, x, h, w in r["boxes"][: len(ids)]:
        free[y : y + h, x : x + w] = False
      np.testing.assert_array_equal(r["image"][free], background[free])
  assert not set(pools["train"]) & set(pools["test"])
  for source in scenes.BACKGROUNDS + scenes.MOSAIC_SOURCES:  # The halves partition each image.
    left, right = scenes.source_half(source, "train"), scenes.source_half(source, "test")
    assert abs(left.shape[1] - right.shape[1]) <= 1 and left.shape[0] == right.shape[0]
  mosaic = data.get_builder("texture_mosaic/tiny", data_dir)
  for r in _records(mosaic, "test"):
    used = r["sources"][r["sources"] >= 0]
    assert set(np.unique(r["mask"])) <= set(used) and len(set(used)) == len(used)


def _spec(mask_shape, mask_dtype="uint8"):
  fields = {
    "image": Field("image", "image", (64, 64, 3), "uint8"),
    "mask": Field(MASK if mask_shape == (64, 64) else "tensor", "mask", mask_shape, mask_dtype),
  }
  return DataSpec(64, fields)


def test_bad_masks_and_configs_fail_with_a_clear_message(data_dir, tmp_path):
  config = smoke_config("segment", data_dir)
  with pytest.raises(
    ConfigError, match=r"'mask' .* shape \(32, 32\) .* height and width \(64, 64\)"
  ):
    SegmentationFamily(config, _spec((32, 32)))
  config.data.mask_key = "segmentation"
  with pytest.raises(ConfigError, match="no mask feature 'segmentation'.*data.mask_key"):
    SegmentationFamily(config, _spec((64, 64)))
  config = smoke_config("segment", data_dir)
  config.model.update(num_classes=5, class_names="")
  with pytest.raises(DataError, match=r"values 0\.\.10, outside the 5 classes.*num_classes=11"):
    modes.run("train", config, str(tmp_path / "few"))
  config = smoke_config("segment", data_dir)
  config.model.channel_mults = (1, 2)
  with nothing_compiled(), pytest.raises(ConfigError, match=r"channel_mults=\(1, 2\); give depth"):
    modes.run("train", config, str(tmp_path / "mults"))
  config = smoke_config("segment", data_dir)
  config.seg.deep_supervision = -1.0
  with nothing_compiled(), pytest.raises(ConfigError, match="seg.deep_supervision=-1.0; use"):
    modes.run("train", config, str(tmp_path / "deep"))
  config = smoke_config("segment", data_dir)
  config.seg.elastic_sigma = 0.0
  with nothing_compiled(), pytest.raises(ConfigError, match="seg.elastic_sigma=0.0; use an RMS"):
    modes.run("train", config, str(tmp_path / "elastic"))
  config = smoke_config("segment", data_dir)
  config.model.depth = 7
  with pytest.raises(ConfigError, match="not divisible by 2\\*\\*model.depth=128"):
    modes.run("train", config, str(tmp_path / "deep"))
  config = smoke_config("segment", data_dir)
  config.data.name = "embedded_mnist"  # Digits without masks.
  with nothing_compiled(), pytest.raises(ConfigError, match="no mask feature 'mask'"):
    modes.run("train", config, str(tmp_path / "mnist"))


def test_segment_mode_writes_masks_of_the_split_a_folder_and_an_npz(smoke_run, tmp_path):
  config, workdir, logged = smoke_run("segment")
  out = modes.run("segment", config, workdir)["folder"]
  with open(os.path.join(out, "scores.json")) as f:
    record = json.load(f)
  assert record["num_images"] == 32
  np.testing.assert_allclose(record["scores"]["miou"], logged["test/miou"], rtol=1e-5)
  masks = np.load(os.path.join(out, "masks.npz"))["masks"]
  assert masks.shape == (32, 64, 64) and masks.dtype == np.uint8
  png = np.asarray(Image.open(os.path.join(out, "masks", "00000.png")))
  np.testing.assert_array_equal(png, masks[0])
  assert os.path.exists(os.path.join(out, "overlays.png"))
  assert os.path.exists(os.path.join(out, "confusion.png"))
  assert np.sum(record["confusion"]["pixels"]) == 32 * 64 * 64
  right, objects = mask_lib.instance_accuracy(experiment_masks(config), masks)
  assert record["scores"]["num_objects"] == objects > 0
  assert record["scores"]["instance_accuracy"] == right / objects
  assert 0.0 <= record["scores"]["boundary_f"] <= 1.0

  folder = tmp_path / "photos"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for name, shape in (("wide.png", (40, 56, 3)), ("square.png", (64, 64, 3))):
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / name)
  config.segment.input = str(folder)
  out = modes.run("segment", config, workdir)["folder"]
  saved = np.load(os.path.join(out, "masks.npz"))
  assert saved["mask_wide"].shape == (40, 56) and saved["mask_square"].shape == (64, 64)

  npz = str(tmp_path / "scenes.npz")
  np.savez(npz, images=np.zeros((2, 64, 64, 3), np.uint8), masks=np.zeros((2, 32, 32), np.uint8))
  config.segment.input = npz
  with pytest.raises(DataError, match="'masks' of .* has shape \\(2, 32, 32\\)"):
    modes.run("segment", config, workdir)
  np.savez(npz, images=np.zeros((2, 64, 64, 3), np.uint8), masks=np.full((2, 64, 64), 3, np.uint8))
  out = modes.run("segment", config, workdir)["folder"]
  with open(os.path.join(out, "scores.json")) as f:
    assert json.load(f)["num_images"] == 2
  with_truth = Image.open(os.path.join(out, "overlays.png")).size
  np.savez(npz, images=np.zeros((2, 64, 64, 3), np.uint8))
  out = modes.run("segment", config, workdir)["folder"]
  without = Image.open(os.path.join(out, "overlays.png")).size
  # Image / true mask / prediction / overlay; without masks, no true-mask column.
  assert with_truth[1] == without[1] and abs(with_truth[0] / without[0] - 4 / 3) < 0.02


def experiment_masks(config) -> np.ndarray:
  return Experiment.create(config).held_out(10**9)["mask"]


def test_the_grid_shows_images_their_masks_and_the_predictions(smoke_run):
  config, workdir, _ = smoke_run("segment")
  experiment = Experiment.create(config)
  family = experiment.family
  state = final_state(config, workdir)[0]
  batch = experiment.held_out(16)
  shown = family.show(state, None, batch)["segmentation"]
  assert shown.shape == (48, 64, 64, 3)
  np.testing.assert_array_equal(shown[:8], batch["image"][:8])
  np.testing.assert_array_equal(shown[8:16], mask_lib.colour(batch["mask"][:8]))
  np.testing.assert_array_equal(
    shown[16:24], mask_lib.colour(family.segment(state, batch["image"][:8]))
  )
  np.testing.assert_array_equal(shown[32:40], mask_lib.colour(batch["mask"][8:16]))
