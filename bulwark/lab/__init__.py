"""The lab: both sites as systemd-nspawn containers on one Debian machine (`bulwark lab`).

`plan` turns the inventory into an address and naming plan (pure); `sshconfig`, `hostsfile`
and `aptsources` render files from it (pure); the other modules act on the machine.
"""
