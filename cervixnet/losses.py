"""Loss functions (placeholder, being written)."""
