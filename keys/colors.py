"""PED key colours and the roles they stand for.

The imprinted content, not the sticker, decides a key's type: the colour is part of the
integrity-checked key image and of every read-secret request on the wire, where it is
encoded as the one-byte code below (PROTOCOL.md).
"""

from __future__ import annotations

from enum import IntEnum


class Color(IntEnum):
    BLUE = 1  # HSM SO / partition SO
    RED = 2  # cloning domain
    BLACK = 3  # Crypto Officer (partition owner)
    GRAY = 4  # Crypto User
    WHITE = 5  # Auditor
    ORANGE = 6  # Remote PED Vector
    PURPLE = 7  # secure recovery

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def a_label(self) -> str:
        """The label with its indefinite article, for messages: "a blue", "an orange"."""
        return ("an " if self.label[0] in "aeiou" else "a ") + self.label

    @property
    def role(self) -> str:
        return ROLE_OF[self]

    @classmethod
    def parse(cls, text: str) -> Color:
        """Accept 'blue', 'BLUE', 'grey' or the numeric code; ValueError names the choices."""
        word = text.strip().lower()
        if word == "grey":
            word = "gray"
        for color in cls:
            if word in (color.label, str(int(color))):
                return color
        choices = ", ".join(c.label for c in cls)
        raise ValueError(f"unknown PED key colour {text!r}; choose one of: {choices}")


ROLE_OF = {
    Color.BLUE: "HSM SO / partition SO",
    Color.RED: "cloning domain",
    Color.BLACK: "Crypto Officer",
    Color.GRAY: "Crypto User",
    Color.WHITE: "Auditor",
    Color.ORANGE: "Remote PED Vector",
    Color.PURPLE: "secure recovery",
}
