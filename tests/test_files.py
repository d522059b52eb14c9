"""A workdir's files through etils.epath: locally, and on gs:// served by an
in-memory filesystem (fsspec's, registered for the gs scheme), the way a pod
writes to Cloud Storage. Orbax's checkpoints on gs:// go through TensorStore's
own GCS driver, which nothing offline can stand in for: they are not tested here."""

import io
import logging
import os

from etils.epath import backend as epath_backend
import fsspec
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry as fsspec_registry
import numpy as np
from PIL import Image
import pytest

from imgen import modes
from imgen.core import files
from imgen.core import images as image_lib
from imgen.core import writers
from imgen.core.errors import ConfigError
from imgen.core.writers import read_scalars


class _MemoryGCS(MemoryFileSystem):
  protocol = ("gs", "gcs")
  store, pseudo_dirs = {}, [""]


@pytest.fixture
def gcs():
  """gs:// paths in this process served from memory for the test; the store."""
  saved = dict(fsspec_registry)
  for scheme in _MemoryGCS.protocol:
    fsspec.register_implementation(scheme, _MemoryGCS, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  _MemoryGCS.store.clear()
  yield _MemoryGCS.store
  fsspec_registry.clear()
  fsspec_registry.update(saved)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()


def test_records_arrays_grids_and_tensorboard_reach_gs(gcs):
  run = "gs://bucket/run"
  files.write_json(files.join(run, "eval", "a.json"), {"fid": 1.5})
  assert files.read_json(f"{run}/eval/a.json") == {"fid": 1.5}
  files.save_npz(files.join(run, "x.npz"), images=np.arange(6, dtype=np.uint8).reshape(2, 3))
  np.testing.assert_array_equal(files.load_npz(f"{run}/x.npz")["images"], [[0, 1, 2], [3, 4, 5]])

  writer = writers.Writer(run)
  writer.scalars(3, {"loss": 0.25})
  writer.scalars(6, {"loss": 0.125})
  batch = np.linspace(-1, 1, 8 * 4 * 4 * 3, dtype=np.float32).reshape(8, 4, 4, 3)
  (png,) = writer.images(6, {"samples": batch})
  writer.close()
  assert read_scalars(run)["loss"] == {3: 0.25, 6: 0.125}
  assert png == f"{run}/samples/samples_0000006.png"
  grid = np.asarray(Image.open(io.BytesIO(files.read_bytes(png))))
  expected = image_lib.make_grid(image_lib.to_uint8(batch), 8)
  scale = 256 // max(expected.shape[:2]) + 1
  np.testing.assert_array_equal(grid[::scale, ::scale], expected)
  assert not [k for k in gcs if ".tmp" in k]  # One upload per file on an object store.


def test_a_local_file_is_replaced_whole(tmp_path):
  path = tmp_path / "deep" / "record.json"
  files.write_json(path, {"a": 1})
  files.write_json(path, {"a": 2})
  assert files.read_json(path) == {"a": 2}
  assert os.listdir(tmp_path / "deep") == ["record.json"]  # No temporary file left.


def test_the_feature_cache_lives_on_gs(gcs, data_dir, cnn_workdir, smoke_run, caplog):
  """--mode=eval with eval.stats_dir on gs://: the real images' features are
  computed once, cached there, read back, and give the same scores."""
  smoke, workdir, _ = smoke_run("gan")
  config = smoke.copy_and_resolve_references()
  config.eval.update(metrics="fid,kid", cnn_workdir=cnn_workdir, stats_dir="gs://bucket/stats")
  with caplog.at_level(logging.INFO):
    first = modes.run("eval", config, workdir)["results"]
  cached = [k for k in gcs if k.startswith("gs://bucket/stats/") or "/stats/" in k]
  assert len(cached) == 1 and cached[0].endswith(".npz"), sorted(gcs)
  assert caplog.text.count("Cached") == 1
  before = bytes(gcs[cached[0]].getbuffer())
  caplog.clear()
  with caplog.at_level(logging.INFO):
    again = modes.run("eval", config, workdir)["results"]
  assert "Cached" not in caplog.text and bytes(gcs[cached[0]].getbuffer()) == before
  assert again == first and np.isfinite(first["test/fid"])


@pytest.mark.parametrize(
  "workdir,message",
  [
    ("s3://bucket/run", "cannot be used: Install s3fs"),
    ("zz://bucket/run", "etils.epath knows no such scheme"),
  ],
)
def test_a_workdir_epath_cannot_reach_is_a_one_line_error(workdir, message):
  with pytest.raises(ConfigError, match=message) as e:
    modes.check_workdir(workdir)
  assert "\n" not in str(e.value)


def test_a_gs_workdir_is_checked_by_writing_to_it(gcs):
  modes.check_workdir("gs://bucket/new-run")
  assert not [k for k in gcs if "probe" in k]  # The probe file is deleted again.
