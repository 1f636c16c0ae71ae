"""The RULER task catalogue (no heavy imports: the config validator uses it)."""

# task -> (lm-eval module under lm_eval.tasks.ruler, builder function, default max_gen_toks)
TASKS = {
    "niah_single_1": ("niah_utils", "niah_single_1", 128),
    "niah_single_2": ("niah_utils", "niah_single_2", 128),
    "niah_single_3": ("niah_utils", "niah_single_3", 128),
    "niah_multikey_1": ("niah_utils", "niah_multikey_1", 128),
    "niah_multikey_2": ("niah_utils", "niah_multikey_2", 128),
    "niah_multikey_3": ("niah_utils", "niah_multikey_3", 128),
    "niah_multivalue": ("niah_utils", "niah_multivalue", 128),
    "niah_multiquery": ("niah_utils", "niah_multiquery", 128),
    "ruler_vt": ("vt_utils", "get_vt_dataset", 30),
    "ruler_cwe": ("cwe_utils", "get_cw_dataset", 120),
    "ruler_fwe": ("fwe_utils", "fwe_download", 50),
    "ruler_qa_squad": ("qa_utils", "get_squad", 32),
    "ruler_qa_hotpot": ("qa_utils", "get_hotpotqa", 32),
}

# Tasks whose data lm-eval makes without network (the others need essays, SQuAD or HotpotQA).
OFFLINE_TASKS = ("niah_single_1", "niah_multikey_2", "niah_multikey_3", "ruler_vt", "ruler_cwe", "ruler_fwe")

# Shortest context each generator can fill (measured with the Qwen2.5 tokenizer): VT's built-in
# example alone is sized to 500 tokens, so at 768 its generator never terminates; CWE at 512 shrinks
# its word list to nothing and emits docs with no reference answer.
MIN_LENGTH = {task: 512 for task in TASKS} | {"ruler_vt": 1024, "ruler_cwe": 1024, "ruler_qa_squad": 1024,
                                              "ruler_qa_hotpot": 1024}
