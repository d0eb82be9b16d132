"""What the HSM remembers of a remote PED link it lost, and how it says so.

A remote link that ends without the administrator's ``hsm ped disconnect`` (pedserver
stopped, pedclient went away, the PED was unplugged, the HSM's own idle timeout) is
*lost*: the HSM keeps this record until ``hsm ped connect`` succeeds again or the
administrator disconnects, and until then no PED operation falls back to the local PED.
``hsm ped show`` prints the record; every refused operation quotes it with the fix.
"""

from __future__ import annotations

import time

import attrs

from ped.link.errors import LinkEnd


def wall_text(when: float) -> str:
    """A wall-clock time as the HSM prints it."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


@attrs.frozen
class LinkLoss:
    """A lost remote link: where it went, who ended it, why, and when (wall clock)."""

    address: str
    end: LinkEnd
    when: float

    @property
    def sentence(self) -> str:
        """The link and its end in words: the remote PED link to A:P was closed by ..."""
        return self.end.sentence(self.address)

    @property
    def at(self) -> str:
        return wall_text(self.when)

    def refusal(self, *, local_ped: bool) -> str:
        """Why a PED operation cannot run now, and what to do."""
        fix = f"run `hsm ped connect {self.connect_args}` to reconnect"
        if local_ped:
            fix += ", or `hsm ped disconnect` to use the local PED instead"
        return f"{self.sentence} at {self.at}; {fix} (nothing was counted)"

    @property
    def connect_args(self) -> str:
        if self.address.startswith("peer "):
            return f"--peer {self.address.removeprefix('peer ')}"
        host, _, port = self.address.rpartition(":")
        return f"--ip {host} --port {port}"

    def as_status(self) -> dict[str, str]:
        return {
            "address": self.address,
            "by": self.end.by,
            "why": self.end.why,
            "detail": self.end.detail,
            "at": self.at,
        }
