"""A tiny random Qwen2 as a GGUF file: the weights of a tiny transformers model (conftest.make_tiny_qwen2) written
with gguf-py under llama.cpp's tensor names, and the real Qwen2.5 tokenizer's metadata copied from the embedded
GGUF, so that transformers and llama.cpp run the same float32 weights with the same tokenizer."""

from __future__ import annotations

from pathlib import Path

NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf_name: str) -> str | None:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return None  # tied: llama.cpp falls back to token_embd
    parts = hf_name.split(".")  # model.layers.N.<module...>.weight|bias
    n, module, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
    return f"blk.{n}.{NAMES[module]}.{kind}"


def make_tiny_gguf(hf_dir: Path, tokenizer_gguf: Path, out: Path) -> Path:
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(hf_dir)
    weights = load_file(str(Path(hf_dir) / "model.safetensors"))
    reader = gguf.GGUFReader(str(tokenizer_gguf))
    w = gguf.GGUFWriter(str(out), "qwen2")
    w.add_name("tiny-random-qwen2")
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_block_count(int(cfg.num_hidden_layers))
    w.add_feed_forward_length(int(cfg.intermediate_size))
    w.add_head_count(int(cfg.num_attention_heads))
    w.add_head_count_kv(int(cfg.num_key_value_heads))
    rope = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    w.add_rope_freq_base(float(rope))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for hf_name, array in sorted(weights.items()):
        name = gguf_name(hf_name)
        if name is not None:
            w.add_tensor(name, array.astype("float32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
