"""cxrq-cli: submit chest X-rays to a cxrq server and read their findings from a shell."""

__version__ = "0.1.0"
