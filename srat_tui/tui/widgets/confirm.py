"""Small modal dialogs: a yes/no confirmation and a one-line text prompt."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from srat_tui.render.format import inert


class ConfirmModal(ModalScreen[bool]):
    """Ask before something that cannot be undone; dismisses with True (yes) or False (no)."""

    CSS_PATH = "dialogs.tcss"

    # The buttons cannot take focus, so y/n/enter/escape always reach these bindings: a
    # focused "No" button must not turn enter into a surprise.
    AUTO_FOCUS = None
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(
        self, message: str, *, yes_label: str = "Yes", no_label: str = "No", danger: bool = True
    ) -> None:
        super().__init__(classes="-danger" if danger else None)
        self.message = message
        self.yes_label = yes_label
        self.no_label = no_label
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(inert(self.message, newlines=True), id="message", markup=False)
            with Horizontal(id="buttons"):
                yield Button(
                    f"{self.yes_label} (y)",
                    id="yes",
                    variant="error" if self.danger else "primary",
                    compact=True,
                )
                yield Button(f"{self.no_label} (n)", id="no", compact=True)

    def on_mount(self) -> None:
        for button in self.query(Button):
            button.can_focus = False

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")


class TextPromptModal(ModalScreen[str | None]):
    """A prompt with one line of input; dismisses with the text (stripped) or None (escape)."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, prompt: str, *, value: str = "", placeholder: str = "", hint: str = ""
    ) -> None:
        super().__init__()
        self.prompt = prompt
        self.value = value
        self.placeholder = placeholder
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(inert(self.prompt), id="prompt", markup=False)
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")
            yield Static(self.hint or "enter: OK · escape: cancel", id="hint", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
