"""GGUF loading: files written with the gguf package (its quantizer), read back to the HF weights.

The expected values come from the HF checkpoint and gguf's own quantize/dequantize, never from the
loader: a quantized weight must be bit-identical to ``quantize(original)`` after the loader undoes
llama.cpp's q/k row permutation, since quantization works row by row.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch

from engine.loader import GGUFWeight, ModelLoadError, UnsupportedModelError, load_model_source
from engine.model_config import ModelConfig
from engine.tokenizer import Tokenizer
from tests.model_factory import make_gguf_model

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
TEXTS = ["Hello, world!", "東京 😀 café", "<|im_start|>user\nhi<|im_end|>\n", "  two  spaces\n\nnew lines"]
# K-quants need K % 256 == 0, so those tests use a model this wide.
WIDE = dict(hidden_size=256, intermediate_size=256, head_dim=64)


def _hf_weights(hf_dir) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(hf_dir / "model.safetensors"))


def _requant(array: np.ndarray, qtype) -> np.ndarray:
    return gguf.quants.dequantize(gguf.quants.quantize(np.ascontiguousarray(array, np.float32), qtype), qtype)


@pytest.mark.parametrize(("arch", "qtype"), [("llama", Q.Q8_0), ("qwen2", Q.Q4_0), ("qwen3", Q.Q8_0)])
def test_quantized_weights_equal_gguf_dequantization(tmp_path, arch, qtype):
    path = make_gguf_model(tmp_path / "m.gguf", arch=arch, qtype=qtype, hf_dir=tmp_path / "hf")
    source = load_model_source(str(path))
    original = _hf_weights(tmp_path / "hf")
    loaded = dict(source.iter_weights("cpu", torch.float32))
    assert sorted(loaded) == sorted(original)
    for name, weight in loaded.items():
        if name.endswith("norm.weight") or name.endswith(".bias"):
            assert isinstance(weight, torch.Tensor) and torch.equal(weight, torch.from_numpy(original[name])), name
            continue
        expected = _requant(original[name], qtype)
        if name == "model.embed_tokens.weight":  # a gather, not a matmul: dequantized at load
            assert isinstance(weight, torch.Tensor) and np.array_equal(weight.numpy(), expected)
            continue
        assert isinstance(weight, GGUFWeight), name
        assert weight.qtype == int(qtype) and weight.shape == original[name].shape
        assert weight.data.dtype == torch.uint8 and weight.data.shape[0] == original[name].shape[0]
        assert np.array_equal(gguf.quants.dequantize(weight.data.numpy(), qtype), expected), name


def test_llama_permuted_qk_load_back_to_hf_layout(tmp_path):
    path = make_gguf_model(tmp_path / "m.gguf", arch="llama", qtype=Q.F32, hf_dir=tmp_path / "hf")
    original = _hf_weights(tmp_path / "hf")
    loaded = dict(load_model_source(str(path)).iter_weights("cpu", torch.float32))
    for name in original:
        assert torch.equal(loaded[name], torch.from_numpy(original[name])), name


def test_unpermuted_file_is_not_silently_equal(tmp_path):
    """Control for the test above: without the converter's permutation the loader's un-permute shows."""
    path = make_gguf_model(tmp_path / "m.gguf", arch="llama", qtype=Q.F32, hf_dir=tmp_path / "hf", permute=False)
    original = _hf_weights(tmp_path / "hf")
    loaded = dict(load_model_source(str(path)).iter_weights("cpu", torch.float32))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(loaded[name], torch.from_numpy(original[name]))
    assert torch.equal(loaded["model.layers.0.self_attn.v_proj.weight"],
                       torch.from_numpy(original["model.layers.0.self_attn.v_proj.weight"]))


def test_qwen2_is_not_unpermuted_and_keeps_biases(tmp_path):
    path = make_gguf_model(tmp_path / "m.gguf", arch="qwen2", qtype=Q.F32, hf_dir=tmp_path / "hf")
    source = load_model_source(str(path))
    assert source.config.attention_bias and not source.config.qk_norm
    original = _hf_weights(tmp_path / "hf")
    for name, tensor in source.iter_weights("cpu", torch.float32):
        assert torch.equal(tensor, torch.from_numpy(original[name])), name


@pytest.mark.parametrize("qtype", [Q.BF16, Q.F16])
def test_half_precision_tensors_are_plain(tmp_path, qtype):
    path = make_gguf_model(tmp_path / "m.gguf", arch="qwen3", qtype=qtype, hf_dir=tmp_path / "hf")
    original = _hf_weights(tmp_path / "hf")
    torch_dtype = torch.bfloat16 if qtype == Q.BF16 else torch.float16
    for name, tensor in load_model_source(str(path)).iter_weights("cpu", torch_dtype):
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch_dtype
        assert torch.equal(tensor, torch.from_numpy(original[name]).to(torch_dtype)), name


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K])
def test_k_quant_rows_are_kept_byte_for_byte(tmp_path, qtype):
    from tests.model_factory import random_k_quantizer

    k_quant, written = random_k_quantizer(qtype)
    path = make_gguf_model(tmp_path / "m.gguf", arch="qwen2", qtype=Q.F32, quantizer=k_quant, **WIDE)
    loaded = dict(load_model_source(str(path)).iter_weights("cpu", torch.float32))
    assert written
    for name, blocks in written.items():
        assert isinstance(loaded[name], GGUFWeight) and loaded[name].qtype == int(qtype)
        assert np.array_equal(loaded[name].data.numpy(), blocks), name


def test_type_without_kernel_is_dequantized_with_a_note(tmp_path, caplog):
    path = make_gguf_model(tmp_path / "m.gguf", arch="qwen3", qtype=Q.TQ2_0, embed_qtype=Q.Q8_0,
                           hf_dir=tmp_path / "hf", **WIDE)
    original = _hf_weights(tmp_path / "hf")
    with caplog.at_level(logging.INFO, logger="engine.loader.gguf_loader"):
        loaded = dict(load_model_source(str(path)).iter_weights("cpu", torch.float32))
    name = "model.layers.0.mlp.down_proj.weight"
    assert isinstance(loaded[name], torch.Tensor)
    assert np.array_equal(loaded[name].numpy(), _requant(original[name], Q.TQ2_0))
    assert "TQ2_0" in caplog.text and "dequantizing" in caplog.text


def test_config_from_metadata_matches_hf_config(tmp_path):
    import json

    path = make_gguf_model(tmp_path / "m.gguf", arch="qwen3", hf_dir=tmp_path / "hf", tie_word_embeddings=True)
    from_gguf = load_model_source(str(path)).config
    from_hf = ModelConfig.from_hf(json.loads((tmp_path / "hf" / "config.json").read_text()))
    for field in ("architecture", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
                  "rope_scaling", "max_position_embeddings", "tie_word_embeddings", "attention_bias", "qk_norm",
                  "bos_token_id"):
        assert getattr(from_gguf, field) == getattr(from_hf, field), field


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tokenizer_rebuilt_from_metadata_matches_tokenizer_json(tmp_path, arch):
    path = make_gguf_model(tmp_path / "m.gguf", arch=arch, hf_dir=tmp_path / "hf")
    rebuilt = load_model_source(str(path)).tokenizer
    original = Tokenizer.from_dir(tmp_path / "hf")
    for text in TEXTS:
        assert rebuilt.encode(text) == original.encode(text), text
        assert rebuilt.decode(rebuilt.encode(text)) == original.decode(original.encode(text))
    messages = [{"role": "user", "content": "hi"}]
    assert rebuilt.apply_chat_template(messages) == original.apply_chat_template(messages)
    assert rebuilt.eos_token_ids == [1] and rebuilt.bos_token_id == 0


def test_tokenizer_json_beside_the_file(tmp_path):
    path = make_gguf_model(tmp_path / "m.gguf", arch="qwen2", hf_dir=tmp_path / "hf", tokenizer_metadata=False)
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json"):
        load_model_source(str(path))
    shutil.copy(tmp_path / "hf" / "tokenizer.json", tmp_path)
    shutil.copy(tmp_path / "hf" / "tokenizer_config.json", tmp_path)
    assert load_model_source(str(path)).tokenizer.encode("hi") == Tokenizer.from_dir(tmp_path / "hf").encode("hi")


def test_unsupported_gguf_architecture_lists_supported(tmp_path):
    path = tmp_path / "phi.gguf"
    writer = gguf.GGUFWriter(str(path), "phi3")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match=r"'phi3'.*supported: llama, qwen2, qwen3"):
        load_model_source(str(path))


@pytest.mark.engine
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_engine_on_gguf_generates_like_transformers_on_the_original(tmp_path, arch):
    """End to end: a llama GGUF has permuted q/k; only a correct un-permute reproduces HF's greedy tokens."""
    from engine.llm import LLM
    from engine.sampling_params import SamplingParams
    from tests.model_factory import load_hf_model

    path = make_gguf_model(tmp_path / "m.gguf", arch=arch, qtype=Q.F32, hf_dir=tmp_path / "hf")
    llm = LLM(str(path), backend="torch", device="cpu", dtype="float32", num_kv_blocks=32, max_num_seqs=2)
    prompt = llm.tokenizer.encode("The quick brown fox")
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))[0]
    hf = load_hf_model(tmp_path / "hf")
    expected = hf.generate(torch.tensor([prompt]), max_new_tokens=10, min_new_tokens=10, do_sample=False)
    assert out.token_ids == expected[0, len(prompt):].tolist()


