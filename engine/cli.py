"""tritonforge: Triton kernels for LLM inference, and a small serving engine built from them.

The command line: each subcommand lives in its own module under ``engine.commands`` (or ``bench``) exposing
``configure(parser)`` and ``run(args) -> int``; this file only lists them, so that ``--help`` stays cheap:
a subcommand's module (and torch, triton) is imported only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": ("engine.commands.demo", "build a small model locally and generate from it (no download)"),
    "check": ("bench.check", "check every registered kernel against its reference"),
    "bench": ("bench.sweep", "time ops against baselines and the card's measured ceilings"),
    "generate": ("engine.commands.generate", "generate text from a local model, a hub id, or a server"),
    "models": ("engine.commands.models", "list local models (Hugging Face directories and GGUF files)"),
    "download": ("engine.commands.download", "download a model from the Hugging Face hub into its cache"),
    "serve": ("engine.commands.serve", "serve an OpenAI-compatible HTTP API"),
    "status": ("engine.commands.remote", "show a request's status on a running server"),
    "cancel": ("engine.commands.remote", "cancel a request on a running server"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonforge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"tritonforge {name}", description=COMMANDS[name][1])
    module.configure(parser, name) if _takes_name(module.configure) else module.configure(parser)
    args = parser.parse_args(argv[1:])
    args.command = name
    return int(module.run(args) or 0)


def _takes_name(fn) -> bool:
    return fn.__code__.co_argcount >= 2


if __name__ == "__main__":
    sys.exit(main())
