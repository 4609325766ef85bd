"""The footer of every srat screen: Textual's, with the command palette's key only where it fits."""

from __future__ import annotations

from textual.widgets import Footer


class SratFooter(Footer):
    """Textual's Footer, showing the command palette's key (`^p Commands`) only where the
    screen's own keys leave room for it. Docked right, at 80 columns it covered the last keys
    (`q Quit` on the run and compare screens, `d Delete` on the runs screen). ctrl+p works
    whether shown or not, and the help screen (?) lists it. The key is hidden, not left out
    of the footer's compose: a rebuild of the keys would race a screen reading them."""

    _palette_width = 0  # columns the palette's key takes when shown
    _palette_fits = True  # the last fit, kept by the keys of a rebuild until it is measured

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit)

    async def recompose(self) -> None:
        await super().recompose()  # the screen's bindings changed: new keys, a new palette key
        self._show_palette(self._palette_fits)
        self.call_after_refresh(self._fit)

    def _show_palette(self, shown: bool) -> None:
        for key in self.query("FooterKey.-command-palette"):
            key.display = shown

    def _fit(self) -> None:
        keys = list(self.query("FooterKey"))
        palette = [key for key in keys if key.has_class("-command-palette")]
        own = [key for key in keys if key not in palette]
        if not palette or any(key.outer_size.width == 0 for key in own):
            # not laid out (a screen under a modal): keep the fit it had; measuring now would
            # count nothing, and waiting for a layout here would keep the app from idling
            return
        if palette[0].display:
            self._palette_width = palette[0].outer_size.width
        used = sum(key.outer_size.width + key.styles.margin.width for key in own)
        self._palette_fits = used + self._palette_width <= self.size.width
        self._show_palette(self._palette_fits)
