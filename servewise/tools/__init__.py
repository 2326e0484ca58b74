"""servewise.tools."""
