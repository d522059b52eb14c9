"""`scene_captions`: the scenes of `digit_scenes` with captions (TFDS, prepared on first use).

The images and layouts are digit_scenes' own: the builder draws them through
`DigitScenes`' generator with its seeds, so example i of a split is example i
of digit_scenes' split, but for the train scenes it skips. Each example adds
- `captions` (4, TOKEN_LENGTH) int32: four `captions.caption`s of the scene
  in train phrasings, `captions.encode`d;
- `novel_captions` (4, TOKEN_LENGTH) int32: in the test split four captions
  in held-out phrasings, in the train split all PAD;
- `held_out` int32: 1 if a digit of the scene has a held-out (digit, colour,
  position) triple (`captions.is_held_out`).
The train split keeps only the train scenes without a held-out triple
(7,215 of 10,000; `tiny`: 50 of 64), in digit_scenes' order; the test split
holds all 1,000 test scenes (`tiny`: 32), 269 of them with a held-out triple.
Caption words come from a generator of their own per example, seeded by
(split, i), so the scenes are drawn exactly as digit_scenes draws them.
Preparing `full` takes about a minute on 2 cores.
"""

import numpy as np

from imgen.data import captions
from imgen.data import embedded
from imgen.data import scenes

CAPTIONS = 4  # Captions per scene.
_SEED = 20220413  # Fixed forever: changing it changes every caption. (DALL-E 2's arXiv date.)


def _encoded_captions(layout, rng: np.random.Generator, phrasing: str) -> np.ndarray:
  """int32 (CAPTIONS, TOKEN_LENGTH): encoded captions of `layout` in `phrasing`."""
  return np.stack(
    [captions.encode(captions.caption(layout, rng, phrasing)) for _ in range(CAPTIONS)]
  )


class SceneCaptions(scenes.DigitScenes, skip_registration=True):
  """digit_scenes' scenes, each with captions in train and held-out phrasings."""

  DESCRIPTION = (
    "digit_scenes with captions that state every digit's class, colour, size and position and "
    "the background; train holds only scenes without a held-out (digit, colour, position)."
  )
  FEATURES = {
    **scenes.DigitScenes.FEATURES,
    "captions": ((CAPTIONS, captions.TOKEN_LENGTH), np.int32),
    "novel_captions": ((CAPTIONS, captions.TOKEN_LENGTH), np.int32),
    "held_out": ((), np.int32),
  }
  TRAIN_KEPT = {"full": 7215, "tiny": 50}  # Train scenes without a held-out triple.

  @property
  def stored_sizes(self) -> dict[str, int]:
    """Examples per split (SPLIT_SIZES counts the scenes drawn, as in digit_scenes)."""
    return {"train": self.TRAIN_KEPT[self.builder_config.name], "test": self.builder_config.test}

  def _generate_examples(self, split: str):
    kept = 0
    for i, scene in super()._generate_examples(split):
      layout = captions.layout_of(scene)
      held_out = any(map(captions.is_held_out, layout.digits))
      if split == "train" and held_out:
        continue
      rng = np.random.default_rng([_SEED, int(split == "test"), i])
      train = _encoded_captions(layout, rng, "train")
      novel = _encoded_captions(layout, rng, "held_out") if split == "test" else 0 * train
      yield i, {**scene, "captions": train, "novel_captions": novel, "held_out": int(held_out)}
      kept += 1
    if kept != self.stored_sizes[split]:  # damage() would find the files short and rebuild them.
      raise RuntimeError(f"{kept} {split} scenes kept instead of {self.stored_sizes[split]}.")

  def damage(self) -> str | None:
    """What is wrong with the prepared files (None if every record reads back)."""
    shapes = {"image": (scenes.SIZE, scenes.SIZE, 3), "captions": self.FEATURES["captions"][0]}
    return embedded.damage(self, self.stored_sizes, shapes)


BUILDERS = {"scene_captions": SceneCaptions}
