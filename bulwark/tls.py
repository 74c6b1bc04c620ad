"""The platform's TLS policy: Mozilla Server Side TLS 6.0, Intermediate profile.

One place for every daemon's protocol floor, ciphers and groups (reference/hardening.md §1), so
no two services drift apart. All TLS 1.2 suites are ECDHE: every session is forward secret.
"""

from __future__ import annotations

MIN_PROTOCOL = "TLSv1.2"
TLS12_CIPHERS: tuple[str, ...] = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)
TLS13_SUITES: tuple[str, ...] = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)
# Debian 12's OpenSSL 3.0 has no X25519MLKEM768 yet.
GROUPS: tuple[str, ...] = ("X25519", "prime256v1", "secp384r1")
# The same policy in GnuTLS's priority syntax, for slapd (Debian builds OpenLDAP with GnuTLS):
# TLS 1.2 and 1.3, AEAD ciphers, ECDHE only, the three groups (hardening.md §4, checked with
# gnutls-cli and, in the lab, with sslyze).
GNUTLS_PRIORITY = (
    "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:-GROUP-ALL:"
    "+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1"
)
