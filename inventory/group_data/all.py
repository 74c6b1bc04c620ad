"""Data every host of every inventory shares (pyinfra group data for the `all` group).

Host and group data in the inventory files take precedence over these.
"""

# pyinfra connects as root over SSH with key authentication (sshd allows root by key only).
ssh_user = "root"
# Host keys must already be known (pinned): never trust a key on first use.
ssh_strict_host_key_checking = "yes"
# Retry a failed SSH connection once (a host still booting) before failing the run.
ssh_connect_retries = 1
