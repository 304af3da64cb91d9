from tectum import var
from tectum.host import Directory, File

text = var("text", str, default="v1\n")
d = Directory("d", path="/tmp/tectum-upgrade-test/world", mode="0755")
File("hello", path=f"{d.path}/hello.txt", content=text, mode="0644")
