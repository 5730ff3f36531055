"""Saved networks: versioned, checked on load, never executing code, written atomically."""

import json
import os
import sys

import numpy as np
import pytest

from astrokin.exceptions import NetworkFormatError
from astrokin.fitting import NeuralKinematicFitter
from astrokin.models import ExponentialArctanDisk, GaussianRingDisk

from .helpers import BEAM, PIXEL_SCALE, file_state

torch = pytest.importorskip("torch")


def _rewrite(src, dst, edit_meta=None, edit_state=None):
    """Copy a saved network, changing its metadata or weights (as a damaged or foreign file)."""
    raw = torch.load(src, weights_only=True)
    meta = json.loads(raw["metadata"])
    if edit_meta:
        edit_meta(meta)
    state = raw["state_dict"]
    if edit_state:
        edit_state(state)
    torch.save({"metadata": json.dumps(meta), "state_dict": state}, dst)
    return dst


def test_metadata_records_what_the_network_is(network_file, tiny_fitter):
    import astrokin

    raw = torch.load(network_file, weights_only=True)
    assert set(raw) == {"metadata", "state_dict"}
    meta = json.loads(raw["metadata"])
    assert meta["format"] == "astrokin-neural-kinematic-fitter"
    assert meta["format_version"] == 2
    assert meta["astrokin_version"] == astrokin.__version__ or meta["astrokin_version"]
    assert meta["torch_version"] and meta["created"]
    model = meta["model"]
    assert model["class"] == "astrokin.models.disks:ExponentialArctanDisk"
    assert model["param_names"] == list(ExponentialArctanDisk.param_names)
    assert model["bounds"]["inclination"] == [10.0, 90.0]
    assert model["units"]["v_max"] == "km / s"
    # The dispersion is never predicted (no network reads mom2).
    assert model["fixed"] == ["amplitude", "z_scale", "v_disp"]
    assert set(meta["recipe"]) >= {"epochs", "batch_size", "learning_rate", "dropout"}
    assert meta["normalisation"]["image_size"] == 64
    assert len(meta["loss_history"]) == 2


def test_load_checks_the_model_class(network_file, maps):
    mom0, mom1 = maps
    before = file_state(network_file)
    fitter = NeuralKinematicFitter.load(network_file, model=ExponentialArctanDisk,
                                        progress=False, mc_samples=4)
    fitter(ExponentialArctanDisk(), mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    NeuralKinematicFitter.load(network_file, model=ExponentialArctanDisk(), progress=False)
    with pytest.raises(NetworkFormatError, match="not for the expected .*GaussianRingDisk"):
        NeuralKinematicFitter.load(network_file, model=GaussianRingDisk)
    with pytest.raises(TypeError, match="model= must be"):
        NeuralKinematicFitter.load(network_file, model="ExponentialArctanDisk")
    assert file_state(network_file) == before  # loading never touches the file


def test_newer_format_names_both_versions(network_file, tmp_path):
    path = _rewrite(network_file, tmp_path / "future.pt",
                    lambda m: m.update(format_version=7, astrokin_version="9.0"))
    with pytest.raises(NetworkFormatError,
                       match=r"format version 7 \(by astrokin 9.0\).*up to 2\. Upgrade"):
        NeuralKinematicFitter.load(path)


def test_version_1_files_still_load(tmp_path):
    """A version 1 file (the first bundled network's format: no model block) loads."""
    from importlib import resources

    bundled = resources.files("astrokin") / "data" / "networks" / "exponential_arctan_disk.pt"

    def as_v1(meta):
        for key in ("model", "torch_version", "created"):  # what version 2 added
            meta.pop(key, None)
        meta["format_version"] = 1

    with resources.as_file(bundled) as src:
        assert json.loads(torch.load(src, weights_only=True)["metadata"])["format_version"] == 2
        v1 = _rewrite(src, tmp_path / "v1.pt", edit_meta=as_v1)
    fitter = NeuralKinematicFitter.load(v1, mc_samples=4)
    assert fitter.metadata["format_version"] == 1
    assert fitter.layout.model_class is ExponentialArctanDisk


@pytest.mark.parametrize("edit, pattern", [
    (lambda m: m.update(format="something-else"), "not a saved NeuralKinematicFitter network"),
    (lambda m: m.pop("format_version"), "no valid format_version"),
    (lambda m: m.update(format_version="2"), "no valid format_version"),
    (lambda m: m.pop("layout"), "lacks the metadata entry 'layout'"),
    (lambda m: m.pop("recipe"), "lacks the metadata entry 'recipe'"),
    (lambda m: m["layout"].pop("slots"), "lacks the layout entry 'slots'"),
    (lambda m: m["layout"].update(model_class="ExponentialArctanDisk"), "not 'module:Class'"),
    (lambda m: m["layout"].update(model_class="astrokin.models:Nope"), "cannot be found"),
    (lambda m: m["layout"].update(model_class="astrokin.beams:to_beam"),
     "not an astrokin disc model"),
    (lambda m: m["layout"].update(param_names=["a", "b"]), "now has parameters"),
    (lambda m: m["recipe"].update(epochs=-3), "invalid training recipe"),
    (lambda m: m["layout"]["slots"].pop(), "do not fit the network"),
    (lambda m: m["fixed_values_at_training"].update(amplitude="one"), "non-numeric"),
])
def test_damaged_metadata_is_refused(network_file, tmp_path, edit, pattern):
    path = _rewrite(network_file, tmp_path / "damaged.pt", edit)
    with pytest.raises(NetworkFormatError, match=pattern):
        NeuralKinematicFitter.load(path)


def test_modules_named_in_a_file_are_not_imported(network_file, tmp_path):
    assert "this" not in sys.modules  # `import this` prints the Zen of Python
    path = _rewrite(network_file, tmp_path / "foreign.pt",
                    lambda m: m["layout"].update(model_class="this:Disk"))
    with pytest.raises(NetworkFormatError, match="not imported"):
        NeuralKinematicFitter.load(path)
    assert "this" not in sys.modules


def test_bad_weights_are_refused(network_file, tmp_path):
    def nan_weight(state):
        key = next(iter(state))
        state[key] = state[key] * np.nan

    def wrong_shape(state):
        key = next(k for k in state if k.endswith("weight"))
        state[key] = state[key][:1]

    with pytest.raises(NetworkFormatError, match="NaN or infinite"):
        NeuralKinematicFitter.load(_rewrite(network_file, tmp_path / "nan.pt",
                                            edit_state=nan_weight))
    with pytest.raises(NetworkFormatError, match="do not fit the network"):
        NeuralKinematicFitter.load(_rewrite(network_file, tmp_path / "shape.pt",
                                            edit_state=wrong_shape))


@pytest.mark.parametrize("cut", [0, 1, 100, 0.5, -1])
def test_truncated_files_are_refused(network_file, tmp_path, cut):
    data = network_file.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut % len(data))
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[:n])
    with pytest.raises(NetworkFormatError, match="not a readable network file"):
        NeuralKinematicFitter.load(path)


