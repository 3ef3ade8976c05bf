"""``tritonforge models``: finds HF directories, GGUF files and hub-cache snapshots; describes them from headers."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from tests.model_factory import make_gguf_model, make_hf_model
from tests.test_hub import add_to_cache


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    pytest.importorskip("gguf")
    root = tmp_path_factory.mktemp("models")
    make_hf_model(root / "llama-tiny", arch="llama")
    make_hf_model(root / "nested" / "qwen3-tiny", arch="qwen3", tie_word_embeddings=True, max_shard_size="40KB")
    make_gguf_model(root / "ggufs" / "tiny-q8_0.gguf", arch="qwen2", hf_dir=root / "ggufs-src" / "qwen2-tiny")
    broken = make_hf_model(root / "broken", arch="llama")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return root


def _listed(capsys, *argv) -> dict[str, dict]:
    assert main(["models", "--json", *argv]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {row["name"].split("/")[-1].split("@")[0]: row for row in rows}


def _hf_parameter_count(directory) -> int:
    from safetensors.numpy import load_file

    return sum(a.size for f in directory.glob("*.safetensors") for a in load_file(str(f)).values())


def test_lists_hf_dirs_and_gguf_files_with_details(models_root, capsys):
    listed = _listed(capsys, str(models_root))
    assert set(listed) == {"llama-tiny", "qwen3-tiny", "tiny-q8_0.gguf", "qwen2-tiny", "broken"}
    llama = listed["llama-tiny"]
    assert (llama["format"], llama["architecture"], llama["quant"]) == ("safetensors", "llama", "F32")
    assert llama["parameters"] == _hf_parameter_count(models_root / "llama-tiny")
    assert llama["size_bytes"] == (models_root / "llama-tiny" / "model.safetensors").stat().st_size
    qwen3 = listed["qwen3-tiny"]
    assert qwen3["parameters"] == _hf_parameter_count(models_root / "nested" / "qwen3-tiny")
    gguf = listed["tiny-q8_0.gguf"]
    assert (gguf["format"], gguf["architecture"], gguf["quant"]) == ("gguf", "qwen2", "Q8_0")
    assert gguf["parameters"] == _hf_parameter_count(models_root / "ggufs-src" / "qwen2-tiny")
    assert "truncated" in listed["broken"]["error"]


def test_table_output(models_root, capsys):
    assert main(["models", str(models_root / "llama-tiny"), str(models_root / "ggufs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "FORMAT", "ARCH", "PARAMS", "SIZE", "QUANT"]
    assert len(lines) == 3 and "Q8_0" in lines[2] and "llama" in lines[1]


def test_hub_cache_snapshots_are_named_by_repo_id(models_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    add_to_cache(cache, "org/tiny", sorted((models_root / "llama-tiny").iterdir()))
    add_to_cache(cache, "org/tiny-GGUF", [models_root / "ggufs" / "tiny-q8_0.gguf"])
    assert main(["models", "--json", str(cache)]) == 0
    names = sorted(json.loads(line)["name"] for line in capsys.readouterr().out.splitlines())
    assert names[0].startswith("org/tiny-GGUF/tiny-q8_0.gguf@") and names[1].startswith("org/tiny@")


def test_missing_path_is_reported(tmp_path, capsys):
    assert main(["models", str(tmp_path / "nope")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


def test_default_paths_are_cwd_and_hub_cache(models_root, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    add_to_cache(cache, "org/tiny", sorted((models_root / "llama-tiny").iterdir()))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(models_root / "ggufs")
    assert main(["models", "--json"]) == 0
    names = sorted(json.loads(line)["name"] for line in capsys.readouterr().out.splitlines())
    assert len(names) == 2
    assert any(n.startswith("org/tiny@") for n in names) and any(n.endswith("ggufs/tiny-q8_0.gguf") for n in names)
