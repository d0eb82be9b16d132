"""pedhsm's command line for the client path: ``client ...`` and ``ntls certificate ...``.

`hsm.shellparser` calls `add_client_commands`; the words are Luna's (``client register
-client N -hostname H``, ``client assignPartition``...), matched case-insensitively by
`hsm.lunawords` like the other commands.  Files are handled here, in the shell: a
certificate to register is read and sent as PEM text; the file an export writes is sent
as an absolute path (the daemon writes it, as the same user).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

#: A certificate file is never larger (ped.tls refuses larger PEM anyway).
MAX_CERTIFICATE_FILE = 64 * 1024

Leaf = Callable[[Any, str, str, str], argparse.ArgumentParser]
Level = Callable[[Any, str, str], Any]


def certificate_text(path: str) -> str:
    """argparse type: the PEM text of a certificate file (read in the shell)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CERTIFICATE_FILE + 1)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_CERTIFICATE_FILE:
        raise argparse.ArgumentTypeError(f"{path} is too large for a certificate")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{path} is not a PEM certificate") from None


def absolute_path(path: str) -> str:
    """argparse type: the path made absolute (the daemon does not share the shell's cwd)."""
    return os.path.abspath(path)


def add_client_commands(groups: Any, leaf: Leaf, level: Level) -> None:
    """The ``client`` and ``ntls`` command groups."""
    client = level(groups, "client", "registered hsmclients and their partitions (client path)")
    p = leaf(client, "register", "client.register",
             "register an hsmclient's certificate under a name (HSM SO)")  # fmt: skip
    p.add_argument("--name", "--client", dest="name", required=True, help="the client's name")
    p.add_argument("--certificate", required=True, type=certificate_text, metavar="FILE",
                   help="the client's certificate (`hsmclient certificate export`)")  # fmt: skip
    p.add_argument("--hostname", help="the client's host name (for the records)")
    leaf(client, "list", "client.list", "list the registered clients")
    p = leaf(client, "show", "client.show",
             "a client's fingerprint, registration time and partitions")  # fmt: skip
    p.add_argument("--name", "--client", dest="name", required=True)
    p = leaf(client, "delete", "client.delete",
             "delete a client: its certificate is refused from then on (HSM SO)")  # fmt: skip
    p.add_argument("--name", "--client", dest="name", required=True)
    p.add_argument("--force", action="store_true")
    for word, command, help_text in (
        ("assignpartition", "client.assignpartition", "give a client a partition (HSM SO)"),
        ("revokepartition", "client.revokepartition", "take a partition from a client (HSM SO)"),
    ):
        p = leaf(client, word, command, help_text)
        p.add_argument("--client", required=True)
        p.add_argument("--partition", required=True)

    ntls = level(groups, "ntls", "the client listener (port 1792)")
    leaf(ntls, "show", "ntls.show", "the listener's address, certificate and connected clients")
    cert = level(ntls, "certificate", "the HSM's server certificate for port 1792")
    p = leaf(cert, "export", "ntls.certificate.export",
             "write the HSM's certificate to a file, for `hsmclient server register`")
    p.add_argument("file", type=absolute_path, metavar="FILE")
    leaf(cert, "show", "ntls.certificate.show", "the HSM's certificate: subject, fingerprint")
