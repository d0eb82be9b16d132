"""Roles, failed-login thresholds and policies, as data (REFERENCE.md, "Failed logins").

Theory of operation
-------------------
A failed login is *counted* only for a wrong key of the right colour, a wrong PED PIN (the
PED then derives a wrong secret) or a wrong challenge secret.  Counts are consecutive: a
success resets them.  When a role's count reaches its threshold, `outcome_of` says what
happens; the engine applies it in the same database transaction that stores the count.

    role           threshold                 outcome
    HSM SO         3, fixed                  HSM zeroized
    partition SO   10                        partition zeroized
    auditor        10                        locked for 10 minutes, then unlocks itself
    CO / CU        partition policy 20 (1-10) HSM policy 15 on: CO and CU locked until the
                                             partition SO runs `role resetpw --name co`;
                                             off (default): permanently locked, the
                                             partition's data key is destroyed
"""

from __future__ import annotations

import enum

import attrs

from keys.colors import Color


class Role(enum.Enum):
    HSM_SO = "hsm-so"
    AUDITOR = "auditor"
    DOMAIN = "domain"  # the red cloning-domain key: imprinted, never logged in
    PARTITION_SO = "so"
    CO = "co"
    CU = "cu"

    @property
    def color(self) -> Color:
        return _COLOR[self]

    @property
    def title(self) -> str:
        return _TITLE[self]


_COLOR = {
    Role.HSM_SO: Color.BLUE,
    Role.AUDITOR: Color.WHITE,
    Role.DOMAIN: Color.RED,
    Role.PARTITION_SO: Color.BLUE,
    Role.CO: Color.BLACK,
    Role.CU: Color.GRAY,
}
_TITLE = {
    Role.HSM_SO: "HSM SO",
    Role.AUDITOR: "Auditor",
    Role.DOMAIN: "cloning domain",
    Role.PARTITION_SO: "Partition SO",
    Role.CO: "Crypto Officer",
    Role.CU: "Crypto User",
}


class Outcome(enum.Enum):
    NONE = "none"
    ZEROIZE_HSM = "zeroize-hsm"
    ZEROIZE_PARTITION = "zeroize-partition"
    LOCK_TIMED = "lock-timed"
    LOCK_UNTIL_RESET = "lock-until-reset"
    LOCK_PERMANENT = "lock-permanent"


AUDITOR_LOCK_SECONDS = 600.0
HSM_SO_THRESHOLD = 3
PARTITION_SO_THRESHOLD = 10
AUDITOR_THRESHOLD = 10
CO_THRESHOLD_DEFAULT = 10


def threshold_of(role: Role, partition_policies: dict[int, int] | None = None) -> int:
    if role is Role.HSM_SO:
        return HSM_SO_THRESHOLD
    if role is Role.PARTITION_SO:
        return PARTITION_SO_THRESHOLD
    if role is Role.AUDITOR:
        return AUDITOR_THRESHOLD
    if role in (Role.CO, Role.CU):
        return (partition_policies or {}).get(POLICY_MAX_FAILED_LOGINS, CO_THRESHOLD_DEFAULT)
    raise ValueError(f"role {role.value} has no login")


def outcome_of(role: Role, failures: int, threshold: int, so_can_reset: bool) -> Outcome:
    """What reaching *failures* consecutive failures does to *role*."""
    if failures < threshold:
        return Outcome.NONE
    if role is Role.HSM_SO:
        return Outcome.ZEROIZE_HSM
    if role is Role.PARTITION_SO:
        return Outcome.ZEROIZE_PARTITION
    if role is Role.AUDITOR:
        return Outcome.LOCK_TIMED
    if role in (Role.CO, Role.CU):
        return Outcome.LOCK_UNTIL_RESET if so_can_reset else Outcome.LOCK_PERMANENT
    raise ValueError(f"role {role.value} has no login")


# --- policies -------------------------------------------------------------------------

POLICY_SO_RESET = 15  # HSM policy, destructive
POLICY_MAX_FAILED_LOGINS = 20  # partition policy
POLICY_ACTIVATION = 22  # partition policy
POLICY_AUTO_ACTIVATION = 23  # partition policy


@attrs.frozen
class PolicyDef:
    code: int
    description: str
    default: int
    low: int
    high: int
    destructive: bool = False

    def check(self, value: int) -> None:
        from hsm.errors import PolicyError

        if not self.low <= value <= self.high:
            raise PolicyError(
                f"policy {self.code} ({self.description}) takes a value from {self.low} "
                f"to {self.high}, not {value}"
            )


HSM_POLICIES = {
    POLICY_SO_RESET: PolicyDef(
        POLICY_SO_RESET, "SO can reset partition PIN", 0, 0, 1, destructive=True
    ),
}

PARTITION_POLICIES = {
    POLICY_MAX_FAILED_LOGINS: PolicyDef(
        POLICY_MAX_FAILED_LOGINS, "Max failed user logins allowed", CO_THRESHOLD_DEFAULT, 1, 10
    ),
    POLICY_ACTIVATION: PolicyDef(POLICY_ACTIVATION, "Allow activation", 0, 0, 1),
    POLICY_AUTO_ACTIVATION: PolicyDef(POLICY_AUTO_ACTIVATION, "Allow auto-activation", 0, 0, 1),
}


# --- PED timeouts (REFERENCE.md, "hsm ped timeout set") --------------------------------


@attrs.frozen
class TimeoutDef:
    description: str
    default: int
    low: int
    high: int


PED_TIMEOUTS = {
    "rped": TimeoutDef("Remote PED link idle timeout", 1800, 1, 99999),
    "pedk": TimeoutDef("waiting for a PED key to be presented", 200, 200, 600),
    "pedo": TimeoutDef("a whole PED operation", 920, 920, 99999),
}

AUTO_ACTIVATION_MAX_OFF_SECONDS = 2 * 3600.0
