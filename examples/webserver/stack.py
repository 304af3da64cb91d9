"""nginx serving one page on port 8080 (run as root: `tectum apply examples/webserver`)."""

from tectum import output, var
from tectum.host import Directory, File, Package, Service

port = var("port", int, default=8080, description="port nginx listens on")
root = var("root", str, default="/srv/tectum-www", description="document root")
greeting = var("greeting", str, default="Hello from tectum")
site_name = var("site_name", str, default="tectum", description="file name of the nginx site")

nginx = Package("nginx")
www = Directory("www", path=root, mode="0755")
index = File(
    "index",
    path=f"{www.path}/index.html",
    content=f"<!doctype html>\n<title>tectum</title>\n<h1>{greeting}</h1>\n",
    mode="0644",
)
site = File(
    "site",
    path=f"/etc/nginx/sites-enabled/{site_name}",
    template="templates/site.conf.j2",
    vars={"port": port, "root": www.path},
    mode="0644",
    depends_on=[nginx],
)
Service("nginx", running=True, restart_on=[site], depends_on=[nginx, index])

output("url", f"http://127.0.0.1:{port}/")
