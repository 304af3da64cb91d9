"""The gallery: public Ansible roles translated to tectum roles (see README.md).

Each role is a Python package next to this file; it is applied to the inventory group of its
name. Copy inventory.example.toml to inventory.toml and put your hosts in it, then
`tectum plan examples/roles`.
"""

from memcached import memcached
from nginx import nginx
from redis import redis

from tectum import apply_role

apply_role(memcached, "memcached")
apply_role(redis, "redis")
apply_role(nginx, "nginx")
