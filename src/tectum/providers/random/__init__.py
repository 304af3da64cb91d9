"""Values made by tectum itself (Terraform's ``random`` provider): :class:`PasswordType`."""
