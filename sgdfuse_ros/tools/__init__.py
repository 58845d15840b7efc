"""The ``sgdfuse`` command (one module per subcommand) and the benchmarks; nothing imports it."""
