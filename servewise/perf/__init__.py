"""servewise.perf."""
