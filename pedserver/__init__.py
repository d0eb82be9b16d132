"""pedserver: the workstation daemon that serves one PED to HSMs over the network (a relay)."""
