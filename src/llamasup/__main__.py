"""``python -m llamasup``: the same command line as the ``llamasup`` script."""

from llamasup.cli.main import entrypoint

if __name__ == "__main__":
    entrypoint()
