"""Data every host of every inventory shares (pyinfra group data for the `all` group).

Host and group data in the inventory files take precedence over these. pyinfra executes this
file for every inventory in this directory, before it connects: it arms bulwark's check of the
run (topology, --limit, only_roles, vault), so no inventory can forget it (bulwark.inventory).
"""

from bulwark.inventory import check_before_connecting

check_before_connecting()

# pyinfra connects as root over SSH with key authentication (sshd allows root by key only).
ssh_user = "root"
# Host keys must already be known (pinned): never trust a key on first use.
ssh_strict_host_key_checking = "yes"
# Retry a failed SSH connection once (a host still booting) before failing the run.
ssh_connect_retries = 1
