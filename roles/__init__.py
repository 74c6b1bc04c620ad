"""The roles: one module per role with a module in bulwark.registry, each in the shape that
bulwark.plan describes (`ROLE`, constants, own facts and operations, `managed_files`,
`template_context`, one `@deploy` `converge(topology, host, secrets)`, private helpers)."""