@pytest.mark.gpu
def test_gguf_weights_on_gpu_equal_cpu(tmp_path):
    path = make_gguf_model(tmp_path / "m.gguf", arch="llama", qtype=Q.Q8_0)
    source = load_model_source(str(path))
    on_cpu = dict(source.iter_weights("cpu", torch.bfloat16))
    for name, weight in source.iter_weights("cuda", torch.bfloat16):
        if isinstance(weight, GGUFWeight):
            assert weight.data.is_cuda and torch.equal(weight.data.cpu(), on_cpu[name].data), name
        else:
            assert weight.is_cuda and weight.dtype == torch.bfloat16 and torch.equal(weight.cpu(), on_cpu[name])


def _llama_cpp_rope_factors(head_dim, theta, factor, low=1.0, high=4.0, original=8192):
    """rope_freqs as llama.cpp's converter computes them for a Llama 3.1 checkpoint."""
    import math

    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * theta ** (i / head_dim)
        if wavelen < original / high:
            factors.append(1.0)
        elif wavelen > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, np.float32)


def test_llama3_rope_freqs_become_rope_scaling(tmp_path):
    factors = _llama_cpp_rope_factors(16, 10000.0, 8.0)
    assert 1.0 < factors[6] < 8.0 and factors[0] == 1.0 and factors[7] == 8.0  # all three regimes present
    path = make_gguf_model(tmp_path / "m.gguf", arch="llama", extra_tensors={"rope_freqs.weight": factors})
    source = load_model_source(str(path))
    assert source.config.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert "rope_freqs.weight" not in dict(source.iter_weights("cpu", torch.float32))


