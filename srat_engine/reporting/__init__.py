"""Results as the paper's tables: seed groups, the paper's own numbers, exports."""
