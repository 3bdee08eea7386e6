"""golfrun.data: the challenge data format — shards, layout, manifest — and the synthetic builder.

`golfrun.data.synthetic` imports sentencepiece lazily, so importing this package stays cheap.
"""

from golfrun.data.layout import (
    dataset_dir,
    dataset_dir_name,
    load_manifest,
    local_path_for_remote,
    manifest_dataset,
    manifest_tokenizer,
    tokenizer_path,
    train_files,
    val_files,
    variant_vocab_size,
)
from golfrun.data.shards import ShardHeader, check_shard, read_header, read_tokens, write_shard

__all__ = [
    "ShardHeader",
    "check_shard",
    "dataset_dir",
    "dataset_dir_name",
    "load_manifest",
    "local_path_for_remote",
    "manifest_dataset",
    "manifest_tokenizer",
    "read_header",
    "read_tokens",
    "tokenizer_path",
    "train_files",
    "val_files",
    "variant_vocab_size",
    "write_shard",
]
