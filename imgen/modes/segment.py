"""`--mode=segment`: masks of images from a saved segmentation checkpoint.

The input (`segment.input`) is the held-out split when empty (then scored
against its masks as well), a folder of PNG/JPEG images, or an `.npz` with
`images` (N, H, W, C) uint8 and optionally `masks` (N, H, W), then scored.
Images of any size are segmented whole: the U-Net is fully convolutional.
Written to `workdir/segment/<step>/`: `masks.npz` (uint8 labels and the
names; one array per image when their sizes differ), one palette PNG per mask
under `masks/` whose pixel values are the labels, `overlays.png` (image / true
mask where given / predicted mask / overlay, for the first 64 of the first image's
size), and the record as `scores.json` (with mIoU, Dice and per-class IoU when
there are masks) or `record.json`; with masks also `confusion.png` (true class per
row). The scores: mIoU, Dice, per-class IoU, pixel accuracy, the boundary F-score, and
for digits on a background the instance accuracy (each true digit's majority predicted
class; `imgen.methods.masks`).
"""

import datetime
import glob
import os

from absl import logging
import jax
import numpy as np
from PIL import Image

from imgen.core import files
from imgen.core import images as image_lib
from imgen.core.errors import ConfigError
from imgen.core.errors import DataError
from imgen.evaluation.experiment import Experiment
from imgen.families import Segments
from imgen.families.cnn import confusion_image
from imgen.methods import masks as mask_lib
from imgen.modes.base import Restore


def _read_folder(folder: str) -> tuple[list[np.ndarray], list[str]]:
  paths = sorted(
    p for p in glob.glob(os.path.join(folder, "*")) if p.lower().endswith((".png", ".jpg", ".jpeg"))
  )
  if not paths:
    raise DataError(f"segment.input={folder} holds no .png or .jpg images.")
  return [np.asarray(Image.open(p).convert("RGB")) for p in paths], [
    os.path.basename(p) for p in paths
  ]


def _read_npz(path: str) -> tuple[list[np.ndarray], list[str], np.ndarray | None]:
  with np.load(path) as f:
    if "images" not in f:
      raise DataError(f"segment.input={path} has no array 'images'; it has {sorted(f.keys())}.")
    images, masks = f["images"], f["masks"] if "masks" in f else None
  if images.ndim != 4 or images.dtype != np.uint8:
    raise DataError(
      f"'images' of {path} is {images.dtype} {images.shape}; give uint8 (N, H, W, C)."
    )
  if masks is not None and masks.shape != images.shape[:3]:
    raise DataError(
      f"'masks' of {path} has shape {masks.shape}; the images are {images.shape[:3]} "
      "(N, H, W): a mask must have its image's height and width."
    )
  return list(images), [f"{i:05d}" for i in range(len(images))], masks


def _inputs(experiment: Experiment, source: str):
  """(images as uint8 HWC list, names, true masks or None) of `segment.input`."""
  channels = experiment.spec.image.channels
  if not source:
    held = experiment.held_out(10**9)
    images = image_lib.to_uint8(held["image"])
    return (
      list(images),
      [f"{i:05d}" for i in range(len(images))],
      held[experiment.family.mask_field],
    )
  if os.path.isdir(source):
    images, names = _read_folder(source)
    masks = None
  elif source.endswith(".npz") and os.path.isfile(source):
    images, names, masks = _read_npz(source)
  else:
    raise ConfigError(f"segment.input={source!r} is neither a folder nor an .npz file.")
  if channels == 1:
    images = [np.asarray(Image.fromarray(i[..., :3]).convert("L"))[..., None] for i in images]
  elif any(i.shape[-1] != channels for i in images):
    images = [np.repeat(i, 3, -1) if i.shape[-1] == 1 else i[..., :3] for i in images]
  if masks is not None:
    mask_lib.check_masks(source, "masks", masks, experiment.family.num_mask_classes)
  return images, names, masks


