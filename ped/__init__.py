"""The Remote PED protocol core; an HSM integrating a PED starts at ``ped.hsm_api``.

Nothing is imported here: the relays import parts of ``ped`` and must not load the
modules that hold secrets (see ARCHITECTURE.md).
"""
