"""Activation (partition policies 22 and 23): the cache of CO/CU PED secrets and its
sealed copy on disk.

Theory of operation
-------------------
With policy 22 the PED secret of a CO or CU is kept in RAM (`hsm.state.Ram.activation`)
the first time the role uses the PED, so that an application login needs only the
challenge.  With policy 23 the secret is also sealed under the device key in the state
database and comes back at power on if the HSM was off for at most
`hsm.policy.AUTO_ACTIVATION_MAX_OFF_SECONDS`.  The time off is measured from the last
`heartbeat`, so it is never under-estimated.
"""

from __future__ import annotations

import contextlib

from hsm import policy as pol
from hsm.crypto import UnwrapFailed, wipe
from hsm.policy import Role
from hsm.state import HsmState
from hsm.store import PartitionRow


class Activation:
    """The activation cache: fill it, restore it at power on, keep its time-off bound."""

    def __init__(self, state: HsmState) -> None:
        self._state = state

    def activate(self, name: str, role: Role, part: PartitionRow, secret: bytearray) -> None:
        """Cache *secret* (taken over: the cache wipes it) for *role* of partition *name*."""
        st = self._state
        key = (name, role.value)
        if key in st.ram.activation:
            wipe(st.ram.activation[key])
        st.ram.activation[key] = secret
        if st.partition_policies(part)[pol.POLICY_AUTO_ACTIVATION] == 1:
            sealed = st.master.seal(st.aad(name, role.value, "activation"), secret)
            with st.store.tx():
                st.store.put_activation(name, role.value, sealed, st.clock.now())
        st.event("role activated", partition=name, role=role.value)

    def restore(self) -> list[str]:
        """At power on: bring back the sealed secrets of an HSM that was not off too long."""
        st = self._state
        now, notes = st.clock.now(), []
        for partition, role, sealed, stamped in st.store.activations():
            part = st.store.get_partition(partition)
            off_for = now - stamped
            allowed = bool(part and part.policies.get(pol.POLICY_AUTO_ACTIVATION, 0))
            if allowed and 0 <= off_for <= pol.AUTO_ACTIVATION_MAX_OFF_SECONDS:
                with contextlib.suppress(UnwrapFailed):
                    st.ram.activation[(partition, role)] = st.master.unseal(
                        st.aad(partition, role, "activation"), sealed
                    )
                    notes.append(f"{partition}: {role} auto-activated again")
                    continue
            with st.store.tx():
                st.store.delete_activation(partition, role)
            st.event(
                "activation expired", partition=partition, role=role, off_seconds=int(off_for)
            )
            notes.append(f"{partition}: {role} activation dropped (HSM was off too long)")
        self.heartbeat()
        return notes

    def heartbeat(self) -> None:
        """Record that the HSM is powered (bounds how long it was off at the next start)."""
        st = self._state
        if st.store.activations():
            with st.store.tx():
                st.store.stamp_activations(st.clock.now())
