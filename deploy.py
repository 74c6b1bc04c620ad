"""Converge a host: the roles the topology gives it, in bulwark.plan's fixed order.

    pyinfra inventory/production.py deploy.py [--limit nj] [--dry --diff]
    pyinfra inventory/production.py deploy.py --data only_roles=firewall,vpn

The inventory is validated as a whole before pyinfra connects (see bulwark.topology); the vault
is opened and checked for every secret before any operation runs. Each role module's `@deploy`
function is called `converge`. `only_roles` narrows a run to some roles (still in order).
"""

from pyinfra import host, logger

from bulwark import plan
from bulwark.deploying import deploy_host, deploy_secrets

_host = deploy_host()
_secrets = deploy_secrets()
_only = plan.parse_only_roles(host.data.get("only_roles"))

for _role in plan.host_roles(_host):
    if _only is not None and _role not in _only:
        continue
    _module = plan.role_module(_role)
    if _module is None:
        logger.warning(f"{_host.name}: role {_role} has no module yet; skipped")
        continue
    _module.converge(_secrets)
