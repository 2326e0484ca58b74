"""servewise.workflows."""
