"""The wire layer: frame envelope, field codec and frame type numbers (sans-IO)."""
