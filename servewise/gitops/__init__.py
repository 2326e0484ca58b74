"""servewise.gitops."""
