"""The llama.cpp engine through lm-eval: llama-cpp-python's OpenAI-compatible server on 127.0.0.1 and lm-eval's
``local-completions`` model against it.

What the HTTP path needs to give the same per-sample records as the transformers path (found by hand, see
issue 17): requests go as strings (``tokenized_requests=False``) while lm-eval sizes, templates and
fewshot-splits prompts with the model's Hugging Face tokenizer (``tokenizer_backend=huggingface``), so
RULER's sizing and the recorded prompt token counts stay on it; the chat template is applied here as text,
as lm-eval's hf model does (``continue_final_message`` for a task's answer prefix), because lm-eval's API
models send a chat as JSON that a completions endpoint cannot read; the token limit (``max_tokens``) and the
stop sequences are the ones lm-eval passes for the task, as on the hf path; llama-cpp-python's server
defaults that transformers does not apply (repeat penalty 1.1, top-k 40, top-p 0.95, min-p 0.05) are sent
as their neutral values; prompts longer than ``max_length - max_gen_toks`` tokens are left-truncated by
the same rule as lm-eval's hf model. The server runs without full logits (``--logits_all false``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from lm_eval.models.openai_completions import LocalCompletionsAPI

from reprogrid.engines.server import HOST, choose_port, start, stop

ALIAS = "reprogrid"  # the model name the server answers to
NEUTRAL = {"repeat_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "top_p": 1.0, "min_p": 0.0}
TOP_K_SAMPLE = 50  # transformers' default top_k under do_sample (lm-eval's hf model sets no other)


class LlamaCppCompletions(LocalCompletionsAPI):
    """lm-eval's local-completions with the prompt handling the per-sample records need (module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.chat_template_args: dict = {}
        self._max_length = int(kwargs.get("max_length") or 2048)

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt, **self.chat_template_args)

    def truncate(self, prompt: str, max_gen_toks: int) -> str:
        """Left truncation to ``max_length - max_gen_toks`` tokens, as lm-eval's hf model cuts its context."""
        ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        keep = self._max_length - int(max_gen_toks)
        return prompt if len(ids) <= keep else self.tokenizer.decode(ids[-keep:])

    def _create_payload(self, messages, generate=False, gen_kwargs=None, seed=1234, eos=None, **kwargs) -> dict:
        if not generate:
            raise NotImplementedError("the llama_cpp engine runs generation tasks only (RULER)")
        gen_kwargs = dict(gen_kwargs or {})
        sample = bool(gen_kwargs.get("do_sample"))
        budget = gen_kwargs.get("max_gen_toks", self._max_gen_toks)
        if isinstance(messages, str):
            messages = self.truncate(messages, budget)
        payload = super()._create_payload(messages, generate=True, gen_kwargs=gen_kwargs, seed=seed, eos=eos)
        payload.update(NEUTRAL, top_k=TOP_K_SAMPLE if sample else 1)
        return payload


def server_argv(model_file: Path, port: int, n_ctx: int, threads: int, seed: int) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model_file), "--model_alias", ALIAS,
            "--host", HOST, "--port", str(port), "--n_ctx", str(int(n_ctx)), "--n_threads", str(int(threads)),
            "--n_threads_batch", str(int(threads)), "--logits_all", "false", "--seed", str(int(seed))]


@contextlib.contextmanager
def serve(prepared_dir: Path, settings: dict, n_ctx: int, threads: int, seed: int, field: str, log=print):
    """The server on the prepared GGUF and lm-eval's model against it; the server is stopped on the way out."""
    from reprogrid.engines import require_engine

    require_engine("llama_cpp")
    port = choose_port(int(settings.get("port", 0)), field=f"{field}.port")
    proc = start(server_argv(Path(prepared_dir) / "model.gguf", port, n_ctx, threads, seed), port, "/v1/models",
                 timeout=float(settings.get("startup_timeout", 300)), log=log)
    try:
        lm = LlamaCppCompletions(model=ALIAS, base_url=f"http://{HOST}:{port}/v1/completions",
                                 tokenizer=str(prepared_dir), tokenizer_backend="huggingface",
                                 tokenized_requests=False, max_length=n_ctx, seed=seed, timeout=3600,
                                 max_retries=1, batch_size=1)
        yield lm, lm.tokenizer
    finally:
        stop(proc)
        log(f"[server] pid {proc.pid} stopped")
