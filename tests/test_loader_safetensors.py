"""Loading Hugging Face safetensors directories: weights equal transformers' own, names and shapes checked."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine.loader import ModelLoadError, load_model_source
from tests.model_factory import load_hf_model, make_hf_model


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("llama"), arch="llama", seed=1)


def _loaded(source, device="cpu", dtype=torch.float32):
    return dict(source.iter_weights(device, dtype))


@pytest.mark.parametrize(("arch", "tied", "shard"), [
    ("llama", False, None), ("mistral", False, "40KB"), ("qwen2", False, None), ("qwen3", True, "40KB"),
])
def test_weights_equal_transformers_state_dict(tmp_path, arch, tied, shard):
    directory = make_hf_model(tmp_path, arch=arch, tie_word_embeddings=tied, max_shard_size=shard, seed=3)
    source = load_model_source(str(directory))
    assert source.format == "safetensors" and source.config.architecture == arch
    if shard:
        assert (directory / "model.safetensors.index.json").exists() and len(source.weight_files) > 1
    reference = load_hf_model(directory).state_dict()
    loaded = _loaded(source)
    if tied:  # transformers lists the tied lm_head; the checkpoint (and the loader) do not
        assert "lm_head.weight" not in loaded
        reference.pop("lm_head.weight")
    assert sorted(loaded) == sorted(reference)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, reference[name]), name


def test_dtype_cast_and_default_dtype(tmp_path):
    directory = make_hf_model(tmp_path, arch="qwen2", dtype=torch.bfloat16, seed=4)
    source = load_model_source(str(directory))
    assert source.config.dtype == torch.bfloat16
    reference = load_hf_model(directory).state_dict()
    as_bf16 = dict(source.iter_weights("cpu"))  # the config's dtype
    as_fp32 = _loaded(source, dtype=torch.float32)
    for name, tensor in as_bf16.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, reference[name].to(torch.bfloat16))
        assert as_fp32[name].dtype == torch.float32 and torch.equal(as_fp32[name], tensor.float())


def test_loaded_tensors_are_writable_copies(llama_dir):
    source = load_model_source(str(llama_dir))
    name, tensor = next(iter(source.iter_weights("cpu", torch.float32)))
    before = tensor.clone()
    tensor.add_(1.0)  # must not touch the file (it is memory-mapped read-only)
    again = dict(source.iter_weights("cpu", torch.float32))[name]
    assert torch.equal(again, before)


def test_tokenizer_config_and_generation_defaults(llama_dir):
    source = load_model_source(str(llama_dir))
    assert source.generation_defaults == {"temperature": 0.7, "top_p": 0.9}
    assert source.config.eos_token_ids == [1, 3] == source.tokenizer.eos_token_ids
    assert source.tokenizer.encode("hi")[0] == source.config.bos_token_id == 0


def test_generation_max_new_tokens_maps_to_max_tokens(tmp_path):
    directory = make_hf_model(tmp_path, generation_config={"max_new_tokens": 12, "top_k": 20})
    assert load_model_source(str(directory)).generation_defaults == {
        "temperature": 0.7, "top_p": 0.9, "top_k": 20, "max_tokens": 12}


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_shape_mismatch_vs_config_is_named(llama_dir, tmp_path):
    directory = _copy(llama_dir, tmp_path / "m")
    _edit_config(directory, intermediate_size=96)
    with pytest.raises(ModelLoadError, match=r"mlp\.(gate|up|down)_proj\.weight.*shape.*config implies"):
        load_model_source(str(directory))


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    directory = make_hf_model(tmp_path / "m", arch="llama")
    weights = load_file(str(directory / "model.safetensors"))
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, str(directory / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"lacks.*model\.layers\.1\.mlp\.up_proj\.weight"):
        load_model_source(str(directory))


def test_unexpected_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    directory = make_hf_model(tmp_path / "m", arch="llama")
    weights = load_file(str(directory / "model.safetensors"))
    weights["model.layers.0.mlp.extra.weight"] = torch.ones(2)
    save_file(weights, str(directory / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"unexpected weight 'model\.layers\.0\.mlp\.extra\.weight'"):
        load_model_source(str(directory))


def test_tokenizer_larger_than_vocab_is_rejected(llama_dir, tmp_path):
    directory = _copy(llama_dir, tmp_path / "m")
    _edit_config(directory, vocab_size=100)
    with pytest.raises(ModelLoadError, match="tokenizer has 384 tokens"):
        load_model_source(str(directory))


def test_missing_config_json(llama_dir, tmp_path):
    directory = _copy(llama_dir, tmp_path / "m")
    (directory / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model_source(str(directory))


def test_pickle_only_checkpoint_is_refused_with_reason(llama_dir, tmp_path):
    directory = _copy(llama_dir, tmp_path / "m")
    (directory / "model.safetensors").unlink()
    # Not a real pickle: the loader must refuse by name, never open it.
    (directory / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin.*never loads pickle"):
        load_model_source(str(directory))


def test_pickle_beside_safetensors_is_ignored(llama_dir, tmp_path):
    directory = _copy(llama_dir, tmp_path / "m")
    (directory / "pytorch_model.bin").write_bytes(b"never unpickled")
    assert load_model_source(str(directory)).weight_files == [directory / "model.safetensors"]


@pytest.mark.gpu
def test_weights_on_gpu_equal_cpu(llama_dir):
    source = load_model_source(str(llama_dir))
    on_cpu = dict(source.iter_weights("cpu", torch.bfloat16))
    for name, tensor in source.iter_weights("cuda", torch.bfloat16):
        assert tensor.is_cuda and tensor.dtype == torch.bfloat16
        assert torch.equal(tensor.cpu(), on_cpu[name]), name
