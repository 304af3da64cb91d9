"""An application's whole stack in one graph: a PostgreSQL role and database with a generated
password → an etcd key holding the service's DSN (sensitive) → a configuration file rendered on
this machine → its service restarted; beside them an S3 bucket and an IAM role (on AWS, or on a
local moto server). One plan shows it all; destroy removes it all in dependency order.

Run as root with PostgreSQL, etcd and moto reachable as tectum.toml says (README shows how to
start them): `tectum apply examples/app-stack`, then `curl http://127.0.0.1:8095/`.
"""

import json
from pathlib import Path

from tectum import output, var
from tectum.aws import IamRole, S3Bucket, S3BucketVersioning
from tectum.etcd import Key
from tectum.host import Directory, File, Service
from tectum.postgresql import Database, Grant, Role
from tectum.random import Password

name = var("name", str, default="app-stack", description="names the role, database, bucket...")
port = var("port", int, default=8095, description="port the service listens on")
greeting = var("greeting", str, default="Hello from app-stack")
pg_host = var("pg_host", str, default="127.0.0.1", description="the service's database host")
pg_port = var("pg_port", int, default=5432)

# -- database -------------------------------------------------------------------------------
password = Password("db", length=32, special=False)
role = Role("app", name=name, login=True, password=password.result)
database = Database("app", name=name, owner=role.name)
Grant("app_connect", role=role.name, database=database.name, object_type="database",
      privileges=["CONNECT", "TEMPORARY"])

# -- the DSN in etcd (sensitive: it holds the password) -------------------------------------------
dsn = Key("dsn", key=f"/{name}/database/dsn",
          value=f"host={pg_host} port={pg_port} dbname={database.name} user={role.name} "
                f"password={password.result}")

# -- object storage and the role the service would run as on AWS ----------------------------------
bucket = S3Bucket("assets", bucket=f"{name}-assets", tags={"app": name})
S3BucketVersioning("assets", bucket=bucket.bucket,
                   versioning_configuration={"status": "Enabled"})
IamRole("service", name=f"{name}-service", assume_role_policy=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                   "Principal": {"Service": "ec2.amazonaws.com"}}],
}), tags={"app": name})

# -- the service on this machine ------------------------------------------------------------------
home = Directory("home", path=f"/usr/local/lib/{name}", mode="0755")
app = File("app", path=f"{home.path}/app.py", mode="0644",
           content=(Path(__file__).parent / "files" / "app.py").read_text())
etc = Directory("etc", path=f"/etc/{name}", mode="0755")
config = File("config", path=f"{etc.path}/app.json", mode="0600", template="templates/app.json.j2",
              vars={"greeting": greeting, "port": port, "dsn": dsn.value,
                    "bucket": bucket.bucket})
init = File("init", path=f"/etc/init.d/{name}", mode="0755",
            template="templates/app-stack.init.j2",
            vars={"name": name, "app": app.path, "config": config.path})
Service("app", name=name, running=True, restart_on=[config, app, init], depends_on=[init])

output("url", f"http://127.0.0.1:{port}/")
output("bucket", bucket.bucket)
