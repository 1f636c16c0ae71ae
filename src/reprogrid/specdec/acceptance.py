"""Analytic acceptance of a verifier/drafter pair on one continuation (teacher-forced; definitions: the package
docstring)."""

from __future__ import annotations

from reprogrid.errors import UserError
from reprogrid.specdec.pairs import shared_vocab
from reprogrid.specdec.theory import check_temperature

CHUNK = 64  # positions per chunk: bounds the vocab-sized temporaries (Qwen: 152k floats per position)


def as_2d(ids, name: str):
    """One sequence of token ids as a long tensor of shape [1, n] (UserError naming ``name`` otherwise)."""
    import torch

    t = torch.as_tensor(ids, dtype=torch.long)
    if t.dim() == 1:
        t = t[None, :]
    if t.dim() != 2 or t.shape[0] != 1:
        raise UserError(f"expected one sequence of token ids (shape [n] or [1, n]), got shape {tuple(t.shape)}",
                        field=name)
    return t


def _continuation_logits(model, seq, n_cont: int, k: int):
    """Logits (first ``k`` vocabulary rows) at the ``n_cont`` positions that predict the continuation tokens."""
    kwargs = {}
    if getattr(model, "_supports_logits_to_keep", lambda: False)():
        kwargs["logits_to_keep"] = n_cont + 1  # skip the prompt's LM-head rows (vocab x prompt length)
    logits = model(seq.to(model.device), **kwargs).logits[0]
    return logits[logits.shape[0] - n_cont - 1: -1, :k]


def _position_terms(lv, ld, temperature: float, drafter_temperature: float) -> dict:
    """Per position: alpha = sum min(p, q), sum p log q, sum p log p and both argmaxes, chunk by chunk."""
    import torch

    parts: dict[str, list] = {name: [] for name in ("alpha", "plogq", "plogp", "arg_p", "arg_q")}
    for lo in range(0, lv.shape[0], CHUNK):
        v_chunk = lv[lo: lo + CHUNK].float().cpu()
        d_chunk = ld[lo: lo + CHUNK].float().cpu()
        logp = torch.log_softmax(v_chunk / temperature, dim=-1)
        logq = torch.log_softmax(d_chunk / drafter_temperature, dim=-1)
        p, q = logp.exp(), logq.exp()
        parts["alpha"].append(torch.minimum(p, q).sum(-1).clamp(max=1.0))
        # 0 * log 0 terms: p underflows to exactly 0 only where logp = -inf, so mask them.
        parts["plogq"].append(torch.where(p > 0, p * logq, torch.zeros_like(p)).sum(-1))
        parts["plogp"].append(torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1))
        parts["arg_p"].append(v_chunk.argmax(-1))
        parts["arg_q"].append(d_chunk.argmax(-1))
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def analytic_acceptance(verifier, drafter, input_ids, continuation_ids, *, temperature: float = 1.0,
                        drafter_temperature: float | None = None, vocab_size: int | None = None) -> dict:
    """Teacher-force prompt + continuation through both models (one forward pass each) and compare them.

    Positions are the ones that predict each continuation token. Per position: alpha = sum_x min(p, q),
    argmax match, H(p, q) = -sum p log q and KL(p || q) = H(p, q) - H(p), all in nats, with
    p = softmax(verifier logits / temperature), q = softmax(drafter logits / drafter_temperature) (default: the
    same temperature; see :func:`reprogrid.specdec.hooks.drafter_warpers` for why they can differ in
    transformers).

    Vocabulary: equal LM-head sizes are compared in full (as transformers does). Sizes that differ only by
    padding are compared on the first ``vocab_size`` rows (pass ``len(tokenizer)``), renormalised there; a
    difference beyond padding raises UserError.
    """
    import torch

    if drafter_temperature is None:
        drafter_temperature = temperature
    check_temperature(temperature, "temperature")
    check_temperature(drafter_temperature, "drafter_temperature")
    k = shared_vocab(verifier, drafter, vocab_size)
    prompt = as_2d(input_ids, "input_ids")
    cont = as_2d(continuation_ids, "continuation_ids")
    n_prompt, n_cont = prompt.shape[1], cont.shape[1]
    if n_prompt < 1 or n_cont < 1:
        raise UserError("prompt and continuation must each hold at least one token", field="input_ids")
    seq = torch.cat([prompt, cont], dim=1)
    with torch.inference_mode():
        lv, ld = _continuation_logits(verifier, seq, n_cont, k), _continuation_logits(drafter, seq, n_cont, k)
        t = _position_terms(lv, ld, temperature, drafter_temperature)
        ce = -t["plogq"]
        kl = (t["plogp"] - t["plogq"]).clamp(min=0.0)
        matches = t["arg_p"] == t["arg_q"]
        on_path = t["arg_p"] == cont[0, :].cpu()
    return {
        "alpha": float(t["alpha"].mean()),
        "alphas": t["alpha"].tolist(),
        "alpha_greedy": float(matches.float().mean()),
        "matches": matches.tolist(),
        "cross_entropy": float(ce.mean()),
        "kl": float(kl.mean()),
        "verifier_entropy": float(-t["plogp"].mean()),
        "continuation_is_verifier_argmax": float(on_path.float().mean()),
        "n_positions": int(n_cont),
        "vocab_compared": int(k),
        "temperature": float(temperature),
        "drafter_temperature": float(drafter_temperature),
    }
