"""Converge a host: the roles the topology gives it, in bulwark.plan's fixed order.

    pyinfra inventory/production.py deploy.py [--limit nj] [--dry --diff]

The inventory is validated as a whole before pyinfra connects (see bulwark.topology); the vault
is opened and checked for every secret before any operation runs. Each role module's `@deploy`
function is called `converge`.
"""

from pyinfra import logger

from bulwark import plan
from bulwark.deploying import deploy_host, deploy_secrets

_host = deploy_host()
_secrets = deploy_secrets()

for _role in plan.host_roles(_host):
    _module = plan.role_module(_role)
    if _module is None:
        logger.warning(f"{_host.name}: role {_role} has no module yet; skipped")
        continue
    _module.converge(_secrets)
