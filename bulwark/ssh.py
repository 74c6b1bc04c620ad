"""The SSH algorithms every sshd of the platform offers: the operator's (roles/base.py) and the
backup hosts' own (roles/backup.py)."""

from __future__ import annotations

# sshd algorithms: Mozilla/dev-sec modern sets, all supported by OpenSSH 9.2 and by paramiko
# (pyinfra's SSH client): curve25519 and group16 kex, AEAD and CTR ciphers, ETM MACs only.
SSH_KEX: tuple[str, ...] = (
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
SSH_CIPHERS: tuple[str, ...] = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
SSH_MACS: tuple[str, ...] = (
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "umac-128-etm@openssh.com",
)
SSH_HOST_KEY_ALGORITHMS: tuple[str, ...] = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
