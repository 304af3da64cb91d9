"""The built-in ``podman`` provider: images, containers and volumes of the podman on this
machine (``podman_image``, ``podman_container``, ``podman_volume``), and a connector that lets
host resources configure a running container (``apply_role(role, container)``)."""
