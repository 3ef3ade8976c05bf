"""Hostile or damaged model files: every one fails with ModelLoadError naming the file and the problem."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from engine.loader import ModelLoadError, UnsupportedModelError, load_model_source
from engine.loader.paths import safe_child
from tests.model_factory import make_gguf_model, make_hf_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("base"), arch="llama")


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("sharded"), arch="llama", max_shard_size="40KB")


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    pytest.importorskip("gguf")
    return make_gguf_model(tmp_path_factory.mktemp("gguf") / "m.gguf", arch="llama")


@pytest.fixture
def model(model_dir, tmp_path):
    return shutil.copytree(model_dir, tmp_path / "model")


def _load_error(path, match):
    with pytest.raises(ModelLoadError, match=match) as err:
        load_model_source(str(path))
    return err.value


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (length - len(new)) if len(new) <= length else b""
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + length:])


def test_truncated_safetensors(model):
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    err = _load_error(model, r"truncated")
    assert err.path.endswith("model.safetensors")


def test_file_shorter_than_its_header_length(model):
    (model / "model.safetensors").write_bytes(struct.pack("<Q", 10_000) + b"{}")
    _load_error(model, r"header length 10000 does not fit the file size")


def test_tiny_file(model):
    (model / "model.safetensors").write_bytes(b"abc")
    _load_error(model, r"too short to be safetensors")


def test_header_not_json(model):
    weights = model / "model.safetensors"
    raw = weights.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    weights.write_bytes(raw[:8] + b"#" * length + raw[8 + length:])
    _load_error(model, r"header is not valid JSON")


def test_shape_disagrees_with_byte_range(model):
    def grow(header):
        header["model.norm.weight"]["shape"] = [128]

    _rewrite_header(model / "model.safetensors", grow)
    _load_error(model, r"'model\.norm\.weight'.*needs 512 bytes but its data_offsets span 256")


def test_overlapping_tensors(model):
    def overlap(header):
        names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
        a, b = header[names[0]], header[names[1]]
        size = b["data_offsets"][1] - b["data_offsets"][0]
        b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + size]

    _rewrite_header(model / "model.safetensors", overlap)
    _load_error(model, r"overlap")


def test_unknown_dtype(model):
    def bad_dtype(header):
        header["model.norm.weight"]["dtype"] = "F128"

    _rewrite_header(model / "model.safetensors", bad_dtype)
    _load_error(model, r"unknown dtype 'F128'")


def _sharded_copy(sharded_dir, tmp_path):
    directory = shutil.copytree(sharded_dir, tmp_path / "model")
    index_path = directory / "model.safetensors.index.json"
    return directory, index_path, json.loads(index_path.read_text())


@pytest.mark.parametrize("target", ["../outside.safetensors", "sub/../../outside.safetensors"])
def test_index_pointing_outside_via_dotdot(sharded_dir, tmp_path, target):
    directory, index_path, index = _sharded_copy(sharded_dir, tmp_path)
    shutil.copy(directory / next(iter(index["weight_map"].values())), tmp_path / "outside.safetensors")
    index["weight_map"]["model.norm.weight"] = target
    index_path.write_text(json.dumps(index))
    _load_error(directory, r"points outside the model directory")


def test_index_with_absolute_path(sharded_dir, tmp_path):
    directory, index_path, index = _sharded_copy(sharded_dir, tmp_path)
    outside = tmp_path / "abs.safetensors"
    shutil.copy(directory / next(iter(index["weight_map"].values())), outside)
    index["weight_map"]["model.norm.weight"] = str(outside)
    index_path.write_text(json.dumps(index))
    _load_error(directory, r"points outside the model directory")


def test_symlink_escaping_the_model_directory(sharded_dir, tmp_path):
    directory, _, index = _sharded_copy(sharded_dir, tmp_path)
    shard = directory / next(iter(index["weight_map"].values()))
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(shard, outside)
    shard.symlink_to(outside)
    _load_error(directory, r"outside the model directory.*refusing")


def test_symlink_inside_the_directory_is_fine(model_dir, tmp_path):
    directory = shutil.copytree(model_dir, tmp_path / "model")
    (directory / "real").mkdir()
    shutil.move(directory / "model.safetensors", directory / "real" / "w.safetensors")
    (directory / "model.safetensors").symlink_to(directory / "real" / "w.safetensors")
    assert load_model_source(str(directory)).config.architecture == "llama"


def test_index_naming_a_missing_shard(sharded_dir, tmp_path):
    directory, index_path, index = _sharded_copy(sharded_dir, tmp_path)
    index["weight_map"]["model.norm.weight"] = "model-99999-of-99999.safetensors"
    index_path.write_text(json.dumps(index))
    _load_error(directory, r"does not exist")


def test_index_naming_a_non_safetensors_file(sharded_dir, tmp_path):
    directory, index_path, index = _sharded_copy(sharded_dir, tmp_path)
    index["weight_map"]["model.norm.weight"] = "pytorch_model.bin"
    index_path.write_text(json.dumps(index))
    _load_error(directory, r"not a \.safetensors file")


def test_safe_child_allows_hub_blobs(tmp_path):
    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (repo / "blobs" / "123").write_bytes(b"x")
    (snapshot / "config.json").symlink_to("../../blobs/123")
    assert safe_child(snapshot, "config.json") == snapshot / "config.json"


def test_unsupported_architecture_lists_supported(model):
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["FalconForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    err = _load_error(model, r"FalconForCausalLM.*supported: LlamaForCausalLM")
    assert isinstance(err, UnsupportedModelError) and err.path.endswith("config.json")


def test_corrupt_config_json(model):
    (model / "config.json").write_text("{")
    _load_error(model, r"cannot parse config\.json")


def test_gguf_bad_magic(gguf_file, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + gguf_file.read_bytes()[4:])
    err = _load_error(bad, r"not a GGUF file \(magic b'GGML'")
    assert err.path.endswith("bad.gguf")


def test_gguf_unsupported_version(gguf_file, tmp_path):
    bad = tmp_path / "v9.gguf"
    raw = gguf_file.read_bytes()
    bad.write_bytes(raw[:4] + struct.pack("<I", 9) + raw[8:])
    _load_error(bad, r"GGUF version 9 is not supported")


def test_gguf_big_endian_is_named(gguf_file, tmp_path):
    bad = tmp_path / "be.gguf"
    raw = gguf_file.read_bytes()
    bad.write_bytes(raw[:4] + struct.pack(">I", 3) + raw[8:])
    _load_error(bad, r"big-endian")


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.01])
def test_gguf_truncated(gguf_file, tmp_path, keep):
    bad = tmp_path / "cut.gguf"
    raw = gguf_file.read_bytes()
    bad.write_bytes(raw[:int(len(raw) * keep)])
    _load_error(bad, r"truncated")


def test_not_a_gguf_file_suffix(tmp_path):
    other = tmp_path / "weights.pt"
    other.write_bytes(b"x")
    _load_error(other, r"must be a \.gguf file")
