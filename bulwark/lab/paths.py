"""Where the lab keeps things: state survives a reboot, runtime does not, the cache survives down.

`down` removes the state and runtime directories' lab-made contents; the cache (base root
filesystems, apt-cacher-ng's packages) stays so the next `up` is fast.
"""

from pathlib import Path

STATE_DIR = Path("/var/lib/bulwark-lab")
RUN_DIR = Path("/run/bulwark-lab")
CACHE_DIR = Path("/var/cache/bulwark-lab")

# The lab's own record of what it started (read by status, down and the harnesses).
STATE_FILE = STATE_DIR / "lab.json"
# One overlayfs upper layer per host: its machine-id, host keys and everything deployed.
HOSTS_DIR = STATE_DIR / "hosts"
LOG_DIR = STATE_DIR / "log"
PID_DIR = RUN_DIR / "pids"
SSH_CONTROL_DIR = RUN_DIR / "ssh"

ROOTFS_CACHE = CACHE_DIR / "rootfs"
APT_CACHE = CACHE_DIR / "apt-cacher-ng"
APT_CACHER_RUN = RUN_DIR / "apt-cacher-ng"

# `ip netns` files and the per-namespace /etc overrides `ip netns exec` bind-mounts.
NETNS_DIR = Path("/run/netns")
NETNS_ETC = Path("/etc/netns")
