"""Podman resources, as declared in a stack: ``from tectum.podman import Image, Container,
Volume``.

=========  =======================================================================================
Image      name, base (a local image) | base_tarball (a root filesystem tarball, ``podman
           import``), role (a role function baked into the image, with role_args), labels,
           keep (versions kept), build_network; computed: tag, image_id, digest, role_hash
Container  name, image, command, env, network ("bridge", "none", "host" or a network
           namespace path), volumes, ulimits, restart_policy, running, health_check, labels,
           create_before_destroy; computed: id, image_id
Volume     name, labels, driver, options; computed: mountpoint
=========  =======================================================================================

A role is applied to a running container like to any host: ``apply_role(role, container)``
configures its files, packages and services in the same plan as the image and the container
(see ``docs/podman.md``).
"""

from __future__ import annotations

from tectum.config.declaration import Resource

__all__ = ["Container", "Image", "Volume"]


class Image(Resource):
    """An image built from a base and a role: ``Image("app", name="localhost/app",
    base_tarball="rootfs.tar", role=app_role)``. Its tag is a hash of the base and the role's
    resolved desired state: an unchanged role never rebuilds, a changed one always does."""

    type_name = "podman_image"
    __slots__ = ()

    def __init__(self, label: str, /, *, role: object = None, role_args: object = None,
                 **kwargs: object) -> None:
        if role is not None:
            from tectum.providers.podman.recipe import capture

            kwargs["recipe"] = capture(role, label, role_args)
        elif role_args is not None:
            kwargs["role_args"] = role_args  # (reported: role_args without a role)
        super().__init__(label, **kwargs)  # type: ignore[arg-type]


class Container(Resource):
    """A container: ``Container("web1", image=app.image_id, command=["app"], running=True)``.
    Changing its image replaces it (image ids are compared, never tags)."""

    type_name = "podman_container"
    label_attr = "name"
    __slots__ = ()


class Volume(Resource):
    """A named volume: ``Volume("data")``; containers mount it as ``"data:/var/lib/app"``."""

    type_name = "podman_volume"
    label_attr = "name"
    __slots__ = ()
