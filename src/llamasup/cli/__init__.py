"""The ``llamasup`` command line: entry, lazy subcommands, control client, tables."""
