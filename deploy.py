"""Converge a host: the roles bulwark.registry gives it, in the registry's order.

    pyinfra inventory/production.py deploy.py [--limit nj] [--dry --diff]
    pyinfra inventory/production.py deploy.py --data only_roles=firewall,vpn

The inventory is validated as a whole before pyinfra connects (see bulwark.topology); the vault
is opened and checked for every secret before any operation runs. Each role module's `@deploy`
function `converge(topology, host, secrets)` gets every input it uses. Roles without a module
yet are named once, with their hosts. `only_roles` narrows a run to some roles (still in order).
"""

from pyinfra import host

from bulwark import registry
from bulwark.deploying import announce_not_deployed, deploy_host, deploy_secrets, deploy_topology

_topology, _host, _secrets = deploy_topology(), deploy_host(), deploy_secrets()
announce_not_deployed(_topology)
for _module in registry.host_modules(_host, registry.parse_only_roles(host.data.get("only_roles"))):
    _module.converge(_topology, _host, _secrets)
