"""One module per ``medisee`` subcommand; each has ``register(subparsers)``."""