def test_unrecognised_rope_freqs_are_an_error(tmp_path):
    factors = _llama_cpp_rope_factors(16, 10000.0, 8.0, original=4096)
    path = make_gguf_model(tmp_path / "m.gguf", arch="llama", extra_tensors={"rope_freqs.weight": factors})
    with pytest.raises(ModelLoadError, match="rope_freqs do not match"):
        load_model_source(str(path))


def test_directory_with_one_gguf_file(tmp_path):
    make_gguf_model(tmp_path / "only" / "m.gguf", arch="qwen2", hf_dir=tmp_path / "hf")
    assert load_model_source(str(tmp_path / "only")).format == "gguf"
    shutil.copy(tmp_path / "only" / "m.gguf", tmp_path / "only" / "n.gguf")
    with pytest.raises(ModelLoadError, match=r"several GGUF files \(m\.gguf, n\.gguf\)"):
        load_model_source(str(tmp_path / "only"))


def _spm_metadata():
    """A SentencePiece-style vocabulary (pieces + scores, byte pieces) as a llama GGUF stores it."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers, trainers

    from tests.model_factory import CORPUS

    trained = Backend(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trained.train_from_iterator(CORPUS[:6] * 4, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    pieces = sorted(trained.get_vocab().items(), key=lambda item: item[1])
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [p for p, _ in pieces]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    # BPE training appends merged pieces in merge order, so a falling score reproduces that order.
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0}
    return meta


def _spm_reference_encode(text: str, meta: dict) -> list[int]:
    """SentencePiece BPE, naively: merge the adjacent pair whose union scores highest; bytes for the rest."""
    tokens, scores, types = (meta[f"tokenizer.ggml.{k}"] for k in ("tokens", "scores", "token_type"))
    score = {t: scores[i] for i, t in enumerate(tokens) if types[i] == 1}
    ids = {t: i for i, t in enumerate(tokens)}
    pieces = list("▁" + text.replace(" ", "▁"))
    while True:
        best = None
        for i in range(len(pieces) - 1):
            union = pieces[i] + pieces[i + 1]
            if union in score and (best is None or score[union] > best[0]):
                best = (score[union], i)
        if best is None:
            break
        i = best[1]
        pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
    out = []
    for piece in pieces:
        out.extend([ids[piece]] if piece in score else [ids[f"<0x{b:02X}>"] for b in piece.encode()])
    return out


@pytest.mark.parametrize("text", ["Hello, world!", "The quick brown fox jumps over the lazy dog.",
                                  "  two  spaces", "東京 😀 unknown characters", "line\nbreak"])
def test_sentencepiece_tokenizer_rebuilt_from_metadata(tmp_path, text):
    from engine.loader.gguf_tokenizer import tokenizer_from_gguf

    meta = _spm_metadata()
    tok = tokenizer_from_gguf(meta, tmp_path / "m.gguf")
    expected = _spm_reference_encode(text, meta)
    assert len(expected) < len(text.encode())  # merges happened: the test is not about bytes only
    assert tok.encode(text, add_special_tokens=False) == expected
    assert tok.encode(text) == [1, *expected]  # llama SentencePiece models add BOS
    assert tok.decode(tok.encode(text)) == text
    assert tok.eos_token_ids == [2]


def test_incremental_detokenizer_with_sentencepiece_spaces(tmp_path):
    from engine.detokenizer import IncrementalDetokenizer
    from engine.loader.gguf_tokenizer import tokenizer_from_gguf

    tok = tokenizer_from_gguf(_spm_metadata(), tmp_path / "m.gguf")
    prompt = tok.encode("The quick")
    output = tok.encode(" brown fox 😀 jumps", add_special_tokens=False)[1:]  # drop the dummy-prefix piece
    detok = IncrementalDetokenizer(tok, prompt)
    streamed = "".join(detok.push(i) for i in output)
    full = tok.decode(prompt + output)
    assert full.startswith(tok.decode(prompt)) and streamed == full[len(tok.decode(prompt)):]
    assert "😀" in streamed and " brown" in streamed


def test_pre_tokenizer_regexes_agree_with_transformers():
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    theirs = getattr(mapping, "GGUF_PRE_TOKENIZER_SPLITS", None)
    if theirs is None:
        pytest.skip("this transformers version has no GGUF pre-tokenizer table to compare with")
    from engine.loader.gguf_tokenizer import PRE_TOKENIZER_SPLITS

    compared = [name for name, split in PRE_TOKENIZER_SPLITS.items() if split is not None and name in theirs]
    assert {"llama-bpe", "qwen2", "tekken"} <= set(compared)
    for name in compared:
        assert PRE_TOKENIZER_SPLITS[name] == theirs[name], name


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe"])
def test_regex_pre_tokenizers_match_a_reference_tokenizer(tmp_path, pre):
    """GGUF 'pre' names rebuild the reference pre-tokenizer (regex from transformers, not from the loader)."""
    import json

    from tokenizers import Regex, pre_tokenizers

    from engine.loader.gguf_tokenizer import tokenizer_from_gguf
    from tests.model_factory import make_tokenizer

    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    regex = getattr(mapping, "GGUF_PRE_TOKENIZER_SPLITS", {}).get(pre) or pytest.skip("no reference regex")
    reference = Tokenizer.from_dir(make_tokenizer(tmp_path))
    reference.backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    data = json.loads(reference.backend.to_str())
    vocab = dict(data["model"]["vocab"])
    tokens = sorted(vocab, key=vocab.get)
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.merges": [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]],
            "tokenizer.ggml.token_type": [3 if i < 4 else 1 for i in range(len(tokens))],
            "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1}
    rebuilt = tokenizer_from_gguf(meta, tmp_path / "m.gguf")
    for text in ["12345 numbers 3.14159", "It's the dog's, isn't it?", "  spaces\n\n\nlines", "東京 😀"]:
        assert rebuilt.encode(text) == reference.encode(text), text
    words = [w for w, _ in rebuilt.backend.pre_tokenizer.pre_tokenize_str("12345")]
    assert words == (["1", "2", "3", "4", "5"] if pre == "qwen2" else ["123", "45"])  # the regexes differ here


def test_metadata_fallback_for_older_gguf_equals_contents(tmp_path):
    from engine.loader.gguf_loader import _field_value, open_gguf

    reader = open_gguf(make_gguf_model(tmp_path / "m.gguf", arch="qwen2", hf_dir=tmp_path / "hf"))
    if not hasattr(next(iter(reader.fields.values())), "contents"):
        pytest.skip("this gguf release has no ReaderField.contents() to compare with")
    for key, field in reader.fields.items():
        assert _field_value(field) == field.contents(), key
