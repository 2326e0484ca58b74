"""servewise.studies."""
