"""Other families' chat templates, for the wrong-template pitfall (factor ``template_family``).

Users report RULER numbers produced with a template that is not the model's own: Llama-2's ``[INST]``
markup applied to another family, or a generic ``User:``/``Assistant:`` completion format. These are
Jinja templates in the Hugging Face ``chat_template`` convention, passed to
``tokenizer.apply_chat_template(chat_template=...)`` for one generation; ``own`` keeps the tokenizer's
template. Both render a system message, the user turn and, for lm-eval's answer prefix, a partial
assistant turn that generation continues.
"""

from __future__ import annotations

# Llama-2 chat (Meta's format as shipped in meta-llama/Llama-2-*-chat-hf): the system message inside the first
# [INST] block between <<SYS>> markers.
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ '<s>[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] }}"
    "{% endif %}{% endfor %}"
)

# A plain completion format: role labels, no special tokens.
PLAIN = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

FAMILIES = {"own": None, "llama2": LLAMA2, "plain": PLAIN}


def chat_template_args(family: str | None) -> dict:
    """Keyword arguments for ``apply_chat_template`` that select the family's template (none for ``own``)."""
    template = FAMILIES[family or "own"]
    return {} if template is None else {"chat_template": template}
