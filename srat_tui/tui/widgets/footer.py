"""The footer of every srat screen: Textual's, with the command palette's key only where it fits."""

from __future__ import annotations

from textual.widgets import Footer


class SratFooter(Footer):
    """Textual's Footer, showing the command palette's key (`^p Commands`) only where the
    screen's own keys leave room for it. Docked right, at 80 columns it covered the last keys
    (`q Quit` on the run and compare screens, `d Delete` on the runs screen). ctrl+p works
    whether shown or not, and the help screen (?) lists it."""

    _palette_width = 0  # columns the palette's key took when last shown

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit)

    async def recompose(self) -> None:
        await super().recompose()  # the screen's bindings changed, or the palette's key did
        self.call_after_refresh(self._fit)

    def _fit(self) -> None:
        keys = list(self.query("FooterKey"))
        if any(key.outer_size.width == 0 for key in keys):
            # not laid out (a screen under a modal): keep the fit it had; measuring now would
            # count nothing, and waiting for a layout here would keep the app from idling
            return
        palette = [key for key in keys if key.has_class("-command-palette")]
        if palette:
            self._palette_width = palette[0].outer_size.width
        used = sum(
            key.outer_size.width + key.styles.margin.width for key in keys if key not in palette
        )
        fits = used + self._palette_width <= self.size.width
        if fits != self.show_command_palette:
            self.show_command_palette = fits
            self.call_after_refresh(self.recompose)
