"""HSM-side API: see ARCHITECTURE.md."""
