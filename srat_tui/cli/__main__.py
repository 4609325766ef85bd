from srat_tui.entry import srat

srat()
