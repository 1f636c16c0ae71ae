"""Prompts of the speculative decoding study: files, the workload-mix order, encoding.

Workload mix: every prompt is measured on its own (batch size 1, fresh caches), so the mix factor only changes
the order in which prompts are run (``position``). Under greedy decoding acceptance is order-invariant by
construction; any effect of the mix is therefore on wall-clock state (CPU caches, allocator, frequency), not on
alignment. Effects of real multitask serving (cross-request batching, adaptive draft-length schedules carried
over between requests, online drafter updates) are not modelled.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from reprogrid.errors import UserError

MIXES = ("single", "interleaved")


def load_prompts(path: str | Path | None = None) -> list[dict]:
    """Read a JSONL prompt file (default: the built-in set). Each line: task, prompt_id, and text or messages."""
    if path is None:
        text = resources.files("reprogrid").joinpath("data/specdec_prompts.jsonl").read_text(encoding="utf-8")
        where = "specdec_prompts.jsonl (built-in)"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read the prompt file: {exc.strerror}", field=str(path)) from None
        where = str(path)
    prompts = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"line {n} is not JSON ({exc.msg})", field=where) from None
        prompts.append(item)
    validate_prompts(prompts, where)
    return prompts


def validate_prompts(prompts: list[dict], where: str = "prompts") -> None:
    """Each prompt: non-empty ``task`` and ``prompt_id`` strings, exactly one of ``text`` or ``messages``;
    (task, prompt_id) unique."""
    if not prompts:
        raise UserError("no prompts", field=where)
    seen = set()
    for i, p in enumerate(prompts):
        if not isinstance(p, dict):
            raise UserError(f"item {i} is not an object", field=where)
        for key in ("task", "prompt_id"):
            if not isinstance(p.get(key), str) or not p[key]:
                raise UserError(f"item {i} needs a non-empty string '{key}'", field=where)
        has_text = isinstance(p.get("text"), str) and bool(p["text"])
        msgs = p.get("messages")
        has_msgs = isinstance(msgs, list) and bool(msgs) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in msgs)
        if has_text == bool(has_msgs):
            raise UserError(f"item {i} ({p['prompt_id']}) needs exactly one of 'text' (string) or 'messages' "
                            "(list of {role, content})", field=where)
        key = (p["task"], p["prompt_id"])
        if key in seen:
            raise UserError(f"duplicate (task, prompt_id) {key}", field=where)
        seen.add(key)


def by_task(prompts: list[dict]) -> dict[str, list[dict]]:
    """Prompts grouped by task: tasks in order of first appearance, prompts in the given order."""
    out: dict[str, list[dict]] = {}
    for p in prompts:
        out.setdefault(p["task"], []).append(p)
    return out


def study_prompts(settings: dict) -> list[dict]:
    """The built-in prompts of the configured tasks (in the config's task order), the first N of each task."""
    groups = by_task(load_prompts())
    out = []
    for task in settings["tasks"]:
        if task not in groups:
            raise UserError(f"'{task}' is not a built-in prompt task ({', '.join(groups)})", field="specdec.tasks")
        out += groups[task][: int(settings["prompts_per_task"])]
    return out


def workload_order(prompts: list[dict], mix: str) -> list[dict]:
    """Order prompts for a workload-mix condition; returns copies with ``position`` (0-based run order) and ``mix``.

    ``single``: all prompts of one task, then the next task (tasks in order of first appearance, prompts in file
    order). ``interleaved``: round-robin over tasks (one prompt of each task in turn). Only the order changes.
    """
    if mix not in MIXES:
        raise UserError(f"must be one of {', '.join(MIXES)}, got {mix!r}", field="mix")
    groups = by_task(prompts)
    if mix == "single":
        ordered = [p for group in groups.values() for p in group]
    else:
        ordered = []
        queues = [list(group) for group in groups.values()]
        while any(queues):
            for q in queues:
                if q:
                    ordered.append(q.pop(0))
    return [{**p, "position": i, "mix": mix} for i, p in enumerate(ordered)]


def encode_prompt(tokenizer, prompt: dict, chat_template: bool = False):
    """Token ids [1, n] of a prompt; ``messages`` always, and ``text`` when ``chat_template``, go through the
    tokenizer's chat template with the generation prompt appended."""
    import torch

    if "messages" in prompt or chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("the tokenizer has no chat template (needed for 'messages' or --chat-template)",
                            field=f"prompt {prompt.get('prompt_id')}")
        messages = prompt.get("messages") or [{"role": "user", "content": prompt["text"]}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        ids = list(ids[0]) if ids and isinstance(ids[0], list) else list(ids)
    else:
        ids = tokenizer(prompt["text"], add_special_tokens=True)["input_ids"]
    if not ids:
        raise UserError("prompt encodes to zero tokens", field=f"prompt {prompt.get('prompt_id')}")
    return torch.tensor([ids], dtype=torch.long)
