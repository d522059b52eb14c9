"""README's figures of the embedded segmentation datasets.

  python docs/make_figures.py            # writes docs/digit_scenes.png, docs/texture_mosaic.png

The first 16 test examples of each, every row of images over a row of their
masks in `imgen.methods.masks.PALETTE`. The datasets are prepared first if need be.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from imgen import data  # noqa: E402
from imgen.core import images  # noqa: E402
from imgen.data import scenes  # noqa: E402

if __name__ == "__main__":
  folder = os.path.dirname(os.path.abspath(__file__))
  for name in scenes.BUILDERS:
    grid = scenes.example_grid(data.get_builder(name))
    images.save_png(os.path.join(folder, f"{name}.png"), grid, 512)
    print(f"Wrote {os.path.join(folder, name)}.png")
