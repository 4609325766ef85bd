"""What the CLI prints: Rich tables, plain columns and terminal plots (formatting only)."""
