"""The roles: one module per role, each with `ROLE`, `managed_files`, `template_context` and
one `@deploy` function (see bulwark.plan)."""
