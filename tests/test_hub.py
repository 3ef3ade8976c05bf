"""Hub ids resolved through a local cache laid out as huggingface_hub lays it out, offline.

No test reaches the network: HF_HUB_OFFLINE=1 and HF_HUB_CACHE point at a cache built here
(``models--org--name/{blobs,refs/main,snapshots/<rev>}``, snapshot files symlinked into blobs/).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil

import pytest
import torch

from engine.loader import ModelLoadError, ModelNotFoundError, load_model_source
from engine.loader.hub import HF_FILE_PATTERNS, parse_hub_id, resolve_model_path
from tests.model_factory import make_gguf_model, make_hf_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


def add_to_cache(cache, repo_id, files, revision=REVISION, ref="main"):
    """Put ``files`` (paths) into ``cache`` as snapshot ``revision`` of ``repo_id``; returns the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    for file in files:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, repo / "blobs" / digest)
        (snapshot / file.name).symlink_to(f"../../blobs/{digest}")
    return snapshot


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    directory = make_hf_model(tmp_path_factory.mktemp("tiny"), arch="qwen2")
    (directory / "pytorch_model.bin").write_bytes(b"not needed")  # a file the pattern list leaves out
    return directory


@pytest.fixture
def cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_hub_id_parsing():
    assert parse_hub_id("Qwen/Qwen2.5-0.5B-Instruct") == ("Qwen/Qwen2.5-0.5B-Instruct", None)
    assert parse_hub_id("org/repo-GGUF/model-q4_k_m.gguf") == ("org/repo-GGUF", "model-q4_k_m.gguf")
    for not_an_id in ("just-a-name", "/abs/path", "a/b/c", "../x/y", "org/name/../../etc.gguf"):
        assert parse_hub_id(not_an_id) is None, not_an_id


def test_only_needed_files_are_requested():
    import fnmatch

    needed = ["config.json", "model.safetensors", "model-00001-of-00002.safetensors", "tokenizer.json",
              "tokenizer_config.json", "generation_config.json", "model.safetensors.index.json"]
    unneeded = ["pytorch_model.bin", "model.pt", "README.md", "onnx/model.onnx", "flax_model.msgpack"]
    assert all(any(fnmatch.fnmatch(n, p) for p in HF_FILE_PATTERNS) for n in needed)
    assert not any(any(fnmatch.fnmatch(n, p) for p in HF_FILE_PATTERNS) for n in unneeded)


def test_hub_id_loads_from_cache_offline(cache, model_files):
    snapshot = add_to_cache(cache, "org/tiny", sorted(model_files.iterdir()))
    source = load_model_source("org/tiny")
    assert source.path == snapshot and source.config.architecture == "qwen2"
    local = dict(load_model_source(str(model_files)).iter_weights("cpu", torch.float32))
    for name, tensor in source.iter_weights("cpu", torch.float32):
        assert torch.equal(tensor, local[name]), name


def test_revision_by_commit_hash(cache, model_files):
    add_to_cache(cache, "org/tiny", sorted(model_files.iterdir()))
    assert resolve_model_path("org/tiny", revision=REVISION).name == REVISION


def test_missing_model_offline_is_a_clear_error(cache):
    with pytest.raises(ModelNotFoundError, match=r"'org/absent'.*not in the hub cache.*offline.*tritonforge download"):
        load_model_source("org/absent")


def test_missing_revision_offline_is_a_clear_error(cache, model_files):
    add_to_cache(cache, "org/tiny", sorted(model_files.iterdir()))
    with pytest.raises(ModelNotFoundError, match=r"revision 'v2'.*offline"):
        load_model_source("org/tiny", revision="v2")


def test_explicit_offline_flag_beats_environment(cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelNotFoundError, match="offline"):
        resolve_model_path("org/absent", offline=True)


def test_gguf_file_in_a_hub_repo(cache, tmp_path):
    pytest.importorskip("gguf")
    path = make_gguf_model(tmp_path / "src" / "tiny-q8_0.gguf", arch="llama")
    add_to_cache(cache, "org/tiny-GGUF", [path])
    source = load_model_source("org/tiny-GGUF/tiny-q8_0.gguf")
    assert source.format == "gguf" and source.config.architecture == "llama"
    with pytest.raises(ModelNotFoundError, match=r"other\.gguf"):
        load_model_source("org/tiny-GGUF/other.gguf")


def test_snapshot_without_config_is_named(cache, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("a dataset, not a model")
    add_to_cache(cache, "org/not-a-model", [readme])
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model_source("org/not-a-model")


def test_local_path_wins_and_nonsense_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such file or directory"):
        load_model_source(str(tmp_path / "missing" / "deeper" / "model"))


def test_download_command_offline(cache, model_files, capsys):
    from engine.commands import download

    add_to_cache(cache, "org/tiny", sorted(model_files.iterdir()))
    parser = argparse.ArgumentParser()
    download.configure(parser)
    assert download.run(parser.parse_args(["org/tiny", "--offline"])) == 0
    assert REVISION in capsys.readouterr().out
    assert download.run(parser.parse_args(["org/absent", "--offline"])) == 1
    assert "not in the hub cache" in capsys.readouterr().err


def test_download_command_cache_dir_option(tmp_path, model_files, monkeypatch, capsys):
    from engine.commands import download

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    other = tmp_path / "elsewhere"
    add_to_cache(other, "org/tiny", sorted(model_files.iterdir()))
    parser = argparse.ArgumentParser()
    download.configure(parser)
    assert download.run(parser.parse_args(["org/tiny", "--cache-dir", str(other)])) == 0
    assert str(other) in capsys.readouterr().out


def _fake_hub(monkeypatch, tmp_path, index: dict | None):
    """Stand-ins for the two huggingface_hub calls, recording what an online download would ask for."""
    import huggingface_hub
    from huggingface_hub import errors

    asked = {}
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "config.json").write_text("{}")

    def hf_hub_download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False):
        asked.setdefault("files", []).append(filename)
        if index is None:
            raise errors.EntryNotFoundError(f"{filename} not found")  # the base of the hub's remote error
        path = tmp_path / filename
        path.write_text(json.dumps(index))
        return str(path)

    def snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None, local_files_only=False):
        asked["patterns"] = allow_patterns
        asked["local_files_only"] = local_files_only
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return asked


def test_online_sharded_download_fetches_only_indexed_shards(monkeypatch, tmp_path):
    from engine.loader.hub import download_model

    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    asked = _fake_hub(monkeypatch, tmp_path, {"weight_map": {"a": shards[0], "b": shards[1], "c": shards[0]}})
    download_model("org/sharded", cache_dir=tmp_path / "cache")
    assert asked["local_files_only"] is False
    assert "*.safetensors" not in asked["patterns"] and set(shards) <= set(asked["patterns"])
    assert "config.json" in asked["patterns"] and "tokenizer.json" in asked["patterns"]


def test_online_unsharded_download_uses_the_plain_patterns(monkeypatch, tmp_path):
    from engine.loader.hub import download_model

    asked = _fake_hub(monkeypatch, tmp_path, None)
    download_model("org/single", cache_dir=tmp_path / "cache")
    assert asked["patterns"] == HF_FILE_PATTERNS
