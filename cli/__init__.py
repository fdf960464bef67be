"""tdbnas.cli: the `tdbnas` command (a thin front over the library)."""
