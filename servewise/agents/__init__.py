"""servewise.agents."""
