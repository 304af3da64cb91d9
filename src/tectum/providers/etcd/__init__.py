"""The built-in ``etcd`` provider (etcd v3 API through aetcd): keys and authoritative prefixes."""
