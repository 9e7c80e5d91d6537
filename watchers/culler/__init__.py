"""The idle culler, ``hubkeeper cull``: stops idle servers, aware of busy containers."""
