"""``tritonforge download MODEL_ID``: fetch a model's needed files into the Hugging Face hub cache.

Only what the engine reads is fetched: config, tokenizer files, generation config and safetensors
(+ index) for a transformers repo, or one named .gguf file (``--file`` or ``org/name/file.gguf``).
Pickle weights are never downloaded. Offline mode (``HF_HUB_OFFLINE=1`` or ``--offline``) only checks
the cache.
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="hub id: org/name, or org/name/file.gguf for one GGUF file")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.add_argument("--cache-dir", default=None, help="hub cache directory (default: HF_HUB_CACHE or ~/.cache)")
    parser.add_argument("--file", default=None, help="download only this .gguf file of the repo")
    parser.add_argument("--offline", action="store_true", default=None,
                        help="do not use the network; only report whether the model is cached")


def run(args: argparse.Namespace) -> int:
    from engine.loader.errors import ModelLoadError
    from engine.loader.hub import download_model, parse_hub_id

    parsed = parse_hub_id(args.model)
    if parsed is None:
        print(f"error: {args.model!r} is not a hub id (org/name or org/name/file.gguf)", file=sys.stderr)
        return 2
    repo_id, filename = parsed
    filename = args.file or filename
    if filename is not None and not filename.endswith(".gguf"):
        print(f"error: --file must name a .gguf file, got {filename!r}", file=sys.stderr)
        return 2
    try:
        path = download_model(repo_id, revision=args.revision, filename=filename, offline=args.offline,
                              cache_dir=args.cache_dir)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0
