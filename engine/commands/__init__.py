"""One module per ``tritonforge`` subcommand: ``configure(parser)`` and ``run(args) -> int``."""
