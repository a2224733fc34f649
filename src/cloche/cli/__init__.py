"""The command line: one module per subcommand, a thin shell over cloche.api and the library.

Every module in this package that defines a module-level ``command`` (a click.Command) is
registered as a subcommand by ``cloche.cli.main``; nothing else needs editing to add one.
"""
