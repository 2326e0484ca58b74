"""servewise.console."""
