"""servewise.testing."""
