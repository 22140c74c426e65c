"""One module per `lgvit` subcommand."""
