"""Datasets for every recipe: a Hub name, a local json/jsonl/parquet file, or a built-in generator.

`load_prompt_datasets` returns train/eval `datasets.Dataset`s with a `prompt` column (text or chat
messages, as TRL expects) and the gold `answer` column, plus the source's other columns (TRL passes
every column to the reward functions).
"""

from rlvr.data.loading import builtin_data_path, load_prompt_datasets

__all__ = ["builtin_data_path", "load_prompt_datasets"]
