"""What the CLI and the TUI print: Rich tables, terminal plots, and one format per value
(`format`: a percentage, an age, a status colour, a runs-table cell). Formatting only."""