def test_garbage_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.pt"
    path.write_bytes(rng.bytes(5000))
    with pytest.raises(NetworkFormatError, match="not a readable network file"):
        NeuralKinematicFitter.load(path)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(NetworkFormatError, match="not a saved NeuralKinematicFitter"):
        NeuralKinematicFitter.load(tmp_path / "other.pt")
    torch.save({"metadata": "{not json", "state_dict": {}}, tmp_path / "json.pt")
    with pytest.raises(NetworkFormatError, match="not JSON"):
        NeuralKinematicFitter.load(tmp_path / "json.pt")
    with pytest.raises(FileNotFoundError, match="No network file"):
        NeuralKinematicFitter.load(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="not a file"):
        NeuralKinematicFitter.load(tmp_path)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_loading_never_executes_code_from_the_file(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"metadata": _Payload(sentinel), "state_dict": {}}, path)
    with pytest.raises(NetworkFormatError, match="refuses to load it"):
        NeuralKinematicFitter.load(path)
    assert not sentinel.exists()


def test_save_is_atomic_and_never_overwrites_by_default(tiny_fitter, tmp_path):
    path = tmp_path / "net.pt"
    tiny_fitter.save(path)
    before = file_state(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tiny_fitter.save(path)
    assert file_state(path) == before
    tiny_fitter.save(path, overwrite=True)
    NeuralKinematicFitter.load(path)
    assert sorted(os.listdir(tmp_path)) == ["net.pt"]  # no temporary file left behind
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tiny_fitter.save(tmp_path / "no" / "such" / "dir.pt")
    with pytest.raises(IsADirectoryError):
        tiny_fitter.save(tmp_path, overwrite=True)
    with pytest.raises(ValueError, match="not been trained"):
        NeuralKinematicFitter().save(tmp_path / "empty.pt")


def test_a_failed_write_leaves_the_old_file_and_no_debris(tiny_fitter, tmp_path):
    from astrokin._io import atomic_path

    path = tmp_path / "net.pt"
    tiny_fitter.save(path)
    before = file_state(path)
    with pytest.raises(ZeroDivisionError), atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half a netw")
            1 / 0  # noqa: B018 - the writer dies mid-write
    assert file_state(path) == before
    assert sorted(os.listdir(tmp_path)) == ["net.pt"]
    # A metadata entry that cannot be written fails before anything is written.
    tiny_fitter.metadata_extra = {"bad": object()}
    try:
        with pytest.raises(TypeError):
            tiny_fitter.save(tmp_path / "new.pt")
    finally:
        tiny_fitter.metadata_extra = {}
    assert sorted(os.listdir(tmp_path)) == ["net.pt"]


def test_recalibrating_never_imports_the_module_a_recipe_names(network_file, tmp_path,
                                                              monkeypatch):
    # A module on the path that leaves a mark when imported.
    (tmp_path / "astrokin_probe_module.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = {"model": "astrokin_probe_module:Disk"}
    path = _rewrite(network_file, tmp_path / "recipe.pt",
                    lambda m: m.setdefault("recipe_pretraining", {}).update(recipe))
    from astrokin.fitting import pretraining

    with pytest.raises(NetworkFormatError, match="not imported"):
        pretraining.run({}, tmp_path / "out.pt", calibrate_only=path, progress=False,
                        log=lambda line: None)
    assert not (tmp_path / "imported").exists()
    assert "astrokin_probe_module" not in sys.modules
    assert not (tmp_path / "out.pt").exists()
