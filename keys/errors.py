"""Typed errors for PED key images, M of N splits and PED PINs.

Every error names *where* (the image file, when there is one) and *what* was wrong, and
says what to do about it.  None ever carries secret material: callers pass file names,
indices, counts, colours and keyset ids (which are not secret), never a share, a secret
or a PIN.

`str(error)` is the one line a command-line tool prints: ``FILE: problem; what to do``.
The ``path`` and ``problem`` attributes are there for programs.

The ``keys`` package stands alone (it imports nothing else of ours), so `KeyImageError`
is a root of its own, not a ``ped.errors.PedError``: the one exception to the product's
single tree.  Translated where: the emulated PED turns them into its operation errors
(``ped.device.emulated.session``: a key error that ends an operation is DEVICE_ERROR; the
read flow refuses a presented key and asks again); ``pedkey`` prints them.
"""

from __future__ import annotations

import os


class KeyImageError(Exception):
    """Base of every error raised by the ``keys`` package."""

    def __init__(self, problem: str, path: str | os.PathLike[str] | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


# --- reading an image -------------------------------------------------------------------


class MissingImage(KeyImageError):
    """There is no key image at the given path."""


class ImageAccessError(KeyImageError):
    """The file exists but cannot be read or written (permissions, a directory, I/O)."""


class CorruptImage(KeyImageError):
    """The file is not a valid key image (wrong magic, impossible field values)."""


class TruncatedImage(CorruptImage):
    """The file is shorter than a key image: an interrupted copy or a damaged file."""


class TamperedImage(CorruptImage):
    """The SHA-256 digest does not match the content: the file was changed or damaged."""


class UnsupportedImageVersion(CorruptImage):
    """The image was written by a format version this software does not read."""


# --- using an image ---------------------------------------------------------------------


class WrongImageColor(KeyImageError):
    """The key is of another colour than the operation needs."""


class BlankKey(KeyImageError):
    """A blank key was presented where an imprinted key is needed."""


class NotBlank(KeyImageError):
    """An imprinted key was presented where a blank key is needed (it would be lost)."""


class TooFewBlankKeys(KeyImageError):
    """Not enough blank keys are available for the operation."""


# --- M of N -------------------------------------------------------------------------------


class InvalidSplit(KeyImageError, ValueError):
    """M or N is out of range (1 <= M <= N <= 16) or the secret has the wrong size."""


class ImageKeysetMismatch(KeyImageError):
    """Shares (or a key) of a different keyset than expected were presented."""


class RepeatedShare(KeyImageError):
    """The same share (same index) was presented twice; M distinct shares are needed."""


class TooFewShares(KeyImageError):
    """Fewer than M distinct shares were presented."""


class InconsistentShares(KeyImageError):
    """Shares claim one keyset but disagree (M, N, index range or share values)."""


# --- labels and PINs ------------------------------------------------------------------------


class InvalidLabel(KeyImageError, ValueError):
    """A key label is empty, too long or holds control characters."""


class InvalidPin(KeyImageError, ValueError):
    """A PED PIN is not 4 to 48 digits.  The message never repeats the PIN."""


class PinFileError(KeyImageError):
    """A PIN file is missing, malformed, or has no PIN for the keyset's label."""
