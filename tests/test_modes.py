"""The mode registry: every config runs only under the modes it is for, and a
mode is one entry in `modes.MODES` (a toy mode registered here runs as main.py
would run it)."""

import glob
import json
import os

from helpers import ROOT
from helpers import nothing_compiled
from helpers import smoke_config
import jax
import pytest

from configs import common
from imgen import modes
from imgen.core.errors import ConfigError
from imgen.modes.base import Mode

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


def test_a_mode_is_one_entry_in_the_registry(monkeypatch, data_dir, tmp_path):
  """A toy mode, registered as a new mode file's line would register it, is
  refused by configs that do not name it, and otherwise runs through the shared
  skeleton: the experiment built, the chosen checkpoint restored, the record
  written as JSON."""

  def count_parameters(experiment, restore):
    trained = restore()
    record = {
      "mode": "toy",
      "step": trained.step,
      "parameters": len(jax.tree.leaves(trained.state)),
    }
    return record, os.path.join(restore.workdir, "toy", f"{trained.name}.json")

  monkeypatch.setitem(modes.MODES, "toy", Mode("count parameters", True, count_parameters))
  config = smoke_config("gan", data_dir)
  config.eval.checkpoint_step = 0  # The untrained model: nothing to train first.
  with nothing_compiled(), pytest.raises(ConfigError, match="not --mode=toy"):
    modes.run("toy", config, str(tmp_path), "configs/gan.py")
  config.modes += ",toy"
  record = modes.run("toy", config, str(tmp_path), "configs/gan.py")
  assert record["mode"] == "toy" and record["step"] == 0 and record["parameters"] > 4
  with open(tmp_path / "toy" / "step0000000.json") as f:
    assert json.load(f) == record
