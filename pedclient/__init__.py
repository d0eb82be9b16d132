"""pedclient: the HSM-host daemon that relays between the local HSM and pedserver."""
