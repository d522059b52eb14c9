"""The mode registry: every config runs only under the modes it is for, and a
mode is one entry in `modes.MODES` (a toy mode registered here runs as main.py
would run it)."""

import glob
import json
import os

from helpers import ROOT
from helpers import nothing_compiled
import pytest

from configs import common
from imgen import modes
from imgen.core.errors import ConfigError

CONFIGS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
  if os.path.basename(p) != "common.py"
)


@pytest.mark.parametrize("name", CONFIGS)
def test_a_config_under_a_mode_it_is_not_for_is_a_one_line_error(name, tmp_path):
  config = common.default_config(name)
  declared = config.modes.split(",")
  assert declared and set(declared) <= set(modes.MODES), declared
  path = f"configs/{name}.py"
  for mode in [m for m in modes.MODES if m not in declared]:
    with nothing_compiled(), pytest.raises(ConfigError) as e:
      modes.run(mode, config, str(tmp_path / mode), path)
    message = str(e.value)
    assert "\n" not in message and f"not --mode={mode}" in message, message
    assert f"python main.py --config={path} --mode=" in message, message
    right = message.split(" --mode=")[-1].split()[0]
    assert right in declared and right != mode, message
  assert not os.listdir(tmp_path)  # Refused before a workdir was made.


def test_a_mode_is_one_entry_in_the_registry(monkeypatch, tmp_path):
  """A toy mode, registered the way a new mode file would be, is accepted by
  every config that names it and runs on (config, workdir) through `modes.run`."""

  def count_fields(config, workdir):
    record = {"mode": "toy", "fields": len(config)}
    with open(os.path.join(workdir, "toy.json"), "w") as f:
      json.dump(record, f)
    return record

  toy = modes.Mode(count_fields, "count the config's groups", needs_run=False)
  monkeypatch.setitem(modes.MODES, "toy", toy)
  config = common.default_config("gan")
  with pytest.raises(ConfigError, match="not --mode=toy"):
    modes.run("toy", config, str(tmp_path), "configs/gan.py")
  config.modes += ",toy"
  record = modes.run("toy", config, str(tmp_path), "configs/gan.py")
  assert record == {"mode": "toy", "fields": len(config)}
  with open(tmp_path / "toy.json") as f:
    assert json.load(f) == record
