"""Model builders (placeholder, being written)."""
