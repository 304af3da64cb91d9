"""An image baked from a role, three containers from it, and this machine's nginx balancing
over them — one graph, one plan, one state (run as root: `tectum apply examples/containers`).

The base is a root filesystem tarball (`debootstrap --variant=minbase bookworm DIR` then
`tar -C DIR -cf bookworm.tar .`; see README), imported with `podman import`: nothing is pulled.
Change the role (the greeting) and the image is rebuilt under a new tag and every container
replaced; `tectum rollback --to N` brings an earlier image back without rebuilding it.
"""

from tectum import apply_role, output, var
from tectum.host import Directory, File, Package, Service
from tectum.podman import Container, Image

base_tarball = var("base_tarball", str, default="/var/cache/tectum-example/bookworm.tar",
                   description="a Debian root filesystem tarball (debootstrap)")
greeting = var("greeting", str, default="Hello from a tectum container")
port = var("port", int, default=8090, description="port this machine's nginx listens on")
first_port = var("first_port", int, default=8091, description="port of the first container")
replicas = var("replicas", int, default=3)
site_name = var("site_name", str, default="tectum-containers")


def web_image_role(host, greeting):
    """Baked into the image: busybox's httpd and the page it serves."""
    Package("busybox", update_cache=True, cache_valid_time=3600)
    www = Directory("www", path="/srv/www", mode="0755")
    File("index", path=f"{www.path}/index.html", mode="0644",
         content=f"<!doctype html>\n<title>tectum</title>\n<h1>{greeting}</h1>\n")


def replica_role(host):
    """Applied to each running container: which replica answered."""
    File("whoami", path="/srv/www/whoami.txt", content=f"{host.address}\n", mode="0644")


image = Image("web", name="localhost/tectum-example-web", base_tarball=base_tarball,
              role=web_image_role, role_args={"greeting": greeting}, keep=3)

ports = [first_port + i for i in range(replicas)]
replicas_made = [
    Container(f"web{i + 1}", image=image.image_id, network="host",
              command=["busybox", "httpd", "-f", "-p", f"127.0.0.1:{p}", "-h", "/srv/www"],
              health_check={"command": ["busybox", "wget", "-q", "-O", "/dev/null",
                                        f"http://127.0.0.1:{p}/"],
                            "interval": 1, "retries": 15},
              create_before_destroy=False)
    for i, p in enumerate(ports)
]
apply_role(replica_role, replicas_made)

nginx = Package("nginx")
site = File("site", path=f"/etc/nginx/sites-enabled/{site_name}", mode="0644",
            template="templates/balancer.conf.j2", vars={"port": port, "ports": ports},
            depends_on=[nginx])
Service("nginx", running=True, restart_on=[site], depends_on=[nginx, *replicas_made])

output("url", f"http://127.0.0.1:{port}/")
output("image", image.tag)
