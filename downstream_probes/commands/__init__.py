"""Subcommands of ``mrsuperb``: one module per subcommand, each exposing ``register(subparsers)``."""