def run(experiment: Experiment, restore: Restore) -> tuple[dict, str]:
  """Segments `segment.input` with a saved checkpoint, into the record's `folder`."""
  config = experiment.config
  family = experiment.family
  if not isinstance(family, Segments):
    raise ConfigError(f"The {config.family} family does not segment; --mode=segment needs one.")
  trained = restore()
  state = trained.state
  images, names, truth = _inputs(experiment, config.segment.input)
  masks, batch = [], config.eval.batch_size
  for start in range(0, len(images), batch):  # Images of one size go through in batches.
    chunk = images[start : start + batch]
    if len({i.shape for i in chunk}) == 1:
      masks += list(family.segment(state, np.stack(chunk) / 127.5 - 1.0))
    else:
      masks += [family.segment(state, i[None] / 127.5 - 1.0)[0] for i in chunk]
  masks = [m.astype(np.uint8) for m in masks]
  out = files.join(trained.workdir, "segment", trained.name)
  record = {
    "mode": "segment",
    "folder": out,
    "checkpoint": trained.description,
    "input": config.segment.input or f"{config.data.name} {config.data.eval_split}",
    "num_images": len(images),
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
  }
  if truth is not None:
    k = family.num_mask_classes
    total = sum(
      np.asarray(mask_lib.confusion(t.astype(np.int32), m.astype(np.int32), k, np.ones(t.shape)))
      for t, m in zip(truth, masks, strict=True)
    )
    scores = mask_lib.scores(total, family.class_names)
    if family.class_names[0] == "background":  # Objects on a background: digits.
      right, objects = mask_lib.instance_accuracy(truth, masks)
      scores.update(instance_accuracy=right / max(objects, 1), num_objects=objects)
    scores["boundary_f"] = mask_lib.boundary_f(truth, masks, k)
    record["scores"] = scores
    record["confusion"] = {"rows": "true class", "columns": "predicted class"}
    record["confusion"]["pixels"] = np.asarray(total, np.int64).tolist()
    logging.info(
      "%s: %s",
      record["input"],
      " | ".join(
        f"{name} {scores[name]:.4f}"
        for name in ("miou", "instance_accuracy", "boundary_f", "mean_dice", "pixel_accuracy")
        if name in scores
      ),
    )
  if jax.process_index() == 0:
    _write(out, images, names, masks, truth)
    if truth is not None:
      confusion = image_lib.to_uint8(confusion_image(total))
      image_lib.save_png(files.join(out, "confusion.png"), confusion)
  logging.info("Wrote %d masks of %s to %s", len(masks), record["checkpoint"], out)
  return record, files.join(out, "scores.json" if "scores" in record else "record.json")


def _write(out: str, images, names, masks, truth) -> None:
  stems = [os.path.splitext(n)[0] for n in names]
  if len({m.shape for m in masks}) == 1:
    arrays = {"masks": np.stack(masks)}
  else:
    arrays = {f"mask_{stem}": m for stem, m in zip(stems, masks, strict=True)}
  files.save_npz(files.join(out, "masks.npz"), names=np.array(names), **arrays)
  palette = mask_lib.PALETTE.reshape(-1).tolist()
  for stem, mask in zip(stems, masks, strict=True):
    png = Image.fromarray(mask)  # 'L'; the palette makes it 'P', the labels unchanged.
    png.putpalette(palette)
    image_lib.write_png(files.join(out, "masks", stem + ".png"), png)
  shown = [i for i in range(min(len(images), 64)) if images[i].shape[:2] == images[0].shape[:2]]
  if shown:
    x = np.stack([images[i] for i in shown]).astype(np.float32) / 127.5 - 1.0
    m = np.stack([masks[i] for i in shown])
    true = [] if truth is None else [mask_lib.colour(np.stack([truth[i] for i in shown]))]
    columns = [mask_lib.rgb(x), *true, mask_lib.colour(m), mask_lib.overlay(x, m)]
    grid = np.concatenate(columns, axis=2)  # Side by side.
    image_lib.save_png(
      files.join(out, "overlays.png"), image_lib.make_grid(image_lib.to_uint8(grid), 4)
    )
