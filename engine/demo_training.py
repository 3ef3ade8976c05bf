"""A few seconds of training for the demo model, so that ``tritonforge demo`` prints text, not noise.

The demo's weights start random; this fits them to the demo text (next-token cross-entropy, AdamW) with
a plain-torch forward of the same decoder the engine implements -- Hugging Face semantics: RMSNorm in
float32, per-head q/k RMSNorm before RoPE for Qwen3, half-rotation RoPE, causal grouped-query attention,
SwiGLU, tied embeddings. It is tiny and memorises its corpus, which is the point: a prompt taken from the
text is continued with the text, through the engine's own loader, cache, scheduler and kernels. (That the
engine computes the same function as this forward is checked against transformers in the test suite.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def forward(weights: dict[str, torch.Tensor], config: dict, ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, S, vocab] for token ids [B, S] (float32 weights, HF names)."""
    B, S = ids.shape
    H, KV, D = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    eps, qk_norm = config["rms_norm_eps"], config["model_type"] == "qwen3"
    inv_freq = config["rope_theta"] ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
    angles = torch.arange(S, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos = torch.cat((angles.cos(), angles.cos()), -1)[None, None]
    sin = torch.cat((angles.sin(), angles.sin()), -1)[None, None]
    x = weights["model.embed_tokens.weight"][ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rmsnorm(x, weights[p + "input_layernorm.weight"], eps)
        q = (h @ weights[p + "self_attn.q_proj.weight"].T).view(B, S, H, D)
        k = (h @ weights[p + "self_attn.k_proj.weight"].T).view(B, S, KV, D)
        v = (h @ weights[p + "self_attn.v_proj.weight"].T).view(B, S, KV, D)
        if qk_norm:
            q = _rmsnorm(q, weights[p + "self_attn.q_norm.weight"], eps)
            k = _rmsnorm(k, weights[p + "self_attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, S, H * D)
        x = x + o @ weights[p + "self_attn.o_proj.weight"].T
        h = _rmsnorm(x, weights[p + "post_attention_layernorm.weight"], eps)
        gate, up = h @ weights[p + "mlp.gate_proj.weight"].T, h @ weights[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ weights[p + "mlp.down_proj.weight"].T
    x = _rmsnorm(x, weights["model.norm.weight"], eps)
    return x @ weights["model.embed_tokens.weight"].T


def train(weights: dict[str, torch.Tensor], config: dict, token_ids: list[int], steps: int,
          seq_len: int = 64, batch: int = 8, lr: float = 5e-3, seed: int = 0) -> float:
    """Fit ``weights`` (float32, updated in place) to random windows of ``token_ids``; returns the last loss."""
    if steps <= 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    data = torch.tensor(token_ids, dtype=torch.long)
    seq_len = min(seq_len, len(token_ids) - 1)
    params = [w.requires_grad_() for w in weights.values()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        starts = torch.randint(0, len(token_ids) - seq_len, (batch,), generator=gen)
        window = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])
        logits = forward(weights, config, window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for w in params:
        w.requires_grad_(False)
    return float(loss.detach())
