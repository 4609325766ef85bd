"""`srat-tui`: the Textual app, its screens, widgets and messages."""
